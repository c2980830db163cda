from meta_train.cli import main

raise SystemExit(main())

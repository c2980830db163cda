"""`python -m roms_setup`: see roms_setup.cli."""

from roms_setup.cli import main

raise SystemExit(main())

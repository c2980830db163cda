"""The 2018 Retro Contest on one's own machine, by concern:

- `evaluation.contest`: the contest environment and its rules, the server, protocol and client,
  the records of a run, the runner (`serve`, `run`);
- `evaluation.docker`: the private Docker daemon, agent images, the container runtime (`build`,
  `docker`);
- `evaluation.suites`: agents × levels × seeds, locally or on Ray (`suite`);
- `evaluation.reports`: scores, normalization, aggregates, curves, GIFs, reports (`compare`,
  `video`).

`python -m evaluation COMMAND` (evaluation/__main__.py) dispatches to each command's module.
"""

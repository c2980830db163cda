# The README's two commands: `make run` (set up + the main job) and `make test` (set up + tests).
.PHONY: setup run test lint bench docker-up

PY := .venv/bin/python
# The main job: `make run` (ROM-free default), `make run ARGS=--sonic` (with the Sonic ROMs),
# `make run ARGS=--smoke`, `make run OUT=runs/other ARGS="--config my-pipeline.yaml"`.
OUT ?= runs/pipeline
ARGS ?=

setup:
	bash scripts/setup.sh

run: setup
	$(PY) -m meta_train.pipeline --out $(OUT) $(ARGS)

docker-up: setup
	$(PY) -m evaluation docker up

# Docker tests need a daemon: `docker up` starts a private one (root) or says why it can't;
# REQUIRE_DOCKER=1 turns "no daemon" from skipped tests into a failure (CI sets it).
test: setup
	@$(PY) -m evaluation docker up || { \
		if [ "$${REQUIRE_DOCKER:-0}" = 1 ]; then exit 1; fi; \
		echo "note: no Docker daemon: the Docker tests will be skipped"; }
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q --durations=30

# ruff's lint rules and formatter (`ruff format .` fixes the layout), and mypy over the five
# packages (its settings: [tool.mypy] in pyproject.toml)
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Every benchmark under benchmarks/ with its defaults, each ending with its `BENCH ...` line; the
# learning ones take long (ppo_learning ~35 min, rainbow_learning hours on CPU). One or a few:
# `make bench BENCH="env_throughput remote_overhead"`.
BENCH ?= $(basename $(notdir $(wildcard benchmarks/*.py)))
bench: setup
	@set -e; for b in $(BENCH); do echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py; done

#!/usr/bin/env bash
# Set up a fresh machine: system tools (when root), the virtual environment, the project, and the
# ROM-free games. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  echo "error: Python 3.11 is needed (found $("$PY" --version 2>&1)): install it, or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

# xdelta3 applies the contest's custom-level patches; only root can install it here.
if ! command -v xdelta3 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing xdelta3 (Debian package)"
    (apt-get install -y -qq xdelta3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq xdelta3; }) >/dev/null
  else
    echo "setup: note: xdelta3 is missing; the custom test levels need it (apt-get install xdelta3)"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project and its dependencies into .venv"
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q -e ".[test,cluster,bench]"; } >"$log" 2>&1 \
     || ! .venv/bin/python -c "import torch, stable_retro, gymnasium, cv2, docker, ray, rliable, stable_baselines3" 2>>"$log"; then
    tail -n 30 "$log" >&2
    echo "error: the install failed (full log: $log)" >&2
    exit 2
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi

.venv/bin/python -m roms_setup import --bundled >/dev/null
.venv/bin/python - <<'PY'
from roms_setup.status import status_json

sets = status_json()["sets"]
print("setup: done; playable levels: "
      + ", ".join(f"{name} {s['playable']}/{s['total']}" for name, s in sets.items()))
PY

"""Meta-training configs (YAML). `defaults.yaml` lists every key."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULTS = CONFIG_DIR / "defaults.yaml"

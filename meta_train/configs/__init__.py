"""Meta-training configs (YAML). `defaults.yaml` lists every key."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULTS = CONFIG_DIR / "defaults.yaml"

# The meta-optimizers a config may name (`meta_optimizer:`), in meta_train.meta_optimizers.
META_OPTIMIZERS = ("vpg", "trpo", "ppo", "reptile")

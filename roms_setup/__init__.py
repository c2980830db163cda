"""Level sets of the 2018 Retro Contest and ROM installation into stable-retro."""

from roms_setup.levels import Level, level_set_names, load_level_set, resolve_levels
from sonic_common.errors import UserError

__all__ = ["Level", "UserError", "level_set_names", "load_level_set", "resolve_levels"]

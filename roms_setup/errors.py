"""User-facing errors: one line naming the problem and the fix, printed without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input or a missing prerequisite. The message says what is wrong and how to fix it."""

    exit_code = 2


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate a CLI entry point: a UserError becomes `error: <message>` on stderr and exit 2."""

    @wraps(main)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper

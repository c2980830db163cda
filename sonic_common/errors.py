"""User-facing errors: one line naming the problem and the fix, printed without a traceback."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input or a missing prerequisite. The message says what is wrong and how to fix it."""

    exit_code = 2


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate a CLI entry point: a UserError becomes `error: <message>` on stderr and exit 2;
    a reader that stops reading (`status --json | head`) ends it quietly, exit 141 as SIGPIPE."""

    @wraps(main)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            result = main(*args, **kwargs)
            sys.stdout.flush()  # here, not at exit, where a broken pipe would be reported
            return result
        except BrokenPipeError:
            _quiet_stdout()
            raise SystemExit(141) from None
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        except OSError as e:
            message = environment_fault(e)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(UserError.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush finds no broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


# A path that cannot be made, read or written: the user's input or machine, not a bug.
PATH_FAULTS = {
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.EACCES: "choose a path you may write, or fix its permissions",
    errno.EPERM: "choose a path you may write, or fix its permissions",
    errno.EROFS: "choose a writable file system",
    errno.EISDIR: "name a file",
    errno.EEXIST: "it already exists: choose another path",
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space",
}


def environment_fault(e: OSError) -> str | None:
    """One line for an OSError on a named path that the user can fix; None for anything else."""
    fix = PATH_FAULTS.get(e.errno or 0)
    if fix is None or e.filename is None:
        return None
    return f"{e.filename}: {e.strerror}: {fix}"

"""Files: atomic writes (readers see the old content or the new one, never a part), and the
check that a file is a torch.save archive before it is read as a checkpoint.

Every write goes to a temporary file beside the target (same file system), flushed to disk
and renamed into place with os.replace; on any failure the temporary file is removed and the
target is untouched. Files end up readable by everyone (0644), like files written plainly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write (by any means, e.g. another program); renamed
    onto `path` when the block ends without an exception, removed otherwise."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file opened for writing (`mode` "w" or "wb") that replaces `path` when the block ends
    without an exception, flushed to disk first."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: str | Path, data: str | bytes, *, make_dir: bool = True) -> None:
    """Write `data` (text as UTF-8) into `path`, creating its directory if needed (`make_dir`;
    off where a vanished directory is an error to report, e.g. a run's records)."""
    path = Path(path)
    if make_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_json_atomic(path: str | Path, data: dict[str, Any], *, make_dir: bool = True) -> None:
    """`data` as indented JSON with a final newline."""
    write_atomic(path, json.dumps(data, indent=2) + "\n", make_dir=make_dir)


def copy_atomic(src: str | Path, dest: str | Path) -> None:
    """Copy the file `src` onto `dest`."""
    with atomic_open(dest) as out, open(src, "rb") as f:
        shutil.copyfileobj(f, out)


def require_torch_archive(path: Path) -> None:
    """A one-line UserError unless `path` is a torch.save zip archive (what every checkpoint of
    this project is): agent.checkpoint before loading one, `evaluation build` before baking one
    into an image."""
    import zipfile

    from sonic_common.errors import UserError

    if not zipfile.is_zipfile(path):
        raise UserError(
            f"checkpoint {path} is not a PyTorch checkpoint (not a torch.save zip archive): "
            "give the checkpoint.pt that meta_train or agent.train wrote"
        )

"""Atomic file writes: a crash or kill never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from freyvae_cli.errors import FreyError, UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse_special(path: Path) -> None:
    """A write replaces only a regular file (or a link, itself): never a device, pipe or socket,
    which the rename would turn into a regular file (/dev/null, as root)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # nothing there (or nothing we may look at: the write itself will say)
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
        raise FreyError(f"cannot write {path}: it is a device, pipe or socket, not a file; choose another path")


def check_writable(path: str | Path, extensions: tuple[str, ...] | None = None) -> Path:
    """Fail before any work if `path` cannot be written (bad extension, a file where a folder is,
    a device)."""
    path = Path(path)
    _refuse_special(path)
    if path.is_dir():
        raise FreyError(f"cannot write {path}: it is a folder; give a file name")
    if extensions is not None and path.suffix.lower().lstrip(".") not in extensions:
        raise UsageError(
            f"cannot write {path}: unknown format {path.suffix or '(no extension)'!r}; "
            f"use one of {', '.join('.' + e for e in extensions)}"
        )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FreyError(f"cannot write {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK):
        raise FreyError(f"cannot write {path}: {parent} is not writable; choose another path")
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write` on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise FreyError(f"cannot write {path}: {e.strerror or e}; choose another path") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        _refuse_special(path)  # just before the rename: what is there now is what it replaces
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FreyError(f"cannot write {path}: {e.strerror or e}; choose another path") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))

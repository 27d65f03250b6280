"""Files from users are untrusted: every reader checks a path here before it opens it.

A reader must never open what has no end or never answers (/dev/zero, a FIFO, a socket), follow a
link that leads nowhere, or take in more than a small multiple of the largest data set it is meant
for. The limits are below; docs/safety.md lists them and what each input gets.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from freyvae_cli.errors import FreyError

MAX_FACES = 100_000  # faces in one data set: 50 times the Frey Face file's 1965
MAX_BYTES = 128_000_000  # a data file or an image, on disk and unpacked (the Frey file is 1.1 MB)
MAX_CHECKPOINT_BYTES = 512_000_000  # the largest model the options allow, with Adam's state, is ~200 MB


def megabytes(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 10**6 else f"{n / 1e3:.0f} kB"


def check(path: str | Path, error: type[FreyError], limit: int = MAX_BYTES) -> None:
    """Refuse a link to nothing or in a loop, a device, pipe or socket, and a file over `limit`
    bytes, each in one line. A missing path and a folder pass: the caller says what it wanted there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise error(f"{path} is a symbolic link to nothing; give the file itself") from None
        return
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise error(f"{path} is a loop of symbolic links; give the file itself") from None
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is not a regular file (a device, pipe or socket); give a file")
    if st.st_size > limit:
        raise error(f"{path} is {megabytes(st.st_size)}, more than the {megabytes(limit)} freyvae reads "
                    "from one file; is it the right file?")


def read_bytes(path: str | Path, error: type[FreyError], limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opened without blocking and checked
    on the open file, so a path swapped for a FIFO after check() cannot hang the read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path} is not a regular file (a device, pipe or socket); give a file")
        raw = f.read(limit + 1)  # a file that grows, or claims no size (/proc), is still bounded
    if len(raw) > limit:
        raise error(f"{path} is more than the {megabytes(limit)} freyvae reads from one file; is it the right file?")
    return raw

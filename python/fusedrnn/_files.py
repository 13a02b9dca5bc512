"""Atomic file writes: a file is either written whole or the old one is left untouched.

The data goes to a fresh temporary file in the destination folder (O_EXCL, so nobody else's
file is reused), is flushed to disk, and replaces the target with os.replace, which is atomic
within one file system; the folder is then synced so the rename itself survives a crash.
"""

from __future__ import annotations

import os
import secrets
from typing import IO, Callable


def write_atomic(path, write: Callable[[IO], None], *, text: bool = False) -> None:
    """Call write(f) on a temporary file, then move it to path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # Mode 0o666 lets the umask decide, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        opts = {"encoding": "utf-8", "newline": ""} if text else {}
        with os.fdopen(fd, "w" if text else "wb", **opts) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    # Makes the rename durable on POSIX; Windows cannot open directories.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

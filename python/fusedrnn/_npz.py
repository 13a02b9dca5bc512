"""Atomic .npz files holding named arrays plus one JSON header.

Shared by everything that saves to disk (layers today, models later).  A save either
completes or leaves whatever was at the path before untouched: the archive is written to a
fresh file in the destination directory and moved over the target with os.replace, which is
atomic on the same file system.
"""

from __future__ import annotations

import json
import os
import secrets

import numpy as np

# The header key cannot clash with an attribute-style parameter name.
HEADER_KEY = "__fusedrnn__"


def _write_archive(fileobj, arrays: dict) -> None:
    # Kept separate so a test can make the write itself fail half-way.
    np.savez(fileobj, **arrays)


def save(path, header: dict, arrays: dict) -> None:
    """Write arrays and a JSON-able header to path (used as given, no suffix added)."""
    path = os.fspath(path)
    if HEADER_KEY in arrays:
        raise ValueError(f"array name {HEADER_KEY!r} is reserved for the header")
    directory = os.path.dirname(os.path.abspath(path))
    payload = dict(arrays)
    # A 0-d unicode array loads back without pickle.
    payload[HEADER_KEY] = np.array(json.dumps(header, sort_keys=True))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask decide, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_archive(f, payload)
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
    # Makes the rename itself durable on POSIX; Windows cannot open directories.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path) -> tuple[dict, dict]:
    """(header, arrays) from a file written by save(); ValueError if it is not one."""
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a fusedrnn .npz file: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a fusedrnn .npz file (it holds a single array)")
    with archive:
        if HEADER_KEY not in archive.files:
            raise ValueError(f"{path} is not a fusedrnn .npz file: no {HEADER_KEY!r} header")
        header = json.loads(str(archive[HEADER_KEY]))
        arrays = {k: archive[k] for k in archive.files if k != HEADER_KEY}
    return header, arrays

"""Atomic .npz files holding named arrays plus one JSON header.

Shared by everything that saves arrays (layers, models, checkpoints).  A save either completes
or leaves whatever was at the path before untouched (see _files.write_atomic).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ._files import write_atomic

# The header key cannot clash with an attribute-style parameter name.
HEADER_KEY = "__fusedrnn__"


def _write_archive(fileobj, arrays: dict) -> None:
    # Kept separate so a test can make the write itself fail half-way.
    np.savez(fileobj, **arrays)


def save(path, header: dict, arrays: dict) -> None:
    """Write arrays and a JSON-able header to path (used as given, no suffix added)."""
    if HEADER_KEY in arrays:
        raise ValueError(f"array name {HEADER_KEY!r} is reserved for the header")
    payload = dict(arrays)
    # A 0-d unicode array loads back without pickle.
    payload[HEADER_KEY] = np.array(json.dumps(header, sort_keys=True))
    write_atomic(path, lambda f: _write_archive(f, payload))


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

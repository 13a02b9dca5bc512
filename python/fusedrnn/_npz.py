"""Atomic .npz files holding named arrays plus one JSON header.

Shared by everything that saves arrays (layers, models, checkpoints).  A save either completes
or leaves whatever was at the path before untouched (see _files.write_atomic).

Loading trusts nothing in the file.  Everything that is not a well-formed file of ours is a
ValueError naming the file and what is wrong (a missing or unreadable file stays an OSError), and
memory stays bounded by what the file legitimately describes:

* the zip directory and each member's .npy header are read first; no array data is read
  until the caller's ``validate`` has compared the header with the stored arrays' shapes
  (so a small file whose header announces a huge model is refused before anything is built);
* each member's declared size must be exactly its .npy header plus its array's bytes, and
  reading never goes past it; members stored without compression (as np.savez writes them)
  are bounded by the file's own size, and compressed ones may expand at most
  ``_MAX_EXPANSION`` times (a zip bomb is refused unread);
* the JSON header is at most ``_MAX_HEADER_CHARS`` characters, nesting included.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import zipfile

import numpy as np

from ._files import path_str, write_atomic

# The header key cannot clash with an attribute-style parameter name.
HEADER_KEY = "__fusedrnn__"
_MAX_HEADER_CHARS = 4 * 2**20
_MAX_MEMBERS = 100_000
_MAX_EXPANSION = 32  # float weights barely compress; zeros compress ~1000x
_NPY_HEADER_LIMIT = 10_000  # numpy's own default limit for .npy headers


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


class Spec:
    """What a member's .npy header says: shape and dtype, before its data is read."""

    def __init__(self, shape: tuple, dtype: np.dtype):
        self.shape, self.dtype = shape, dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"Spec({self.shape}, {self.dtype})"


def load(path, validate=None) -> tuple[dict, dict]:
    """(header, arrays) from a file written by save(); ValueError if it is not one.

    ``validate(header, specs)``, specs mapping each array's name to its Spec, runs before any
    array data is read and raises ValueError when the header and the arrays disagree."""
    path = path_str(path)
    with open(path, "rb") as f:  # FileNotFoundError, IsADirectoryError, ... as themselves
        with reading(path):
            size = os.fstat(f.fileno()).st_size
            if f.read(4) != b"PK\x03\x04":
                raise ValueError("not a zip archive (.npz)")
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                members = _members(zf, size)
                if HEADER_KEY not in members:
                    raise ValueError(f"no {HEADER_KEY!r} header")
                header = _header(zf, members.pop(HEADER_KEY))
                specs = {name: spec for name, (_, spec) in members.items()}
                if validate is not None:
                    validate(header, specs)
                arrays = {name: _read(zf, info, spec) for name, (info, spec) in members.items()}
    return header, arrays


@contextlib.contextmanager
def reading(path):
    """Turn whatever a malformed file makes the code below raise into one ValueError that
    names the file (a corrupt file can break a parser in many ways, none of them a bug)."""
    try:
        yield
    except MemoryError:
        raise
    except OSError as exc:
        if exc.errno not in (None, errno.EINVAL):
            raise  # a missing file or a failing disk is not the file's content
        raise ValueError(f"{path} is not a fusedrnn .npz file: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - every failure on file contents is the file's
        if isinstance(exc, ValueError) and str(exc).startswith(path):
            raise
        what = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path} is not a fusedrnn .npz file: {what}") from exc


def _members(zf: zipfile.ZipFile, size: int) -> dict:
    infos = zf.infolist()
    if len(infos) > _MAX_MEMBERS:
        raise ValueError(f"{len(infos)} members in the archive")
    members = {}
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise ValueError(f"unexpected member {info.filename!r} (only .npy arrays belong)")
        if not 0 <= info.header_offset < size:
            raise ValueError(f"member {info.filename!r} starts at {info.header_offset}, outside the file")
        name = info.filename[:-4]
        if name in members:
            raise ValueError(f"member {info.filename!r} appears twice")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size or info.header_offset + info.compress_size > size:
                raise ValueError(f"member {info.filename!r} claims {info.file_size} bytes, more than "
                                 "the file holds")
        elif info.file_size > _MAX_EXPANSION * info.compress_size + 2**16:
            raise ValueError(f"member {info.filename!r} would expand from {info.compress_size} to "
                             f"{info.file_size} bytes (a zip bomb?)")
        with zf.open(info) as f:
            spec, offset = _npy_header(f, info.filename)
        if offset + spec.nbytes != info.file_size:
            raise ValueError(f"member {info.filename!r} holds {info.file_size} bytes, but its "
                             f"array {spec.shape} {spec.dtype} needs {offset + spec.nbytes}")
        members[name] = (info, spec)
    return members


def _npy_header(f, member: str):
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, _NPY_HEADER_LIMIT)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, _NPY_HEADER_LIMIT)
    else:
        raise ValueError(f"member {member!r} has .npy format version {version}, not 1.0 or 2.0")
    if dtype.hasobject:
        raise ValueError(f"member {member!r} holds Python objects, which are never loaded")
    if any(s < 0 for s in shape):
        raise ValueError(f"member {member!r} has a negative shape {shape}")
    return Spec(tuple(int(s) for s in shape), dtype), f.tell()


def _header(zf: zipfile.ZipFile, member) -> dict:
    info, spec = member
    if spec.shape != () or spec.dtype.kind != "U":
        raise ValueError(f"the header must be a text scalar, got {spec.shape} {spec.dtype}")
    if spec.dtype.itemsize // 4 > _MAX_HEADER_CHARS:
        raise ValueError(f"the header holds {spec.dtype.itemsize // 4} characters, over the "
                         f"{_MAX_HEADER_CHARS} allowed")
    text = str(_read(zf, info, spec))
    try:
        header = json.loads(text)
    except RecursionError:
        raise ValueError("the header's JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"the header must be a JSON object, got {type(header).__name__}")
    return header


def _read(zf: zipfile.ZipFile, info, spec: Spec) -> np.ndarray:
    with zf.open(info) as f:
        arr = np.lib.format.read_array(f, allow_pickle=False, max_header_size=_NPY_HEADER_LIMIT)
        if f.read(1):
            raise ValueError(f"member {info.filename!r} has bytes after its array")
    if arr.shape != spec.shape or arr.dtype != spec.dtype:
        raise ValueError(f"member {info.filename!r} changed while being read")
    # A file written on a machine of the other byte order holds the same numbers.
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def check_shapes(path, specs: dict, expected, what: str) -> dict:
    """ValueError unless the stored arrays are exactly ``expected``, (name, shape) pairs, all
    floats; returns them as a dict.  The pairs may come from a generator: it is consumed only
    while every name it yields is stored, so a header that implies a million arrays costs
    no more than the file holds."""
    found = {}
    for name, shape in expected:
        spec = specs.get(name)
        if spec is None:
            raise ValueError(f"{path}: no array {name!r}, which the header's {what} needs")
        if spec.shape != tuple(shape):
            raise ValueError(f"{path}: array {name!r} has shape {spec.shape}, but the header's "
                             f"{what} needs {tuple(shape)}")
        if spec.dtype.kind != "f":
            raise ValueError(f"{path}: array {name!r} has dtype {spec.dtype}, not a float dtype")
        found[name] = tuple(shape)
    extra = [k for k in specs if k not in found]
    if extra:
        raise ValueError(f"{path}: unexpected array {extra[0]!r} for the header's {what}")
    return found

"""Atomic file writes: a file is either written whole or the old one is left untouched.

The data goes to a fresh temporary file in the destination folder (O_EXCL, so nobody else's
file is reused), is flushed to disk, and replaces the target with os.replace, which is atomic
within one file system; the folder is then synced so the rename itself survives a crash.

* A symlink is written through: its target is replaced, the link stays a link.
* An existing file keeps its permission bits (a new one gets 0666 minus the umask, as open()).
* A writer killed mid-save (SIGKILL, power loss) leaves its temporary file behind.  The name
  says whose it is, ``.<name>.<host>.<pid>.<random>.tmp``, so the next save of the same target
  removes the ones whose writer is gone: same host and no such process.  A live writer's file,
  or another host's, is never touched.
* Any failure (disk full, read-only folder, permissions) raises an OSError subclass that names
  the target path, and leaves the previous file as it was.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
from typing import IO, Callable

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def path_str(path, name: str = "path") -> str:
    """A file path given as open() takes one (str, bytes or os.PathLike), as a str; anything
    else is a TypeError naming the argument."""
    try:
        return os.fsdecode(path)
    except TypeError:
        raise TypeError(f"{name} must be a str, bytes or os.PathLike file path, got "
                        f"{type(path).__name__}") from None


def write_atomic(path, write: Callable[[IO], None], *, text: bool = False) -> None:
    """Call write(f) on a temporary file, then move it to path."""
    path = os.path.realpath(path_str(path))  # through symlinks, to the file they name
    directory, base = os.path.split(path)
    _remove_stale(directory, base)
    tmp = os.path.join(directory, f".{base}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        # Mode 0o666 lets the umask decide, as open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        _keep_mode(fd, path)
        opts = {"encoding": "utf-8", "newline": ""} if text else {}
        with os.fdopen(fd, "w" if text else "wb", **opts) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise
    _sync_directory(directory)


def _naming(exc: OSError, path: str) -> OSError:
    """The same kind of OSError (same errno, same subclass), naming the target path."""
    if exc.errno is None:
        return OSError(f"cannot save {path}: {exc}")
    return OSError(exc.errno, f"cannot save {path}: {exc.strerror or os.strerror(exc.errno)}", path)


def _keep_mode(fd: int, path: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)


def _stale_pattern(base: str):
    return re.compile(r"\." + re.escape(base) + r"\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.tmp")


def _remove_stale(directory: str, base: str) -> None:
    """Remove temporary files of earlier saves of this target whose writer no longer runs."""
    pattern = _stale_pattern(base)
    try:
        names = os.listdir(directory)
    except OSError:
        return  # the save itself will report what is wrong with the folder
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass  # gone already, or not ours to remove: harmless either way


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # (Windows' os.kill would terminate the process, not probe it)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, OverflowError, ValueError):
        return True  # cannot tell: keep the file
    return True


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


"""Atomic saves: stale temporary files of killed writers, symlinks, permission bits, and
failures (disk full, read-only folder) that leave the previous file intact."""

import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fusedrnn import GRU, _files, _npz


def _tmp_files(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "model.npz"
    host = _files._HOST
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".model.npz.{host}.{_dead_pid()}.0123456789ab.tmp",
            "live": f".model.npz.{host}.{live.pid}.0123456789ab.tmp",
            "mine": f".model.npz.{host}.{os.getpid()}.0123456789ab.tmp",
            "other_host": f".model.npz.elsewhere-1.{_dead_pid()}.0123456789ab.tmp",
            "other_target": f".other.npz.{host}.{_dead_pid()}.0123456789ab.tmp",
            "not_a_temp": f".model.npz.{host}.{_dead_pid()}.notahexrandom.tmp",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x" * 100)
        _files.write_atomic(target, lambda f: f.write(b"new"))
        left = set(os.listdir(tmp_path))
        assert names["dead"] not in left
        for kind in ("live", "mine", "other_host", "other_target", "not_a_temp"):
            assert names[kind] in left, kind
        assert target.read_bytes() == b"new"
    finally:
        live.kill()
        live.wait()


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from fusedrnn import _files
    def write(f):
        f.write(b"half a file")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
    _files.write_atomic(sys.argv[1], write)
""")


@pytest.mark.skipif(os.name != "posix", reason="stale files are recognised by probing pids (POSIX)")
def test_a_writer_killed_mid_save_leaves_a_file_the_next_save_removes(tmp_path):
    target = tmp_path / "ckpt.npz"
    target.write_bytes(b"previous")
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "writing"
        proc.kill()  # SIGKILL
        proc.wait()
        proc.stdout.close()
    # each new save removed the file of the writer killed before it: they never pile up
    assert len(_tmp_files(tmp_path)) == 1
    assert target.read_bytes() == b"previous"
    _files.write_atomic(target, lambda f: f.write(b"next"))
    assert _tmp_files(tmp_path) == []
    assert target.read_bytes() == b"next"


def test_save_writes_through_a_symlink(tmp_path):
    real = tmp_path / "store" / "layer.npz"
    real.parent.mkdir()
    link = tmp_path / "current.npz"
    try:
        link.symlink_to(os.path.join("store", "layer.npz"))  # relative, and dangling at first
    except OSError as e:  # Windows without the privilege to create symlinks
        pytest.skip(f"cannot create a symlink here: {e}")
    layer = GRU(3, 4, seed=0)
    layer.save(link)
    assert link.is_symlink() and real.is_file() and not real.is_symlink()
    layer2 = GRU(3, 4, seed=1)
    layer2.save(link)
    assert link.is_symlink()
    back = GRU.load(real)
    for k in layer2.params:
        np.testing.assert_array_equal(back.params[k], layer2.params[k])
    assert _tmp_files(tmp_path / "store") == [] and _tmp_files(tmp_path) == []


# Windows has a read-only flag, not POSIX permission bits and a umask.
_posix_modes = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@_posix_modes
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755, 0o444])
def test_save_keeps_the_permission_bits(tmp_path, mode):
    path = tmp_path / "layer.npz"
    GRU(3, 4, seed=0).save(path)
    os.chmod(path, mode)
    GRU(3, 4, seed=1).save(path)
    assert os.stat(path).st_mode & 0o7777 == mode


@_posix_modes
def test_new_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        GRU(3, 4).save(tmp_path / "a.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.npz").st_mode & 0o777 == 0o640


def _saved_layer(path):
    layer = GRU(3, 4, seed=0)
    layer.save(path)
    return layer


def _assert_intact(path, layer):
    back = GRU.load(path)
    for k in layer.params:
        np.testing.assert_array_equal(back.params[k], layer.params[k])
    assert _tmp_files(os.path.dirname(path)) == []


def test_disk_full_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "layer.npz"
    layer = _saved_layer(path)

    def full_disk(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 part of an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_npz, "_write_archive", full_disk)
    with pytest.raises(OSError) as info:
        GRU(3, 4, seed=5).save(path)
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    monkeypatch.undo()
    _assert_intact(path, layer)


@pytest.mark.parametrize("code,where", [(errno.EROFS, "open"), (errno.EACCES, "open"),
                                        (errno.EROFS, "replace"), (errno.EIO, "fsync")])
def test_read_only_folder_keeps_the_previous_file(tmp_path, monkeypatch, code, where):
    # Injected: the tests run as root, whom chmod does not stop, and mounting needs privileges.
    path = tmp_path / "layer.npz"
    layer = _saved_layer(path)
    real = getattr(os, where)

    def failing(*args, **kwargs):
        if where == "fsync" or str(args[0]).endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(_files.os, where, failing)
    with pytest.raises(OSError) as info:
        GRU(3, 4, seed=5).save(path)
    monkeypatch.undo()
    assert info.value.errno == code
    assert isinstance(info.value, {errno.EACCES: PermissionError}.get(code, OSError))
    assert str(path) in str(info.value)
    _assert_intact(path, layer)


def test_text_writes_and_non_os_errors_pass_through(tmp_path):
    path = tmp_path / "notes.txt"
    _files.write_atomic(path, lambda f: f.write("héllo\n"), text=True)
    assert path.read_text(encoding="utf-8") == "héllo\n"

    def broken(f):
        f.write("partial")
        raise KeyError("not an OSError")

    with pytest.raises(KeyError):
        _files.write_atomic(path, broken, text=True)
    assert path.read_text(encoding="utf-8") == "héllo\n" and _tmp_files(tmp_path) == []


def test_paths_may_be_str_bytes_or_path_like_as_for_open(tmp_path, rng):
    from fusedrnn import Dense, Recurrent, Sequential
    from fusedrnn.keras import models
    layer = GRU(3, 4, seed=0)
    model = Sequential([Recurrent(GRU(3, 4)), Dense(4, 1)], seed=0)
    x = rng.random((2, 5, 3)).astype(np.float32)
    for kind, as_kind in (("str", str), ("bytes", os.fsencode), ("pathlib", lambda p: p)):
        layer_path, model_path = tmp_path / f"{kind}.npz", tmp_path / f"{kind}.keras"
        weights_path = tmp_path / f"{kind}.weights.npz"
        layer.save(as_kind(layer_path))
        assert os.listdir(tmp_path).count(layer_path.name) == 1
        np.testing.assert_array_equal(GRU.load(as_kind(layer_path)).params["weight_hh_l0"],
                                      layer.params["weight_hh_l0"])
        model.save(as_kind(model_path))
        np.testing.assert_array_equal(models.load_model(as_kind(model_path)).predict(x), model.predict(x))
        model.save_weights(as_kind(weights_path))
        model.load_weights(as_kind(weights_path))
    assert not [n for n in os.listdir(tmp_path) if "b'" in n]
    for bad in (3, None, ["a.npz"]):
        for call, name in ((lambda: layer.save(bad), "path"), (lambda: GRU.load(bad), "path"),
                           (lambda: model.save(bad), "filepath"),
                           (lambda: model.load_weights(bad), "filepath"),
                           (lambda: models.load_model(bad), "filepath")):
            with pytest.raises(TypeError, match=f"^{name} must be a str, bytes or os.PathLike "
                                                f"file path, got {type(bad).__name__}$"):
                call()

"""The code paths that differ on Windows and macOS, run here with the platform answers swapped:
what gets loaded, and what is looked up, where a POSIX call would fail."""

import os
import sys
import types

import pytest

import fusedrnn
from fusedrnn import _blas
from fusedrnn.bench import timing


def _fake_openblas_wheel(tmp_path, files):
    for name in files:
        (tmp_path / name).write_bytes(b"")
    return types.SimpleNamespace(get_lib_dir=lambda: str(tmp_path),
                                 get_library=lambda fullname=False: files[0])


def test_windows_loads_the_dll_not_the_import_library(tmp_path, monkeypatch):
    # scipy_openblas32 names the import library (.lib) on Windows; loading it would fail.
    fake = _fake_openblas_wheel(tmp_path, ["libscipy_openblas.lib", "libscipy_openblas.dll"])
    loaded, dll_dirs = [], []
    monkeypatch.setitem(sys.modules, "scipy_openblas32", fake)
    monkeypatch.setattr(_blas.sys, "platform", "win32")
    monkeypatch.setattr(_blas.os, "add_dll_directory", dll_dirs.append, raising=False)
    monkeypatch.setattr(_blas.ctypes, "CDLL", lambda path, mode=0: loaded.append(path))
    monkeypatch.setattr(_blas, "_dll_directory", None)
    _blas._load_openblas()
    assert dll_dirs == [str(tmp_path)]
    assert loaded == [str(tmp_path / "libscipy_openblas.dll")]


def test_posix_loads_the_named_library_globally(tmp_path, monkeypatch):
    fake = _fake_openblas_wheel(tmp_path, ["libscipy_openblas.dylib"])
    loaded = []
    monkeypatch.setitem(sys.modules, "scipy_openblas32", fake)
    monkeypatch.setattr(_blas.sys, "platform", "darwin")
    monkeypatch.setattr(_blas.ctypes, "CDLL", lambda path, mode=0: loaded.append((path, mode)))
    _blas._load_openblas()
    assert loaded == [(str(tmp_path / "libscipy_openblas.dylib"), _blas.ctypes.RTLD_GLOBAL)]


def test_malloc_trim_is_looked_up_on_linux_only(monkeypatch):
    # ctypes.CDLL(None) raises TypeError on Windows: it must not be called there.
    def refuse(*args, **kwargs):
        raise AssertionError("CDLL called off Linux")

    for platform in ("win32", "darwin"):
        monkeypatch.setattr(timing.sys, "platform", platform)
        monkeypatch.setattr(timing.ctypes, "CDLL", refuse)
        assert timing._find_malloc_trim() is None
    monkeypatch.undo()
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert callable(timing._find_malloc_trim())


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_one_openblas_is_loaded_and_it_is_the_dependencys():
    # (NumPy's own OpenBLAS, the 64-bit-integer build libscipy_openblas64_, is another library.)
    import scipy_openblas32

    fusedrnn.build_info()
    with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
        paths = {os.path.realpath(line.split()[-1]) for line in f if "/" in line}
    ours = {p for p in paths if os.path.basename(p).startswith("libscipy_openblas.")}
    assert ours == {os.path.realpath(os.path.join(scipy_openblas32.get_lib_dir(),
                                                  scipy_openblas32.get_library(True)))}
    package = os.path.dirname(os.path.realpath(fusedrnn.__file__))
    assert [p for p in paths if p.startswith(package) and "openblas" in p.lower()] == []

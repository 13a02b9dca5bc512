"""Load the compiled module after configuring the BLAS it links against.

fusedrnn links OpenBLAS from the ``scipy-openblas32`` wheel.  OpenBLAS picks its kernels when
the library is loaded, from the ``OPENBLAS_CORETYPE`` environment variable or its own CPU
detection.  Its detection does not know every AMD CPU with AVX-512 (Zen 4/Zen 5) and may give
them the AVX2 (Haswell) kernels, about half the speed.  So, before the library is loaded: if
the user has not set ``OPENBLAS_CORETYPE`` and the CPU is an AMD one with the AVX-512 subsets
OpenBLAS's SkylakeX kernels use, fusedrnn sets it to ``SkylakeX`` for the duration of the load
(the process environment is restored afterwards).  Intel CPUs are left to OpenBLAS's own
detection, which knows them.  ``fusedrnn.build_info()["blas_core"]`` shows the result.

Importing ``scipy_openblas32`` loads the library itself (its ``__init__`` calls into it), so the
variable is set before that import.  If something imported ``scipy_openblas32`` before fusedrnn,
the library is already loaded with its own choice and nothing here can change it.

``_FUSEDRNN_CPUINFO`` (private, for the tests) names a file read in place of /proc/cpuinfo.
"""

from __future__ import annotations

import ctypes
import os
import sys

_AVX512_FLAGS = ("avx512f", "avx512dq", "avx512bw", "avx512vl")


def _cpu_flags() -> tuple[str, set[str]]:
    """(vendor, flags) read from /proc/cpuinfo; empty on other systems."""
    try:
        with open(os.environ.get("_FUSEDRNN_CPUINFO", "/proc/cpuinfo"), encoding="ascii",
                  errors="replace") as f:
            text = f.read(1 << 16)
    except OSError:
        return "", set()
    vendor, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor and flags:
            break
    return vendor, flags


def _wanted_coretype() -> str | None:
    if "OPENBLAS_CORETYPE" in os.environ:
        return None  # the user's choice stands
    vendor, flags = _cpu_flags()
    if vendor == "AuthenticAMD" and all(f in flags for f in _AVX512_FLAGS):
        return "SkylakeX"
    return None


def _load_openblas() -> None:
    """Load the shared OpenBLAS so that the extension's reference to it resolves to this copy."""
    global _dll_directory
    import scipy_openblas32  # older releases only locate the library; newer ones also load it

    lib_dir = scipy_openblas32.get_lib_dir()
    if sys.platform == "win32":
        # There get_library(True) names the import library (.lib), which cannot be loaded; the
        # extension finds the DLL by its name on the DLL search path.
        _dll_directory = os.add_dll_directory(lib_dir)
        names = [n for n in os.listdir(lib_dir) if n.lower().endswith(".dll")]
    else:
        names = [scipy_openblas32.get_library(True)]
    for name in names:
        # By path, so that the extension uses this copy whatever the install layout.
        ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)


_dll_directory = None  # kept: closing it would take the folder off the DLL search path


def load_core():
    coretype = _wanted_coretype()
    if coretype:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        _load_openblas()
        from . import _core
    finally:
        if coretype:
            del os.environ["OPENBLAS_CORETYPE"]
    return _core

"""Load the compiled module after configuring the BLAS it links against.

fusedrnn links OpenBLAS from the ``scipy-openblas32`` wheel.  OpenBLAS picks its kernels when
the library is loaded, from the ``OPENBLAS_CORETYPE`` environment variable or its own CPU
detection.  Its detection does not know every AMD CPU with AVX-512 (Zen 4/Zen 5) and may give
them the AVX2 (Haswell) kernels, about half the speed.  So, before the library is loaded: if
the user has not set ``OPENBLAS_CORETYPE`` and the CPU is an AMD one with the AVX-512 subsets
OpenBLAS's SkylakeX kernels use, fusedrnn sets it to ``SkylakeX`` for the duration of the load
(the process environment is restored afterwards).  Intel CPUs are left to OpenBLAS's own
detection, which knows them.  ``fusedrnn.build_info()["blas_core"]`` shows the result.
"""

from __future__ import annotations

import ctypes
import os

_AVX512_FLAGS = ("avx512f", "avx512dq", "avx512bw", "avx512vl")


def _cpu_flags() -> tuple[str, set[str]]:
    """(vendor, flags) read from /proc/cpuinfo; empty on other systems."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
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
        return None
    vendor, flags = _cpu_flags()
    if vendor == "AuthenticAMD" and all(f in flags for f in _AVX512_FLAGS):
        return "SkylakeX"
    return None


def load_core():
    import scipy_openblas32

    lib = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))
    coretype = _wanted_coretype()
    if coretype:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        # Loaded by path first so the extension finds it whatever the install layout.
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        from . import _core
    finally:
        if coretype:
            del os.environ["OPENBLAS_CORETYPE"]
    return _core

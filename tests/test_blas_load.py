"""The OpenBLAS kernel family is chosen before the library loads (fusedrnn/_blas.py).

Each case is a fresh interpreter, since OpenBLAS picks its kernels once, when it is loaded.  A
fake /proc/cpuinfo (the private _FUSEDRNN_CPUINFO hook) stands for the CPU; the answer is read
back from the loaded library itself (build_info()["blas_core"], openblas_get_corename).  Only
the name is read: no BLAS routine runs, so kernels this CPU cannot execute are never called.
"""

import os
import platform
import subprocess
import sys

import pytest

# The kernel family names are those of OpenBLAS's x86-64 builds.
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="OpenBLAS's x86-64 kernel families")

_PRINT = ("import os, fusedrnn; print(fusedrnn.build_info()['blas_core']); "
          "print(os.environ.get('OPENBLAS_CORETYPE', '-'))")

_AVX512 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512dq avx512cd avx512bw avx512vl"


def _cpuinfo(tmp_path, vendor, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: test CPU\nflags\t\t: {flags}\n\n")
    return str(path)


def _child(env):
    """(blas_core, OPENBLAS_CORETYPE after the import) of a fresh interpreter."""
    full = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "_FUSEDRNN_CPUINFO")}
    full.update(env)
    proc = subprocess.run([sys.executable, "-c", _PRINT], capture_output=True, text=True, env=full,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    core, after = proc.stdout.split()
    return core.lower(), after


@pytest.fixture(scope="module")
def own_choice():
    """What OpenBLAS picks by itself on this machine (the real /proc/cpuinfo has no say in it)."""
    return _child({"_FUSEDRNN_CPUINFO": os.devnull})[0]


def test_amd_with_avx512_gets_the_skylakex_kernels(tmp_path, own_choice):
    core, after = _child({"_FUSEDRNN_CPUINFO": _cpuinfo(tmp_path, "AuthenticAMD", _AVX512)})
    assert core == "skylakex"
    assert after == "-"  # the variable was set for the load only


def test_amd_without_avx512_is_left_to_openblas(tmp_path, own_choice):
    core, _ = _child({"_FUSEDRNN_CPUINFO": _cpuinfo(tmp_path, "AuthenticAMD", "fpu sse sse2 avx avx2 fma")})
    assert core == own_choice


def test_intel_is_left_to_openblas(tmp_path, own_choice):
    core, _ = _child({"_FUSEDRNN_CPUINFO": _cpuinfo(tmp_path, "GenuineIntel", _AVX512)})
    assert core == own_choice


def test_the_users_coretype_wins(tmp_path, own_choice):
    # A family that is neither SkylakeX nor OpenBLAS's own pick here, so the result shows whose
    # choice was taken.
    user = next(c for c in ("Sandybridge", "Nehalem") if c.lower() != own_choice)
    core, after = _child({"_FUSEDRNN_CPUINFO": _cpuinfo(tmp_path, "AuthenticAMD", _AVX512),
                          "OPENBLAS_CORETYPE": user})
    assert (core, after) == (user.lower(), user)

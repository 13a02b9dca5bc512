"""The run-time kernel choice (csrc/cpu/dispatch.cc reads CPUID and XGETBV itself, the same code
on every compiler) against the Linux kernel's own view of the CPU: /proc/cpuinfo lists only
the features the CPU has and the kernel saves the registers of."""
import platform

import pytest

from fusedrnn import _core
from fusedrnn._blas import _cpu_flags

X86_64 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.mark.skipif(not (X86_64 and _cpu_flags()[1]), reason="needs /proc/cpuinfo on x86-64")
def test_best_isa_matches_proc_cpuinfo():
    flags = _cpu_flags()[1]
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma", "f16c"} <= flags:
        expected = "avx512"
    elif {"avx2", "fma", "f16c"} <= flags:
        expected = "avx2"
    else:
        expected = "baseline"
    assert _core.best_isa() == expected, sorted(f for f in flags if f.startswith(("avx", "fma", "f16c")))


@pytest.mark.skipif(X86_64, reason="x86-64 has the AVX variants")
def test_other_architectures_have_the_baseline_only():
    assert _core.best_isa() == "baseline"
    for name in ("avx2", "avx512"):
        with pytest.raises(ValueError, match="not compiled"):
            _core.set_isa(name)

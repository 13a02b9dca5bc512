"""Build facts and thread control."""

from __future__ import annotations

from . import _core
from ._device import cuda_device_count


def build_info() -> dict:
    """What this build and CPU use: kernel instruction set, BLAS, threads, CUDA.

    threads_default is the thread count at import: the CPUs this process may use (its affinity
    mask, capped by a cgroup CPU quota; threads_cpus), capped by FUSEDRNN_NUM_THREADS if set,
    else by OMP_NUM_THREADS; threads_source says which of these decided it.  threads_contended
    is True while the kernels run on one thread because other processes hold the cores.  openmp
    is False in a build without OpenMP, whose packed time loop runs on the calling thread.
    l2_cache_bytes is one core's L2 as the system reports it (0: not reported), from which the
    packed loops size the slices of their products."""
    default = _core.thread_default()
    contention = _core.contention_stats()
    return {
        "version": _version(),
        "isa": _core.isa(),
        "best_isa": _core.best_isa(),
        "blas": "OpenBLAS (scipy-openblas32)",
        "blas_core": _core.blas_corename(),
        "blas_config": _core.blas_config().strip(),
        "num_threads": get_num_threads(),
        "threads_default": default["threads"],
        "threads_source": default["source"],
        "threads_cpus": default["cpus"],
        "threads_contended": contention["contended"],
        "openmp": bool(_core.openmp),
        "cached_bytes": int(_core.cached_bytes()),
        "l2_cache_bytes": int(_core.l2_cache_bytes()),
        "cuda_compiled": bool(_core.cuda_compiled),
        "cuda_emulated": bool(_core.cuda_emulated),
        "cuda_device_count": cuda_device_count(),
        "cuda_available": cuda_available(),
    }


def _warn_environment() -> None:
    """A thread-count environment variable that is not an integer >= 1 is ignored: say so."""
    problem = _core.thread_default()["problem"]
    if problem:
        import warnings

        warnings.warn(f"fusedrnn: {problem}; using {_core.thread_default()['threads']} threads",
                      RuntimeWarning, stacklevel=2)


_warn_environment()


def _version() -> str:
    from . import __version__

    return __version__


def cuda_available() -> bool:
    """True when the CUDA kernels are compiled in and a device is present (the emulated device
    of a FUSEDRNN_CUDA_EMULATION build counts: build_info()["cuda_emulated"] tells)."""
    return bool(_core.cuda_compiled) and cuda_device_count() > 0


def get_num_threads() -> int:
    """Threads the kernels use (their own time loop and the BLAS pool)."""
    return int(_core.num_threads())


# The most threads set_num_threads takes (the kernels count them in a C int).
_MAX_THREADS = 2**31 - 1


def set_num_threads(n: int) -> None:
    """Use n threads (1 <= n <= 2**31 - 1) for the kernels.

    A process forked (multiprocessing's default on Linux) after fusedrnn ran on several
    threads runs the kernels on one thread: GNU OpenMP cannot start threads there.  Use the
    'spawn' or 'forkserver' start method for multi-threaded workers."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > _MAX_THREADS:
        raise ValueError(f"n must be in 1..{_MAX_THREADS} (the most threads the kernels take), "
                         f"got {n}")
    _core.set_num_threads(int(n))
    if n > 1 and _core.threads_disabled_by_fork():
        import warnings

        warnings.warn("this process was forked after fusedrnn's threads started; GNU OpenMP cannot "
                      "start threads here, so the kernels run on one thread (use the 'spawn' or "
                      "'forkserver' start method for multi-threaded workers)", RuntimeWarning,
                      stacklevel=2)


def empty_cache() -> None:
    """Return the scratch memory kept between calls to the system.

    Calls keep up to 256 MiB of large scratch blocks (workspaces, gate gradients, packed
    weights) for the next call, so that memory is not zero-filled by the system again on
    every call; build_info()["cached_bytes"] shows how much is kept now."""
    _core.empty_cache()

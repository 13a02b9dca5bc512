"""How `fusedrnn bench` measures a case once it is validated: time, memory, other processes.

For each case (``run_case``):

1. Validation first (validation.py): a case where any contender disagrees with the float64
   reference is not timed and reports FAILED.
2. Timing.  Warm-up calls, then rounds: in every round each contender runs a block of calls,
   one contender after the other (round robin), so a drift of the machine hits all of them
   alike.  Before a contender's block the process waits until the thread pools of the
   previous one are idle: an OpenBLAS pool keeps polling for ~0.1 s after a call, an OpenMP
   pool for a few ms, and on a small machine that polling steals cores from whoever runs
   next.  A block of calls under 0.1 s starts with an untimed call (it brings the pool back
   up; a longer call hardly notices).  Blocks
   are sized so that every contender gets at least ``repeats`` calls and ``min_time``
   seconds of timed calls in about five rounds.  Reported: median, interquartile range, minimum.
3. Memory.  One more call per contender, measuring its peak extra memory (see MEMORY_HELP).
4. Other processes: the share of the machine's CPU time they took while the case ran, so the
   report can mark a case whose timings were disturbed.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import math
import os
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass, field, replace

import numpy as np

from .. import _core
from . import contenders as _contenders
from .cases import Case, Inputs, make_inputs
from .validation import validate

ROUNDS = 5  # blocks are sized to finish in about this many rounds
MIN_ROUNDS = 3
MAX_ROUNDS = 50
PROBE_STEPS = 4  # the numpy reference's cost is estimated from a call on this many steps
LEAD_IN_BELOW = 0.1  # blocks of calls shorter than this (seconds) start with an untimed call

TIMING_HELP = (
    "Timing: --warmup calls per contender, then rounds in which every contender runs a block of "
    "calls in turn (round robin), until each has at least --repeats timed calls and --min-time "
    "seconds of them (at least 3 rounds). Before each block the process waits (at most --settle "
    "seconds) until the previous contender's worker threads are idle; a block of calls under 0.1 s "
    "starts with one untimed call. Reported: the median of the per-call times, the interquartile range and "
    "the minimum. The numpy reference is skipped ('skipped (slow)') when a call on 4 steps, "
    "scaled to T, predicts more than --numpy-limit seconds for its warm-up and repeats."
)


@dataclass
class Settings:
    contenders: tuple = ("fusedrnn", "numpy", "torch")
    warmup: int = 2
    repeats: int = 5
    min_time: float = 0.3
    numpy_limit: float = 30.0
    settle: float = 0.5
    seed: int = 0
    memory: bool = True
    # contender name -> why it cannot run on this machine: listed in every case as
    # 'unavailable: <why>', never built, validated or timed (the CLI fills it: torch-cuda)
    unavailable: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------
# threads of this process
# ----------------------------------------------------------------------------

def settle(limit: float) -> float:
    """Wait until no other thread of this process is runnable, at most `limit` seconds.

    Worker pools poll for a while after a call before they sleep (OpenBLAS ~2^28 cycles, ~0.1 s;
    OpenMP a few ms).  Without /proc the wait is a plain sleep of min(limit, 0.15) s.
    Returns the seconds waited.
    """
    start = time.perf_counter()
    if limit <= 0:
        return 0.0
    if not os.path.isdir("/proc/self/task"):
        time.sleep(min(limit, 0.15))
        return time.perf_counter() - start
    me = threading.get_native_id()
    while time.perf_counter() - start < limit:
        if not any(_runnable(tid) for tid in os.listdir("/proc/self/task") if int(tid) != me):
            break
        time.sleep(0.001)
    return time.perf_counter() - start


def _runnable(tid: str) -> bool:
    try:
        with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:  # the thread exited
        return False
    return stat[stat.rfind(")") + 2:][:1] == "R"


# ----------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------

MEMORY_HELP = (
    "peak MiB: the peak resident memory of the process during one call minus its resident memory "
    "just before it (Linux: VmHWM, reset through /proc/self/clear_refs), measured after warm-up and "
    "after returning freed heap memory to the OS (malloc_trim). It counts everything the call "
    "touches: outputs, training caches, gradients, workspaces, torch's tensors; not the inputs and "
    "weights, which exist before the call, nor one-time thread and BLAS buffers. Where "
    "/proc/self/clear_refs is missing it falls back to tracemalloc, which sees NumPy arrays only "
    "(torch then shows n/a); the output header names the method used."
)


@functools.lru_cache(maxsize=None)
def memory_method() -> str:
    """'rss' where the peak resident size can be reset (Linux), else 'tracemalloc'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
    except (OSError, KeyError, ValueError):
        return "tracemalloc"
    return "rss"


def _find_malloc_trim():
    """glibc's malloc_trim, or None.  Only Linux is asked: CDLL(None), the symbols already in
    the process, raises TypeError on Windows; musl and macOS have no malloc_trim."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_malloc_trim = _find_malloc_trim()


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_extra_bytes(fn, name: str):
    """Peak extra memory of one call of fn (see MEMORY_HELP); None when it cannot be measured."""
    gc.collect()
    if memory_method() == "tracemalloc":
        if name in ("torch", "onnxruntime"):  # their allocations bypass Python's allocator
            return None
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            ret = fn()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        del ret
        return max(0, peak - before)
    if _malloc_trim is not None:
        _malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = _status_kib("VmRSS")
    ret = fn()
    peak = _status_kib("VmHWM")
    del ret
    return max(0, peak - before) * 1024


# ----------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------

def _timed(fn) -> float:
    start = time.perf_counter()
    ret = fn()
    elapsed = time.perf_counter() - start
    del ret  # freeing the results is not part of the call
    return elapsed


def _time_call(contender) -> float:
    """Seconds of one contender.run(): CUDA events for device contenders, else wall time."""
    timed_run = getattr(contender, "timed_run", None)
    if timed_run is None:
        return _timed(contender.run)
    elapsed, ret = timed_run()
    del ret
    return elapsed


def estimate_call(name: str, case: Case, inputs: Inputs) -> float:
    """Seconds one call of contender `name` should take, from a call on PROBE_STEPS steps."""
    steps = min(case.T, PROBE_STEPS)
    probe = Inputs(inputs.x[:steps], inputs.params, inputs.h0, inputs.c0,
                   None if inputs.dout is None else inputs.dout[:steps])
    contender = _contenders.make(name, replace(case, T=steps), probe)
    return _timed(contender.run) * case.T / steps


def _block_size(samples, estimate: float, rounds: int, settings: Settings) -> int:
    """Calls for the next block: what is still missing, spread over the rounds left of ROUNDS."""
    per_call = float(np.median(samples)) if samples else estimate
    missing = max(settings.repeats - len(samples), (settings.min_time - sum(samples)) / max(per_call, 1e-9))
    return max(1, math.ceil(missing / max(1, ROUNDS - rounds)))


def time_contenders(contenders: dict, settings: Settings) -> dict:
    """Per-call times in seconds for each contender, round robin (see the module docstring)."""
    names = list(contenders)
    estimate = {}
    gc.collect()
    gc_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of one contender's call is noise, not its cost
    try:
        for _ in range(settings.warmup):
            for name in names:
                settle(settings.settle)
                contenders[name].release()
                t = _time_call(contenders[name])
                estimate[name] = min(t, estimate.get(name, t))  # the first call may pay one-time costs
        samples = {name: [] for name in names}
        rounds = 0
        while True:
            block = {name: _block_size(samples[name], estimate[name], rounds, settings) for name in names}
            for name in names:
                contender = contenders[name]
                settle(settings.settle)
                if estimate[name] < LEAD_IN_BELOW:
                    contender.release()
                    _time_call(contender)  # untimed: wakes the pool after the wait
                for _ in range(block[name]):
                    contender.release()
                    samples[name].append(_time_call(contender))
            rounds += 1
            done = all(len(s) >= settings.repeats and sum(s) >= settings.min_time for s in samples.values())
            if (done and rounds >= MIN_ROUNDS) or rounds >= MAX_ROUNDS:
                return samples
    finally:
        if gc_enabled:
            gc.enable()


def statistics(samples) -> dict:
    s = np.asarray(samples) * 1e3
    q1, median, q3 = np.percentile(s, [25, 50, 75])
    return {"median_ms": float(median), "q1_ms": float(q1), "q3_ms": float(q3),
            "iqr_ms": float(q3 - q1), "min_ms": float(s.min()), "calls": int(s.size)}


# ----------------------------------------------------------------------------
# other processes
# ----------------------------------------------------------------------------

def _cpu_seconds():
    """(busy seconds of the whole machine, CPU seconds of this process); None without /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: idle and iowait are the idle ones
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_load(before, after, wall: float):
    """Fraction of all CPUs that other processes (and the hypervisor) used over `wall` seconds."""
    if before is None or after is None or wall <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))


# ----------------------------------------------------------------------------
# one case
# ----------------------------------------------------------------------------

def run_case(case: Case, settings: Settings) -> dict:
    """Validate, time and measure one case.  Returns a JSON-ready dict:

    case (the configuration), label, flops, validation (see validate), and results: per
    contender a status ('ok', 'skipped (slow)', 'not timed (validation failed)', 'excluded: ...'
    for a case it cannot run, 'unavailable: ...' for settings.unavailable) with, when
    timed, median_ms, q1_ms, q3_ms, iqr_ms, min_ms, calls, gflops, speedup (the contender's
    median over fusedrnn's: how many times faster fusedrnn is) and peak_bytes, and for fusedrnn
    guard_fallbacks (how often its kernels fell back to one thread meanwhile); other_load, the
    fraction of the machine's CPU time other processes took while the case ran (None if unknown).
    """
    started = time.perf_counter()
    cpu_before = _cpu_seconds()
    result = {"case": case.as_dict(), "label": case.label, "flops": case.flops, "results": {}}
    # Contenders that cannot run here (settings.unavailable) or this case (onnxruntime outside fwd
    # float32) are left out of it.
    active = []
    for name in settings.contenders:
        reason = _contenders.excluded(name, case)
        if name in settings.unavailable:
            result["results"][name] = {"status": f"unavailable: {settings.unavailable[name]}"}
        elif reason:
            result["results"][name] = {"status": reason}
        else:
            active.append(name)
    result["validation"] = validate(case, active, settings.seed)
    if result["validation"]["status"] != "ok":
        for name in active:
            result["results"][name] = {"status": "not timed (validation failed)"}
        result["seconds"] = time.perf_counter() - started
        result["other_load"] = None
        return result

    inputs = make_inputs(case, settings.seed)
    contenders = {}
    for name in active:
        if name == "numpy":
            per_call = estimate_call(name, case, inputs)
            if per_call * (settings.warmup + settings.repeats) > settings.numpy_limit:
                result["results"][name] = {"status": "skipped (slow)", "estimated_ms": per_call * 1e3}
                continue
        contenders[name] = _contenders.make(name, case, inputs)

    # fusedrnn's kernels drop to one thread for a while when they find the cores taken (the
    # contention guard, threading.h): a case timed through such a spell mixes one- and
    # multi-thread calls.  Counted: the spells begun while timing, and one already running then.
    guard = _core.contention_stats()
    samples = time_contenders(contenders, settings) if contenders else {}
    for name, times in samples.items():
        entry = {"status": "ok", **statistics(times)}
        entry["gflops"] = case.flops / (entry["median_ms"] * 1e-3) / 1e9
        if name == "fusedrnn":
            entry["guard_fallbacks"] = (_core.contention_stats()["fallbacks"] - guard["fallbacks"]
                                        + int(guard["contended"]))
        result["results"][name] = entry
    ours = result["results"].get("fusedrnn", {}).get("median_ms")
    for entry in result["results"].values():
        entry["speedup"] = entry["median_ms"] / ours if ours and "median_ms" in entry else None

    for name, contender in contenders.items():
        peak = None
        if settings.memory and not getattr(contender, "device_memory", False):
            settle(settings.settle)
            contender.release()
            peak = peak_extra_bytes(contender.run, name)
            contender.release()
        result["results"][name]["peak_bytes"] = peak
    # keep the order the contenders were asked for
    result["results"] = {name: result["results"][name] for name in settings.contenders}
    result["seconds"] = time.perf_counter() - started
    result["other_load"] = other_load(cpu_before, _cpu_seconds(), result["seconds"])
    return result


# ----------------------------------------------------------------------------
# threads
# ----------------------------------------------------------------------------

def set_threads(n: int, contenders) -> dict:
    """Give every contender n threads.  Returns what each ended up with (for the header)."""
    import fusedrnn

    fusedrnn.set_num_threads(n)
    threads = {"requested": n, "fusedrnn": fusedrnn.get_num_threads()}
    if "torch" in contenders:
        import torch

        torch.set_num_threads(n)
        threads["torch"] = torch.get_num_threads()
    if "onnxruntime" in contenders:
        _contenders.set_onnxruntime_threads(n)
        threads["onnxruntime"] = n  # the session's intra_op_num_threads (inter_op 1)
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        threads["numpy"] = ("not set: threadpoolctl is not installed, so NumPy's BLAS uses its "
                            "own default (all cores, or OPENBLAS_NUM_THREADS)")
        return threads
    # Only the other BLAS libraries (NumPy's): fusedrnn sizes its own BLAS pool itself, and
    # giving that pool threads of its own would make it compete with the kernels' threads.
    ours = _fusedrnn_blas_path()
    others = [lib for lib in ThreadpoolController().lib_controllers
              if lib.user_api == "blas" and os.path.realpath(lib.filepath) != ours]
    for lib in others:
        lib.set_num_threads(n)
    threads["numpy"] = n if others else "not set: threadpoolctl finds no BLAS library besides fusedrnn's"
    return threads


def _fusedrnn_blas_path():
    try:
        import scipy_openblas32
    except ImportError:
        return None
    return os.path.realpath(os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True)))

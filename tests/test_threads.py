"""Thread control, and processes forked after the kernels' threads started."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fusedrnn
from fusedrnn import ops
from fusedrnn import reference as ref

_FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import numpy as np
    import fusedrnn
    from fusedrnn import ops

    def work(seed):
        rng = np.random.default_rng(seed)
        T, B, H = 20, 32, 128     # big enough for two threads and the split BLAS products
        x = rng.standard_normal((T, B, H)).astype(np.float32)
        w = (rng.standard_normal((4 * H, H)) * 0.05).astype(np.float32)
        out, h, c, cache = ops.lstm_forward(x, w, w, training=True)
        g = ops.lstm_backward(cache, np.ones_like(out))
        return float(np.abs(g["dx"]).sum()), fusedrnn.get_num_threads()

    if __name__ == "__main__":
        fusedrnn.set_num_threads(2)
        parent = work(0)          # starts the thread pool in the parent
        with mp.get_context("fork").Pool(2) as pool:
            children = pool.map(work, [0, 1])
        print(parent[0] == children[0][0], children[0][1], children[1][1])
""")


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="this platform has no fork start method")
def test_forked_children_do_not_hang(tmp_path):
    script = tmp_path / "fork_after_threads.py"
    script.write_text(_FORK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    same, t0, t1 = proc.stdout.split()
    assert same == "True"          # the child computes what the parent computed
    assert (t0, t1) == ("1", "1")  # and runs on one thread


@pytest.mark.parametrize("threads", [1, 2])
def test_results_do_not_depend_on_threads(rng, threads):
    T, B, I, H = 12, 16, 40, 90
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih = (rng.standard_normal((3 * H, I)) * 0.1).astype(np.float32)
    w_hh = (rng.standard_normal((3 * H, H)) * 0.1).astype(np.float32)
    before = fusedrnn.get_num_threads()
    try:
        fusedrnn.set_num_threads(threads)
        assert fusedrnn.get_num_threads() == threads
        out, h_n, cache = ops.gru_forward(x, w_ih, w_hh, training=True)
        grads = ops.gru_backward(cache, np.ones_like(out))
    finally:
        fusedrnn.set_num_threads(before)
    r_out, r_h, r_cache = ref.gru_forward(x, w_ih, w_hh)
    r_grads = ref.gru_backward(r_cache, np.ones_like(r_out))
    np.testing.assert_allclose(out, r_out, atol=1e-5)
    for key in r_grads:
        scale = max(1.0, float(np.abs(r_grads[key]).max()))
        assert np.abs(grads[key] - r_grads[key]).max() / scale < 1e-5, key


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                     ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects(bad, exc):
    with pytest.raises(exc, match="n must"):
        fusedrnn.set_num_threads(bad)


@pytest.mark.parametrize("bad", [2**31, 2**40, 10**30])
def test_set_num_threads_names_the_range_above_it(bad):
    before = fusedrnn.get_num_threads()
    with pytest.raises(ValueError, match=rf"^n must be in 1\.\.2147483647 .*, got {bad}$"):
        fusedrnn.set_num_threads(bad)
    assert fusedrnn.get_num_threads() == before


# --- the default thread count ---------------------------------------------------------------

_PRINT_THREADS = ("import fusedrnn; i = fusedrnn.build_info(); "
                  "print(fusedrnn.get_num_threads(), i['threads_default'], i['threads_cpus'], "
                  "repr(i['threads_source']))")


def _child_threads(env=None, pin_one_cpu=False):
    """(threads, default, cpus, source, stderr) of a fresh interpreter."""
    import os

    full_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FUSEDRNN_NUM_THREADS")}
    full_env.update(env or {})
    code = _PRINT_THREADS
    if pin_one_cpu:  # the mask is set before fusedrnn is imported, as taskset -c would
        code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " + code
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    threads, default, cpus, source = proc.stdout.split(maxsplit=3)
    return int(threads), int(default), int(cpus), eval(source), proc.stderr


# The affinity mask (os.sched_getaffinity/sched_setaffinity) exists on Linux only.
_needs_affinity = pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"),
                                     reason="no CPU affinity API (Linux only)")


def _usable_cpus():
    import os

    return len(os.sched_getaffinity(0))


@_needs_affinity
def test_default_is_the_usable_cpus():
    threads, default, cpus, source, err = _child_threads()
    assert threads == default == cpus
    assert 1 <= cpus <= _usable_cpus()
    assert source in ("affinity", "cgroup quota")
    assert "RuntimeWarning" not in err


@_needs_affinity
def test_default_follows_the_affinity_mask():
    threads, default, cpus, source, _ = _child_threads(pin_one_cpu=True)
    assert (threads, default, cpus, source) == (1, 1, 1, "affinity")


@pytest.mark.skipif(not __import__("shutil").which("taskset"), reason="taskset is not installed")
@_needs_affinity
def test_default_follows_taskset():
    import os

    cpu = str(min(os.sched_getaffinity(0)))
    proc = subprocess.run(["taskset", "-c", cpu, sys.executable, "-c", _PRINT_THREADS], capture_output=True,
                          text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FUSEDRNN_NUM_THREADS")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[:3] == ["1", "1", "1"]


@pytest.mark.parametrize("env,source", [
    ({"OMP_NUM_THREADS": "1"}, "OMP_NUM_THREADS"),
    ({"OMP_NUM_THREADS": " 1 ,4"}, "OMP_NUM_THREADS"),        # the first level only
    ({"FUSEDRNN_NUM_THREADS": "1"}, "FUSEDRNN_NUM_THREADS"),
    ({"FUSEDRNN_NUM_THREADS": "1", "OMP_NUM_THREADS": "8"}, "FUSEDRNN_NUM_THREADS"),  # ours wins
])
def test_default_follows_the_environment(env, source):
    threads, default, cpus, got_source, err = _child_threads(env)
    assert (threads, default, got_source) == (1, 1, source)
    assert "RuntimeWarning" not in err


def test_environment_cannot_raise_the_default_past_the_cpus():
    threads, default, cpus, source, _ = _child_threads({"FUSEDRNN_NUM_THREADS": "4096"})
    assert threads == default == cpus
    assert source == "FUSEDRNN_NUM_THREADS (capped at the usable CPUs)"


@pytest.mark.parametrize("name", ["FUSEDRNN_NUM_THREADS", "OMP_NUM_THREADS"])
@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5", "", "99999999999999999999999"])
def test_invalid_environment_warns_and_falls_back(name, value):
    threads, default, cpus, source, err = _child_threads({name: value})
    assert threads == default == cpus  # ignored: the usable CPUs
    assert "RuntimeWarning" in err
    assert f"{name}='{value}' is not an integer >= 1" in err


def test_invalid_fusedrnn_variable_falls_back_to_omp():
    threads, _, _, source, err = _child_threads({"FUSEDRNN_NUM_THREADS": "x", "OMP_NUM_THREADS": "1"})
    assert (threads, source) == (1, "OMP_NUM_THREADS")
    assert "FUSEDRNN_NUM_THREADS='x'" in err


@pytest.mark.parametrize("files,expected", [
    ({"cpu.max": "max 100000\n"}, 0),
    ({"cpu.max": "150000 100000\n"}, 2),       # 1.5 CPUs: rounded up
    ({"cpu.max": "50000 100000\n"}, 1),        # at least one
    ({"cpu.max": "400000 100000\n"}, 4),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0),   # v1, none
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "250000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 3),
    ({}, 0),                                   # no cgroup files
])
def test_cgroup_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert fusedrnn._core.cgroup_cpu_limit(str(tmp_path)) == expected


@pytest.mark.parametrize("text,expected", [
    ("1024K\n", 1 << 20), ("2M", 2 << 20), ("524288", 524288), ("512K", 512 << 10),
    ("", 0), ("K", 0), ("-4K", 0), ("12Q", 0),
])
def test_parse_cache_size(text, expected):
    assert fusedrnn._core.parse_cache_size(text) == expected


def test_l2_cache_bytes_matches_the_system():
    """The L2 size the packed loops read equals what the OS reports (Linux: sysconf, else
    cpu0's level-2 entry under /sys), and is exposed in build_info."""
    got = fusedrnn._core.l2_cache_bytes()
    assert fusedrnn.build_info()["l2_cache_bytes"] == got
    assert got >= 0
    if not sys.platform.startswith("linux"):
        return
    want = 0
    try:
        want = max(0, os.sysconf("SC_LEVEL2_CACHE_SIZE"))
    except (ValueError, OSError):
        pass
    if want == 0:
        import glob
        for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
            try:
                level = open(os.path.join(d, "level")).read().strip()
                kind = open(os.path.join(d, "type")).read().strip()
                size = open(os.path.join(d, "size")).read().strip()
            except OSError:
                continue
            if level == "2" and kind != "Instruction":
                want = int(size[:-1]) * {"K": 1 << 10, "M": 1 << 20}[size[-1]] if size[-1] in "KM" else int(size)
                break
    assert got == want


# --- results do not depend on the thread count ----------------------------------------------

def _run_cell(cell, dtype, threads, seed, lengths=None, reverse=False, proj=False, activation="tanh",
              long=False, hidden=None):
    """Forward and every gradient of one training step at `threads` threads."""
    rng = np.random.default_rng(seed)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    # per-step and whole-sequence products both split into blocks (>= 2 x 256 rows or columns);
    # long: a small layer over many steps, whose weight gradients are split along time instead.
    # The GRU's H = 176 is 3 backward panels of 64 units: one thread takes them, two take 6
    # panels of 32 (fused_loop.h: fused_backward), so the widths are compared too; so is the
    # RNN forward's panel width with hidden=192 (64 units at one thread, 32 at two), the LSTM
    # backward's with hidden=96 (3 panels of 32 at one thread, 2 of 48 at two), and the
    # projection's split: P = 48 is one panel, which one thread projects whole and two by rows.
    T, B, I, H = 9, 64, 56, hidden or {"lstm": 128, "gru": 176, "rnn": 512}[cell]
    if long:
        T, H = 40, 64
    P = 48 if proj else H
    x = rng.standard_normal((T, B, I)).astype(dtype)
    w_ih = (rng.standard_normal((G * H, I)) * 0.1).astype(dtype)
    w_hh = (rng.standard_normal((G * H, P)) * 0.1).astype(dtype)
    b_ih = (rng.standard_normal(G * H) * 0.1).astype(dtype)
    b_hh = (rng.standard_normal(G * H) * 0.1).astype(dtype)
    kw = dict(lengths=lengths, reverse=reverse, training=True)
    before = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(threads)
    try:
        if cell == "lstm":
            w_hr = (rng.standard_normal((P, H)) * 0.1).astype(dtype) if proj else None
            out, h_n, c_n, cache = ops.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, w_hr=w_hr, activation=activation, **kw)
            dout = rng.standard_normal(out.shape).astype(dtype)
            grads = ops.lstm_backward(cache, dout)
            outs = [out, h_n, c_n]
        elif cell == "gru":
            out, h_n, cache = ops.gru_forward(x, w_ih, w_hh, b_ih, b_hh, **kw)
            dout = rng.standard_normal(out.shape).astype(dtype)
            grads = ops.gru_backward(cache, dout)
            outs = [out, h_n]
        else:
            out, h_n, cache = ops.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, nonlinearity=activation, **kw)
            dout = rng.standard_normal(out.shape).astype(dtype)
            grads = ops.rnn_backward(cache, dout)
            outs = [out, h_n]
    finally:
        fusedrnn.set_num_threads(before)
    return outs + [grads[k] for k in sorted(grads) if grads[k] is not None]


_CELLS = [("lstm", {}), ("lstm", {"proj": True}), ("lstm", {"activation": "relu"}), ("gru", {}),
          ("rnn", {}), ("rnn", {"activation": "relu"}), ("rnn", {"hidden": 192}), ("lstm", {"hidden": 96})]


@pytest.fixture
def no_contention_guard():
    """Two threads really run two threads, however busy the machine is."""
    fusedrnn._core.set_contention_guard(False)
    yield
    fusedrnn._core.set_contention_guard(True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,extra", _CELLS)
@pytest.mark.parametrize("variant", ["full", "lengths", "reverse", "lengths+reverse", "long+lengths"])
def test_bit_identical_at_one_and_two_threads(cell, extra, dtype, variant, no_contention_guard):
    long = "long" in variant
    lengths = np.array([9, 3, 7, 1] * 16, dtype=np.int64) * (4 if long else 1) if "lengths" in variant else None
    reverse = "reverse" in variant
    regions = fusedrnn._core.contention_stats()["regions"]
    one = _run_cell(cell, dtype, 1, 7, lengths, reverse, long=long, **extra)
    two = _run_cell(cell, dtype, 2, 7, lengths, reverse, long=long, **extra)
    assert fusedrnn._core.contention_stats()["regions"] > regions  # two threads did run
    assert len(one) == len(two)
    for i, (a, b) in enumerate(zip(one, two)):
        assert a.dtype == b.dtype == dtype
        assert np.array_equal(a, b), f"output {i} differs: max |diff| {np.abs(a - b).max()}"


# --- changing the thread count while other threads compute -----------------------------------

def test_set_num_threads_while_others_compute(no_contention_guard):
    import threading

    expected = [_run_cell("gru", np.float32, 1, seed) for seed in range(3)]
    stop = threading.Event()
    failures = []

    def toggle():
        n = 0
        while not stop.is_set():
            fusedrnn.set_num_threads(1 + n % 2)
            n += 1

    def compute(seed):
        try:
            for _ in range(6):
                got = [np.asarray(a) for a in _run_cell("gru", np.float32, 2, seed)]
                for a, b in zip(got, expected[seed]):
                    if not np.array_equal(a, b):
                        failures.append(seed)
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    before = fusedrnn.get_num_threads()
    toggler = threading.Thread(target=toggle)
    workers = [threading.Thread(target=compute, args=(s,)) for s in range(3)]
    toggler.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    stop.set()
    toggler.join(timeout=10)
    fusedrnn.set_num_threads(before)
    assert not any(w.is_alive() for w in workers)
    assert failures == []


# --- oversubscribed cores ---------------------------------------------------------------------

_PINNED_SCRIPT = textwrap.dedent("""
    import os, statistics, time
    import numpy as np
    import fusedrnn
    from fusedrnn import ops

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})   # one core for both threads
    rng = np.random.default_rng(0)
    T, B, H = 50, 64, 256          # every per-step product is split across the threads
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    w_ih = (rng.standard_normal((3 * H, H)) * 0.05).astype(np.float32)
    w_hh = (rng.standard_normal((3 * H, H)) * 0.05).astype(np.float32)

    def step():
        out, h_n, cache = ops.gru_forward(x, w_ih, w_hh, training=True)
        ops.gru_backward(cache, out)

    times = {1: [], 2: []}
    for rep in range(16):
        for n in (1, 2):
            fusedrnn.set_num_threads(n)
            t0 = time.perf_counter()
            step()
            times[n].append(time.perf_counter() - t0)
    s = fusedrnn._core.contention_stats()
    print(statistics.median(times[2]) / statistics.median(times[1]), s["fallbacks"])
""")


@_needs_affinity
def test_two_threads_on_one_core_fall_back_to_one(tmp_path):
    script = tmp_path / "pinned.py"
    script.write_text(_PINNED_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ratio, fallbacks = proc.stdout.split()
    # Blocks claimed one at a time keep most calls whole; the stalls that remain make the
    # kernels fall back to one thread for a while.
    assert float(ratio) < 1.3, (f"two threads on one core took {float(ratio):.2f}x as long as one "
                                f"({fallbacks} fallbacks to one thread)")


# --- a slow thread's panels are taken over ------------------------------------------------------

_TAKEOVER_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys, time
    import numpy as np
    import fusedrnn
    from fusedrnn import _core, ops

    _core.set_contention_guard(False)
    rng = np.random.default_rng(5)
    T, B, I, H = 30, 32, 96, 256     # 16 panels of 16 units; T * B > 1024: chunked projection
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih = (rng.standard_normal((4 * H, I)) * 0.1).astype(np.float32)
    w_hh = (rng.standard_normal((4 * H, H)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(4 * H) * 0.1).astype(np.float32)
    lengths = rng.integers(1, T + 1, B)

    def run():
        out, h, c, cache = ops.lstm_forward(x, w_ih, w_hh, b, b, lengths=lengths, training=True)
        return [out, h, c, cache.workspace.copy()]

    fusedrnn.set_num_threads(1)
    one = run()
    fusedrnn.set_num_threads(2)
    run()                                   # the team's threads exist from here on
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})          # the calling thread only: it shares its CPU with
    spin = subprocess.Popen([sys.executable, "-c",  # a busy process, the other thread does not
                             f"import os; os.sched_setaffinity(0, {{{cpu}}})\\nwhile True: pass"])
    try:
        time.sleep(0.2)
        before, same, calls = _core.panels_taken_over(), True, 0
        deadline = time.monotonic() + 20
        while calls < 5 or (_core.panels_taken_over() == before and time.monotonic() < deadline):
            same = same and all(np.array_equal(a, g) for a, g in zip(one, run()))
            calls += 1
    finally:
        spin.kill()
        spin.wait()
    print(json.dumps({"same": same, "taken": _core.panels_taken_over() - before, "calls": calls}))
""")


_TWO_PINNABLE_CPUS = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


@pytest.mark.skipif(not _TWO_PINNABLE_CPUS, reason="needs CPU affinity (Linux) and two usable CPUs")
def test_slow_thread_panels_are_taken_over_with_the_same_results(tmp_path):
    """One of two threads shares its CPU with a busy process: the other runs what is left of
    its panels, and every output (and the training workspace) stays bit-identical to one
    thread's."""
    if fusedrnn._core.best_isa() == "baseline" or not fusedrnn._core.openmp:
        pytest.skip("this build's packed loop runs on one thread (no packed loop, or no OpenMP)")
    script = tmp_path / "takeover.py"
    script.write_text(_TAKEOVER_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["same"], got
    assert got["taken"] > 0, got

"""The concurrency contract: the kernels release the GIL, so Python threads run them in parallel.

* Calls on different layer objects (and the ops functions) from many threads give results
  bit-equal to the same calls made one after another.
* Training calls on one layer object from several threads either work (each thread's dx is
  the dx of its own input, the accumulated grads the sum of the serial ones) or raise a
  RuntimeError that says the layer is used from several threads; never a silently wrong result.
* Changing the thread count while other threads compute is safe and changes no result.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fusedrnn
from fusedrnn import ops

THREADS = 8
CLASSES = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}


def run_layer(layer, x):
    """Training forward + backward with a fixed dout; everything it produces, copied."""
    layer.zero_grad()
    out = layer(x)
    h = out[1][0] if isinstance(out[1], tuple) else out[1]
    dout = np.cos(np.arange(out[0].size, dtype=layer.dtype)).reshape(out[0].shape)
    dx = layer.backward(dout)[0]
    return out[0].copy(), h.copy(), dx.copy(), {k: g.copy() for k, g in layer.grads.items()}


def in_threads(fn, args, n=THREADS):
    """fn(*a) for every a in args, started together from n threads."""
    barrier = threading.Barrier(min(n, len(args)))

    def job(a):
        barrier.wait()
        return fn(*a)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(job, args))


def assert_bit_equal(got, want, what):
    if isinstance(want, dict):
        for k in want:
            assert_bit_equal(got[k], want[k], f"{what}[{k}]")
        return
    if isinstance(want, (tuple, list)):
        for i, (g, w) in enumerate(zip(got, want)):
            assert_bit_equal(g, w, f"{what}[{i}]")
        return
    if want is None:
        assert got is None, what
        return
    assert np.array_equal(got, want), f"{what}: differs from the serial result"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", sorted(CLASSES))
def test_different_layers_from_many_threads_equal_serial(cell, dtype):
    rng = np.random.default_rng(0)
    layers = [CLASSES[cell](12, 24, num_layers=2, bidirectional=i % 2 == 1, dtype=dtype, seed=i)
              for i in range(THREADS)]
    xs = [rng.standard_normal((10, 6, 12)).astype(dtype) for _ in range(THREADS)]
    serial = [run_layer(l, x) for l, x in zip(layers, xs)]
    for _ in range(3):
        parallel = in_threads(run_layer, list(zip(layers, xs)))
        for i, (p, s) in enumerate(zip(parallel, serial)):
            assert_bit_equal(p, s, f"thread {i}")


def ops_job(cell, dtype, seed):
    rng = np.random.default_rng(seed)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    T, B, I, H = 9, 5, 7, 33
    x = rng.standard_normal((T, B, I)).astype(dtype)
    w_ih = (rng.standard_normal((G * H, I)) * 0.2).astype(dtype)
    w_hh = (rng.standard_normal((G * H, H)) * 0.2).astype(dtype)
    lengths = rng.integers(1, T + 1, B)
    res = getattr(ops, f"{cell}_forward")(x, w_ih, w_hh, lengths=lengths, reverse=seed % 2 == 1,
                                          training=True)
    out, cache = res[0], res[-1]
    grads = getattr(ops, f"{cell}_backward")(cache, np.ones_like(out))
    return res[:-1], grads


def test_ops_from_many_threads_equal_serial():
    jobs = [(cell, dtype, seed) for cell in ("lstm", "gru", "rnn")
            for dtype in ("float32", "float64") for seed in range(4)]
    serial = [ops_job(*j) for j in jobs]
    for _ in range(2):
        parallel = in_threads(ops_job, jobs)
        for j, p, s in zip(jobs, parallel, serial):
            assert_bit_equal(p, s, f"{j}")


@pytest.mark.parametrize("cell", sorted(CLASSES))
def test_one_layer_from_several_threads_is_right_or_refused(cell):
    # Calls long enough (a few ms) that the threads' forward and backward calls interleave;
    # rounds until the first problem, so a broken layer fails fast and a fixed one is run hard.
    n, rounds = 4, 60
    layer = CLASSES[cell](32, 64, dtype="float64", seed=0)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((40, 8, 32)) for _ in range(n)]
    serial = [run_layer(layer, x) for x in xs]
    problems = []
    for _ in range(rounds):
        layer.zero_grad()

        def job(i):
            try:
                out = layer(xs[i])
                dout = np.cos(np.arange(out[0].size, dtype=layer.dtype)).reshape(out[0].shape)
                return i, layer.backward(dout)[0], None
            except RuntimeError as exc:
                return i, None, exc

        results = in_threads(job, [(i,) for i in range(n)], n)
        done = []
        for i, dx, exc in results:
            if exc is not None:
                if "thread" not in str(exc):
                    problems.append(f"RuntimeError without a word about threads: {exc}")
            elif not np.array_equal(dx, serial[i][2]):
                problems.append(f"thread {i} got a dx that is not its own input's")
            else:
                done.append(i)
        for k in layer.grads:
            want = sum((serial[i][3][k] for i in done), np.zeros_like(layer.grads[k]))
            if not np.allclose(layer.grads[k], want, rtol=1e-12, atol=1e-12):
                problems.append(f"grads[{k}] is not the sum of the {len(done)} successful calls")
        if problems:
            break
    assert not problems, f"{len(problems)} problems, e.g. {problems[:3]}"


def test_changing_thread_count_while_others_compute():
    jobs = [(cell, "float32", seed) for cell in ("lstm", "gru", "rnn") for seed in range(2)]
    before = fusedrnn.get_num_threads()
    try:
        fusedrnn.set_num_threads(2)
        serial = [ops_job(*j) for j in jobs]
        stop = threading.Event()

        def toggle():
            k = 0
            while not stop.is_set():
                fusedrnn.set_num_threads(1 + k % 2)
                k += 1
            return k

        with ThreadPoolExecutor(1) as side:
            flips = side.submit(toggle)
            try:
                for _ in range(3):
                    parallel = in_threads(ops_job, jobs, len(jobs))
                    for j, p, s in zip(jobs, parallel, serial):
                        assert_bit_equal(p, s, f"{j}")
            finally:
                stop.set()
            assert flips.result() > 0
    finally:
        fusedrnn.set_num_threads(before)

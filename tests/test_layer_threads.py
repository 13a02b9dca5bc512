"""One layer object trained from many threads at once: each thread's backward uses its own
forward, and the gradients sum as they would serially."""

import sys
import threading

import numpy as np
import pytest

from fusedrnn import GRU, LSTM, RNN

THREADS, ROUNDS = 8, 30


@pytest.mark.parametrize("klass", [LSTM, GRU, RNN])
def test_concurrent_forward_backward_matches_serial(klass):
    layer = klass(6, 7, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    rng = np.random.default_rng(1)
    # Different lengths of T too, so a mixed-up trace would fail loudly or visibly.
    inputs = [[rng.standard_normal((3 + (t + r) % 4, 2, 6)) for r in range(ROUNDS)]
              for t in range(THREADS)]
    douts = [[rng.standard_normal((x.shape[0], 2, 14)) for x in row] for row in inputs]

    expected_dx, expected_grads = {}, {k: np.zeros_like(g) for k, g in layer.grads.items()}
    for t in range(THREADS):
        for r in range(ROUNDS):
            layer.zero_grad()
            layer(inputs[t][r])
            expected_dx[t, r] = layer.backward(douts[t][r])[0]
            for k, g in layer.grads.items():
                expected_grads[k] += g
    layer.zero_grad()

    got, errors = {}, []
    barrier = threading.Barrier(THREADS)

    def work(t):
        try:
            barrier.wait()
            for r in range(ROUNDS):
                layer(inputs[t][r])
                got[t, r] = layer.backward(douts[t][r])[0]
        except Exception as exc:  # reported below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: interleave every call
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
    assert len(got) == THREADS * ROUNDS
    for key, dx in expected_dx.items():
        np.testing.assert_array_equal(got[key], dx, err_msg=str(key))
    for k, g in expected_grads.items():
        np.testing.assert_allclose(layer.grads[k], g, rtol=1e-12, atol=1e-12, err_msg=k)


def test_each_thread_has_its_own_trace():
    layer = GRU(3, 4, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    layer(x)
    seen = []
    th = threading.Thread(target=lambda: seen.append(_backward_error(layer)))
    th.start()
    th.join()
    assert "needs a forward first" in seen[0]  # another thread's forward is not this one's
    layer.backward(np.ones((2, 1, 4), np.float32))  # this thread's still is


def _backward_error(layer):
    try:
        layer.backward(None)
    except RuntimeError as exc:
        return str(exc)
    return "no error"

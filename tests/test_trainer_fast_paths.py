"""The trainer's per-step fast paths against the general code they stand for, which stays the
definition (test_trainer.py checks that code against hand-computed updates and finite
differences, through these paths where they apply):

- the compiled optimiser pass (fusedrnn._core.optimizer_update) against the NumPy formulation
  in optimizers.py: bit-identical parameters and slots over several steps, for every rule and
  option, float32 and float64; the cases it declines fall back to NumPy; misuse raises;
- sparse categorical cross-entropy from logits without weights (Sequential's fused softmax)
  against Loss.value_and_grad: the same value and gradient bit for bit, the same errors (and a
  finite loss where a non-target logit is -inf, which the general path turns into NaN)."""

import numpy as np
import pytest

from fusedrnn import _core
from fusedrnn.keras import losses, optimizers

SHAPES = [(24, 5), (24, 6), (24,), (3, 6), (3,)]

RULES = [
    ("sgd", lambda: optimizers.SGD(0.05)),
    ("sgd-momentum", lambda: optimizers.SGD(0.05, momentum=0.9)),
    ("sgd-nesterov", lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True)),
    ("adam", lambda: optimizers.Adam(0.01)),
    ("adam-schedule", lambda: optimizers.Adam(optimizers.ExponentialDecay(0.01, 2, 0.5))),
    ("adamw", lambda: optimizers.AdamW(0.01, weight_decay=0.05)),
    ("rmsprop", lambda: optimizers.RMSprop(0.01)),
    ("rmsprop-momentum", lambda: optimizers.RMSprop(0.01, momentum=0.5)),
    ("adam-global-clipnorm", lambda: optimizers.Adam(0.01, global_clipnorm=0.5)),
    ("sgd-clipnorm", lambda: optimizers.SGD(0.05, momentum=0.9, clipnorm=0.5)),
    ("rmsprop-clipvalue", lambda: optimizers.RMSprop(0.01, clipvalue=0.3)),
]


def _numpy_twin(opt):
    """The same optimiser as a subclass, which the compiled pass leaves to NumPy."""
    twin = type("NumpyTwin", (type(opt),), {})
    return twin.from_config(opt.get_config())


def _steps(opt, params, rng, steps=4):
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        opt.apply([(f"w{i}", p, g) for i, (p, g) in enumerate(zip(params, grads))])


def _counting(monkeypatch):
    calls = []
    real = _core.optimizer_update

    def counted(*args, **kwargs):
        done = real(*args, **kwargs)
        calls.append(done)
        return done

    monkeypatch.setattr(optimizers._core, "optimizer_update", counted)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,make", RULES, ids=[r[0] for r in RULES])
def test_compiled_pass_is_bit_identical_to_numpy(name, make, dtype, monkeypatch):
    calls = _counting(monkeypatch)
    rng = np.random.default_rng(3)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    fast = make()
    slow = _numpy_twin(fast)
    p_fast = [p.copy() for p in start]
    p_slow = [p.copy() for p in start]
    _steps(fast, p_fast, np.random.default_rng(7))
    assert calls == [True] * 4  # the built-in class took the compiled pass every step
    _steps(slow, p_slow, np.random.default_rng(7))
    assert calls[4:] == []  # the subclass never reached it
    for a, b, p0 in zip(p_fast, p_slow, start):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, p0)  # the step did move the weights
    assert fast.state.keys() == slow.state.keys()
    for slot in fast.state:
        for key in fast.state[slot]:
            np.testing.assert_array_equal(fast.state[slot][key], slow.state[slot][key])
    assert fast.iterations == slow.iterations == 4


def test_declined_arrays_fall_back_to_numpy(monkeypatch):
    """A non-contiguous parameter, or the same array twice: the pass declines (changing
    nothing) and the NumPy formulation runs, with the same result as the reference twin."""
    calls = _counting(monkeypatch)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    other = rng.standard_normal((3, 7)).astype(np.float32)
    holder = base.copy()
    for fast in ([np.asfortranarray(base), other.copy()],  # Fortran order
                 [holder[:, ::2], other.copy()]):           # a strided view (written through)
        start = [np.array(p) for p in fast]
        ref = [p.copy() for p in start]
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in fast]
        optimizers.Adam(0.1).apply([(f"w{i}", p, g) for i, (p, g) in enumerate(zip(fast, grads))])
        assert calls[-1] is False
        twin = _numpy_twin(optimizers.Adam(0.1))
        twin.apply([(f"w{i}", p, g) for i, (p, g) in enumerate(zip(ref, grads))])
        for a, b, a0 in zip(fast, ref, start):
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, a0)
    np.testing.assert_array_equal(holder[:, ::2], fast[0])
    np.testing.assert_array_equal(holder[:, 1::2], base[:, 1::2])  # the rest untouched
    shared = np.ones(5)
    g = np.full(5, 0.5)
    optimizers.SGD(0.1).apply([("a", shared, g), ("b", shared, g)])
    assert calls[-1] is False


def test_compiled_pass_checks_its_arguments():
    p, g = np.zeros(4, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="rule must be"):
        _core.optimizer_update("adagrad", [p], [g], [], lr=0.1)
    with pytest.raises(ValueError, match="same length"):
        _core.optimizer_update("sgd", [p], [], [], lr=0.1)
    with pytest.raises(ValueError, match="2 slot arrays, got 1"):
        _core.optimizer_update("adam", [p], [g], [np.zeros(4, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match=r"slots\[1\] has shape \(3,\), expected \(4,\)"):
        _core.optimizer_update("adam", [p], [g], [np.zeros(4, np.float32), np.zeros(3, np.float32)],
                               lr=0.1)
    with pytest.raises(TypeError, match=r"slots\[0\] has dtype float64"):
        _core.optimizer_update("sgd", [p], [g], [np.zeros(4)], lr=0.1, momentum=0.9)
    # arrays it cannot take as they are: declined, untouched
    assert _core.optimizer_update("sgd", [p], [np.ones(3, np.float32)], [], lr=0.1) is False
    assert _core.optimizer_update("sgd", [p], [np.ones(4)], [], lr=0.1) is False
    assert _core.optimizer_update("sgd", [p.astype(np.float16)], [g], [], lr=0.1) is False
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    assert _core.optimizer_update("sgd", [frozen], [g], [], lr=0.1) is False
    assert not p.any() and not frozen.any()
    assert _core.optimizer_update("sgd", [p], [g], [], lr=0.25) is True
    np.testing.assert_array_equal(p, np.full(4, -0.25, np.float32))


# --- sparse categorical cross-entropy from logits ----------------------------------------------

def _general(loss, y, z, weights=None):
    return losses.Loss.value_and_grad(loss, y, z, weights)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(16, 9), (4, 7, 5), (3, 2), (6, 1)], ids=str)
def test_sparse_logits_path_is_bit_identical(shape, dtype):
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(5)
    for scale in (1.0, 40.0, 1e4):  # the last: softmax saturated, exp underflows
        z = (rng.standard_normal(shape) * scale).astype(dtype)
        y = rng.integers(0, shape[-1], shape[:-1])
        for target in (y, y[..., None], y.astype(np.float64)):
            value, grad = loss.value_and_grad(target, z)
            ref_value, ref_grad = _general(loss, target, z)
            assert value == ref_value and np.isfinite(value)
            assert grad.dtype == ref_grad.dtype == dtype and grad.shape == z.shape
            np.testing.assert_array_equal(grad, ref_grad)
    # what it is: the mean of -log softmax at the class, gradient (softmax - one-hot) / n
    z = rng.standard_normal(shape).astype(np.float64)
    y = rng.integers(0, shape[-1], shape[:-1])
    value, grad = loss.value_and_grad(y, z)
    soft = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    onehot = np.eye(shape[-1])[y]
    np.testing.assert_allclose(value, -np.log((soft * onehot).sum(-1)).mean(), rtol=1e-13)
    np.testing.assert_allclose(grad, (soft - onehot) / y.size, rtol=1e-12, atol=1e-16)


def test_sparse_logits_path_non_finite_and_errors():
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    z = np.array([[0.0, np.inf, 1.0], [np.nan, 0.0, 1.0], [1.0, 2.0, 3.0]], np.float32)
    y = np.array([0, 1, 2])
    value, grad = loss.value_and_grad(y, z)
    ref_value, ref_grad = _general(loss, y, z)
    assert np.isnan(value) and np.isnan(ref_value)
    np.testing.assert_array_equal(grad, ref_grad)  # NaN where the general path has NaN
    # a class ruled out by a -inf logit: probability 0, the loss of the others unchanged
    z = np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]])
    value, grad = loss.value_and_grad(np.array([0, 1]), z)
    finite = [np.log(1 + np.e) - 0.0, np.log(np.exp(2.0) + np.exp(0.5)) - 0.5]
    assert value == pytest.approx(np.mean(finite), rel=1e-15)
    soft = np.array([[1 / (1 + np.e), 0, np.e / (1 + np.e)],
                     [np.exp(2.0), np.exp(0.5), 0] / (np.exp(2.0) + np.exp(0.5))])
    np.testing.assert_allclose(grad, (soft - np.array([[1, 0, 0], [0, 1, 0]])) / 2, rtol=1e-14)
    assert np.isnan(_general(loss, np.array([0, 1]), z)[0])  # where the general path gives NaN
    z = np.array([[0.0, np.inf, 1.0], [np.nan, 0.0, 1.0], [1.0, 2.0, 3.0]], np.float32)
    for bad, err, match in ((np.array([0, 1, 3]), ValueError, "class ids must lie in 0..2"),
                            (np.array([0.5, 1, 2]), TypeError, "integer class ids"),
                            (np.array([0, 1]), ValueError, "one class id per prediction")):
        with pytest.raises(err, match=match):
            loss.value_and_grad(bad, z)
    # weights, probabilities and integer predictions still take the general path
    w = np.array([1.0, 0.0, 2.0])
    fine = np.abs(z[2:].repeat(3, 0)) + 0.5
    assert loss.value_and_grad(y, fine, w)[0] == _general(loss, y, fine, w)[0]
    probs = losses.SparseCategoricalCrossentropy()
    p = np.array([[0.2, 0.3, 0.5]] * 3)
    assert probs.value_and_grad(y, p)[0] == _general(probs, y, p)[0]
    with pytest.raises(TypeError, match="floating point"):
        loss.value_and_grad(y, np.ones((3, 3), np.int64))

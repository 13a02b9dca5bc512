"""The trainer under hostile inputs: NaN in padding, targets of the wrong shape, bad
callbacks and schedules, malformed optimiser state and weights."""

import numpy as np
import pytest

from fusedrnn import GRU, LSTM, Dense, Recurrent, Sequential, callbacks, losses, metrics, optimizers

# --- NaN in the padding of sequence targets ------------------------------------------------

N, T, F, C = 6, 7, 3, 4
LENGTHS = np.array([7, 3, 5, 1, 6, 2])
PAD = np.arange(T)[None, :] >= LENGTHS[:, None]  # (N, T): True on padded steps

TARGETS = {  # loss -> (output activation, targets with zeros in the padding)
    "mse": (None, lambda r: r.standard_normal((N, T, C))),
    "mae": (None, lambda r: r.standard_normal((N, T, C))),
    "binary_crossentropy": ("sigmoid", lambda r: (r.random((N, T, C)) > 0.5).astype(float)),
    "categorical_crossentropy": ("softmax", lambda r: np.eye(C)[r.integers(0, C, (N, T))]),
    "sparse_categorical_crossentropy": ("softmax", lambda r: r.integers(0, C, (N, T)).astype(float)),
}


def _seq_model(activation, loss):
    m = Sequential([Recurrent(GRU(F, 5), return_sequences=True), Dense(5, C, activation)], seed=3)
    m.compile(optimizers.SGD(0.1), loss, ["accuracy", "mae"] if loss != "sparse_categorical_crossentropy"
              else ["accuracy"])
    return m


@pytest.mark.parametrize("loss", sorted(TARGETS))
def test_nan_in_padded_targets_changes_nothing(rng, loss):
    activation, make = TARGETS[loss]
    x = rng.standard_normal((N, T, F)).astype(np.float32)
    y_zero = make(rng).astype(np.float32)
    y_zero[PAD] = 0
    y_nan = y_zero.copy()
    y_nan[PAD] = np.nan
    results = []
    for y in (y_zero, y_nan):
        m = _seq_model(activation, loss)
        value, grads = m.loss_and_gradients(x, y, LENGTHS)
        ev = m.evaluate(x, y, lengths=LENGTHS, return_dict=True)
        m.train_on_batch(x, y, LENGTHS)
        results.append((value, grads, ev, m.get_weights()))
    (v0, g0, e0, w0), (v1, g1, e1, w1) = results
    assert np.isfinite(v0) and v1 == v0
    for k in g0:
        assert np.all(np.isfinite(g1[k])), k
        np.testing.assert_array_equal(g1[k], g0[k], err_msg=k)
    assert e1 == e0 and all(np.isfinite(list(e0.values())))
    for a, b in zip(w1, w0):
        np.testing.assert_array_equal(a, b)


def test_loss_ignores_inf_and_nan_predictions_of_zero_weight(rng):
    y = rng.standard_normal((4, 3))
    p = rng.standard_normal((4, 3))
    w = np.array([1.0, 0.0, 2.0, 0.0])
    v0, g0 = losses.get("mse").value_and_grad(y, p, w)
    p2, y2 = p.copy(), y.copy()
    p2[1], y2[3] = np.inf, np.nan
    v1, g1 = losses.get("mse").value_and_grad(y2, p2, w)
    assert v1 == v0
    np.testing.assert_array_equal(g1, g0)
    # the oracle: the weighted mean over the rows that count
    per = ((p - y) ** 2).mean(axis=1)
    assert v0 == pytest.approx((per * w).sum() / w.sum(), rel=1e-12)


# --- accuracy flavour and shape checks -----------------------------------------------------

def _dense_model(out, loss, metric_list, activation=None):
    m = Sequential([Dense(3, out, activation)], seed=0)
    m.compile(optimizers.SGD(0.1), loss, metric_list)
    return m


def test_accuracy_with_mse_on_several_units_is_categorical(rng):
    x = rng.standard_normal((16, 3)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 16)]
    m = _dense_model(4, "mse", ["accuracy"])
    _, acc = m.evaluate(x, y)
    expected = np.mean(m.predict(x).argmax(axis=1) == y.argmax(axis=1))
    assert acc == pytest.approx(expected)
    assert 0 < expected  # the oracle above is a real comparison, not the broadcast 0.0


def test_accuracy_with_mse_on_one_unit_is_binary(rng):
    x = rng.standard_normal((16, 3)).astype(np.float32)
    y = (rng.random((16, 1)) > 0.5).astype(np.float32)
    m = _dense_model(1, "mae", ["accuracy"])
    _, acc = m.evaluate(x, y)
    expected = np.mean((m.predict(x) > 0.5) == (y > 0.5))
    assert acc == pytest.approx(expected)
    # the metric alone reads a (N,) target for a single unit as (N, 1), as Keras does
    acc1 = metrics.get("accuracy", losses.get("mae"))
    acc1.update(y[:, 0], m.predict(x))
    assert acc1.result() == pytest.approx(expected)


@pytest.mark.parametrize("metric,y_shape", [
    (metrics.Accuracy("sparse"), (8, 4)),        # would broadcast (8,) against (8, 4)
    (metrics.Accuracy("categorical"), (8, 3)),
    (metrics.Accuracy("binary"), (8, 2)),
    ("mae", (8, 2)),
])
def test_metric_shape_error_comes_before_any_update(rng, metric, y_shape):
    x = rng.standard_normal((8, 3)).astype(np.float32)
    y = rng.standard_normal(y_shape).astype(np.float32)
    m = Sequential([Dense(3, 4)], seed=0)
    m.compile(optimizers.SGD(0.1), losses.MeanSquaredError() if y_shape == (8, 4) else "mse", [metric])
    m.loss = _AnyShapeLoss() if y_shape != (8, 4) else m.loss
    before = m.get_weights()
    for call in (lambda: m.fit(x, y, batch_size=4, verbose=0), lambda: m.evaluate(x, y),
                 lambda: m.train_on_batch(x, y)):
        with pytest.raises(ValueError, match="y_true must"):
            call()
        for a, b in zip(m.get_weights(), before):
            np.testing.assert_array_equal(a, b)


class _AnyShapeLoss(losses.Loss):
    """A loss that accepts any target (its value ignores it), so that only the metric fails."""

    name = "any"

    def _target(self, y_true, y_pred):
        return y_pred

    def _elementwise(self, y, p):
        return (p * p).mean(axis=-1), 2 * p / p.shape[-1]


def test_loss_shape_error_comes_before_any_update(rng):
    x = rng.standard_normal((8, 3)).astype(np.float32)
    m = _dense_model(4, "mse", ["accuracy"])
    before = m.get_weights()
    with pytest.raises(ValueError, match="y_true must have the shape"):
        m.fit(x, np.zeros((8, 3), np.float32), verbose=0)
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# --- checkpoints, callbacks, schedules, weights ----------------------------------------------

def _trained(tmp_path, rng):
    x = rng.standard_normal((8, 4, 3)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    m = Sequential([Recurrent(LSTM(3, 5)), Dense(5, 2)], seed=0)
    m.compile(optimizers.Adam(0.01), "mse")
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "m.npz"
    m.save(path)
    return m, path, x, y


def _rewrite(path, change):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(path, **arrays)


@pytest.mark.parametrize("change,match", [
    (lambda a: a.__setitem__("opt.m.1.weight", a["opt.m.1.weight"].T.copy()), "opt.m.1.weight"),
    (lambda a: a.__setitem__("opt.v.0.weight_hh_l0", a["opt.v.0.weight_hh_l0"].reshape(-1)),
     "opt.v.0.weight_hh_l0"),
    (lambda a: a.__setitem__("opt.m.1.bias", a["opt.m.1.bias"].astype(np.float64)), "opt.m.1.bias"),
    (lambda a: a.__setitem__("opt.velocity.1.bias", a["opt.m.1.bias"]), "opt.velocity.1.bias"),
    (lambda a: a.__setitem__("opt.m.7.bias", a["opt.m.1.bias"]), "opt.m.7.bias"),
])
def test_optimizer_state_of_the_wrong_shape_is_refused(tmp_path, rng, change, match):
    _, path, _, _ = _trained(tmp_path, rng)
    _rewrite(path, change)
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        Sequential.load(path)


def test_restored_optimizer_state_is_exact(tmp_path, rng):
    m, path, x, y = _trained(tmp_path, rng)
    back = Sequential.load(path)
    m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    back.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    for a, b in zip(m.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["x", 3, callbacks.History(), [callbacks.History(), "x"]])
def test_fit_callbacks_must_be_a_list_of_callbacks(rng, bad):
    m = _dense_model(2, "mse", [])
    x = rng.standard_normal((4, 3)).astype(np.float32)
    before = m.get_weights()
    with pytest.raises(TypeError, match="callbacks"):
        m.fit(x, np.zeros((4, 2), np.float32), verbose=0, callbacks=bad)
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), -0.1, "fast", None])
def test_scheduler_refuses_a_bad_rate(rng, rate):
    m = _dense_model(2, "mse", [])
    x = rng.standard_normal((4, 3)).astype(np.float32)
    sched = callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch == 0 else rate)
    with pytest.raises(ValueError, match=f"returned {rate!r} for epoch 1"):
        m.fit(x, np.zeros((4, 2), np.float32), epochs=3, verbose=0, callbacks=[sched])
    assert m.epoch == 1  # the first epoch ran with its valid rate


@pytest.mark.parametrize("bad", [
    lambda w: w.astype(np.complex64) + 1j,
    lambda w: w.astype(np.int64),
    lambda w: w.astype(object),
    lambda w: w > 0,
])
def test_set_weights_refuses_non_float(rng, bad):
    m = _dense_model(2, "mse", [])
    weights = m.get_weights()
    before = [w.copy() for w in weights]
    weights[1] = bad(weights[1] + 1)
    with pytest.raises(TypeError, match="weight 0.bias"):
        m.set_weights(weights)
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)

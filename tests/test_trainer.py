"""Trainer pieces: gradients of every model piece and loss by central finite differences in
float64, optimiser steps against hand-computed updates, schedules, metrics."""

import math

import numpy as np
import pytest

from fusedrnn import GRU, LSTM, RNN, Dense, Dropout, Embedding, Recurrent, Sequential
from fusedrnn import losses, metrics, optimizers

FD_EPS = 1e-6
FD_RTOL = 1e-6  # scaled error budget of a central difference in float64


def fd_check(f, arrays, analytic, rng, what, samples=None):
    """Compare analytic[i] with central differences of the scalar f() in each array (in place);
    samples limits the entries checked per array (chosen at random)."""
    for name, arr in arrays.items():
        flat = arr.reshape(-1)
        idx = np.arange(flat.size) if samples is None or flat.size <= samples else \
            rng.choice(flat.size, samples, replace=False)
        num = np.empty(len(idx))
        for j, i in enumerate(idx):
            keep = flat[i]
            flat[i] = keep + FD_EPS
            up = f()
            flat[i] = keep - FD_EPS
            down = f()
            flat[i] = keep
            num[j] = (up - down) / (2 * FD_EPS)
        got = np.asarray(analytic[name]).reshape(-1)[idx]
        scale = max(1.0, np.abs(num).max())
        err = np.abs(got - num).max() / scale
        assert err < FD_RTOL, f"{what}: d/d{name} off by {err:.2e} (scaled)"


# --- pieces -------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid", "softmax"])
@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 5)])
def test_dense_gradients(rng, activation, shape):
    layer = Dense(5, 3, activation, dtype="float64", seed=1)
    layer.params["bias"][...] = rng.standard_normal(3)
    x = rng.standard_normal(shape)
    r = rng.standard_normal(shape[:-1] + (3,))

    def f():
        return float(np.sum(r * layer.forward(x)))

    layer.zero_grad()
    layer.forward(x, training=True)
    dx = layer.backward(r)
    fd_check(f, {"x": x, **layer.params}, {"x": dx, **layer.grads}, rng, f"Dense {activation}")


def test_dense_grads_accumulate(rng):
    layer = Dense(4, 2, dtype="float64")
    x, r = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    layer.forward(x, training=True)
    layer.backward(r)
    once = layer.grads["weight"].copy()
    layer.forward(x, training=True)
    layer.backward(r)
    np.testing.assert_allclose(layer.grads["weight"], 2 * once)


def test_dropout_gradient_and_scaling(rng):
    layer = Dropout(0.4)
    x = rng.standard_normal((50, 40))
    r = rng.standard_normal(x.shape)
    layer.rng = np.random.default_rng(7)
    y = layer.forward(x, training=True)
    dx = layer.backward(r)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.6)
    np.testing.assert_allclose(dx, np.where(kept, r / 0.6, 0))
    assert 0.5 < kept.mean() < 0.7
    assert layer.forward(x) is x or np.array_equal(layer.forward(x), x)  # identity at inference


def test_embedding_gradient_with_repeated_ids(rng):
    layer = Embedding(6, 3, dtype="float64")
    ids = np.array([[0, 2, 2], [5, 0, 2]])
    r = rng.standard_normal((2, 3, 3))

    def f():
        return float(np.sum(r * layer.forward(ids)))

    layer.forward(ids, training=True)
    assert layer.backward(r) is None
    fd_check(f, layer.params, layer.grads, rng, "Embedding")


RECURRENT_CASES = {
    "lstm": lambda: LSTM(3, 4, dtype="float64", seed=2),
    "lstm-bi-2layer": lambda: LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=2),
    "lstm-proj-batch-first": lambda: LSTM(3, 5, proj_size=2, batch_first=True, dtype="float64", seed=2),
    "gru-bi": lambda: GRU(3, 4, bidirectional=True, dtype="float64", seed=2),
    "rnn-relu-2layer": lambda: RNN(3, 4, num_layers=2, nonlinearity="relu", dtype="float64", seed=2),
}


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("case", sorted(RECURRENT_CASES))
def test_recurrent_gradients_with_lengths(rng, case, return_sequences):
    layer = Recurrent(RECURRENT_CASES[case](), return_sequences=return_sequences)
    B, T = 3, 5
    x = rng.standard_normal((B, T, 3))
    lengths = np.array([5, 2, 4])
    out_shape = layer.forward(x, lengths=lengths).shape
    r = rng.standard_normal(out_shape)

    def f():
        # fd_check nudges the weights in place, which an inference forward (eval mode, packed
        # weights kept by version) sees only after weights_changed()
        layer.layer.weights_changed()
        return float(np.sum(r * layer.forward(x, lengths=lengths)))

    layer.zero_grad()
    layer.forward(x, training=True, lengths=lengths)
    dx = layer.backward(r)
    fd_check(f, {"x": x, **layer.params}, {"x": dx, **layer.grads}, rng, case, samples=6)
    # padding is never read: its gradient is zero and changing it changes nothing
    assert np.all(dx[1, 2:] == 0)
    y0 = layer.forward(x, lengths=lengths)
    x2 = x.copy()
    x2[1, 2:] = 1e3
    np.testing.assert_array_equal(layer.forward(x2, lengths=lengths), y0)


@pytest.mark.parametrize("name,make", [
    ("return_sequences", lambda v: Recurrent(LSTM(3, 4), return_sequences=v)),
    ("stateful", lambda v: Recurrent(GRU(3, 4), stateful=v)),
    ("bias", lambda v: Dense(3, 1, bias=v)),
])
def test_flags_of_the_pieces_must_be_bools(name, make):
    for bad in ("False", "no", 0, 1, None):
        with pytest.raises(TypeError, match=f"^{name} must be a bool, got {type(bad).__name__}"):
            make(bad)
    assert make(np.bool_(False)) is not None and make(True) is not None
    assert Dense(3, 1, bias=np.bool_(False)).params.keys() == {"weight"}
    assert Recurrent(RNN(3, 4), return_sequences=np.True_, stateful=False).return_sequences is True


def test_recurrent_last_step_is_last_valid_output(rng):
    layer = Recurrent(LSTM(3, 4, bidirectional=True, dtype="float64", seed=0))
    seq = Recurrent(layer.layer, return_sequences=True)
    x = rng.standard_normal((3, 6, 3))
    lengths = np.array([6, 1, 3])
    last = layer.forward(x, lengths=lengths)
    full = seq.forward(x, lengths=lengths)
    assert last.shape == (3, 8)
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(last[b, :4], full[b, n - 1, :4])  # forward direction
        np.testing.assert_allclose(last[b, 4:], full[b, 0, 4:])      # reverse direction


def test_stateful_chunks_equal_one_pass(rng):
    """Truncated BPTT's carried state: two chunks in a row give the one-pass outputs."""
    whole = Recurrent(GRU(2, 5, dtype="float64", seed=3), return_sequences=True)
    carried = Recurrent(whole.layer, return_sequences=True, stateful=True)
    x = rng.standard_normal((4, 10, 2))
    expected = whole.forward(x)
    got = np.concatenate([carried.forward(x[:, :6]), carried.forward(x[:, 6:])], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    carried.reset_states()
    np.testing.assert_allclose(carried.forward(x[:, 6:]), whole.forward(x[:, 6:]))


# --- losses -------------------------------------------------------------------------------

def _loss_inputs(rng, name, from_logits, shape=(4, 3)):
    if name == "sparse_categorical_crossentropy":
        y = rng.integers(0, shape[-1], shape[:-1])
    elif name == "categorical_crossentropy":
        y = np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])]
    elif name == "binary_crossentropy":
        y = rng.integers(0, 2, shape).astype(np.float64)
    else:
        y = rng.standard_normal(shape)
    if from_logits or name in ("mse", "mae"):
        p = rng.standard_normal(shape) * 2
    elif name == "binary_crossentropy":
        p = rng.uniform(0.05, 0.95, shape)
    else:
        p = rng.dirichlet(np.ones(shape[-1]), shape[:-1])
    return y, p


LOSS_CASES = [("mse", False), ("mae", False), ("binary_crossentropy", False),
              ("binary_crossentropy", True), ("categorical_crossentropy", False),
              ("categorical_crossentropy", True), ("sparse_categorical_crossentropy", False),
              ("sparse_categorical_crossentropy", True)]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name,from_logits", LOSS_CASES)
def test_loss_gradients(rng, name, from_logits, weighted):
    loss = losses.get(name)
    loss.from_logits = from_logits
    y, p = _loss_inputs(rng, name, from_logits, (3, 2, 4))
    w = rng.uniform(0, 1, (3, 2)) if weighted else None
    value, grad = loss.value_and_grad(y, p, w)
    fd_check(lambda: loss(y, p, w), {"p": p}, {"p": grad}, rng, name)
    assert np.isfinite(value)


def test_loss_values_match_definitions(rng):
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    z = np.array([[1.0, 2.0, 0.5], [0.1, -1.0, 3.0]])
    soft = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    expected = -np.mean(np.log((soft * y).sum(1)))
    assert losses.CategoricalCrossentropy(from_logits=True)(y, z) == pytest.approx(expected)
    assert losses.CategoricalCrossentropy()(y, soft) == pytest.approx(expected)
    assert losses.SparseCategoricalCrossentropy(True)(np.array([1, 0]), z) == pytest.approx(expected)
    assert losses.get("mse")(y, z) == pytest.approx(np.mean((y - z) ** 2))
    assert losses.get("mae")(y, z) == pytest.approx(np.mean(np.abs(y - z)))
    s = 1 / (1 + np.exp(-z))
    bce = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    assert losses.BinaryCrossentropy(from_logits=True)(y, z) == pytest.approx(bce)
    assert losses.BinaryCrossentropy()(y, s) == pytest.approx(bce)


def test_cross_entropies_stable_at_extremes():
    z = np.array([[1000.0, -1000.0, 0.0]])
    v, g = losses.SparseCategoricalCrossentropy(from_logits=True).value_and_grad(np.array([1]), z)
    assert v == pytest.approx(2000.0) and np.all(np.isfinite(g))
    v, g = losses.BinaryCrossentropy(from_logits=True).value_and_grad(np.array([[0.0, 1.0, 1.0]]), z)
    assert v == pytest.approx((1000 + 1000 + math.log(2)) / 3) and np.all(np.isfinite(g))
    v, g = losses.CategoricalCrossentropy().value_and_grad(np.array([[0.0, 1.0, 0.0]]),
                                                           np.array([[1.0, 0.0, 0.0]]))
    assert v == pytest.approx(-math.log(losses.EPSILON)) and np.all(np.isfinite(g))


def test_loss_errors():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.get("hinge")
    with pytest.raises(ValueError, match=r"class ids must lie in 0\.\.2"):
        losses.get("sparse_categorical_crossentropy")(np.array([3]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"shape of the predictions \(2, 3\)"):
        losses.get("mse")(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"one class id per prediction, shape \(2,\)"):
        losses.get("sparse_categorical_crossentropy")(np.zeros((2, 3), int), np.zeros((2, 3)))


# --- the whole model ----------------------------------------------------------------------

@pytest.mark.parametrize("loss,out_act", [("sparse_categorical_crossentropy", "softmax"),
                                          ("binary_crossentropy", "sigmoid"),
                                          ("mse", "tanh")])
def test_model_gradients_through_fused_loss_and_lengths(rng, loss, out_act):
    model = Sequential([Recurrent(LSTM(3, 4, dtype="float64"), return_sequences=True),
                        Recurrent(GRU(4, 3, bidirectional=True, dtype="float64")),
                        Dense(6, 2, out_act, dtype="float64")], seed=5)
    model.compile("sgd", loss)
    assert (model._fused_loss is not None) == (out_act != "tanh")
    x = rng.standard_normal((4, 5, 3))
    lengths = np.array([5, 3, 1, 4])
    y = rng.integers(0, 2, 4) if loss.startswith("sparse") else rng.integers(0, 2, (4, 2)).astype(float)
    value, grads = model.loss_and_gradients(x, y, lengths)
    keyed = {k: p for k, p, _ in model._trainable()}

    def f():
        return model.loss_and_gradients(x, y, lengths)[0]

    fd_check(f, keyed, grads, rng, f"model {loss}", samples=4)


def test_model_gradients_sequence_output_masked(rng):
    """Embedding -> RNN (every step) -> Dense softmax; padded steps carry no loss."""
    model = Sequential([Embedding(7, 3, dtype="float64"),
                        Recurrent(RNN(3, 4, dtype="float64"), return_sequences=True),
                        Dense(4, 7, "softmax", dtype="float64")], seed=1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.integers(0, 7, (3, 6))
    y = rng.integers(0, 7, (3, 6))
    lengths = np.array([6, 2, 4])
    keyed = {k: p for k, p, _ in model._trainable()}
    _, grads = model.loss_and_gradients(x, y, lengths)
    fd_check(lambda: model.loss_and_gradients(x, y, lengths)[0], keyed, grads, rng, "seq model",
             samples=5)
    y2 = y.copy()
    y2[1, 2:] = 0  # targets at padded steps do not matter
    assert model.loss_and_gradients(x, y2, lengths)[0] == model.loss_and_gradients(x, y, lengths)[0]


# --- optimisers ---------------------------------------------------------------------------

def _two_steps(opt, p0, g1, g2):
    p = p0.copy()
    opt.apply([("w", p, g1.copy())])
    opt.apply([("w", p, g2.copy())])
    return p


def test_sgd_updates():
    p0, g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 1.0]), np.array([-1.0, 0.25])
    np.testing.assert_allclose(_two_steps(optimizers.SGD(0.1), p0, g1, g2), p0 - 0.1 * g1 - 0.1 * g2)
    # momentum: v1 = -lr g1; v2 = m v1 - lr g2
    v1 = -0.1 * g1
    v2 = 0.9 * v1 - 0.1 * g2
    np.testing.assert_allclose(_two_steps(optimizers.SGD(0.1, momentum=0.9), p0, g1, g2), p0 + v1 + v2)
    nest = p0 + (0.9 * v1 - 0.1 * g1) + (0.9 * v2 - 0.1 * g2)
    np.testing.assert_allclose(_two_steps(optimizers.SGD(0.1, 0.9, nesterov=True), p0, g1, g2), nest)


def _adam_reference(p, grads, lr, b1, b2, eps, wd=0.0):
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        p = p - lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def test_adam_and_adamw_updates():
    p0, g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 1.0]), np.array([-1.0, 0.25])
    got = _two_steps(optimizers.Adam(0.01), p0, g1, g2)
    np.testing.assert_allclose(got, _adam_reference(p0, [g1, g2], 0.01, 0.9, 0.999, 1e-7))
    # the first Adam step moves each weight by about lr, whatever the gradient's size
    first = p0.copy()
    optimizers.Adam(0.01).apply([("w", first, g1 * 1000)])
    np.testing.assert_allclose(first, p0 - 0.01, rtol=1e-6)
    got = _two_steps(optimizers.AdamW(0.01, weight_decay=0.1), p0, g1, g2)
    np.testing.assert_allclose(got, _adam_reference(p0, [g1, g2], 0.01, 0.9, 0.999, 1e-7, 0.1))


def test_rmsprop_updates():
    p0, g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 1.0]), np.array([-1.0, 0.25])
    v1 = 0.1 * g1 ** 2
    v2 = 0.9 * v1 + 0.1 * g2 ** 2
    expected = p0 - 0.01 * g1 / (np.sqrt(v1) + 1e-7) - 0.01 * g2 / (np.sqrt(v2) + 1e-7)
    np.testing.assert_allclose(_two_steps(optimizers.RMSprop(0.01), p0, g1, g2), expected)
    s1 = 0.01 * g1 / (np.sqrt(v1) + 1e-7)
    s2 = 0.01 * g2 / (np.sqrt(v2) + 1e-7)
    expected = p0 - s1 - (0.5 * s1 + s2)
    np.testing.assert_allclose(_two_steps(optimizers.RMSprop(0.01, momentum=0.5), p0, g1, g2), expected)


def test_global_norm_clipping():
    a, b = np.array([3.0, 0.0]), np.array([[4.0]])
    pa, pb = np.zeros(2), np.zeros((1, 1))
    optimizers.SGD(1.0, global_clipnorm=1.0).apply([("a", pa, a), ("b", pb, b)])
    np.testing.assert_allclose(pa, [-0.6, 0.0])   # norm 5 scaled to 1
    np.testing.assert_allclose(pb, [[-0.8]])
    pa = np.zeros(2)
    optimizers.SGD(1.0, global_clipnorm=10.0).apply([("a", pa, a)])
    np.testing.assert_allclose(pa, -a)           # under the limit: untouched


def test_schedules_drive_the_learning_rate():
    s = optimizers.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    assert [s(k) for k in (0, 1, 2, 4)] == pytest.approx([0.1, 0.1 * 0.5 ** 0.5, 0.05, 0.025])
    st = optimizers.ExponentialDecay(0.1, 2, 0.5, staircase=True)
    assert [st(k) for k in (0, 1, 2, 3)] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    c = optimizers.CosineDecay(1.0, 10, alpha=0.1)
    assert [c(0), c(5), c(10), c(20)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    w = optimizers.CosineDecay(1.0, 10, warmup_steps=4)
    assert [w(0), w(3), w(4)] == pytest.approx([0.25, 1.0, 1.0])
    pc = optimizers.PiecewiseConstantDecay([2, 5], [1.0, 0.5, 0.1])
    assert [pc(0), pc(2), pc(5)] == [1.0, 0.5, 0.1]
    opt = optimizers.SGD(optimizers.PiecewiseConstantDecay([1], [1.0, 0.5]))
    p = np.zeros(1)
    opt.apply([("p", p, np.ones(1))])
    opt.apply([("p", p, np.ones(1))])
    np.testing.assert_allclose(p, [-1.5])


def test_optimizer_config_round_trip():
    opt = optimizers.Adam(optimizers.CosineDecay(0.01, 100), global_clipnorm=2.0)
    again = optimizers.from_config(optimizers.to_config(opt))
    assert again.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        optimizers.get("adagrad")
    with pytest.raises(ValueError, match="momentum must be a number in"):
        optimizers.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        optimizers.Adam(-1.0)


# --- metrics ------------------------------------------------------------------------------

def test_accuracy_flavours_follow_the_loss():
    p = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    sparse = metrics.get("accuracy", losses.get("sparse_categorical_crossentropy"))
    sparse.update(np.array([1, 1, 1]), p)
    assert sparse.result() == pytest.approx(2 / 3)
    cat = metrics.get("accuracy", losses.get("categorical_crossentropy"))
    cat.update(np.array([[0, 1], [1, 0], [1, 0]]), p)
    assert cat.result() == pytest.approx(2 / 3)
    binary = metrics.get("accuracy", losses.get("binary_crossentropy"))
    binary.update(np.array([[1.0], [0.0]]), np.array([[0.6], [0.7]]))
    assert binary.result() == pytest.approx(0.5)
    mae = metrics.get("mae")
    mae.update(np.zeros((2, 1)), np.array([[1.0], [-3.0]]), weights=np.array([1.0, 0.0]))
    assert mae.result() == pytest.approx(1.0)

"""Arrays of any provenance give the results of the same call with plain C-contiguous native
arrays: pickled, dtype metadata, byte-swapped, read-only, misaligned, negative strides,
Fortran order.  Also pickled layers and models."""

import copy
import pickle

import numpy as np
import pytest

import fusedrnn
from fusedrnn import GRU, LSTM, RNN, Dense, Recurrent, Sequential, ops

KINDS = ("pickled", "copied", "metadata", "byteswapped", "readonly", "misaligned", "negstride",
         "fortran")


def variant(a: np.ndarray, kind: str) -> np.ndarray:
    """An array equal to a, held in memory of the given kind."""
    a = np.ascontiguousarray(a)
    if kind == "pickled":
        return pickle.loads(pickle.dumps(a))
    if kind == "copied":
        return copy.deepcopy(a)
    if kind == "metadata":
        return a.astype(np.dtype(a.dtype, metadata={"unit": "volts"}))
    if kind == "byteswapped":
        out = a.astype(a.dtype.newbyteorder())
        assert not out.dtype.isnative
        return out
    if kind == "readonly":
        out = a.copy()
        out.flags.writeable = False
        return out
    if kind == "misaligned":
        buf = np.empty(a.nbytes + 1, np.uint8)
        out = buf[1:].view(a.dtype).reshape(a.shape)
        out[...] = a
        assert not out.flags.aligned
        return out
    if kind == "negstride":
        out = np.ascontiguousarray(a[::-1])[::-1]
        assert out.strides[0] < 0 or a.shape[0] == 1
        return out
    if kind == "fortran":
        return np.asfortranarray(a)
    raise AssertionError(kind)


def _lstm_args(rng, dtype, proj=False):
    T, B, I, H = 5, 3, 4, 6
    P = 3 if proj else H
    f = lambda *s: (rng.standard_normal(s) * 0.4).astype(dtype)
    args = dict(x=f(T, B, I), w_ih=f(4 * H, I), w_hh=f(4 * H, P), b_ih=f(4 * H), b_hh=f(4 * H),
                h0=f(B, P), c0=f(B, H))
    if proj:
        args["w_hr"] = f(P, H)
    return args, np.array([5, 2, 4]), (T, B, P, H)


def _run_lstm(args, lengths, dout, dh_n, dc_n):
    out, h, c, cache = ops.lstm_forward(**args, lengths=lengths, training=True)
    return (out, h, c) + tuple(ops.lstm_backward(cache, dout, dh_n, dc_n).values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_ops_lstm_every_argument(rng, dtype, kind):
    args, lengths, (T, B, P, H) = _lstm_args(rng, dtype, proj=True)
    dout = rng.standard_normal((T, B, P)).astype(dtype)
    dh_n = rng.standard_normal((B, P)).astype(dtype)
    dc_n = rng.standard_normal((B, H)).astype(dtype)
    expected = _run_lstm(args, lengths, dout, dh_n, dc_n)
    names = list(args) + ["lengths", "dout", "dh_n", "dc_n"]
    for name in names:
        a = dict(args)
        extra = dict(lengths=lengths, dout=dout, dh_n=dh_n, dc_n=dc_n)
        if name in a:
            a[name] = variant(a[name], kind)
        else:
            extra[name] = variant(extra[name], kind)
        got = _run_lstm(a, **extra)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e, err_msg=f"{kind} {name}")


@pytest.mark.parametrize("cell", ["gru", "rnn"])
@pytest.mark.parametrize("kind", KINDS)
def test_ops_gru_rnn(rng, cell, kind):
    G = 3 if cell == "gru" else 1
    T, B, I, H = 4, 3, 5, 7
    f = lambda *s: (rng.standard_normal(s) * 0.4).astype(np.float32)
    args = dict(x=f(T, B, I), w_ih=f(G * H, I), w_hh=f(G * H, H), b_ih=f(G * H), b_hh=f(G * H),
                h0=f(B, H))
    dout, dh_n = f(T, B, H), f(B, H)
    fwd, bwd = getattr(ops, f"{cell}_forward"), getattr(ops, f"{cell}_backward")

    def run(a, d, dh):
        out, h, cache = fwd(**a, training=True)
        return (out, h) + tuple(bwd(cache, d, dh).values())

    expected = run(args, dout, dh_n)
    for name in list(args) + ["dout", "dh_n"]:
        a = {k: (variant(v, kind) if k == name else v) for k, v in args.items()}
        got = run(a, variant(dout, kind) if name == "dout" else dout,
                  variant(dh_n, kind) if name == "dh_n" else dh_n)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e, err_msg=f"{kind} {name}")


@pytest.mark.parametrize("klass", [LSTM, GRU, RNN])
@pytest.mark.parametrize("kind", KINDS)
def test_layers_forward_backward(rng, klass, kind):
    layer = klass(4, 5, num_layers=2, bidirectional=True, batch_first=True, seed=1)
    B, T = 3, 6
    x = rng.standard_normal((B, T, 4)).astype(np.float32)
    h0 = rng.standard_normal((4, B, 5)).astype(np.float32)
    dout = rng.standard_normal((B, T, 10)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    is_lstm = klass is LSTM

    def run(x, h0, dout, lengths):
        layer.zero_grad()
        state = (h0, h0) if is_lstm else h0
        out, hn = layer(x, state, lengths)
        dx, dh = layer.backward(dout)
        return [out, dx] + [g.copy() for g in layer.grads.values()]

    expected = run(x, h0, dout, lengths)
    for name in ("x", "h0", "dout", "lengths"):
        args = dict(x=x, h0=h0, dout=dout, lengths=lengths)
        args[name] = variant(args[name], kind)
        for g, e in zip(run(**args), expected):
            np.testing.assert_array_equal(g, e, err_msg=f"{kind} {name}")


def _model(dtype="float32"):
    m = Sequential([Recurrent(LSTM(4, 6, dtype=dtype)), Dense(6, 2, dtype=dtype)], seed=0)
    m.compile("adam", "mse", ["mae"])
    return m


@pytest.mark.parametrize("kind", KINDS)
def test_sequential_fit_predict_evaluate(rng, kind):
    x = rng.standard_normal((8, 5, 4)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    lengths = np.array([5, 3, 4, 1, 2, 5, 5, 3])

    def run(x, y, lengths):
        m = _model()
        pred = m.predict(x, lengths=lengths, batch_size=8)
        ev = m.evaluate(x, y, lengths=lengths, batch_size=8)
        m.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False, lengths=lengths)
        return [pred, np.array(ev)] + m.get_weights()

    expected = run(x, y, lengths)
    for name in ("x", "y", "lengths"):
        args = dict(x=x, y=y, lengths=lengths)
        args[name] = variant(args[name], kind)
        for g, e in zip(run(**args), expected):
            np.testing.assert_array_equal(g, e, err_msg=f"{kind} {name}")


@pytest.mark.parametrize("kind", ["byteswapped", "misaligned", "fortran", "readonly"])
def test_dense_and_set_weights(rng, kind):
    d = Dense(4, 3, "tanh", seed=0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(d(variant(x, kind)), d(x))
    m, ref = _model(), _model()
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in m.get_weights()]
    m.set_weights([variant(w, kind) for w in weights])
    ref.set_weights(weights)
    for a, b in zip(m.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("klass", [LSTM, GRU, RNN])
def test_pickled_layer_computes_the_same(rng, klass):
    layer = klass(3, 4, num_layers=2, seed=2)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    clone = pickle.loads(pickle.dumps(layer))
    out2, _ = clone(x)
    np.testing.assert_array_equal(out2, out)
    for k in layer.grads:
        np.testing.assert_array_equal(clone.grads[k], layer.grads[k])
    clone.backward(np.ones_like(out2))  # a pickled layer trains like the original
    dcopy = copy.deepcopy(layer)
    np.testing.assert_array_equal(dcopy(x)[0], out)


def test_pickled_sequential_predicts_and_trains_the_same(rng):
    x = rng.standard_normal((8, 5, 4)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    m = _model()
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    clone = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(clone.predict(x), m.predict(x))
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    clone.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for a, b in zip(clone.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)

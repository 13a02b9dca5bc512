"""NaN and Inf in x, h0, c0, every weight and dout propagate through the layers' forward and
backward exactly as through fusedrnn.reference: NaN and Inf in the same places, the same
finite values elsewhere.

With padded sequences the oracle is the reference run on each sequence alone, cut to its
length: padding then cannot enter at all, which is the contract (docs/conventions.md: zeros
past each length, gradients arriving there ignored).  The batched reference masks padded
rows by multiplying with 0, so NaN from the padding leaks into it; it is the oracle only
without lengths."""

import zlib

import numpy as np
import pytest

from fusedrnn import GRU, LSTM, RNN
from fusedrnn import reference as ref

T, B, I, H = 5, 3, 4, 3
CLASSES = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
TARGETS = ["x", "h0", "c0", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "dout"]
TOL = {"float64": 1e-10, "float32": 2e-5}


def _cases():
    for cell in CLASSES:
        for target in TARGETS:
            if target == "c0" and cell != "lstm":
                continue
            for value in (np.nan, np.inf, -np.inf):
                yield cell, target, value


def _place(rng, arr, value):
    idx = tuple(int(rng.integers(0, n)) for n in arr.shape)
    arr[idx] = value


def _assert_same(got, expected, dtype, what):
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isinf(got) * np.sign(got), np.isinf(expected) * np.sign(expected),
                                  err_msg=f"{what}: Inf positions")
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max(initial=0)))
    err = float(np.abs(got[finite] - expected[finite]).max(initial=0)) / scale
    assert err <= TOL[dtype], f"{what}: max scaled error {err:.2e}"


def _reference(cell, w, c0, dout, lengths):
    """(out, h_n, c_n, grads) of the reference; per sequence when lengths are given."""
    x, w_ih, w_hh, b_ih, b_hh, h0 = w
    if lengths is None:
        if cell == "lstm":
            out, h, c, cache = ref.lstm_forward(*w, c0, lengths=None)
            return out, h, c, ref.lstm_backward(cache, dout)
        fwd, bwd = (ref.gru_forward, ref.gru_backward) if cell == "gru" else (ref.rnn_forward, ref.rnn_backward)
        out, h, cache = fwd(*w)
        return out, h, None, bwd(cache, dout)
    out, h, c = np.zeros((T, B, H)), np.zeros((B, H)), np.zeros((B, H))
    grads = None
    for b, L in enumerate(lengths):
        one = (x[:L, b:b + 1], w_ih, w_hh, b_ih, b_hh, h0[b:b + 1])
        o, hb, cb, g = _reference(cell, one, None if c0 is None else c0[b:b + 1], dout[:L, b:b + 1], None)
        out[:L, b], h[b] = o[:, 0], hb[0]
        if cb is not None:
            c[b] = cb[0]
        dx = np.zeros((T, 1, I))
        dx[:L] = g["dx"]
        g = dict(g, dx=dx)
        if grads is None:
            grads = {k: v.copy() for k, v in g.items()}
        else:
            for k in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
                grads[k] = grads[k] + g[k]
            for k in ("dx", "dh0", "dc0"):
                if k in g:
                    grads[k] = np.concatenate([grads[k], g[k]], axis=1 if k == "dx" else 0)
    return out, h, c, grads


def _marked_cases():
    # Padded cases with an infinite recurrent weight check that a finished sequence's running dh
    # is carried, not recomputed as 0 @ w_hh (= NaN) on its padded steps.
    for cell, target, value in _cases():
        for lengths in (None, (5, 3, 4)):
            yield pytest.param(cell, target, value, lengths,
                               id=f"{cell}-{target}-{value}-{'padded' if lengths else 'full'}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell,target,value,lengths", list(_marked_cases()))
def test_nonfinite_values_propagate_like_the_reference(cell, target, value, lengths, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{cell} {target} {value}".encode()))
    kw = {"nonlinearity": "tanh"} if cell == "rnn" else {}
    layer = CLASSES[cell](I, H, dtype=dtype, seed=1, **kw)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((1, B, H)).astype(dtype)
    c0 = rng.standard_normal((1, B, H)).astype(dtype)
    dout = rng.standard_normal((T, B, H)).astype(dtype)
    arrays = {"x": x, "h0": h0, "c0": c0, "dout": dout}
    _place(rng, arrays[target] if target in arrays else layer.params[target], value)
    p = {k: v.astype(np.float64) for k, v in layer.params.items()}
    w = (x.astype(np.float64), p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"],
         h0[0].astype(np.float64))
    lens = None if lengths is None else np.array(lengths)

    with np.errstate(all="ignore"):
        r_out, r_h, r_c, r = _reference(cell, w, c0[0].astype(np.float64) if cell == "lstm" else None,
                                        dout.astype(np.float64), lens)
        if cell == "lstm":
            out, (h_n, c_n) = layer(x, (h0, c0), lens)
            dx, (dh0, dc0) = layer.backward(dout)
            _assert_same(c_n[0], r_c, dtype, "c_n")
            _assert_same(dc0[0], r["dc0"], dtype, "dc0")
        else:
            out, h_n = layer(x, h0, lens)
            dx, dh0 = layer.backward(dout)
    _assert_same(out, r_out, dtype, "out")
    _assert_same(h_n[0], r_h, dtype, "h_n")
    _assert_same(dx, r["dx"], dtype, "dx")
    _assert_same(dh0[0], r["dh0"], dtype, "dh0")
    for name, key in (("weight_ih_l0", "dw_ih"), ("weight_hh_l0", "dw_hh"), ("bias_ih_l0", "db_ih"),
                      ("bias_hh_l0", "db_hh")):
        _assert_same(layer.grads[name], r[key], dtype, name)

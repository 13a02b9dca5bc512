"""The compiled functions' argument boundary: dtypes compared by equivalence, optional arrays
that are not ndarrays refused (never read from a freed temporary), misaligned memory refused,
and the float32 activations exact at the edges of their range (tiny sigmoids, overflow, NaN)."""

import pickle

import numpy as np
import pytest

from fusedrnn import _core
from fusedrnn import reference as ref

T, B, I, H = 5, 3, 4, 6


def lstm_args(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return dict(x=f(T, B, I), w_ih=f(4 * H, I), w_hh=f(4 * H, H), b_ih=f(4 * H), b_hh=f(4 * H),
                w_hr=None, h0=f(B, H), c0=f(B, H), lengths=None, reverse=False,
                activation="tanh", training=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pickled_arrays_are_accepted(dtype):
    args = lstm_args(dtype)
    expected = _core.lstm_forward(**args)
    # An unpickled array carries its own dtype object, equal to but not the same as float32's.
    unpickled = {k: pickle.loads(pickle.dumps(v)) if isinstance(v, np.ndarray) else v
                 for k, v in args.items()}
    got = _core.lstm_forward(**unpickled)
    for a, b in zip(got[:3], expected[:3]):
        np.testing.assert_array_equal(a, b)


def test_dtype_with_metadata_is_accepted():
    args = lstm_args(np.float32)
    meta = np.dtype(np.float32, metadata={"unit": "volt"})
    expected = _core.lstm_forward(**args)
    args["x"] = args["x"].astype(meta)
    got = _core.lstm_forward(**args)
    np.testing.assert_array_equal(got[0], expected[0])


def test_byte_swapped_dtype_is_refused_by_name():
    args = lstm_args(np.float32)
    args["w_hh"] = args["w_hh"].astype(">f4")
    with pytest.raises(TypeError, match="w_hh.*native byte order"):
        _core.lstm_forward(**args)


@pytest.mark.parametrize("name", ["c0", "w_hr", "lengths"])
def test_optional_arguments_must_be_ndarrays(name):
    args = lstm_args(np.float32)
    if name == "w_hr":
        args["w_hr"] = np.zeros((2, H), np.float32).tolist()
        args["w_hh"] = np.zeros((4 * H, 2), np.float32)
        args["h0"] = np.zeros((B, 2), np.float32)
    elif name == "lengths":
        args["lengths"] = [T] * B
    else:
        args[name] = args[name].tolist()
    with pytest.raises(TypeError, match=f"{name} must be a numpy.ndarray"):
        _core.lstm_forward(**args)


def test_backward_dc_n_must_be_an_ndarray():
    args = lstm_args(np.float32)
    args["training"] = True
    out, h_n, c_n, ws = _core.lstm_forward(**args)
    with pytest.raises(TypeError, match="dc_n must be a numpy.ndarray"):
        _core.lstm_backward(args["x"], args["w_ih"], args["w_hh"], None, None, False, "tanh", ws,
                            np.zeros_like(out), np.zeros_like(h_n), np.zeros_like(c_n).tolist())


def misaligned(a):
    """A C-contiguous copy of a whose data pointer is off by one byte."""
    raw = np.empty(a.nbytes + a.itemsize, np.uint8)
    start = 1 if raw.ctypes.data % a.itemsize == 0 else 0
    view = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert view.flags.c_contiguous and not view.flags.aligned
    return view


def test_misaligned_arrays_are_refused_by_the_compiled_functions():
    args = lstm_args(np.float32)
    args["x"] = misaligned(args["x"])
    with pytest.raises(ValueError, match="x must be aligned"):
        _core.lstm_forward(**args)


def _lstm_ref_vs_core(x_scale, activation, dtype=np.float32):
    args = lstm_args(dtype, seed=3)
    args["x"] = args["x"] * dtype(x_scale)
    args["activation"] = activation
    out, h_n, c_n, _ = _core.lstm_forward(**args)
    r_out, r_h, r_c, _ = ref.lstm_forward(args["x"].astype(np.float64), *(args[k].astype(np.float64)
                                          for k in ("w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")),
                                          activation=activation)
    return out, r_out, c_n, r_c


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e30])
def test_float32_gates_saturate_exactly(scale):
    """Pre-activations of +-1e2..1e30: sigmoid and tanh saturate to the reference's values
    (tiny sigmoids are not clamped at ~6e-39, large ones do not overflow to NaN)."""
    out, r_out, c_n, r_c = _lstm_ref_vs_core(scale, "tanh")
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(out, r_out, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c_n, r_c, rtol=1e-5, atol=1e-6)


def test_relu_lstm_with_huge_inputs_matches_reference():
    """relu-LSTM with pre-activations ~1e3: c grows to ~1e6 and a gate's tiny sigmoid times a
    huge candidate must still match the reference (relative error)."""
    out, r_out, c_n, r_c = _lstm_ref_vs_core(1e3, "relu")
    assert np.all(np.isfinite(r_c))
    np.testing.assert_allclose(c_n, r_c, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out, r_out, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_nan_and_inf_propagate_without_crashing(cell, dtype):
    rng = np.random.default_rng(1)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    x = rng.standard_normal((T, B, I)).astype(dtype)
    x[1, 0, 2] = np.nan
    x[2, 1, 0] = np.inf
    w_ih = rng.standard_normal((G * H, I)).astype(dtype)
    w_hh = rng.standard_normal((G * H, H)).astype(dtype)
    b = np.zeros(G * H, dtype)
    h0 = np.zeros((B, H), dtype)
    c0 = np.zeros((B, H), dtype) if cell == "lstm" else None
    with np.errstate(all="ignore"):
        out, h_n, _, _ = getattr(_core, f"{cell}_forward")(x, w_ih, w_hh, b, b, None, h0, c0, None, False,
                                                          "tanh", False)
        ref_fn = getattr(ref, f"{cell}_forward")
        r = ref_fn(x.astype(np.float64), w_ih.astype(np.float64), w_hh.astype(np.float64))
    r_out = r[0]
    # NaN exactly where the reference has NaN; the untouched row (b = 2) stays finite and equal.
    np.testing.assert_array_equal(np.isnan(out), np.isnan(r_out))
    np.testing.assert_allclose(out[:, 2], r_out[:, 2], rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-5 if dtype == np.float32 else 1e-10)

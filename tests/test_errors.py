"""Every bad-input path of fusedrnn.ops, and of the raw compiled functions in fusedrnn._core.

ops: TypeError for wrong types/dtypes, ValueError for wrong shapes/values, RuntimeError for a
backward without a training cache; every message names the argument.  _core: the same
inputs called directly must raise TypeError/ValueError, never crash the interpreter.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import GATES, make_case, run_forward
from fusedrnn import _core, ops

CELLS = ["lstm", "gru", "rnn"]
T, B, I, H = 4, 3, 5, 6


def valid(cell, dtype=np.float64, proj=0):
    """A valid keyword set for ops.<cell>_forward (lengths given)."""
    rng = np.random.default_rng(7)
    case = make_case(rng, cell, T, B, I, H, dtype, proj=proj, lengths=True)
    if not proj:
        case.pop("w_hr", None)
    return case


def forward(cell, **kw):
    return getattr(ops, f"{cell}_forward")(**kw)


def test_valid_arguments_run():
    """The baseline every test below breaks one piece of."""
    for cell in CELLS:
        out = forward(cell, **valid(cell), training=True)
        assert out[0].shape == (T, B, H)
        assert out[-1] is not None
    out = forward("lstm", **valid("lstm", proj=2))
    assert out[0].shape == (T, B, 2)


# ----------------------------------------------------------------------------
# x
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(T, B * I), (T, B, I, 1), (T * B * I,)], ids=["2d", "4d", "1d"])
def test_x_not_3d(cell, shape):
    kw = valid(cell)
    kw["x"] = kw["x"].reshape(shape)
    with pytest.raises(ValueError, match=r"^x must be 3-D"):
        forward(cell, **kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(0, B, I), (T, 0, I), (T, B, 0)], ids=["T0", "B0", "I0"])
def test_x_zero_size(cell, shape):
    kw = valid(cell)
    kw["x"] = np.zeros(shape)
    if shape[2] == 0:
        kw["w_ih"] = np.zeros((GATES[cell] * H, 0))
    if shape[1] == 0:
        kw["h0"] = None
        kw["lengths"] = None
        if cell == "lstm":
            kw["c0"] = None
    with pytest.raises(ValueError, match=r"^x must have T, B, I >= 1"):
        forward(cell, **kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex128, np.float16,
                                   np.longdouble, object],
                         ids=["int64", "int32", "bool", "complex", "float16", "longdouble",
                              "object"])
def test_x_bad_dtype(cell, dtype):
    kw = valid(cell)
    kw["x"] = kw["x"].astype(dtype)
    match = r"^x must have dtype float32 or float64, got "
    if dtype is np.float16:
        match += r"float16 \(convert it with \.astype\(np\.float32\)\)"
    with pytest.raises(TypeError, match=match):
        forward(cell, **kw)


@pytest.mark.parametrize("bad", [None, "abc", [[[1.0, 2.0]], [[1.0]]]], ids=["None", "str", "ragged"])
def test_x_not_an_array(bad):
    kw = valid("lstm")
    kw["x"] = bad
    with pytest.raises(TypeError, match=r"^x must"):
        forward("lstm", **kw)


# ----------------------------------------------------------------------------
# weights, biases, states
# ----------------------------------------------------------------------------

# (any row count is a multiple of the RNN's single gate: no "rows" case for it)
W_IH_BAD = [(c, w) for c in CELLS for w in ["rows", "zero_rows", "cols", "1d", "3d"]
            if not (c == "rnn" and w == "rows")]


@pytest.mark.parametrize("cell,which", W_IH_BAD, ids=[f"{c}-{w}" for c, w in W_IH_BAD])
def test_w_ih_bad_shape(cell, which):
    kw = valid(cell)
    G = GATES[cell]
    shape = {"rows": (G * H + 1, I), "zero_rows": (0, I), "cols": (G * H, I + 1),
             "1d": (G * H * I,), "3d": (G, H, I)}[which]
    kw["w_ih"] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^w_ih must have shape \(G\*H, I\) with G = {G}"):
        forward(cell, **kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("which", ["rows", "cols", "transposed", "1d"])
def test_w_hh_bad_shape(cell, which):
    kw = valid(cell)
    G = GATES[cell]
    shape = {"rows": (G * H - 1, H), "cols": (G * H, H + 1), "transposed": (H, G * H),
             "1d": (G * H * H,)}[which]
    if which == "transposed" and G == 1:
        shape = (H, H + 1)
    kw["w_hh"] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^w_hh must have shape \(G\*H, P\) = \({G * H}, {H}\)"):
        forward(cell, **kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", ["b_ih", "b_hh"])
@pytest.mark.parametrize("shape", ["short", "long", "2d"])
def test_bias_bad_shape(cell, name, shape):
    kw = valid(cell)
    GH = GATES[cell] * H
    kw[name] = np.zeros({"short": (GH - 1,), "long": (GH + 1,), "2d": (1, GH)}[shape])
    with pytest.raises(ValueError, match=rf"^{name} must have shape \(G\*H,\) = \({GH},\)"):
        forward(cell, **kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(B + 1, H), (B, H - 1), (B * H,), (1, B, H)],
                         ids=["B", "P", "1d", "3d"])
def test_h0_bad_shape(cell, shape):
    kw = valid(cell)
    kw["h0"] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^h0 must have shape \(B, P\) = \({B}, {H}\)"):
        forward(cell, **kw)


@pytest.mark.parametrize("shape", [(B + 1, H), (B, H + 1), (B * H,)], ids=["B", "H", "1d"])
def test_c0_bad_shape(shape):
    kw = valid("lstm")
    kw["c0"] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^c0 must have shape \(B, H\) = \({B}, {H}\)"):
        forward("lstm", **kw)


@pytest.mark.parametrize("shape", [(2, H + 1), (2, H - 1), (0, H), (2 * H,), (1, 2, H)],
                         ids=["cols+1", "cols-1", "zero_rows", "1d", "3d"])
def test_w_hr_bad_shape(shape):
    kw = valid("lstm", proj=2)
    kw["w_hr"] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^w_hr must have shape \(P, H\) with H = {H}"):
        forward("lstm", **kw)


def test_projection_changes_the_expected_shapes():
    """With w_hr (P, H), w_hh must be (4H, P) and h0 (B, P); (4H, H) / (B, H) are errors."""
    kw = valid("lstm", proj=2)
    bad = dict(kw, w_hh=np.zeros((4 * H, H)))
    with pytest.raises(ValueError, match=rf"^w_hh must have shape \(G\*H, P\) = \({4 * H}, 2\)"):
        forward("lstm", **bad)
    bad = dict(kw, h0=np.zeros((B, H)))
    with pytest.raises(ValueError, match=r"^h0 must have shape \(B, P\) = \(3, 2\)"):
        forward("lstm", **bad)
    bad = dict(kw, c0=np.zeros((B, 2)))
    with pytest.raises(ValueError, match=rf"^c0 must have shape \(B, H\) = \(3, {H}\)"):
        forward("lstm", **bad)


def test_w_hr_is_not_a_gru_or_rnn_argument():
    for cell in ("gru", "rnn"):
        with pytest.raises(TypeError, match="w_hr"):
            forward(cell, **valid(cell), w_hr=np.zeros((2, H)))


# ----------------------------------------------------------------------------
# dtypes of the other arrays
# ----------------------------------------------------------------------------

ARRAY_ARGS = {"lstm": ["w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", "w_hr"],
              "gru": ["w_ih", "w_hh", "b_ih", "b_hh", "h0"],
              "rnn": ["w_ih", "w_hh", "b_ih", "b_hh", "h0"]}
MIXED = [(c, n) for c in CELLS for n in ARRAY_ARGS[c]]


@pytest.mark.parametrize("cell,name", MIXED, ids=[f"{c}-{n}" for c, n in MIXED])
@pytest.mark.parametrize("x_dtype", [np.float32, np.float64], ids=["x32", "x64"])
def test_mixed_float_dtypes(cell, name, x_dtype):
    kw = valid(cell, dtype=x_dtype, proj=2 if name == "w_hr" else 0)
    other = np.float64 if x_dtype == np.float32 else np.float32
    kw[name] = kw[name].astype(other)
    with pytest.raises(TypeError, match=rf"^{name} has dtype {np.dtype(other)} but x has dtype "
                                        rf"{np.dtype(x_dtype)}"):
        forward(cell, **kw)


@pytest.mark.parametrize("cell,name", MIXED, ids=[f"{c}-{n}" for c, n in MIXED])
@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex64],
                         ids=["int64", "float16", "complex64"])
def test_non_float_arrays(cell, name, dtype):
    kw = valid(cell, proj=2 if name == "w_hr" else 0)
    kw[name] = kw[name].astype(dtype)
    with pytest.raises(TypeError, match=rf"^{name} must have dtype float64 \(the dtype of x\), "
                                        rf"got {np.dtype(dtype)}"):
        forward(cell, **kw)


# ----------------------------------------------------------------------------
# lengths
# ----------------------------------------------------------------------------

BAD_LENGTHS = {
    "too_short": (np.array([T, T]), ValueError, rf"^lengths must have shape \(B,\) = \({B},\)"),
    "too_long": (np.array([T] * (B + 1)), ValueError, r"^lengths must have shape \(B,\)"),
    "2d": (np.array([[T] * B]), ValueError, r"^lengths must have shape \(B,\)"),
    "scalar": (np.int64(T), ValueError, r"^lengths must have shape \(B,\)"),
    "zero": (np.array([T, 0, 1]), ValueError, rf"^lengths must lie in 1\.\.T = 1\.\.{T}, got values from 0"),
    "T+1": (np.array([T, T + 1, 1]), ValueError, rf"^lengths must lie in 1\.\.T = 1\.\.{T}.* to {T + 1}"),
    "negative": (np.array([T, -2, 1]), ValueError, r"^lengths must lie in 1\.\.T.*from -2"),
    "float": (np.array([4.0, 2.0, 1.0]), TypeError, r"^lengths must be integers, got dtype float64"),
    "bool": (np.array([True, True, True]), TypeError, r"^lengths must be integers, got dtype bool"),
    "str": (["4", "2", "1"], TypeError, r"^lengths must be integers"),
}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("which", list(BAD_LENGTHS))
def test_bad_lengths(cell, which):
    value, exc, match = BAD_LENGTHS[which]
    kw = valid(cell)
    kw["lengths"] = value
    with pytest.raises(exc, match=match):
        forward(cell, **kw)


def test_lengths_in_range_accepted_in_any_integer_dtype():
    """The accepted side of the lengths checks: list, int32, uint8 all equal int64."""
    kw = valid("gru")
    base = forward("gru", **dict(kw, lengths=np.array([4, 1, 2], np.int64)))
    for lengths in ([4, 1, 2], np.array([4, 1, 2], np.int32), np.array([4, 1, 2], np.uint8)):
        got = forward("gru", **dict(kw, lengths=lengths))
        np.testing.assert_array_equal(got[0], base[0])


# ----------------------------------------------------------------------------
# flags and activation names
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("flag", ["reverse", "training"])
@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0, np.array([True])],
                         ids=["1", "0", "str", "None", "float", "array"])
def test_flags_must_be_bool(cell, flag, value):
    kw = valid(cell)
    kw[flag] = value
    with pytest.raises(TypeError, match=rf"^{flag} must be a bool, got "):
        forward(cell, **kw)


def test_numpy_bool_flags_accepted():
    kw = valid("rnn")
    a = forward("rnn", **kw, reverse=np.bool_(True), training=np.bool_(True))
    b = forward("rnn", **kw, reverse=True, training=True)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2] is not None


@pytest.mark.parametrize("value", ["sigmoid", "Tanh", "", None, 1], ids=["sigmoid", "Tanh", "empty", "None", "int"])
def test_unknown_activation(value):
    with pytest.raises(ValueError, match=r"^activation must be 'tanh' or 'relu', got "):
        forward("lstm", **valid("lstm"), activation=value)
    with pytest.raises(ValueError, match=r"^nonlinearity must be 'tanh' or 'relu', got "):
        forward("rnn", **valid("rnn"), nonlinearity=value)


# ----------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------

def backward(cell, cache, **kw):
    return getattr(ops, f"{cell}_backward")(cache, **kw)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_of_inference_forward(cell):
    cache = forward(cell, **valid(cell))[-1]
    assert cache is None
    with pytest.raises(RuntimeError, match=r"^backward needs the cache of a forward run with "
                                           r"training=True"):
        backward(cell, cache)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_with_cache_of_another_cell(cell):
    other = {"lstm": "gru", "gru": "rnn", "rnn": "lstm"}[cell]
    cache = forward(other, **valid(other), training=True)[-1]
    with pytest.raises(TypeError, match=rf"^cache comes from {other}_forward, not {cell}_forward"):
        backward(cell, cache)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_with_a_reference_cache(cell):
    """The oracle's cache (a dict) is not a ForwardCache."""
    from fusedrnn import reference

    act = {"lstm": "tanh", "gru": None, "rnn": "tanh"}[cell]
    case = make_case(np.random.default_rng(1), cell, T, B, I, H, np.float64)
    ref_cache = run_forward(reference, cell, act, case)[-1]
    with pytest.raises(TypeError, match=rf"^cache must be the ForwardCache returned by {cell}_forward, got dict"):
        backward(cell, ref_cache)


@pytest.fixture(params=CELLS + ["lstm-proj"])
def trained(request):
    """(cell, cache, P) of a float64 training forward."""
    cell = request.param.split("-")[0]
    proj = 2 if request.param == "lstm-proj" else 0
    cache = forward(cell, **valid(cell, proj=proj), training=True)[-1]
    return cell, cache, proj or H


@pytest.mark.parametrize("shape", ["T", "B", "P", "2d"])
def test_backward_dout_bad_shape(trained, shape):
    cell, cache, P = trained
    bad = {"T": (T + 1, B, P), "B": (T, B - 1, P), "P": (T, B, P + 1), "2d": (T * B, P)}[shape]
    with pytest.raises(ValueError, match=rf"^dout must have shape \(T, B, P\) = \({T}, {B}, {P}\)"):
        backward(cell, cache, dout=np.zeros(bad))


@pytest.mark.parametrize("shape", ["B", "P", "1d"])
def test_backward_dh_n_bad_shape(trained, shape):
    cell, cache, P = trained
    bad = {"B": (B + 1, P), "P": (B, P + 1), "1d": (B * P,)}[shape]
    with pytest.raises(ValueError, match=rf"^dh_n must have shape \(B, P\) = \({B}, {P}\)"):
        backward(cell, cache, dh_n=np.zeros(bad))


@pytest.mark.parametrize("shape", [(B + 1, H), (B, H + 1), (B, 2)], ids=["B", "H", "P"])
def test_backward_dc_n_bad_shape(shape):
    cache = forward("lstm", **valid("lstm", proj=2), training=True)[-1]
    with pytest.raises(ValueError, match=rf"^dc_n must have shape \(B, H\) = \({B}, {H}\)"):
        backward("lstm", cache, dc_n=np.zeros(shape))


def _bad_cotangent(cell, cache, P, name, dtype):
    shape = {"dout": (T, B, P), "dh_n": (B, P), "dc_n": (B, H)}[name]
    if dtype == np.float32:
        match = rf"^{name} has dtype float32 but x has dtype float64"
    else:
        match = rf"^{name} must have dtype float64 \(the dtype of x\), got {np.dtype(dtype)}"
    with pytest.raises(TypeError, match=match):
        backward(cell, cache, **{name: np.zeros(shape, dtype)})


COT_DTYPES = [np.float32, np.int64, np.float16]
COT_DTYPE_IDS = ["float32", "int64", "float16"]


@pytest.mark.parametrize("name", ["dout", "dh_n"])
@pytest.mark.parametrize("dtype", COT_DTYPES, ids=COT_DTYPE_IDS)
def test_backward_cotangent_bad_dtype(trained, name, dtype):
    _bad_cotangent(*trained, name, dtype)


@pytest.mark.parametrize("proj", [0, 2], ids=["plain", "proj"])
@pytest.mark.parametrize("dtype", COT_DTYPES, ids=COT_DTYPE_IDS)
def test_backward_dc_n_bad_dtype(proj, dtype):
    cache = forward("lstm", **valid("lstm", proj=proj), training=True)[-1]
    _bad_cotangent("lstm", cache, proj or H, "dc_n", dtype)


# ----------------------------------------------------------------------------
# the raw compiled functions
# ----------------------------------------------------------------------------

def raw_args(cell, dtype=np.float64, proj=0):
    """Positional arguments of _core.<cell>_forward as a dict (order preserved)."""
    rng = np.random.default_rng(3)
    G = GATES[cell]
    P = proj or H
    d = {
        "x": rng.standard_normal((T, B, I)).astype(dtype),
        "w_ih": rng.standard_normal((G * H, I)).astype(dtype),
        "w_hh": rng.standard_normal((G * H, P)).astype(dtype),
        "b_ih": np.zeros(G * H, dtype),
        "b_hh": np.zeros(G * H, dtype),
        "w_hr": rng.standard_normal((P, H)).astype(dtype) if proj else None,
        "h0": np.zeros((B, P), dtype),
        "c0": np.zeros((B, H), dtype) if cell == "lstm" else None,
        "lengths": np.array([T, 2, 1], np.int64),
        "reverse": True,
        "activation": "tanh",
        "training": True,
    }
    return d


def raw_forward(cell, d):
    return getattr(_core, f"{cell}_forward")(*d.values())


def raw_backward_args(cell, d):
    out, h_n, c_n, ws = raw_forward(cell, d)
    return {
        "x": d["x"], "w_ih": d["w_ih"], "w_hh": d["w_hh"], "w_hr": d["w_hr"],
        "lengths": d["lengths"], "reverse": d["reverse"], "activation": d["activation"],
        "workspace": ws, "dout": np.ones_like(out), "dh_n": np.ones_like(h_n),
        "dc_n": None if c_n is None else np.ones_like(c_n),
    }


def raw_backward(cell, d):
    return getattr(_core, f"{cell}_backward")(*d.values())


def _fortran(a):
    return np.asfortranarray(a) if a.ndim > 1 else np.repeat(a, 2)[::2]


# name: (mutation of the forward args, exception, message pattern)
RAW_FORWARD_BAD = {
    "x_2d": (lambda d: d.update(x=d["x"][0]), ValueError, r"^x must be 3-D"),
    "x_zero_T": (lambda d: d.update(x=d["x"][:0]), ValueError, r"^x must have T, B, I >= 1"),
    "x_int": (lambda d: d.update(x=d["x"].astype(np.int32)), TypeError, r"^x has dtype int32"),
    "x_float16": (lambda d: d.update(x=d["x"].astype(np.float16)), TypeError, r"^x has dtype float16"),
    "x_noncontiguous": (lambda d: d.update(x=np.asfortranarray(d["x"])), ValueError,
                        r"^x must be C-contiguous"),
    # (the RNN has one gate: any row count is valid, and w_hh no longer fits it)
    "w_ih_rows": (lambda d: d.update(w_ih=d["w_ih"][:-1]), ValueError, r"^w_(ih|hh)"),
    "w_ih_cols": (lambda d: d.update(w_ih=d["w_ih"][:, :-1]), ValueError, r"^w_ih has shape"),
    "w_ih_1d": (lambda d: d.update(w_ih=d["w_ih"][0]), ValueError, r"^w_ih must be 2-D"),
    "w_ih_float32": (lambda d: d.update(w_ih=d["w_ih"].astype(np.float32)), TypeError,
                     r"^w_ih has dtype float32, expected float64"),
    "w_ih_noncontiguous": (lambda d: d.update(w_ih=np.asfortranarray(d["w_ih"])), ValueError,
                           r"^w_ih must be C-contiguous"),
    "w_hh_shape": (lambda d: d.update(w_hh=d["w_hh"][:, :-1]), ValueError, r"^w_hh has shape"),
    "w_hh_noncontiguous": (lambda d: d.update(w_hh=np.asfortranarray(d["w_hh"])), ValueError,
                           r"^w_hh must be C-contiguous"),
    "b_ih_short": (lambda d: d.update(b_ih=d["b_ih"][:-1]), ValueError, r"^b_ih has shape"),
    "b_hh_noncontiguous": (lambda d: d.update(b_hh=_fortran(d["b_hh"])), ValueError,
                           r"^b_hh must be C-contiguous"),
    "b_ih_None": (lambda d: d.update(b_ih=None), TypeError, r"incompatible function arguments"),
    "h0_shape": (lambda d: d.update(h0=d["h0"][:-1]), ValueError, r"^h0 has shape"),
    "h0_float32": (lambda d: d.update(h0=d["h0"].astype(np.float32)), TypeError, r"^h0 has dtype"),
    "h0_noncontiguous": (lambda d: d.update(h0=np.asfortranarray(d["h0"])), ValueError,
                         r"^h0 must be C-contiguous"),
    "lengths_int32": (lambda d: d.update(lengths=d["lengths"].astype(np.int32)), TypeError,
                      r"^lengths must have dtype int64"),
    "lengths_float": (lambda d: d.update(lengths=d["lengths"].astype(float)), TypeError,
                      r"^lengths must have dtype int64"),
    "lengths_short": (lambda d: d.update(lengths=d["lengths"][:-1]), ValueError, r"^lengths has shape"),
    "lengths_2d": (lambda d: d.update(lengths=d["lengths"][None]), ValueError, r"^lengths has shape"),
    "lengths_0": (lambda d: d.update(lengths=np.array([T, 0, 1])), ValueError, r"^lengths must lie in 1\.\."),
    "lengths_T+1": (lambda d: d.update(lengths=np.array([T, T + 1, 1])), ValueError, r"^lengths must lie in"),
    "lengths_negative": (lambda d: d.update(lengths=np.array([T, -1, 1])), ValueError, r"^lengths must lie in"),
    "lengths_huge": (lambda d: d.update(lengths=np.array([T, 2**62, 1])), ValueError, r"^lengths must lie in"),
    "lengths_noncontiguous": (lambda d: d.update(lengths=np.repeat(d["lengths"], 2)[::2]), ValueError,
                              r"^lengths must be C-contiguous"),
    "activation": (lambda d: d.update(activation="gelu"), ValueError, r"^activation must be 'tanh' or 'relu'"),
    # (the GRU/RNN refuse any w_hr: see test_raw_gru_rnn_reject_a_projection)
    "w_hr_bad_cols": (lambda d: d.update(w_hr=np.zeros((2, H + 1))), ValueError, r"^w_hr "),
}
RAW_LSTM_BAD = {
    "c0_None": (lambda d: d.update(c0=None), ValueError, r"^c0 is required"),
    "c0_shape": (lambda d: d.update(c0=np.zeros((B, H + 1))), ValueError, r"^c0 has shape"),
    "c0_float32": (lambda d: d.update(c0=d["c0"].astype(np.float32)), TypeError, r"^c0 has dtype"),
    "w_hr_float32": (lambda d: d.update(w_hr=np.zeros((2, H), np.float32),
                                        w_hh=np.zeros((4 * H, 2)), h0=np.zeros((B, 2))),
                     TypeError, r"^w_hr has dtype float32"),
    "w_hr_noncontiguous": (lambda d: d.update(w_hr=np.asfortranarray(np.ones((2, H))),
                                              w_hh=np.zeros((4 * H, 2)), h0=np.zeros((B, 2))),
                           ValueError, r"^w_hr must be C-contiguous"),
}
RAW_FWD = [(c, n) for c in CELLS for n in RAW_FORWARD_BAD] + [("lstm", n) for n in RAW_LSTM_BAD]


@pytest.mark.parametrize("cell,name", RAW_FWD, ids=[f"{c}-{n}" for c, n in RAW_FWD])
def test_raw_forward_rejects(cell, name):
    mutate, exc, match = {**RAW_FORWARD_BAD, **RAW_LSTM_BAD}[name]
    d = raw_args(cell)
    raw_forward(cell, d)  # valid as built
    mutate(d)
    with pytest.raises(exc, match=match):
        raw_forward(cell, d)


RAW_BACKWARD_BAD = {
    "workspace_width": (lambda d: d.update(workspace=d["workspace"][:, :, :-1].copy()), ValueError,
                        r"^workspace has shape"),
    "workspace_T": (lambda d: d.update(workspace=d["workspace"][:-1].copy()), ValueError,
                    r"^workspace has shape"),
    "workspace_2d": (lambda d: d.update(workspace=d["workspace"][0].copy()), ValueError,
                     r"^workspace has shape"),
    "workspace_float32": (lambda d: d.update(workspace=d["workspace"].astype(np.float32)), TypeError,
                          r"^workspace has dtype float32"),
    "workspace_noncontiguous": (lambda d: d.update(workspace=np.asfortranarray(d["workspace"])),
                                ValueError, r"^workspace must be C-contiguous"),
    "workspace_None": (lambda d: d.update(workspace=None), TypeError, r"incompatible function arguments"),
    "dout_shape": (lambda d: d.update(dout=d["dout"][:-1].copy()), ValueError, r"^dout has shape"),
    "dout_float32": (lambda d: d.update(dout=d["dout"].astype(np.float32)), TypeError, r"^dout has dtype"),
    "dout_noncontiguous": (lambda d: d.update(dout=np.asfortranarray(d["dout"])), ValueError,
                           r"^dout must be C-contiguous"),
    "dh_n_shape": (lambda d: d.update(dh_n=d["dh_n"][:-1].copy()), ValueError, r"^dh_n has shape"),
    "x_shape": (lambda d: d.update(x=d["x"][:-1].copy(), lengths=None), ValueError,
                r"^workspace has shape"),
    "x_int": (lambda d: d.update(x=d["x"].astype(np.int64)), TypeError, r"^x has dtype int64"),
    "w_hh_shape": (lambda d: d.update(w_hh=d["w_hh"][:, :-1].copy()), ValueError, r"^w_hh has shape"),
    "lengths_T+1": (lambda d: d.update(lengths=np.array([T + 1, 1, 1])), ValueError, r"^lengths must lie in"),
    "lengths_int32": (lambda d: d.update(lengths=d["lengths"].astype(np.int32)), TypeError,
                      r"^lengths must have dtype int64"),
    "activation": (lambda d: d.update(activation="x"), ValueError, r"^activation must be 'tanh' or 'relu'"),
}
RAW_LSTM_BACKWARD_BAD = {
    "dc_n_None": (lambda d: d.update(dc_n=None), ValueError, r"^dc_n is required"),
    "dc_n_shape": (lambda d: d.update(dc_n=np.ones((B, H + 1))), ValueError, r"^dc_n has shape"),
}
RAW_BWD = [(c, n) for c in CELLS for n in RAW_BACKWARD_BAD] + [("lstm", n) for n in RAW_LSTM_BACKWARD_BAD]


@pytest.mark.parametrize("cell,name", RAW_BWD, ids=[f"{c}-{n}" for c, n in RAW_BWD])
def test_raw_backward_rejects(cell, name):
    mutate, exc, match = {**RAW_BACKWARD_BAD, **RAW_LSTM_BACKWARD_BAD}[name]
    d = raw_backward_args(cell, raw_args(cell))
    raw_backward(cell, d)  # valid as built
    mutate(d)
    with pytest.raises(exc, match=match):
        raw_backward(cell, d)


def test_raw_lstm_projection_workspace_width():
    """With a projection the workspace is wider; one without it must be refused."""
    d_proj = raw_args("lstm", proj=2)
    ws_proj = raw_forward("lstm", d_proj)[3]
    d_plain = raw_args("lstm")
    ws_plain = raw_forward("lstm", d_plain)[3]
    assert ws_proj.shape[:2] == ws_plain.shape[:2] == (T, B)
    bwd = raw_backward_args("lstm", d_proj)
    bwd["workspace"] = np.zeros(ws_proj.shape[:2] + (ws_proj.shape[2] - H,))
    with pytest.raises(ValueError, match=r"^workspace has shape"):
        raw_backward("lstm", bwd)


_W_HR_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fusedrnn import _core
    cell, P, H, training = {cell!r}, {P}, {H}, {training}
    G = {{"gru": 3, "rnn": 1}}[cell]
    T, B, I = 3, 2, 4
    r = np.random.default_rng(0)
    args = (r.standard_normal((T, B, I)), r.standard_normal((G * H, I)),
            r.standard_normal((G * H, P)), np.zeros(G * H), np.zeros(G * H),
            r.standard_normal((P, H)), np.zeros((B, P)), None, None, False, "tanh", training)
    try:
        res = getattr(_core, cell + "_forward")(*args)
        if training:
            out, h_n, _, ws = res
            getattr(_core, cell + "_backward")(args[0], args[1], args[2], args[5], None, False,
                                                "tanh", ws, np.ones_like(out), np.ones_like(h_n), None)
    except (TypeError, ValueError) as exc:
        print("REJECTED", type(exc).__name__, exc)
    else:
        print("ACCEPTED")
""")


@pytest.mark.parametrize("training", [True], ids=["training"])
@pytest.mark.parametrize("P,Hh", [(2, 40), (40, 2), (5, 5)], ids=["P<H", "P>H", "P=H"])
@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_raw_gru_rnn_reject_a_projection(cell, P, Hh, training):
    """w_hr (a projection) exists only for the LSTM: the raw GRU/RNN functions must refuse
    one instead of running with it.  Run in a child process: when accepted, the sizes it
    implies overrun the kernels' buffers and may kill the interpreter."""
    script = _W_HR_SCRIPT.format(cell=cell, P=P, H=Hh, training=training)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, (f"{cell}_forward with w_hr {P}x{Hh} crashed the interpreter "
                                  f"(exit {proc.returncode}): {proc.stderr[-500:]}")
    assert proc.stdout.startswith("REJECTED"), (
        f"{cell}_forward accepted w_hr of shape ({P}, {Hh}): {proc.stdout!r}")
    assert "w_hr" in proc.stdout

"""fusedrnn.ops under fuzzed shapes, values, dtypes, array kinds and argument types.

Every call either equals the NumPy reference (oracle.assert_matches) or raises a TypeError/
ValueError/MemoryError naming the offending argument; anything else fails."""

import platform

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from fusedrnn import ops
from fusedrnn import reference as ref

from .counting import counted, examples, known_defects
from .oracle import RTOL, assert_clean_error, assert_matches, narrowed, sensitivity, widened
from .strategies import PROVENANCE, bad_values, ops_cases

GRAD_KEYS = ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr")


def forward(mod, cell, kw, training=None):
    kw = dict(kw)
    if training is not None:
        kw["training"] = training
    fn = getattr(mod, f"{cell}_forward")
    res = fn(**kw)
    return res if cell == "lstm" else (res[0], res[1], None, res[2])


def backward(mod, cell, cache, dout, dh_n, dc_n):
    if cell == "lstm":
        return mod.lstm_backward(cache, dout, dh_n, dc_n)
    return getattr(mod, f"{cell}_backward")(cache, dout, dh_n)


def cotangents(kw, out, h_n, c_n, seed):
    rng = np.random.default_rng(seed)
    dt = kw["x"].dtype
    return (rng.standard_normal(out.shape).astype(dt), rng.standard_normal(h_n.shape).astype(dt),
            None if c_n is None else rng.standard_normal(c_n.shape).astype(dt))


def check_against_reference(cell, kw, seed=0):
    dt = kw["x"].dtype
    out, h_n, c_n, cache = forward(ops, cell, kw, training=True)
    dout, dh_n, dc_n = cotangents(kw, out, h_n, c_n, seed)
    g = backward(ops, cell, cache, dout, dh_n, dc_n)
    got = {"out": out, "h_n": h_n, "c_n": c_n, **g}

    def exact(inputs):
        """Everything the reference gives, in float64, for inputs (ops-style kwargs plus the
        cotangents), as a tuple in the order of `got`."""
        d = dict(inputs)
        cot = d.pop("dout"), d.pop("dh_n"), d.pop("dc_n")
        r = forward(ref, cell, d)
        r_g = backward(ref, cell, r[3], *cot)
        res = {"out": r[0], "h_n": r[1], "c_n": r[2], **r_g}
        assert set(res) == set(got), (sorted(res), sorted(got))
        return tuple(res[k] for k in got)

    inputs = widened(dict(kw, dout=dout, dh_n=dh_n, dc_n=dc_n))
    expected = dict(zip(got, narrowed(exact(inputs), dt)))
    bounds = None
    for i, k in enumerate(got):
        if got[k] is None:
            continue
        try:
            assert_matches(got[k], expected[k], k)
        except AssertionError:
            if dt != np.float32:
                raise
            # An ill-conditioned case: measure how much float32 rounding of the inputs
            # alone moves the exact result, and hold the kernels to 4x that.
            bounds = bounds or sensitivity(exact, inputs)
            assert_matches(got[k], expected[k], f"{k} (float32 rounding of the inputs moves it "
                           f"by {bounds[i]:.1e})", rtol=max(RTOL[np.float32], 4 * bounds[i]))


@given(ops_cases())
@counted
def test_small_cases_match_reference(case):
    check_against_reference(*case)


@given(ops_cases(big=True))
@counted
def test_larger_cases_match_reference(case):
    check_against_reference(*case)


@given(ops_cases(special=True))
@counted
def test_nan_and_inf_land_where_the_reference_puts_them(case):
    cell, kw = case
    out, h_n, c_n, _ = forward(ops, cell, kw)
    with np.errstate(all="ignore"):
        r_out, r_h, r_c, _ = forward(ref, cell, kw)
    assert_matches(out, r_out, "out")
    assert_matches(h_n, r_h, "h_n")
    if cell == "lstm":
        assert_matches(c_n, r_c, "c_n")


@given(ops_cases(), st.sampled_from([np.nan, np.inf, 1e30]))
@counted
def test_padding_is_never_read(case, poison):
    cell, kw = case
    assume(kw.get("lengths") is not None and (kw["lengths"] < kw["x"].shape[0]).any())
    T = kw["x"].shape[0]
    pad = np.arange(T)[:, None] >= kw["lengths"][None, :]
    clean = forward(ops, cell, kw, training=True)
    poisoned_kw = dict(kw, x=kw["x"].copy())
    poisoned_kw["x"][pad] = poison
    dirty = forward(ops, cell, poisoned_kw, training=True)
    for a, b, name in zip(clean[:3], dirty[:3], ("out", "h_n", "c_n")):
        if a is not None:
            np.testing.assert_array_equal(b, a, err_msg=name)
    dout, dh_n, dc_n = cotangents(kw, clean[0], clean[1], clean[2], 1)
    g_clean = backward(ops, cell, clean[3], dout, dh_n, dc_n)
    dout = dout.copy()
    dout[pad] = poison
    g_dirty = backward(ops, cell, dirty[3], dout, dh_n, dc_n)
    for k in g_clean:
        a, b = g_clean[k], g_dirty[k]
        if k == "dx":  # dx at padded steps is zero in both
            a, b = a[~pad], b[~pad]
        np.testing.assert_array_equal(b, a, err_msg=k)


GEOMETRY = ("x", "w_ih", "w_hr")


# Argument names of each cell's forward that hold arrays.
def array_args(cell, kw):
    return [k for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", "w_hr", "lengths")
            if kw.get(k) is not None]


XFAIL_PROVENANCE: dict = {}  # variant -> a known defect (one line); none today


@pytest.mark.parametrize("variant", known_defects(XFAIL_PROVENANCE, sorted(PROVENANCE)))
@given(case=ops_cases(), data=st.data())
@counted
def test_array_provenance_does_not_change_results(variant, case, data):
    cell, kw = case
    name = data.draw(st.sampled_from(array_args(cell, kw)), label="argument")
    expected = forward(ops, cell, kw, training=True)
    changed = dict(kw, **{name: PROVENANCE[variant](kw[name])})
    got = forward(ops, cell, changed, training=True)
    for a, b, what in zip(got[:3], expected[:3], ("out", "h_n", "c_n")):
        if b is not None:
            np.testing.assert_array_equal(a, b, err_msg=f"{what} with a {variant} {name}")
    dout, dh_n, dc_n = cotangents(kw, expected[0], expected[1], expected[2], 2)
    g_exp = backward(ops, cell, expected[3], dout, dh_n, dc_n)
    variants = {"dout": dout, "dh_n": dh_n, "dc_n": dc_n}
    grad_arg = data.draw(st.sampled_from([k for k, v in variants.items() if v is not None]))
    variants[grad_arg] = PROVENANCE[variant](variants[grad_arg])
    g = backward(ops, cell, got[3], variants["dout"], variants["dh_n"], variants["dc_n"])
    for k in g_exp:
        np.testing.assert_array_equal(g[k], g_exp[k], err_msg=f"{k} with a {variant} {name}/{grad_arg}")


def _call_or_error(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 -- the property classifies every exception
        return None, exc


@examples(150)
@given(case=ops_cases(), data=st.data())
@counted
def test_any_bad_forward_argument_is_a_clean_error(case, data):
    cell, kw = case
    names = array_args(cell, kw) + ["b_ih", "b_hh", "h0", "lengths", "reverse", "training"]
    names += {"lstm": ["activation", "c0", "w_hr"], "rnn": ["nonlinearity"], "gru": []}[cell]
    name = data.draw(st.sampled_from(sorted(set(names))), label="argument")
    if name == "lengths":
        T, B = kw["x"].shape[:2]
        label, value = data.draw(st.one_of(
            bad_values(np.ones(B, np.int64)),
            st.sampled_from([0, -1, T + 1, 2**40, -(2**62)]).map(
                lambda v: (f"a length of {v}", np.full(B, v, np.int64))),
            st.just(("float lengths", np.full(B, 1.0))),
            st.just(("2-D lengths", np.ones((B, 1), np.int64)))), label="bad value")
    else:
        label, value = data.draw(bad_values(kw.get(name) if name not in ("w_hr", "c0") or kw.get(name) is not None
                                            else kw["h0"] if kw.get("h0") is not None else kw["x"][0]),
                                 label="bad value")
    bad = dict(kw, training=True)
    bad[name] = value
    result, exc = _call_or_error(lambda: forward(ops, cell, bad))
    if exc is None:
        # Accepted: then it must mean what the reference makes of it.
        r_kw = {k: v for k, v in bad.items() if k != "training"}
        expected, r_exc = _call_or_error(lambda: forward(ref, cell, r_kw))
        assert r_exc is None, f"{name} = {label} was accepted, but the reference rejects it: {r_exc!r}"
        for a, b, what in zip(result[:3], expected[:3], ("out", "h_n", "c_n")):
            if b is not None:
                assert_matches(a, b, what)
        return
    names = [name] + (["activation"] if name == "nonlinearity" else [])
    if name in GEOMETRY:  # x, w_ih and w_hr set T, B, I, H and P: another argument may misfit
        names += array_args(cell, kw)
    assert_clean_error(exc, names)


@examples(100)
@given(case=ops_cases(), data=st.data())
@counted
def test_any_bad_backward_argument_is_a_clean_error(case, data):
    cell, kw = case
    out, h_n, c_n, cache = forward(ops, cell, kw, training=True)
    dout, dh_n, dc_n = cotangents(kw, out, h_n, c_n, 3)
    args = {"cache": cache, "dout": dout, "dh_n": dh_n, "dc_n": dc_n}
    names = ["cache", "dout", "dh_n"] + (["dc_n"] if cell == "lstm" else [])
    name = data.draw(st.sampled_from(names), label="argument")
    if name == "cache":
        other = {"lstm": "gru", "gru": "rnn", "rnn": "lstm"}[cell]
        label, value = data.draw(st.one_of(
            bad_values(None), st.just(("the cache of another cell", _other_cache(other)))))
    else:
        label, value = data.draw(bad_values(args[name]), label="bad value")
    args[name] = value
    result, exc = _call_or_error(lambda: backward(ops, cell, args["cache"], args["dout"],
                                                  args["dh_n"], args["dc_n"]))
    if exc is None:
        assert value is None, f"{name} = {label} was accepted"
        return
    if name == "cache" and value is None:
        assert isinstance(exc, RuntimeError) and "training=True" in str(exc), repr(exc)
        return
    assert_clean_error(exc, [name])


def _other_cache(cell):
    x = np.zeros((1, 1, 1))
    w = np.zeros(({"lstm": 4, "gru": 3, "rnn": 1}[cell], 1))
    return forward(ops, cell, dict(x=x, w_ih=w, w_hh=w), training=True)[3]


def test_ragged_lengths_are_named():
    # Found by the long profile of test_any_bad_forward_argument_is_a_clean_error.
    x = np.zeros((2, 2, 1))
    w = np.zeros((3, 1))
    with pytest.raises((TypeError, ValueError), match="lengths"):
        ops.gru_forward(x, w, w, lengths=[[1.0, 2.0], [3.0]])


# Seen on x86-64 only: the aarch64 build (NEON, run under qemu) meets the tolerance here.
@pytest.mark.xfail(platform.machine().lower() in ("x86_64", "amd64"), strict=True, reason=(
    "float32 LSTM backward on an exploding relu sequence (|h| ~ 1e14, T = 65, H = 65, reverse) "
    "is 14x less accurate than the same float32 evaluation in NumPy: dx off by 1.4e-2 of "
    "max|dx| against float64, where float32 rounding of the inputs accounts for 2e-3"))
def test_exploding_relu_lstm_float32_accuracy():
    # Found by the long profile of test_larger_cases_match_reference; the same draw, seeded.
    rng = np.random.default_rng(0)
    T, H = 65, 65

    def f(*shape, fan_in=1):
        return (rng.standard_normal(shape) * 2.0 / np.sqrt(fan_in)).astype(np.float32)

    kw = dict(x=f(T, 1, 1), w_ih=f(4 * H, 1), w_hh=f(4 * H, H, fan_in=H), h0=f(1, H), c0=f(1, H),
              activation="relu", reverse=True)
    check_against_reference("lstm", kw)

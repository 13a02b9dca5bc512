"""The fused kernels (fusedrnn.ops) against the NumPy oracle (fusedrnn.reference).

Every cell (LSTM tanh/relu, GRU, RNN tanh/relu) in float32 and float64, with and without
states, lengths, reverse and the LSTM projection: outputs, final states and every gradient
vs the oracle run in the same dtype, under the TOL table.  Also: inference == training
forward bit for bit, odd and boundary sizes, the chunked input projection, lengths
semantics checked against per-sequence runs, None arguments, non-contiguous inputs,
every compiled instruction-set variant, and NaN / inf inputs.
"""

import numpy as np
import pytest

from conftest import (CELL_CONFIGS, GATES, OPTIONS, assert_close, make_case, make_cotangents,
                      make_lengths, run_backward, run_forward, use_isa)
import fusedrnn
from fusedrnn import _core, ops
from fusedrnn import reference as ref

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]
CONFIG_IDS = list(CELL_CONFIGS)


def grad_keys(cell, proj):
    keys = {"dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"}
    if cell == "lstm":
        keys.add("dc0")
        if proj:
            keys.add("dw_hr")
    return keys


def check_against_reference(rng, cell, act, case, dtype, what, **opts):
    """Run the kernels (training forward + backward with nonzero cotangents) and the oracle
    on the same inputs; compare everything.  Returns (kernel results, kernel grads)."""
    out, h_n, c_n, cache = run_forward(ops, cell, act, case, training=True, **opts)
    r_out, r_h, r_c, r_cache = run_forward(ref, cell, act, case, **opts)
    assert cache is not None
    for name, a, e in (("out", out, r_out), ("h_n", h_n, r_h), ("c_n", c_n, r_c)):
        if e is None:
            assert a is None, f"{what}: {name} should be None for {cell}"
            continue
        assert a.dtype == np.dtype(dtype), f"{what}: {name} dtype {a.dtype}"
        assert_close(a, e, dtype, f"{what}: {name}")

    dout, dh_n, dc_n = make_cotangents(rng, r_out, r_h, r_c, dtype)
    grads = run_backward(ops, cell, cache, dout, dh_n, dc_n)
    r_grads = run_backward(ref, cell, r_cache, dout, dh_n, dc_n)
    proj = case.get("w_hr") is not None
    assert set(grads) == grad_keys(cell, proj) == set(r_grads), what
    for key in sorted(r_grads):
        assert grads[key].dtype == np.dtype(dtype), f"{what}: {key} dtype {grads[key].dtype}"
        assert_close(grads[key], r_grads[key], dtype, f"{what}: {key}")
    return (out, h_n, c_n), grads


# ----------------------------------------------------------------------------
# every cell x dtype x option vs the oracle
# ----------------------------------------------------------------------------


MATRIX = [(config, option) for config in CONFIG_IDS for option in OPTIONS
          if not (OPTIONS[option][2] and CELL_CONFIGS[config][0] != "lstm")]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config,option", MATRIX, ids=[f"{c}-{o}" for c, o in MATRIX])
def test_matches_reference(rng, config, option, dtype):
    cell, act = CELL_CONFIGS[config]
    case_opts, fwd_opts, proj = OPTIONS[option]
    T, B, I, H = 5, 3, 4, 17  # H not a multiple of any SIMD width, I != H
    case = make_case(rng, cell, T, B, I, H, dtype, proj=proj, **case_opts)
    if case["lengths"] is not None:
        case["lengths"] = np.array([5, 2, 4])  # ragged, one full, one short
    check_against_reference(rng, cell, act, case, dtype, f"{config}/{option}", **fwd_opts)


INFERENCE_OPTIONS = ["plain", "reverse_lengths", "proj_reverse_lengths"]
INFERENCE_MATRIX = [(config, option) for config in CONFIG_IDS for option in INFERENCE_OPTIONS
                    if not (OPTIONS[option][2] and CELL_CONFIGS[config][0] != "lstm")]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config,option", INFERENCE_MATRIX,
                         ids=[f"{c}-{o}" for c, o in INFERENCE_MATRIX])
def test_inference_forward_is_bitwise_training_forward(rng, config, option, dtype):
    cell, act = CELL_CONFIGS[config]
    case_opts, fwd_opts, proj = OPTIONS[option]
    case = make_case(rng, cell, 6, 4, 5, 17, dtype, proj=proj, **case_opts)
    inf = run_forward(ops, cell, act, case, training=False, **fwd_opts)
    trn = run_forward(ops, cell, act, case, training=True, **fwd_opts)
    assert inf[3] is None
    assert trn[3] is not None
    for name, a, b in zip(("out", "h_n", "c_n"), inf[:3], trn[:3]):
        if b is None:
            assert a is None
            continue
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b, err_msg=f"{config}/{option}: {name}")
    # and the default is inference
    default = run_forward(ops, cell, act, case, **fwd_opts)
    assert default[3] is None
    np.testing.assert_array_equal(default[0], trn[0])


# ----------------------------------------------------------------------------
# odd and boundary sizes
# ----------------------------------------------------------------------------

# id: (T, B, I, H, proj, lengths or None, reverse)
SIZES = {
    "T1-B1-I1-H1": (1, 1, 1, 1, 0, None, False),
    "T1-H33-len": (1, 4, 5, 33, 0, [1, 1, 1, 1], True),
    "B1-H16-len": (6, 1, 7, 16, 0, [4], False),
    "B1-H17-rev-len": (6, 1, 3, 17, 0, [3], True),
    "I1-H2": (4, 3, 1, 2, 0, [4, 1, 3], True),
    "I33-H3": (3, 2, 33, 3, 0, None, False),
    "B7-H31": (4, 7, 2, 31, 0, [4, 3, 2, 1, 4, 2, 3], False),
}
LSTM_SIZES = {
    "lstm-H1-P3": (3, 2, 2, 1, 3, [3, 2], True),
    "lstm-H5-P1": (3, 2, 3, 5, 1, None, False),
    "lstm-T1-B1-H33-P17": (1, 1, 4, 33, 17, None, True),
}
SIZE_MATRIX = ([(c, s) for c in CONFIG_IDS for s in SIZES]
               + [(c, s) for c in ("lstm-tanh", "lstm-relu") for s in LSTM_SIZES])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config,size", SIZE_MATRIX, ids=[f"{c}-{s}" for c, s in SIZE_MATRIX])
def test_odd_sizes(rng, config, size, dtype):
    cell, act = CELL_CONFIGS[config]
    T, B, I, H, proj, lengths, reverse = {**SIZES, **LSTM_SIZES}[size]
    case = make_case(rng, cell, T, B, I, H, dtype, proj=proj)
    case["lengths"] = None if lengths is None else np.array(lengths)
    (out, h_n, c_n), _ = check_against_reference(rng, cell, act, case, dtype,
                                                 f"{config}/{size}", reverse=reverse)
    assert out.shape == (T, B, proj or H)
    assert h_n.shape == (B, proj or H)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_long_sequence_float32(rng, config, reverse):
    """T = 60 in float32: rounding must not drift past the float32 tolerance."""
    cell, act = CELL_CONFIGS[config]
    case = make_case(rng, cell, 60, 3, 5, 17, np.float32, lengths=True)
    case["lengths"] = np.array([60, 37, 59])
    check_against_reference(rng, cell, act, case, np.float32, f"{config}/T60",
                            reverse=reverse)


CHUNK_MODES = {
    "forward": (False, False),
    "forward_lengths": (True, False),
    "reverse": (False, True),
    "reverse_lengths": (True, True),
}


@pytest.mark.parametrize("mode", list(CHUNK_MODES))
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_chunked_input_projection(rng, config, mode):
    """T*B > 1024 rows: the input projection is computed in several chunks of steps."""
    cell, act = CELL_CONFIGS[config]
    with_lengths, reverse = CHUNK_MODES[mode]
    T, B = 26, 48  # 1024 / 48 -> 22 steps per chunk, so two chunks
    case = make_case(rng, cell, T, B, 3, 5, np.float64, lengths=with_lengths)
    check_against_reference(rng, cell, act, case, np.float64, f"{config}/chunked/{mode}",
                            reverse=reverse)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Run with this many kernel threads; restore the previous count afterwards."""
    import fusedrnn

    original = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(request.param)
    request.addfinalizer(lambda: fusedrnn.set_num_threads(original))
    return request.param


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_small_hidden_long_sequence(rng, config, threads):
    """A small layer over many rows (H = 64, T*B = 2560): the backward loop splits H into
    panels of 32 units, and the whole-sequence weight gradients ([G*H, I] from 2560 rows)
    are narrow and deep (the BLAS path sums them over blocks of time steps)."""
    cell, act = CELL_CONFIGS[config]
    T, B, I, H = 40, 64, 56, 64
    case = make_case(rng, cell, T, B, I, H, np.float64)
    case["lengths"] = make_lengths(rng, T, B)
    for reverse in (False, True):
        check_against_reference(rng, cell, act, case, np.float64,
                                f"{config}/threads={threads}/reverse={reverse}", reverse=reverse)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_threaded_sizes(rng, config, dtype, threads):
    """Sizes big enough (> 0.2 MFLOP per step, several 16/32-unit panels, H = 90 not a
    multiple of 16 or 32) for the kernels to split hidden units over threads."""
    cell, act = CELL_CONFIGS[config]
    T, B, I, H = 6, 16, 20, 90
    case = make_case(rng, cell, T, B, I, H, dtype)
    case["lengths"] = make_lengths(rng, T, B)
    for reverse in (False, True):
        check_against_reference(rng, cell, act, case, dtype,
                                f"{config}/threads={threads}/reverse={reverse}", reverse=reverse)
        inf = run_forward(ops, cell, act, case, reverse=reverse)
        trn = run_forward(ops, cell, act, case, reverse=reverse, training=True)
        for a, b in zip(inf[:3], trn[:3]):
            if b is not None:
                np.testing.assert_array_equal(a, b, err_msg="inference vs training")


# ----------------------------------------------------------------------------
# lengths semantics
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_full_lengths_equal_no_lengths(rng, config, reverse, dtype):
    cell, act = CELL_CONFIGS[config]
    T, B = 5, 3
    case = make_case(rng, cell, T, B, 4, 6, dtype)
    none = run_forward(ops, cell, act, case, lengths=None, reverse=reverse, training=True)
    full = run_forward(ops, cell, act, case, lengths=np.full(B, T), reverse=reverse,
                       training=True)
    for name, a, b in zip(("out", "h_n", "c_n"), full[:3], none[:3]):
        if b is not None:
            assert_close(a, b, dtype, f"{config}: {name} lengths=T vs None")
    cot = make_cotangents(rng, *none[:3], dtype)
    g_none = run_backward(ops, cell, none[3], *cot)
    g_full = run_backward(ops, cell, full[3], *cot)
    assert set(g_none) == set(g_full)
    for key in g_none:
        assert_close(g_full[key], g_none[key], dtype, f"{config}: {key} lengths=T vs None")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("config", CONFIG_IDS + ["lstm-proj"])
def test_lengths_match_per_sequence_runs(rng, config, reverse):
    """A batch with lengths == each sequence run alone on its valid prefix (no lengths):
    outputs, padding zeros, final states, dx/dh0 per sequence, weight gradients summed."""
    cell, act = CELL_CONFIGS.get(config, ("lstm", "tanh"))
    proj = 3 if config == "lstm-proj" else 0
    T, B = 6, 4
    lengths = np.array([6, 1, 4, 2])
    case = make_case(rng, cell, T, B, 3, 5, np.float64, proj=proj)
    out, h_n, c_n, cache = run_forward(ops, cell, act, case, lengths=lengths, reverse=reverse,
                                       training=True)
    dout, dh_n, dc_n = make_cotangents(rng, out, h_n, c_n, np.float64)
    grads = run_backward(ops, cell, cache, dout, dh_n, dc_n)

    summed = {k: np.zeros_like(grads[k]) for k in grads if k not in ("dx", "dh0", "dc0")}
    for b, L in enumerate(lengths):
        one = dict(case, x=case["x"][:L, b:b + 1], h0=case["h0"][b:b + 1])
        if cell == "lstm":
            one["c0"] = case["c0"][b:b + 1]
        o, h, c, ca = run_forward(ops, cell, act, one, lengths=None, reverse=reverse,
                                  training=True)
        what = f"{config} seq {b} (length {L})"
        assert_close(out[:L, b], o[:, 0], np.float64, what + " out")
        assert not np.any(out[L:, b]), what + " padding must be zero"
        assert_close(h_n[b], h[0], np.float64, what + " h_n")
        if cell == "lstm":
            assert_close(c_n[b], c[0], np.float64, what + " c_n")
        g = run_backward(ops, cell, ca, dout[:L, b:b + 1], dh_n[b:b + 1],
                         None if dc_n is None else dc_n[b:b + 1])
        assert_close(grads["dx"][:L, b], g["dx"][:, 0], np.float64, what + " dx")
        assert not np.any(grads["dx"][L:, b]), what + " dx on padding must be zero"
        assert_close(grads["dh0"][b], g["dh0"][0], np.float64, what + " dh0")
        if cell == "lstm":
            assert_close(grads["dc0"][b], g["dc0"][0], np.float64, what + " dc0")
        for k in summed:
            summed[k] += g[k]
    for k, v in summed.items():
        assert_close(grads[k], v, np.float64, f"{config}: {k} vs sum over sequences")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bad", ["nan", "inf", "huge"])
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_padding_values_do_not_matter(rng, config, bad, dtype):
    """x at padded steps (t >= lengths[b]) is never read: garbage there (NaN, inf, huge)
    must give the same outputs and gradients as zero padding, in both directions."""
    cell, act = CELL_CONFIGS[config]
    T, B = 5, 3
    lengths = np.array([5, 2, 3])
    case = make_case(rng, cell, T, B, 4, 6, dtype)
    for b, L in enumerate(lengths):
        case["x"][L:, b] = 0
    value = {"nan": np.nan, "inf": np.inf, "huge": np.finfo(dtype).max}[bad]
    dirty = dict(case, x=case["x"].copy())
    for b, L in enumerate(lengths):
        dirty["x"][L:, b] = value
    for reverse in (False, True):
        clean = run_forward(ops, cell, act, case, lengths=lengths, reverse=reverse, training=True)
        got = run_forward(ops, cell, act, dirty, lengths=lengths, reverse=reverse, training=True)
        what = f"{config} padding={bad} reverse={reverse}"
        for name, a, e in zip(("out", "h_n", "c_n"), got[:3], clean[:3]):
            if e is not None:
                np.testing.assert_array_equal(a, e, err_msg=f"{what}: {name}")
        cot = make_cotangents(rng, *clean[:3], dtype)
        g_clean = run_backward(ops, cell, clean[3], *cot)
        g_dirty = run_backward(ops, cell, got[3], *cot)
        for key in g_clean:
            assert_close(g_dirty[key], g_clean[key], dtype, f"{what}: {key}")


# ----------------------------------------------------------------------------
# None arguments, layouts, dtypes
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_none_bias_and_state_equal_zeros(rng, config, dtype):
    cell, act = CELL_CONFIGS[config]
    T, B, I, H = 4, 3, 3, 5
    G = GATES[cell]
    case = make_case(rng, cell, T, B, I, H, dtype, lengths=True)
    variants = {
        "bias": (dict(b_ih=None, b_hh=None),
                 dict(b_ih=np.zeros(G * H, dtype), b_hh=np.zeros(G * H, dtype))),
        "state": (dict(h0=None, c0=None),
                  dict(h0=np.zeros((B, H), dtype), c0=np.zeros((B, H), dtype))),
    }
    for name, (nones, zeros) in variants.items():
        for reverse in (False, True):
            r_none = run_forward(ops, cell, act, {**case, **nones}, reverse=reverse, training=True)
            r_zero = run_forward(ops, cell, act, {**case, **zeros}, reverse=reverse, training=True)
            for a, b in zip(r_none[:3], r_zero[:3]):
                if b is not None:
                    np.testing.assert_array_equal(a, b, err_msg=f"{config}: {name}=None")
            cot = make_cotangents(rng, *r_zero[:3], dtype)
            g_none = run_backward(ops, cell, r_none[3], *cot)
            g_zero = run_backward(ops, cell, r_zero[3], *cot)
            assert set(g_none) == set(g_zero) == grad_keys(cell, False)
            for key in g_zero:
                np.testing.assert_array_equal(g_none[key], g_zero[key],
                                              err_msg=f"{config}: {name}=None, {key}")
    # None cotangents mean zeros
    out, h_n, c_n, cache = run_forward(ops, cell, act, case, training=True)
    dout = rng.standard_normal(out.shape).astype(dtype)
    g_none = run_backward(ops, cell, cache, dout)
    g_zero = run_backward(ops, cell, cache, dout, np.zeros_like(h_n),
                          None if c_n is None else np.zeros_like(c_n))
    for key in g_zero:
        np.testing.assert_array_equal(g_none[key], g_zero[key], err_msg=f"{config}: {key}")


def _strided(a, rng):
    """a as a non-contiguous view holding the same values (a view into a larger buffer)."""
    big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    big[..., 1::2] = rng.standard_normal(a.shape).astype(a.dtype)  # junk between values
    view = big[..., ::2]
    assert not view.flags.c_contiguous
    return view


def _transposed(a):
    """a as a transposed view of a C array holding the same values."""
    buf = np.ascontiguousarray(a.transpose(tuple(reversed(range(a.ndim)))))
    view = buf.transpose(tuple(reversed(range(a.ndim))))
    assert a.ndim < 2 or not view.flags.c_contiguous
    return view


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", CONFIG_IDS + ["lstm-proj"])
def test_noncontiguous_inputs(rng, config, dtype):
    cell, act = CELL_CONFIGS.get(config, ("lstm", "tanh"))
    proj = 3 if config == "lstm-proj" else 0
    T, B = 5, 3
    case = make_case(rng, cell, T, B, 4, 6, dtype, proj=proj)
    lengths = np.array([5, 2, 4])
    base = run_forward(ops, cell, act, case, lengths=lengths, reverse=True, training=True)
    cot = make_cotangents(rng, *base[:3], dtype)
    g_base = run_backward(ops, cell, base[3], *cot)

    # x: a (B, T, I) array seen through a transpose; matrices in Fortran order or strided;
    # vectors strided; lengths strided int32
    x_bti = np.ascontiguousarray(case["x"].transpose(1, 0, 2))
    views = dict(x=x_bti.transpose(1, 0, 2),
                 w_ih=np.asfortranarray(case["w_ih"]),
                 w_hh=_strided(case["w_hh"], rng),
                 b_ih=_strided(case["b_ih"], rng),
                 b_hh=case["b_hh"][::-1].copy()[::-1],
                 h0=_transposed(case["h0"]))
    if cell == "lstm":
        views["c0"] = np.asfortranarray(case["c0"])
        if proj:
            views["w_hr"] = _transposed(case["w_hr"])
    assert not views["x"].flags.c_contiguous and not views["w_ih"].flags.c_contiguous
    lengths_view = np.array([5, 9, 2, 9, 4, 9], dtype=np.int32)[::2]
    got = run_forward(ops, cell, act, {**case, **views}, lengths=lengths_view, reverse=True,
                      training=True)
    for name, a, e in zip(("out", "h_n", "c_n"), got[:3], base[:3]):
        if e is not None:
            assert a.dtype == np.dtype(dtype)
            assert_close(a, e, dtype, f"{config} non-contiguous: {name}")
    dout, dh_n, dc_n = cot
    cot_views = (_transposed(dout), np.asfortranarray(dh_n),
                 None if dc_n is None else _strided(dc_n, rng))
    g = run_backward(ops, cell, got[3], *cot_views)
    assert set(g) == set(g_base)
    for key in g_base:
        assert g[key].dtype == np.dtype(dtype)
        assert_close(g[key], g_base[key], dtype, f"{config} non-contiguous: {key}")
    # and still equal to the oracle
    r = run_forward(ref, cell, act, case, lengths=lengths, reverse=True)
    assert_close(got[0], r[0], dtype, f"{config} non-contiguous out vs reference")


# ----------------------------------------------------------------------------
# instruction-set variants
# ----------------------------------------------------------------------------

ISAS = ["baseline", "avx2", "avx512"]


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test on one compiled kernel variant (conftest.use_isa)."""
    return use_isa(request, request.param)


ISA_MATRIX = [(c, 0) for c in CONFIG_IDS] + [("lstm-tanh", 4)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config,proj", ISA_MATRIX,
                         ids=[c + ("-proj" if p else "") for c, p in ISA_MATRIX])
def test_isa_variant_matches_reference(rng, isa, config, proj, dtype):
    assert _core.isa() == isa
    cell, act = CELL_CONFIGS[config]
    # H = 37 covers a full 32-float / 16-float vector body plus a scalar tail
    case = make_case(rng, cell, 5, 3, 4, 37, dtype, proj=proj)
    case["lengths"] = np.array([5, 2, 4])
    check_against_reference(rng, cell, act, case, dtype, f"{config}/isa={isa}", reverse=True)
    inf = run_forward(ops, cell, act, case, reverse=True)
    trn = run_forward(ops, cell, act, case, reverse=True, training=True)
    for a, b in zip(inf[:3], trn[:3]):
        if b is not None:
            np.testing.assert_array_equal(a, b, err_msg=f"isa={isa}: inference vs training")


def test_isa_switching():
    original = _core.isa()
    best = _core.best_isa()
    assert original in ISAS and best in ISAS
    try:
        _core.set_isa("baseline")  # always compiled and supported
        assert _core.isa() == "baseline"
        with pytest.raises(ValueError, match="isa"):
            _core.set_isa("sse9")
        assert _core.isa() == "baseline"  # a failed switch changes nothing
        _core.set_isa(best)
        assert _core.isa() == best
    finally:
        _core.set_isa(original)


# ----------------------------------------------------------------------------
# NaN and inf inputs
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("config", CONFIG_IDS + ["lstm-proj"])
def test_nan_input_propagates_to_its_sequence_only(rng, config, reverse, dtype):
    cell, act = CELL_CONFIGS.get(config, ("lstm", "tanh"))
    proj = 3 if config == "lstm-proj" else 0
    T, B, t0, b0 = 5, 3, 2, 1
    case = make_case(rng, cell, T, B, 4, 6, dtype, proj=proj)
    case["x"][t0, b0, 0] = np.nan
    out, h_n, c_n, cache = run_forward(ops, cell, act, case, reverse=reverse, training=True)
    with np.errstate(invalid="ignore"):
        r_out, r_h, r_c, r_cache = run_forward(ref, cell, act, case, reverse=reverse)
    # the steps processed at or after t0 in sequence b0 are NaN, everything else is intact
    hit = np.zeros(T, bool)
    if reverse:
        hit[:t0 + 1] = True
    else:
        hit[t0:] = True
    assert np.isnan(out[hit, b0]).all(), "NaN must reach every later output of its sequence"
    assert np.isnan(h_n[b0]).all()
    if c_n is not None:
        assert np.isnan(c_n[b0]).all()
    others = [b for b in range(B) if b != b0]
    assert_close(out[~hit, b0], r_out[~hit, b0], dtype, f"{config}: out of b0 before the NaN")
    assert_close(out[:, others], r_out[:, others], dtype, f"{config}: out of other sequences")
    assert_close(h_n[others], r_h[others], dtype, f"{config}: h_n of other sequences")
    if c_n is not None:
        assert_close(c_n[others], r_c[others], dtype, f"{config}: c_n of other sequences")

    dout, dh_n, dc_n = make_cotangents(rng, r_out, r_h, r_c, dtype)
    grads = run_backward(ops, cell, cache, dout, dh_n, dc_n)
    with np.errstate(invalid="ignore"):
        r_grads = run_backward(ref, cell, r_cache, dout, dh_n, dc_n)
    assert_close(grads["dx"][:, others], r_grads["dx"][:, others], dtype,
                 f"{config}: dx of other sequences")
    assert_close(grads["dh0"][others], r_grads["dh0"][others], dtype,
                 f"{config}: dh0 of other sequences")
    if cell == "lstm":
        assert_close(grads["dc0"][others], r_grads["dc0"][others], dtype,
                     f"{config}: dc0 of other sequences")
    # the NaN entry of x multiplies into column 0 of every dW_ih row
    assert np.isnan(grads["dw_ih"][:, 0]).all()


TANH_CONFIGS = ["lstm-tanh", "gru", "rnn-tanh"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["+inf", "-inf"])
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_infinite_input(rng, config, sign, dtype):
    """One feature (I = 1) set to +-inf at one step of one sequence: every gate
    pre-activation there is exactly +-inf (weights are nonzero), so the sigmoids are 0/1
    and the tanh's +-1 (torch semantics).  Tanh cells stay finite and equal the oracle;
    relu cells give exactly relu(+-inf) at that step.  Other sequences are untouched."""
    cell, act = CELL_CONFIGS[config]
    T, B, t0, b0 = 4, 3, 1, 2
    case = make_case(rng, cell, T, B, 1, 5, dtype)
    case["x"][t0, b0, 0] = sign * np.inf
    assert np.all(case["w_ih"] != 0)
    out, h_n, c_n, cache = run_forward(ops, cell, act, case, training=True)
    with np.errstate(all="ignore"):
        r_out, r_h, r_c, r_cache = run_forward(ref, cell, act, case)
    others = [b for b in range(B) if b != b0]
    assert_close(out[:, others], r_out[:, others], dtype, f"{config}: other sequences")
    assert_close(out[:t0, b0], r_out[:t0, b0], dtype, f"{config}: steps before the inf")
    pre_sign = np.sign(sign * case["w_ih"][:, 0])  # sign of each gate pre-activation at t0
    if config == "rnn-tanh":
        np.testing.assert_array_equal(out[t0, b0], pre_sign)  # tanh(+-inf) = +-1
    if config == "rnn-relu":
        np.testing.assert_array_equal(out[t0, b0], np.where(pre_sign > 0, np.inf, 0.0))
    if config not in TANH_CONFIGS:
        return
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(h_n))
    assert_close(out, r_out, dtype, f"{config}: out with an inf input")
    assert_close(h_n, r_h, dtype, f"{config}: h_n with an inf input")
    if c_n is not None:
        assert_close(c_n, r_c, dtype, f"{config}: c_n with an inf input")
    # gradients that never multiply the inf input itself stay finite and match
    dout, dh_n, dc_n = make_cotangents(rng, r_out, r_h, r_c, dtype)
    grads = run_backward(ops, cell, cache, dout, dh_n, dc_n)
    with np.errstate(all="ignore"):
        r_grads = run_backward(ref, cell, r_cache, dout, dh_n, dc_n)
    for key in sorted(set(grads) - {"dw_ih"}):
        assert_close(grads[key], r_grads[key], dtype, f"{config}: {key} with an inf input")


# ----------------------------------------------------------------------------
# the input projection is computed in chunks of ceil(1024 / B) steps
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("config", ["lstm-tanh", "gru", "rnn-tanh"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "lengths"])
def test_input_projection_chunks(rng, config, reverse, dtype, ragged):
    """B = 100 gives chunks of 11 steps: T = 25 crosses two chunk boundaries and ends on a
    partial chunk, in both directions (the reverse direction fills chunks from the end)."""
    cell, act = CELL_CONFIGS[config]
    T, B = 25, 100
    assert T > -(-1024 // B)
    case = make_case(rng, cell, T, B, 5, 7, dtype)
    lengths = None
    if ragged:
        lengths = rng.integers(1, T + 1, size=B)
        lengths[0] = T
    check_against_reference(rng, cell, act, case, dtype, f"{config} chunks reverse={reverse}",
                            lengths=lengths, reverse=reverse)


# ----------------------------------------------------------------------------
# large scratch blocks are reused between calls: stale contents must never be read
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["lstm-tanh", "gru", "rnn-tanh"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_reused_scratch_is_not_read(rng, config, lengths):
    """Fill the block cache with NaN (outputs of big calls, poisoned and freed), then check
    calls that reuse those blocks against the oracle."""
    cell, act = CELL_CONFIGS[config]
    T, B, I, H = 30, 40, 32, 64   # workspace, gate gradients, projection chunk: over 1 MiB
    dtype = np.float32
    case = make_case(rng, cell, T, B, I, H, dtype)
    for _ in range(2):
        out, h_n, c_n, cache = run_forward(ops, cell, act, case, training=True)
        grads = run_backward(ops, cell, cache, *make_cotangents(rng, out, h_n, c_n, dtype))
        for a in [out, cache.workspace, *grads.values()]:
            a.fill(np.nan)
        del out, cache, grads, a
    assert _core.cached_bytes() > 0
    lens = rng.integers(1, T + 1, size=B) if lengths else None
    for reverse in (False, True):
        check_against_reference(rng, cell, act, case, dtype, f"{config} after NaN scratch",
                                lengths=lens, reverse=reverse)


def test_empty_cache_returns_blocks(rng):
    case = make_case(rng, "lstm", 30, 40, 24, 48, np.float32)
    out, *_ = run_forward(ops, "lstm", "tanh", case, training=True)
    del out, _
    assert _core.cached_bytes() > 0
    fusedrnn.empty_cache()
    assert _core.cached_bytes() == 0

"""Proves the NumPy oracle (fusedrnn.reference) correct on its own.

* every gradient of every cell/option against central finite differences (float64);
* the lengths/reverse semantics against an independent per-sequence construction;
* one step of each cell against a hand-written scalar formula;
* (when torch is importable) against torch.nn.LSTM / GRU / RNN.
"""

import math

import numpy as np
import pytest

from conftest import GATES, TOL, assert_close, make_case, make_lengths
from fusedrnn import reference as ref

STATE_NAMES = {"lstm": ("h0", "c0"), "gru": ("h0",), "rnn": ("h0",)}
INPUT_NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def forward(cell, case, **opts):
    """Run the oracle; returns (out, h_n, c_n or None, cache)."""
    if cell == "lstm":
        return ref.lstm_forward(**case, **opts)
    fwd = ref.gru_forward if cell == "gru" else ref.rnn_forward
    out, h_n, cache = fwd(**case, **opts)
    return out, h_n, None, cache


def backward(cell, cache, dout=None, dh_n=None, dc_n=None):
    if cell == "lstm":
        return ref.lstm_backward(cache, dout=dout, dh_n=dh_n, dc_n=dc_n)
    bwd = ref.gru_backward if cell == "gru" else ref.rnn_backward
    return bwd(cache, dout=dout, dh_n=dh_n)


def cotangents(rng, cell, out, h_n, c_n):
    """Random dout, dh_n, dc_n (None for non-LSTM) shaped like the outputs."""
    dout = rng.standard_normal(out.shape)
    dh_n = rng.standard_normal(h_n.shape)
    dc_n = rng.standard_normal(c_n.shape) if cell == "lstm" else None
    return dout, dh_n, dc_n


def loss(cell, case, opts, dout, dh_n, dc_n):
    """L = sum(dout*out) + sum(dh_n*h_n) (+ sum(dc_n*c_n)): its gradient is the backward's."""
    out, h_n, c_n, _ = forward(cell, case, **opts)
    L = np.sum(dout * out) + np.sum(dh_n * h_n)
    if c_n is not None:
        L += np.sum(dc_n * c_n)
    return L


def relu_margin(cell, opts, cache):
    """Smallest |pre-activation| fed to a relu at an active step (inf when no relu).

    A finite-difference step must not carry any of them across 0.  An LSTM cell
    state that is exactly 0 (c0 = 0 and g = relu(.) = 0) stays exactly 0 under small
    perturbations, so it is harmless and skipped.
    """
    if cell == "lstm" and opts.get("activation") == "relu":
        vals = []
        for s in cache["steps"]:
            a = s["active"]
            vals.append(np.abs(s["ag"][a]).ravel())
            c = np.abs(s["c"][a]).ravel()
            vals.append(c[c != 0])
        return float(np.min(np.concatenate(vals)))
    if cell == "rnn" and opts.get("nonlinearity") == "relu":
        return float(min(np.min(np.abs(s["a"][s["active"]])) for s in cache["steps"]))
    return math.inf


# ----------------------------------------------------------------------------
# gradients vs central finite differences
# ----------------------------------------------------------------------------

MODES = {
    "plain": dict(with_state=False, lengths=False, reverse=False),
    "state": dict(with_state=True, lengths=False, reverse=False),
    "lengths": dict(with_state=True, lengths=True, reverse=False),
    "reverse": dict(with_state=True, lengths=False, reverse=True),
    "reverse_lengths": dict(with_state=True, lengths=True, reverse=True),
}

# (cell, options, proj)
CONFIGS = {
    "lstm-tanh": ("lstm", dict(activation="tanh"), 0),
    "lstm-relu": ("lstm", dict(activation="relu"), 0),
    "lstm-tanh-proj": ("lstm", dict(activation="tanh"), 2),
    "lstm-relu-proj": ("lstm", dict(activation="relu"), 2),
    "gru": ("gru", dict(), 0),
    "rnn-tanh": ("rnn", dict(nonlinearity="tanh"), 0),
    "rnn-relu": ("rnn", dict(nonlinearity="relu"), 0),
}

FD_EPS = 1e-6
FD_RTOL = 1e-7
RELU_MARGIN = 1e-3  # >> the change an FD_EPS perturbation causes in any pre-activation


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_gradients_match_finite_differences(rng, config, mode):
    cell, cell_opts, proj = CONFIGS[config]
    m = MODES[mode]
    T, B, I, H = 5, 3, 3, 3
    opts = dict(cell_opts, reverse=m["reverse"])
    for _ in range(50):  # redraw until no relu input sits near its kink
        case = make_case(rng, cell, T, B, I, H, np.float64, proj=proj,
                         with_state=m["with_state"], lengths=m["lengths"])
        out, h_n, c_n, cache = forward(cell, case, **opts)
        if relu_margin(cell, opts, cache) > RELU_MARGIN:
            break
    else:
        pytest.fail("could not draw a case away from the relu kink")
    dout, dh_n, dc_n = cotangents(rng, cell, out, h_n, c_n)
    grads = backward(cell, cache, dout, dh_n, dc_n)

    checked = []
    for name in INPUT_NAMES:
        if case.get(name) is None:
            continue
        base = case[name]
        fd = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += FD_EPS
            minus[idx] -= FD_EPS
            Lp = loss(cell, {**case, name: plus}, opts, dout, dh_n, dc_n)
            Lm = loss(cell, {**case, name: minus}, opts, dout, dh_n, dc_n)
            fd[idx] = (Lp - Lm) / (2 * FD_EPS)
        g = grads["d" + name]
        assert g.dtype == np.float64
        assert_close(g, fd, np.float64, f"{config}/{mode}: d{name} vs finite differences",
                     rtol=FD_RTOL)
        checked.append(name)
    # every differentiable input present in the case was checked
    assert {"x", "w_ih", "w_hh", "b_ih", "b_hh"} <= set(checked)
    if m["with_state"]:
        assert set(STATE_NAMES[cell]) <= set(checked)
    if proj:
        assert "w_hr" in checked


# ----------------------------------------------------------------------------
# gradient dictionary layout, None arguments
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("config", list(CONFIGS))
def test_gradient_keys_shapes_and_dtypes(rng, config):
    cell, cell_opts, proj = CONFIGS[config]
    for dtype in (np.float32, np.float64):
        case = make_case(rng, cell, 4, 2, 3, 5, dtype, proj=proj, lengths=True)
        out, h_n, c_n, cache = forward(cell, case, **cell_opts)
        P = proj or 5
        assert out.shape == (4, 2, P) and out.dtype == dtype
        assert h_n.shape == (2, P) and h_n.dtype == dtype
        if cell == "lstm":
            assert c_n.shape == (2, 5) and c_n.dtype == dtype
        dout, dh_n, dc_n = cotangents(rng, cell, out, h_n, c_n)
        grads = backward(cell, cache, dout, dh_n, dc_n)
        expected = {"dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"}
        if cell == "lstm":
            expected.add("dc0")
            if proj:
                expected.add("dw_hr")
        assert set(grads) == expected
        for key, g in grads.items():
            assert g.shape == case[key[1:]].shape, key
            assert g.dtype == dtype, key


@pytest.mark.parametrize("config", list(CONFIGS))
def test_none_means_zeros(rng, config):
    """Bias/state None behave exactly as explicit zeros; their gradients are still returned."""
    cell, cell_opts, proj = CONFIGS[config]
    for reverse in (False, True):
        opts = dict(cell_opts, reverse=reverse)
        case = make_case(rng, cell, 4, 3, 3, 4, np.float64, proj=proj, bias=False,
                         with_state=False, lengths=True)
        zeros = dict(case)
        G, P = GATES[cell], proj or 4
        zeros["b_ih"] = np.zeros(G * 4)
        zeros["b_hh"] = np.zeros(G * 4)
        zeros["h0"] = np.zeros((3, P))
        if cell == "lstm":
            zeros["c0"] = np.zeros((3, 4))
        r_none = forward(cell, case, **opts)
        r_zero = forward(cell, zeros, **opts)
        for a, b in zip(r_none[:3], r_zero[:3]):
            if a is not None:
                np.testing.assert_array_equal(a, b)
        cot = cotangents(rng, cell, *r_none[:3])
        g_none = backward(cell, r_none[3], *cot)
        g_zero = backward(cell, r_zero[3], *cot)
        assert set(g_none) == set(g_zero)
        for key in g_none:
            np.testing.assert_array_equal(g_none[key], g_zero[key], err_msg=key)


def test_backward_none_cotangents_mean_zeros(rng):
    case = make_case(rng, "lstm", 4, 2, 3, 3, np.float64, proj=2, lengths=True)
    out, h_n, c_n, cache = forward("lstm", case)
    dout, _, _ = cotangents(rng, "lstm", out, h_n, c_n)
    g_none = ref.lstm_backward(cache, dout=dout)
    g_zero = ref.lstm_backward(cache, dout=dout, dh_n=np.zeros_like(h_n),
                               dc_n=np.zeros_like(c_n))
    for key in g_none:
        np.testing.assert_array_equal(g_none[key], g_zero[key], err_msg=key)
    g_all_none = ref.lstm_backward(cache)
    for key, g in g_all_none.items():
        assert not np.any(g), key


def test_unknown_activation_raises(rng):
    case = make_case(rng, "lstm", 2, 1, 2, 2, np.float64)
    with pytest.raises(ValueError):
        ref.lstm_forward(**case, activation="sigmoid")
    case = make_case(rng, "rnn", 2, 1, 2, 2, np.float64)
    with pytest.raises(ValueError):
        ref.rnn_forward(**case, nonlinearity="gelu")


# ----------------------------------------------------------------------------
# lengths and direction
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_padding_and_final_state(rng, config, reverse):
    cell, cell_opts, proj = CONFIGS[config]
    T, B = 6, 5
    case = make_case(rng, cell, T, B, 3, 4, np.float64, proj=proj, lengths=True)
    case["lengths"] = np.array([6, 1, 3, 5, 2])
    out, h_n, c_n, cache = forward(cell, case, **cell_opts, reverse=reverse)
    dout, dh_n, dc_n = cotangents(rng, cell, out, h_n, c_n)
    grads = backward(cell, cache, dout, dh_n, dc_n)
    for b, L in enumerate(case["lengths"]):
        # padded outputs are exactly zero, valid ones are not (a relu may give all-zero rows)
        assert np.all(out[L:, b] == 0)
        if "relu" not in config:
            assert np.all(np.any(out[:L, b] != 0, axis=-1))
        # the final state is the state after the last processed step
        last = 0 if reverse else L - 1
        np.testing.assert_array_equal(h_n[b], out[last, b])
        # no gradient flows to padded inputs
        assert np.all(grads["dx"][L:, b] == 0)
        if "relu" not in config:
            assert np.all(np.any(grads["dx"][:L, b] != 0, axis=-1))
    # gradients arriving at padded positions are ignored
    valid = np.arange(T)[:, None] < case["lengths"][None, :]            # (T, B)
    grads_masked = backward(cell, cache, dout * valid[:, :, None], dh_n, dc_n)
    for key in grads:
        np.testing.assert_array_equal(grads[key], grads_masked[key], err_msg=key)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_full_lengths_equal_no_lengths(rng, config, reverse):
    cell, cell_opts, proj = CONFIGS[config]
    T, B = 4, 3
    case = make_case(rng, cell, T, B, 3, 4, np.float64, proj=proj)
    opts = dict(cell_opts, reverse=reverse)
    r_none = forward(cell, case, **opts)
    r_full = forward(cell, {**case, "lengths": np.full(B, T)}, **opts)
    for a, b in zip(r_none[:3], r_full[:3]):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    cot = cotangents(rng, cell, *r_none[:3])
    g_none = backward(cell, r_none[3], *cot)
    g_full = backward(cell, r_full[3], *cot)
    for key in g_none:
        np.testing.assert_array_equal(g_none[key], g_full[key], err_msg=key)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_lengths_match_per_sequence_runs(rng, config, reverse):
    """Batched lengths (and reverse) == running each sequence's valid prefix on its own,
    time-flipped for reverse, in a plain forward run without lengths."""
    cell, cell_opts, proj = CONFIGS[config]
    T, B = 5, 4
    case = make_case(rng, cell, T, B, 3, 4, np.float64, proj=proj, lengths=True)
    case["lengths"] = np.array([3, 5, 1, 4])
    out, h_n, c_n, cache = forward(cell, case, **cell_opts, reverse=reverse)
    dout, dh_n, dc_n = cotangents(rng, cell, out, h_n, c_n)
    grads = backward(cell, cache, dout, dh_n, dc_n)

    summed = {k: np.zeros_like(case[k[1:]]) for k in grads if k.startswith(("dw", "db"))}
    for b, L in enumerate(case["lengths"]):
        order = slice(None, None, -1) if reverse else slice(None)
        one = {k: v for k, v in case.items() if k != "lengths"}
        one["x"] = case["x"][:L, b:b + 1][order]
        for s in STATE_NAMES[cell]:
            one[s] = case[s][b:b + 1]
        o1, h1, c1, cache1 = forward(cell, one, **cell_opts)
        what = f"{config} seq {b} (L={L})"
        assert_close(out[:L, b], o1[order][:, 0], np.float64, what + " out")
        assert_close(h_n[b], h1[0], np.float64, what + " h_n")
        if cell == "lstm":
            assert_close(c_n[b], c1[0], np.float64, what + " c_n")
        g1 = backward(cell, cache1, dout[:L, b:b + 1][order], dh_n[b:b + 1],
                      None if dc_n is None else dc_n[b:b + 1])
        assert_close(grads["dx"][:L, b], g1["dx"][order][:, 0], np.float64, what + " dx")
        for s in STATE_NAMES[cell]:
            assert_close(grads["d" + s][b], g1["d" + s][0], np.float64, what + " d" + s)
        for k in summed:
            summed[k] += g1[k]
    for k in summed:
        assert_close(grads[k], summed[k], np.float64, f"{config} {k} summed over sequences")


# ----------------------------------------------------------------------------
# one step against hand-written scalar formulas
# ----------------------------------------------------------------------------

def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _relu(v):
    return v if v > 0 else 0.0


def _affine(w, b, v, row):
    return sum(w[row][k] * v[k] for k in range(len(v))) + b[row]


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("proj", [0, 2])
def test_lstm_one_step_by_hand(rng, activation, proj):
    I, H = 3, 3
    case = make_case(rng, "lstm", 1, 1, I, H, np.float64, proj=proj)
    act = math.tanh if activation == "tanh" else _relu
    x = case["x"][0, 0].tolist()
    h = case["h0"][0].tolist()
    c = case["c0"][0].tolist()
    w_ih, w_hh = case["w_ih"].tolist(), case["w_hh"].tolist()
    b_ih, b_hh = case["b_ih"].tolist(), case["b_hh"].tolist()

    def pre(gate, j):  # gate 0..3 = i, f, g, o
        row = gate * H + j
        return _affine(w_ih, b_ih, x, row) + _affine(w_hh, b_hh, h, row)

    c_new, m = [], []
    for j in range(H):
        i, f, g, o = _sig(pre(0, j)), _sig(pre(1, j)), act(pre(2, j)), _sig(pre(3, j))
        c_new.append(f * c[j] + i * g)
        m.append(o * act(c_new[j]))
    if proj:
        w_hr = case["w_hr"].tolist()
        h_new = [sum(w_hr[p][j] * m[j] for j in range(H)) for p in range(proj)]
    else:
        h_new = m

    out, h_n, c_n, _ = ref.lstm_forward(**case, activation=activation)
    assert_close(out[0, 0], np.array(h_new), np.float64, "out")
    assert_close(h_n[0], np.array(h_new), np.float64, "h_n")
    assert_close(c_n[0], np.array(c_new), np.float64, "c_n")


def test_gru_one_step_by_hand(rng):
    I, H = 3, 3
    case = make_case(rng, "gru", 1, 1, I, H, np.float64)
    x, h = case["x"][0, 0].tolist(), case["h0"][0].tolist()
    w_ih, w_hh = case["w_ih"].tolist(), case["w_hh"].tolist()
    b_ih, b_hh = case["b_ih"].tolist(), case["b_hh"].tolist()
    h_new = []
    for j in range(H):
        r = _sig(_affine(w_ih, b_ih, x, j) + _affine(w_hh, b_hh, h, j))
        z = _sig(_affine(w_ih, b_ih, x, H + j) + _affine(w_hh, b_hh, h, H + j))
        n = math.tanh(_affine(w_ih, b_ih, x, 2 * H + j) + r * _affine(w_hh, b_hh, h, 2 * H + j))
        h_new.append((1 - z) * n + z * h[j])
    out, h_n, _ = ref.gru_forward(**case)
    assert_close(out[0, 0], np.array(h_new), np.float64, "out")
    assert_close(h_n[0], np.array(h_new), np.float64, "h_n")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_one_step_by_hand(rng, nonlinearity):
    I, H = 3, 4
    case = make_case(rng, "rnn", 1, 1, I, H, np.float64)
    act = math.tanh if nonlinearity == "tanh" else _relu
    x, h = case["x"][0, 0].tolist(), case["h0"][0].tolist()
    w_ih, w_hh = case["w_ih"].tolist(), case["w_hh"].tolist()
    b_ih, b_hh = case["b_ih"].tolist(), case["b_hh"].tolist()
    h_new = [act(_affine(w_ih, b_ih, x, j) + _affine(w_hh, b_hh, h, j)) for j in range(H)]
    out, h_n, _ = ref.rnn_forward(**case, nonlinearity=nonlinearity)
    assert_close(out[0, 0], np.array(h_new), np.float64, "out")
    assert_close(h_n[0], np.array(h_new), np.float64, "h_n")


# ----------------------------------------------------------------------------
# float32
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("config", list(CONFIGS))
def test_float32_matches_float64(rng, config):
    """The float32 path computes in float32 and stays within TOL[float32] of float64."""
    cell, cell_opts, proj = CONFIGS[config]
    case64 = make_case(rng, cell, 5, 3, 4, 4, np.float32, proj=proj, lengths=True)
    case32 = {k: v for k, v in case64.items()}
    case64 = {k: (v.astype(np.float64) if v is not None and v.dtype == np.float32 else v)
              for k, v in case64.items()}
    for reverse in (False, True):
        r32 = forward(cell, case32, **cell_opts, reverse=reverse)
        r64 = forward(cell, case64, **cell_opts, reverse=reverse)
        for name, a, b in zip(("out", "h_n", "c_n"), r32[:3], r64[:3]):
            if a is not None:
                assert a.dtype == np.float32
                assert_close(a, b, np.float32, f"{config} {name}")
        cot = cotangents(rng, cell, *r64[:3])
        g32 = backward(cell, r32[3], *[None if c is None else c.astype(np.float32)
                                       for c in cot])
        g64 = backward(cell, r64[3], *cot)
        for key in g64:
            assert g32[key].dtype == np.float32, key
            assert_close(g32[key], g64[key], np.float32, f"{config} {key}")


def test_tolerance_table_and_lengths_helper(rng):
    assert set(TOL) == {np.float32, np.float64}
    for _ in range(20):
        lengths = make_lengths(rng, 5, 4)
        assert lengths.min() >= 1 and lengths.max() == 5


# ----------------------------------------------------------------------------
# torch (skipped when torch is not installed)
# ----------------------------------------------------------------------------

def _torch_layer(torch, cell, I, H, proj, opts):
    kw = dict(bidirectional=True, dtype=torch.float64)
    if cell == "lstm":
        return torch.nn.LSTM(I, H, proj_size=proj, **kw)
    if cell == "gru":
        return torch.nn.GRU(I, H, **kw)
    return torch.nn.RNN(I, H, nonlinearity=opts["nonlinearity"], **kw)


@pytest.mark.parametrize("config", [c for c in CONFIGS if "relu" not in c or c == "rnn-relu"])
def test_matches_torch(rng, config):
    """Forward (lengths) and reverse (lengths) directions of a bidirectional torch layer
    on packed sequences vs the oracle: outputs, final states, all gradients."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    cell, cell_opts, proj = CONFIGS[config]
    T, B, I, H = 5, 3, 3, 4
    P = proj or H
    layer = _torch_layer(torch, cell, I, H, proj, cell_opts)
    lengths = make_lengths(rng, T, B)
    x = rng.standard_normal((T, B, I))
    dirs = {}
    for suffix in ("", "_reverse"):  # forward, then reverse direction
        params = dict(w_ih=getattr(layer, "weight_ih_l0" + suffix),
                      w_hh=getattr(layer, "weight_hh_l0" + suffix),
                      b_ih=getattr(layer, "bias_ih_l0" + suffix),
                      b_hh=getattr(layer, "bias_hh_l0" + suffix))
        if proj:
            params["w_hr"] = getattr(layer, "weight_hr_l0" + suffix)
        dirs[suffix] = params
    h0 = rng.standard_normal((2, B, P))
    c0 = rng.standard_normal((2, B, H))

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    state = (h0t, c0t) if cell == "lstm" else h0t
    out_p, st = layer(packed, state)
    out_t, _ = pad_packed_sequence(out_p, total_length=T)           # (T, B, 2P)
    h_nt = st[0] if cell == "lstm" else st                          # (2, B, P)

    dout = rng.standard_normal((T, B, 2 * P))
    dh_n = rng.standard_normal((2, B, P))
    dc_n = rng.standard_normal((2, B, H))
    L = (out_t * torch.tensor(dout)).sum() + (h_nt * torch.tensor(dh_n)).sum()
    if cell == "lstm":
        L = L + (st[1] * torch.tensor(dc_n)).sum()
    L.backward()

    dx = np.zeros_like(x)
    for d, (suffix, params) in enumerate(dirs.items()):
        case = {k: v.detach().numpy().copy() for k, v in params.items()}
        case.update(x=x, h0=h0[d], lengths=lengths)
        if cell == "lstm":
            case["c0"] = c0[d]
        out, h_n, c_n, cache = forward(cell, case, **cell_opts, reverse=bool(d))
        what = f"torch {config} dir{suffix or '_forward'}"
        assert_close(out, out_t[:, :, d * P:(d + 1) * P].detach().numpy(), np.float64,
                     what + " out")
        assert_close(h_n, h_nt[d].detach().numpy(), np.float64, what + " h_n")
        if cell == "lstm":
            assert_close(c_n, st[1][d].detach().numpy(), np.float64, what + " c_n")
        grads = backward(cell, cache, dout[:, :, d * P:(d + 1) * P], dh_n[d],
                         dc_n[d] if cell == "lstm" else None)
        for k, p in params.items():
            assert_close(grads["d" + k], p.grad.numpy(), np.float64, what + " d" + k)
        assert_close(grads["dh0"], h0t.grad[d].numpy(), np.float64, what + " dh0")
        if cell == "lstm":
            assert_close(grads["dc0"], c0t.grad[d].numpy(), np.float64, what + " dc0")
        dx += grads["dx"]
    assert_close(dx, xt.grad.numpy(), np.float64, f"torch {config} dx")

"""fusedrnn.ops against torch.nn.LSTM / GRU / RNN with the same weights.

One layer, time-major.  Our weights are copied into the torch module; outputs, final states
and (through autograd with the same dout / dh_n / dc_n) dx, dh0, dc0 and every parameter
gradient are compared.  Lengths go through pack_padded_sequence(enforce_sorted=False) /
pad_packed_sequence(total_length=T); reverse=True is compared with the reverse half of a
bidirectional torch layer (whose forward half is compared with our forward direction).
The process-wide torch thread count is left alone.
"""

import numpy as np
import pytest

from conftest import GATES, assert_close, make_case, make_lengths, run_backward, run_forward
from fusedrnn import ops

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

# id: (cell, activation, proj)   (torch has no relu LSTM)
CONFIGS = {
    "lstm": ("lstm", "tanh", 0),
    "lstm-proj": ("lstm", "tanh", 3),
    "gru": ("gru", None, 0),
    "rnn-tanh": ("rnn", "tanh", 0),
    "rnn-relu": ("rnn", "relu", 0),
}

# id: (with_state, lengths, reverse, bias)
MODES = {
    "plain": (False, False, False, True),
    "state": (True, False, False, True),
    "lengths": (True, True, False, True),
    "reverse": (True, False, True, True),
    "reverse_lengths": (True, True, True, True),
    "no_bias_lengths": (False, True, False, False),
}

PARAM_NAMES = {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "b_ih": "bias_ih_l0",
               "b_hh": "bias_hh_l0", "w_hr": "weight_hr_l0"}


def torch_layer(cell, act, I, H, proj, bidirectional, bias, dtype):
    kw = dict(num_layers=1, bias=bias, bidirectional=bidirectional,
              dtype=torch.float64 if dtype == np.float64 else torch.float32)
    if cell == "lstm":
        return torch.nn.LSTM(I, H, proj_size=proj, **kw)
    if cell == "gru":
        return torch.nn.GRU(I, H, **kw)
    return torch.nn.RNN(I, H, nonlinearity=act, **kw)


def torch_run(cell, act, dirs, x, lengths, h0, c0, dout, dh_n, dc_n):
    """Run a torch layer holding the weights of `dirs` (one dict per direction) on x.

    h0 (D, B, P), c0 (D, B, H), dout (T, B, D*P), dh_n (D, B, P), dc_n (D, B, H) are NumPy
    arrays.  Returns out, h_n, c_n and the gradients of
        sum(dout * out) + sum(dh_n * h_n) + sum(dc_n * c_n)
    wrt x, h0, c0 and each direction's parameters, all as NumPy arrays.
    """
    T, B, I = x.shape
    D = len(dirs)
    H = dirs[0]["w_ih"].shape[0] // GATES[cell]
    proj = dirs[0]["w_hr"].shape[0] if dirs[0].get("w_hr") is not None else 0
    bias = dirs[0]["b_ih"] is not None
    layer = torch_layer(cell, act, I, H, proj, D == 2, bias, x.dtype)
    with torch.no_grad():
        for d, params in enumerate(dirs):
            suffix = "_reverse" if d else ""
            for name, tname in PARAM_NAMES.items():
                if params.get(name) is not None:
                    getattr(layer, tname + suffix).copy_(torch.from_numpy(params[name]))

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True) if cell == "lstm" else None
    inp = xt
    if lengths is not None:
        inp = pack_padded_sequence(xt, torch.as_tensor(lengths, dtype=torch.int64),
                                   enforce_sorted=False)
    out, state = layer(inp, (h0t, c0t) if cell == "lstm" else h0t)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, total_length=T)
    h_n, c_n = (state if cell == "lstm" else (state, None))
    loss = (out * torch.from_numpy(dout)).sum() + (h_n * torch.from_numpy(dh_n)).sum()
    if cell == "lstm":
        loss = loss + (c_n * torch.from_numpy(dc_n)).sum()
    loss.backward()

    res = dict(out=out.detach().numpy(), h_n=h_n.detach().numpy(), dx=xt.grad.numpy(),
               dh0=h0t.grad.numpy(), params=[])
    if cell == "lstm":
        res.update(c_n=c_n.detach().numpy(), dc0=c0t.grad.numpy())
    for d in range(D):
        suffix = "_reverse" if d else ""
        grads = {}
        for name, tname in PARAM_NAMES.items():
            p = getattr(layer, tname + suffix, None)
            if p is not None:
                grads["d" + name] = p.grad.numpy()
        res["params"].append(grads)
    return res


def compare_with_torch(rng, config, dtype, with_state, with_lengths, reverse, bias, T=5, B=3,
                       I=4, H=6):
    cell, act, proj = CONFIGS[config]
    P = proj or H
    D = 2 if reverse else 1
    what = f"torch {config} {np.dtype(dtype).name}"
    # one parameter set per direction (direction 1 is the reverse one)
    dirs = []
    for _ in range(D):
        case = make_case(rng, cell, T, B, I, H, dtype, proj=proj, bias=bias)
        dirs.append({k: case.get(k) for k in PARAM_NAMES})
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = make_lengths(rng, T, B) if with_lengths else None
    if with_state:
        h0 = rng.standard_normal((D, B, P)).astype(dtype)
        c0 = rng.standard_normal((D, B, H)).astype(dtype)
    else:  # ours gets None; torch gets zeros so that it reports their gradients
        h0 = np.zeros((D, B, P), dtype)
        c0 = np.zeros((D, B, H), dtype)
    dout = rng.standard_normal((T, B, D * P)).astype(dtype)
    dh_n = rng.standard_normal((D, B, P)).astype(dtype)
    dc_n = rng.standard_normal((D, B, H)).astype(dtype)

    t = torch_run(cell, act, dirs, x, lengths, h0, c0, dout, dh_n, dc_n)

    dx = np.zeros_like(x)
    for d, params in enumerate(dirs):
        wd = f"{what} {'reverse' if d else 'forward'} direction"
        case = dict(params, x=x, lengths=lengths,
                    h0=h0[d] if with_state else None,
                    c0=c0[d] if (with_state and cell == "lstm") else None)
        out, h_n, c_n, cache = run_forward(ops, cell, act, case, reverse=bool(d), training=True)
        assert out.dtype == np.dtype(dtype)
        assert_close(out, t["out"][:, :, d * P:(d + 1) * P], dtype, wd + ": out")
        assert_close(h_n, t["h_n"][d], dtype, wd + ": h_n")
        if cell == "lstm":
            assert_close(c_n, t["c_n"][d], dtype, wd + ": c_n")
        grads = run_backward(ops, cell, cache, np.ascontiguousarray(dout[:, :, d * P:(d + 1) * P]),
                             dh_n[d], dc_n[d] if cell == "lstm" else None)
        assert_close(grads["dh0"], t["dh0"][d], dtype, wd + ": dh0")
        if cell == "lstm":
            assert_close(grads["dc0"], t["dc0"][d], dtype, wd + ": dc0")
        tparams = t["params"][d]
        assert set(tparams) <= set(grads)
        assert {"dw_ih", "dw_hh"} <= set(tparams)
        if bias:
            assert {"db_ih", "db_hh"} <= set(tparams)
        if proj:
            assert "dw_hr" in tparams
        for key, g in tparams.items():
            assert_close(grads[key], g, dtype, f"{wd}: {key}")
        dx += grads["dx"]
    assert_close(dx, t["dx"], dtype, f"{what}: dx")


MATRIX = [(c, m) for c in CONFIGS for m in MODES]


@pytest.mark.parametrize("config,mode", MATRIX, ids=[f"{c}-{m}" for c, m in MATRIX])
def test_matches_torch_float64(rng, config, mode):
    with_state, with_lengths, reverse, bias = MODES[mode]
    compare_with_torch(rng, config, np.float64, with_state, with_lengths, reverse, bias)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_torch_float32(rng, config):
    compare_with_torch(rng, config, np.float32, True, True, True, True)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_torch_odd_sizes(rng, config):
    """T = 1 and B = 1 with H = 17, I = 1, in both directions."""
    compare_with_torch(rng, config, np.float64, True, False, True, True, T=1, B=1, I=1, H=17)
    compare_with_torch(rng, config, np.float64, True, True, True, True, T=7, B=1, I=3, H=17)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["+inf", "-inf"])
@pytest.mark.parametrize("config", ["lstm", "lstm-proj", "gru", "rnn-tanh"])
def test_infinite_input_matches_torch(rng, config, sign):
    """A +-inf input feature (I = 1) saturates every gate: torch gives finite outputs
    (sigmoid(+-inf) = 1/0, tanh(+-inf) = +-1) and so must we."""
    cell, act, proj = CONFIGS[config]
    T, B, H = 4, 3, 5
    case = make_case(rng, cell, T, B, 1, H, np.float64, proj=proj)
    case["x"][1, 2, 0] = sign * np.inf
    params = {k: case.get(k) for k in PARAM_NAMES}
    P = proj or H
    h0 = case["h0"][None]
    c0 = case["c0"][None] if cell == "lstm" else np.zeros((1, B, H))
    zeros = (np.zeros((T, B, P)), np.zeros((1, B, P)), np.zeros((1, B, H)))
    t = torch_run(cell, act, [params], case["x"], None, h0, c0, *zeros)
    out, h_n, c_n, _ = run_forward(ops, cell, act, case)
    assert np.all(np.isfinite(t["out"])), "torch itself must stay finite here"
    assert_close(out, t["out"], np.float64, f"{config} inf: out")
    assert_close(h_n, t["h_n"][0], np.float64, f"{config} inf: h_n")
    if cell == "lstm":
        assert_close(c_n, t["c_n"][0], np.float64, f"{config} inf: c_n")


@pytest.mark.parametrize("config", list(CONFIGS))
def test_nan_input_matches_torch_nan_pattern(rng, config):
    cell, act, proj = CONFIGS[config]
    T, B, H = 5, 3, 4
    case = make_case(rng, cell, T, B, 2, H, np.float64, proj=proj)
    case["x"][2, 0, 1] = np.nan
    params = {k: case.get(k) for k in PARAM_NAMES}
    P = proj or H
    h0 = case["h0"][None]
    c0 = case["c0"][None] if cell == "lstm" else np.zeros((1, B, H))
    zeros = (np.zeros((T, B, P)), np.zeros((1, B, P)), np.zeros((1, B, H)))
    t = torch_run(cell, act, [params], case["x"], None, h0, c0, *zeros)
    out, h_n, _, _ = run_forward(ops, cell, act, case)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(t["out"]))
    assert np.isnan(out).any()
    fin = ~np.isnan(t["out"])
    assert_close(out[fin], t["out"][fin], np.float64, f"{config} nan: finite outputs")
    np.testing.assert_array_equal(np.isnan(h_n), np.isnan(t["h_n"][0]))

"""Parity of fusedrnn.LSTM / GRU / RNN with torch.nn over the option grid.

Each case copies a torch module's state_dict into ours (the user-facing path: `.numpy()`
arrays), runs both on the same input, states and lengths (torch via pack_padded_sequence with
enforce_sorted=False), back-propagates the same cotangents, and compares outputs, final
states, dx, dh0 (dc0) and every parameter gradient.  dropout=0 here: torch's masks come from
its own generator, so dropout is tested in test_layers.py.
"""

import itertools

import numpy as np
import pytest

from conftest import assert_close
from fusedrnn import GRU, LSTM, RNN

torch = pytest.importorskip("torch")
# torch notes that oneDNN has no projected LSTM and falls back to its own code: expected.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")
pack = torch.nn.utils.rnn.pack_padded_sequence
unpack = torch.nn.utils.rnn.pad_packed_sequence

T, B, I, H = 5, 3, 4, 5
LENGTHS = np.array([3, 5, 1])  # unsorted, with a length-1 and a full-length sequence
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def grid():
    cases = []
    for L, bi, bf, use_len in itertools.product((1, 2, 3), (False, True), (False, True), (False, True)):
        common = dict(num_layers=L, bidirectional=bi, batch_first=bf)
        for proj in (0, 2):
            cases.append(("lstm", dict(common, proj_size=proj), use_len))
        cases.append(("gru", common, use_len))
        for nl in ("tanh", "relu"):
            cases.append(("rnn", dict(common, nonlinearity=nl), use_len))
    return cases


def case_id(case):
    cell, kw, use_len = case
    bits = [cell, f"L{kw['num_layers']}"]
    bits += [k for k in ("bidirectional", "batch_first") if kw[k]]
    bits += [f"proj{kw['proj_size']}"] if kw.get("proj_size") else []
    bits += [kw["nonlinearity"]] if "nonlinearity" in kw else []
    bits += ["lengths"] if use_len else []
    return "-".join(bits)


TORCH_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
OURS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def run_pair(cell, kw, use_len, dtype, seed, unbatched=False):
    """Run torch and fusedrnn on one case; returns (theirs, ours) dicts of arrays."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tmod = getattr(torch.nn, TORCH_CLASSES[cell])(I, H, dtype=TORCH_DTYPE[dtype], **kw)
    ours = OURS[cell](I, H, dtype=dtype, seed=seed, **kw)
    ours.load_state_dict({k: v.numpy() for k, v in tmod.state_dict().items()})

    bf = kw["batch_first"]
    D = 2 if kw["bidirectional"] else 1
    LD = kw["num_layers"] * D
    P = kw.get("proj_size") or H
    if unbatched:
        x = rng.standard_normal((T, I))
        h0, c0 = rng.standard_normal((LD, P)), rng.standard_normal((LD, H))
    else:
        x = rng.standard_normal((B, T, I) if bf else (T, B, I))
        h0, c0 = rng.standard_normal((LD, B, P)), rng.standard_normal((LD, B, H))
    x, h0, c0 = (a.astype(dtype) for a in (x, h0, c0))
    lengths = LENGTHS if use_len else None

    tx, th0, tc0 = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    hx = (th0, tc0) if cell == "lstm" else th0
    if use_len:
        packed = pack(tx, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
        tout, thn = tmod(packed, hx)
        tout, _ = unpack(tout, batch_first=bf, total_length=T)
    else:
        tout, thn = tmod(tx, hx)
    if cell == "lstm":
        thn, tcn = thn
        out, (hn, cn) = ours(x, (h0, c0), lengths=lengths)
    else:
        out, hn = ours(x, h0, lengths=lengths)
        tcn = cn = None
    theirs = {"out": tout, "h_n": thn, "c_n": tcn}
    mine = {"out": out, "h_n": hn, "c_n": cn}

    dout = rng.standard_normal(out.shape).astype(dtype)
    dhn = rng.standard_normal(hn.shape).astype(dtype)
    loss = (tout * torch.tensor(dout)).sum() + (thn * torch.tensor(dhn)).sum()
    if cell == "lstm":
        dcn = rng.standard_normal(cn.shape).astype(dtype)
        loss = loss + (tcn * torch.tensor(dcn)).sum()
        dx, (dh0, dc0) = ours.backward(dout, (dhn, dcn))
        mine.update(dx=dx, dh0=dh0, dc0=dc0)
    else:
        dx, dh0 = ours.backward(dout, dhn)
        mine.update(dx=dx, dh0=dh0)
    loss.backward()
    theirs.update(dx=tx.grad, dh0=th0.grad, dc0=tc0.grad if cell == "lstm" else None)
    for name, p in tmod.named_parameters():
        theirs["grad " + name] = p.grad
        mine["grad " + name] = ours.grads[name]
    assert set(ours.grads) == {n for n, _ in tmod.named_parameters()}
    theirs = {k: v.detach().numpy() for k, v in theirs.items() if v is not None}
    return theirs, {k: v for k, v in mine.items() if v is not None}


def compare(theirs, mine, dtype, rtol=None):
    assert set(theirs) == set(mine)
    for k in theirs:
        assert_close(mine[k], theirs[k], dtype, k, rtol=rtol)


CASES = grid()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_backward_match_torch_float64(case):
    cell, kw, use_len = case
    theirs, mine = run_pair(cell, kw, use_len, "float64", seed=CASES.index(case))
    n_params = (5 if kw.get("proj_size") else 4) * kw["num_layers"] * (2 if kw["bidirectional"] else 1)
    # out, h_n, dx, dh0 (+ c_n, dc0) and every parameter gradient
    assert len(theirs) == 4 + 2 * (cell == "lstm") + n_params
    compare(theirs, mine, np.float64, rtol=1e-9)


@pytest.mark.parametrize("cell,kw", [
    ("lstm", dict(num_layers=2, bidirectional=True, batch_first=False)),
    ("gru", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("rnn", dict(num_layers=3, bidirectional=False, batch_first=False, nonlinearity="relu")),
])
def test_float32_matches_torch(cell, kw):
    theirs, mine = run_pair(cell, kw, True, "float32", seed=7)
    assert all(v.dtype == np.float32 for v in mine.values())
    compare(theirs, mine, np.float32)


@pytest.mark.parametrize("cell,kw", [
    ("lstm", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("gru", dict(num_layers=1, bidirectional=True, batch_first=False)),
    ("rnn", dict(num_layers=2, bidirectional=False, batch_first=True, nonlinearity="tanh")),
])
def test_unbatched_matches_torch(cell, kw):
    theirs, mine = run_pair(cell, kw, False, "float64", seed=3, unbatched=True)
    assert mine["out"].ndim == 2 and mine["dx"].shape == (T, I)
    compare(theirs, mine, np.float64, rtol=1e-9)


@pytest.mark.parametrize("cell,kw", [("lstm", dict(proj_size=2)), ("gru", {}),
                                     ("rnn", dict(nonlinearity="relu", bias=False))])
def test_state_dict_has_torchs_keys_and_shapes(cell, kw):
    tmod = getattr(torch.nn, TORCH_CLASSES[cell])(I, H, num_layers=2, bidirectional=True, **kw)
    ours = OURS[cell](I, H, num_layers=2, bidirectional=True, seed=0, **kw)
    expected = [(k, tuple(v.shape)) for k, v in tmod.state_dict().items()]
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == expected
    # and the other direction: our weights drive torch to the same outputs
    tmod.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    with torch.no_grad():
        tout = tmod(torch.from_numpy(x))[0].numpy()
    out = ours.eval()(x)[0]
    assert_close(out, tout, np.float32, "out")

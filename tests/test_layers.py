"""fusedrnn.LSTM / GRU / RNN without torch.

Oracles: the NumPy reference (fusedrnn.reference, proven on its own in test_reference.py)
stacked layer by layer by hand; central finite differences of the layer's own forward for
every gradient; exact arithmetic for dropout.  torch parity: test_layers_torch.py.
"""

import math
import os

import numpy as np
import pytest

import fusedrnn
from conftest import assert_close
from fusedrnn import GRU, LSTM, RNN, reference
from fusedrnn import _npz

CLASSES = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def make(cell, *args, **kw):
    return CLASSES[cell](*args, **kw)


def stacked_reference(layer, x, h0=None, c0=None, lengths=None):
    """Forward of a whole (dropout-free) layer from fusedrnn.reference, time-major."""
    L, D = layer.num_layers, layer.num_directions
    p = layer.params
    h_n, c_n, inp = [], [], x
    for k in range(L):
        outs = []
        for d in range(D):
            i, sfx = k * D + d, f"_l{k}" + ("_reverse" if d else "")
            args = (inp, p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("bias_ih" + sfx),
                    p.get("bias_hh" + sfx), None if h0 is None else h0[i])
            kw = dict(lengths=lengths, reverse=bool(d))
            if isinstance(layer, LSTM):
                out, h, c, _ = reference.lstm_forward(*args, None if c0 is None else c0[i],
                                                      w_hr=p.get("weight_hr" + sfx),
                                                      activation=layer.activation, **kw)
                c_n.append(c)
            elif isinstance(layer, GRU):
                out, h, _ = reference.gru_forward(*args, **kw)
            else:
                out, h, _ = reference.rnn_forward(*args, nonlinearity=layer.nonlinearity, **kw)
            outs.append(out)
            h_n.append(h)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(h_n), (np.stack(c_n) if c_n else None)


def states(rng, layer, B, dtype=np.float64):
    LD = layer.num_layers * layer.num_directions
    P = layer.proj_size or layer.hidden_size
    h0 = rng.standard_normal((LD, B, P)).astype(dtype)
    c0 = rng.standard_normal((LD, B, layer.hidden_size)).astype(dtype)
    return h0, c0


def call(layer, x, h0=None, c0=None, lengths=None):
    """Uniform call: returns (out, h_n, c_n or None)."""
    if isinstance(layer, LSTM):
        hx = None if h0 is None else (h0, c0)
        out, (h, c) = layer(x, hx, lengths=lengths)
        return out, h, c
    out, h = layer(x, h0, lengths=lengths)
    return out, h, None


def back(layer, dout, dh=None, dc=None):
    if isinstance(layer, LSTM):
        dx, (dh0, dc0) = layer.backward(dout, None if dh is None else (dh, dc))
        return dx, dh0, dc0
    dx, dh0 = layer.backward(dout, dh)
    return dx, dh0, None


# ----------------------------------------------------------------------------
# construction and parameters
# ----------------------------------------------------------------------------

def test_parameter_names_shapes_and_order_follow_torch():
    lstm = LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=0)
    expected = []
    for k, I in ((0, 3), (1, 4)):  # layer 1 sees both directions' P = 2 outputs
        for sfx in (f"_l{k}", f"_l{k}_reverse"):
            expected += [("weight_ih" + sfx, (20, I)), ("weight_hh" + sfx, (20, 2)),
                         ("bias_ih" + sfx, (20,)), ("bias_hh" + sfx, (20,)),
                         ("weight_hr" + sfx, (2, 5))]
    sd = lstm.state_dict()
    assert [(k, v.shape) for k, v in sd.items()] == expected
    assert list(lstm.grads) == [k for k, _ in expected]
    assert all(v.dtype == np.float32 for v in sd.values())

    gru = GRU(4, 3, bias=False, dtype="float64", seed=0)
    assert {k: v.shape for k, v in gru.params.items()} == {"weight_ih_l0": (9, 4), "weight_hh_l0": (9, 3)}
    assert gru.params["weight_ih_l0"].dtype == np.float64
    rnn = RNN(2, 6, num_layers=3, seed=0)
    assert rnn.params["weight_ih_l2"].shape == (6, 6) and len(rnn.params) == 12


def test_init_is_torch_uniform_and_seeded():
    H = 16
    a = LSTM(8, H, num_layers=2, seed=3, dtype="float64")
    values = np.concatenate([v.ravel() for v in a.params.values()])
    bound = 1 / math.sqrt(H)
    assert np.all(np.abs(values) <= bound)
    # uniform(-k, k): mean 0, variance k^2 / 3 (n ~ 4700, so 5% is many standard errors)
    assert abs(values.mean()) < 0.05 * bound
    assert abs(values.var() / (bound ** 2 / 3) - 1) < 0.05
    same = LSTM(8, H, num_layers=2, seed=3, dtype="float64")
    other = LSTM(8, H, num_layers=2, seed=4, dtype="float64")
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], same.params[k])
        assert not np.array_equal(a.params[k], other.params[k])
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(GRU(2, 3, seed=g1).params["weight_hh_l0"],
                                  GRU(2, 3, seed=g2).params["weight_hh_l0"])
    assert GRU(2, 3).params["weight_ih_l0"].dtype == np.float32  # the default dtype


def test_config_repr_and_from_config():
    lstm = LSTM(3, 5, 2, batch_first=True, dropout=0.25, proj_size=2, activation="relu", seed=1)
    cfg = lstm.get_config()
    assert cfg == dict(input_size=3, hidden_size=5, num_layers=2, bias=True, batch_first=True,
                       dropout=0.25, bidirectional=False, proj_size=2, activation="relu",
                       dtype="float32", seed=1)
    clone = LSTM.from_config(cfg)
    for k in lstm.params:  # same int seed -> same init
        np.testing.assert_array_equal(lstm.params[k], clone.params[k])
    assert repr(lstm) == ("LSTM(3, 5, num_layers=2, batch_first=True, dropout=0.25, "
                          "proj_size=2, activation='relu')")
    assert repr(RNN(2, 4, nonlinearity="relu", dtype="float64")) == \
        "RNN(2, 4, nonlinearity='relu', dtype='float64')"
    assert GRU(2, 3, seed=np.random.default_rng(0)).get_config()["seed"] is None


# ----------------------------------------------------------------------------
# forward against the stacked reference
# ----------------------------------------------------------------------------

FORWARD_CASES = [
    # cell, num_layers, bidirectional, batch_first, lengths, extra
    ("lstm", 2, True, False, True, {}),
    ("lstm", 3, False, True, False, {"proj_size": 2}),
    ("lstm", 2, True, True, True, {"proj_size": 3, "activation": "relu"}),
    ("gru", 2, True, True, True, {}),
    ("gru", 1, False, False, False, {"bias": False}),
    ("rnn", 3, True, False, True, {"nonlinearity": "relu"}),
    ("rnn", 2, False, True, True, {}),
]


@pytest.mark.parametrize("cell,L,bi,bf,use_len,extra", FORWARD_CASES)
def test_forward_matches_stacked_reference(rng, cell, L, bi, bf, use_len, extra):
    T, B, I, H = 5, 3, 4, 4
    layer = make(cell, I, H, L, bidirectional=bi, batch_first=bf, dtype="float64", seed=2, **extra)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([5, 2, 4]) if use_len else None
    h0, c0 = states(rng, layer, B)
    ref_out, ref_h, ref_c = stacked_reference(layer, x, h0, c0 if cell == "lstm" else None, lengths)
    xin = x.transpose(1, 0, 2).copy() if bf else x
    out, h, c = call(layer, xin, h0, c0 if cell == "lstm" else None, lengths)
    assert_close(out, ref_out.transpose(1, 0, 2) if bf else ref_out, np.float64, "out")
    assert_close(h, ref_h, np.float64, "h_n")
    if cell == "lstm":
        assert_close(c, ref_c, np.float64, "c_n")
    if use_len:  # zeros past each length, in the caller's layout
        tm = out.transpose(1, 0, 2) if bf else out
        for b, n in enumerate(lengths):
            assert np.all(tm[n:, b] == 0)


def test_unbatched_input_is_a_batch_of_one(rng):
    lstm = LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype="float64", seed=0)
    x = rng.standard_normal((6, 3))  # (T, I): batch_first does not apply, as in torch
    h0, c0 = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    out, (h, c) = lstm(x, (h0, c0))
    assert out.shape == (6, 8) and h.shape == (4, 4) and c.shape == (4, 4)
    dout = rng.standard_normal(out.shape)
    dx, (dh0, dc0) = lstm.backward(dout)
    ob, (hb, cb) = lstm(x[None], (h0[:, None], c0[:, None]))  # batch_first batch of one
    dxb, (dh0b, dc0b) = lstm.backward(dout[None])
    assert_close(out, ob[0], np.float64, "out")
    assert_close(h, hb[:, 0], np.float64, "h_n")
    assert_close(c, cb[:, 0], np.float64, "c_n")
    assert dx.shape == (6, 3) and dh0.shape == (4, 4)
    assert_close(dx, dxb[0], np.float64, "dx")
    assert_close(dh0, dh0b[:, 0], np.float64, "dh0")
    assert_close(dc0, dc0b[:, 0], np.float64, "dc0")


def test_keyword_arguments_and_partial_states(rng):
    gru = GRU(2, 3, dtype="float64", seed=0)
    x, h0 = rng.standard_normal((4, 2, 2)), rng.standard_normal((1, 2, 3))
    out, h = gru(x, h0=h0, lengths=[4, 2])
    np.testing.assert_array_equal(out, gru.forward(x, h0, [4, 2])[0])
    dx, dh0 = gru.backward(dout=np.ones_like(out), dh_n=np.ones_like(h))
    assert dx.shape == x.shape and dh0.shape == h0.shape
    lstm = LSTM(2, 3, dtype="float64", seed=0)
    c0 = rng.standard_normal((1, 2, 3))
    zeros = np.zeros((1, 2, 3))
    # None for one state of the pair means zeros, like omitting it
    np.testing.assert_array_equal(lstm(x, hx=(None, c0))[0], lstm(x, (zeros, c0))[0])
    dx, (dh0, dc0) = lstm.backward(np.ones((4, 2, 3)), dhx=(None, np.ones((1, 2, 3))))
    assert dh0.shape == (1, 2, 3) and dc0.shape == (1, 2, 3)


def test_float32_layer_tracks_float64(rng):
    g64 = GRU(4, 5, num_layers=2, bidirectional=True, dtype="float64", seed=5)
    g32 = GRU(4, 5, num_layers=2, bidirectional=True, seed=5)
    g32.load_state_dict(g64.state_dict())
    x = rng.standard_normal((7, 3, 4))
    out64, h64 = g64(x, lengths=[7, 3, 5])
    out32, h32 = g32(x.astype(np.float32), lengths=[7, 3, 5])
    assert out32.dtype == np.float32 and h32.dtype == np.float32
    assert_close(out32, out64, np.float32, "out")
    assert_close(h32, h64, np.float32, "h_n")


# ----------------------------------------------------------------------------
# gradients against central finite differences
# ----------------------------------------------------------------------------

GRAD_CASES = [
    ("lstm", {}, True),
    ("lstm", {"activation": "relu"}, False),
    ("lstm", {"proj_size": 2}, True),
    ("gru", {}, True),
    ("rnn", {"nonlinearity": "tanh"}, True),
    ("rnn", {"nonlinearity": "relu", "bias": False}, False),
]


@pytest.mark.parametrize("cell,extra,use_len", GRAD_CASES)
def test_every_gradient_matches_finite_differences(cell, extra, use_len):
    """2 layers, bidirectional, batch_first, dropout 0.5 between the layers (the mask is
    held fixed by rewinding the layer's Generator before each forward)."""
    rng = np.random.default_rng(11)
    T, B, I, H = 4, 2, 2, 3
    gen = np.random.default_rng(5)
    layer = make(cell, I, H, 2, batch_first=True, dropout=0.5, bidirectional=True,
                 dtype="float64", seed=gen, **extra)
    start = gen.bit_generator.state
    is_lstm = cell == "lstm"
    x = rng.standard_normal((B, T, I))
    h0, c0 = states(rng, layer, B)
    lengths = np.array([4, 2]) if use_len else None
    probe = call(layer, x, h0, c0 if is_lstm else None, lengths)
    dout = rng.standard_normal(probe[0].shape)
    dh = rng.standard_normal(probe[1].shape)
    dc = rng.standard_normal(probe[2].shape) if is_lstm else None

    def loss():
        gen.bit_generator.state = start
        out, h, c = call(layer, x, h0, c0 if is_lstm else None, lengths)
        return np.sum(out * dout) + np.sum(h * dh) + (np.sum(c * dc) if is_lstm else 0.0)

    loss()
    layer.zero_grad()
    dx, dh0, dc0 = back(layer, dout, dh, dc)

    def numeric(arr):
        g = np.zeros_like(arr)
        eps = 1e-6
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + eps
            up = loss()
            arr[idx] = keep - eps
            down = loss()
            arr[idx] = keep
            g[idx] = (up - down) / (2 * eps)
        return g

    # relu kinks and the finite step bound the agreement, not the kernels' precision
    assert_close(dx, numeric(x), np.float64, "dx", rtol=1e-6)
    assert_close(dh0, numeric(h0), np.float64, "dh0", rtol=1e-6)
    if is_lstm:
        assert_close(dc0, numeric(c0), np.float64, "dc0", rtol=1e-6)
    for name, p in layer.params.items():
        assert_close(layer.grads[name], numeric(p), np.float64, name, rtol=1e-6)
    if use_len:  # nothing flows into padding
        for b, n in enumerate(lengths):
            assert np.all(dx[b, n:] == 0)


def test_grads_accumulate_until_zero_grad(rng):
    rnn = RNN(3, 4, num_layers=2, dtype="float64", seed=1)
    x = rng.standard_normal((5, 2, 3))
    dout = rng.standard_normal((5, 2, 4))
    rnn(x)
    rnn.backward(dout)
    once = {k: v.copy() for k, v in rnn.grads.items()}
    assert all(np.any(v != 0) for v in once.values())
    held = rnn.grads["weight_hh_l1"]
    rnn(x)
    rnn.backward(dout)
    for k in once:
        assert_close(rnn.grads[k], 2 * once[k], np.float64, k)
    rnn.zero_grad()
    assert rnn.grads["weight_hh_l1"] is held  # cleared in place: an optimiser's reference stays valid
    assert all(np.all(v == 0) for v in rnn.grads.values())


def test_backward_with_no_cotangents_gives_zeros(rng):
    lstm = LSTM(2, 3, dtype="float64", seed=0)
    lstm(rng.standard_normal((4, 2, 2)))
    dx, (dh0, dc0) = lstm.backward(None)
    assert np.all(dx == 0) and np.all(dh0 == 0) and np.all(dc0 == 0)
    assert dx.shape == (4, 2, 2) and dh0.shape == (1, 2, 3)


# ----------------------------------------------------------------------------
# dropout, train / eval
# ----------------------------------------------------------------------------

def identity_second_layer(p, seed, T=40, B=50, H=20):
    """Two relu RNN layers whose second layer copies its (dropped-out) input: layer 0 has
    positive weights and inputs (so a positive output), layer 1 is the identity with no
    recurrence.  The layer's output is then exactly layer 0's output times the mask."""
    rnn = RNN(H, H, num_layers=2, nonlinearity="relu", dropout=p, dtype="float64", seed=seed)
    r = np.random.default_rng(0)
    rnn.params["weight_ih_l0"][...] = r.uniform(0.01, 0.1, (H, H))
    rnn.params["weight_hh_l0"][...] = r.uniform(0.0, 0.05, (H, H))
    rnn.params["bias_ih_l0"][...] = 0.1
    rnn.params["bias_hh_l0"][...] = 0.0
    rnn.params["weight_ih_l1"][...] = np.eye(H)
    for k in ("weight_hh_l1", "bias_ih_l1", "bias_hh_l1"):
        rnn.params[k][...] = 0.0
    x = r.uniform(0.1, 1.0, (T, B, H))
    return rnn, x


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_zeroes_a_fraction_p_and_scales_survivors(p):
    rnn, x = identity_second_layer(p, seed=3)
    clean, _ = rnn.eval()(x)
    assert np.all(clean > 0)
    dropped, _ = rnn.train()(x)
    zero = dropped == 0
    # 40000 draws: the standard error of the fraction is ~0.0025
    assert abs(zero.mean() - p) < 0.015
    assert_close(dropped[~zero], clean[~zero] / (1 - p), np.float64, "survivors scaled by 1/(1-p)")


def test_dropout_reproducible_with_seed_and_fresh_each_call():
    a, x = identity_second_layer(0.5, seed=7, T=4, B=3, H=5)
    b, _ = identity_second_layer(0.5, seed=7, T=4, B=3, H=5)
    c, _ = identity_second_layer(0.5, seed=8, T=4, B=3, H=5)
    out_a1, _ = a(x)
    out_a2, _ = a(x)
    out_b1, _ = b(x)
    out_c1, _ = c(x)
    np.testing.assert_array_equal(out_a1, out_b1)   # same seed, same masks
    assert not np.array_equal(out_a1, out_a2)       # a new mask per forward
    assert not np.array_equal(out_a1, out_c1)       # another seed, other masks


def test_dropout_one_drops_everything_and_eval_ignores_dropout():
    rnn, x = identity_second_layer(1.0, seed=1, T=3, B=2, H=4)
    out, h = rnn(x)
    assert np.all(out == 0) and np.all(h[1] == 0)
    clean, _ = rnn.eval()(x)
    assert np.all(clean > 0)
    again, _ = rnn(x)
    np.testing.assert_array_equal(clean, again)


def test_single_layer_dropout_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers=1"):
        GRU(2, 3, dropout=0.5)


def test_train_eval_modes_and_what_eval_keeps(rng):
    gru = GRU(2, 3, dtype="float64", seed=0)
    assert gru.training is True
    assert gru.eval() is gru and gru.training is False
    assert gru.train() is gru and gru.training is True
    x = rng.standard_normal((4, 2, 2))
    train_out, _ = gru(x)
    assert gru._trace is not None
    gru.eval()
    eval_out, _ = gru(x)
    assert gru._trace is None  # eval keeps nothing
    np.testing.assert_array_equal(train_out, eval_out)  # dropout=0: same function
    with pytest.raises(RuntimeError, match="eval mode"):
        gru.backward(np.zeros_like(eval_out))


# ----------------------------------------------------------------------------
# state_dict, save / load
# ----------------------------------------------------------------------------

def test_state_dict_round_trip(rng):
    src = LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    dst = LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=2)
    held = dst.params["weight_ih_l1_reverse"]
    sd = src.state_dict()
    sd["weight_ih_l0"][...] = 0  # a copy: the layer is untouched
    assert np.any(src.params["weight_ih_l0"] != 0)
    dst.load_state_dict({k: v.tolist() for k, v in src.state_dict().items()})  # any array-likes
    assert dst.params["weight_ih_l1_reverse"] is held
    x = rng.standard_normal((5, 2, 3))
    out_s, (h_s, c_s) = src(x)
    out_d, (h_d, c_d) = dst(x)
    np.testing.assert_array_equal(out_s, out_d)
    np.testing.assert_array_equal(c_s, c_d)
    f32 = LSTM(3, 4, num_layers=2, bidirectional=True, seed=3)
    f32.load_state_dict(src.state_dict())  # float64 values into a float32 layer
    assert f32.params["bias_hh_l0"].dtype == np.float32
    assert_close(f32.params["bias_hh_l0"], src.params["bias_hh_l0"], np.float32, "cast")


@pytest.mark.parametrize("cell,extra", [("lstm", {"proj_size": 2, "activation": "relu"}),
                                        ("gru", {"bias": False}), ("rnn", {"nonlinearity": "relu"})])
def test_save_load_round_trip(tmp_path, rng, cell, extra):
    layer = make(cell, 3, 4, 2, batch_first=True, bidirectional=True, dropout=0.1,
                 dtype="float64", seed=4, **extra)
    path = tmp_path / "layer.npz"
    layer.save(path)
    assert sorted(os.listdir(tmp_path)) == ["layer.npz"]  # no temporary left behind
    back_ = CLASSES[cell].load(path)
    assert type(back_) is type(layer)
    assert back_.get_config() == layer.get_config()
    for k in layer.params:
        np.testing.assert_array_equal(back_.params[k], layer.params[k])
    anyclass = fusedrnn.layers._RNNBase.load(str(path))
    assert type(anyclass) is type(layer)
    x = rng.standard_normal((2, 5, 3))
    layer.eval(), back_.eval()
    np.testing.assert_array_equal(call(layer, x)[0], call(back_, x)[0])


def test_save_overwrites_atomically_and_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = GRU(2, 3, seed=1)
    old.save(path)
    new = GRU(2, 3, seed=2)
    new.save(path)  # overwrite
    np.testing.assert_array_equal(GRU.load(path).params["weight_ih_l0"], new.params["weight_ih_l0"])

    def broken(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(_npz, "_write_archive", broken)
    with pytest.raises(OSError, match="disk full"):
        old.save(path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    np.testing.assert_array_equal(GRU.load(path).params["weight_ih_l0"], new.params["weight_ih_l0"])


def test_load_rejects_wrong_files(tmp_path):
    path = tmp_path / "gru.npz"
    GRU(2, 3, seed=0).save(path)
    with pytest.raises(ValueError, match="holds a GRU, not a LSTM"):
        LSTM.load(path)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(ValueError, match="not a fusedrnn .npz file"):
        GRU.load(plain)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a fusedrnn .npz file"):
        GRU.load(junk)
    with pytest.raises(FileNotFoundError):
        GRU.load(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------
# NaN / Inf
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_propagate_without_hanging(rng, cell, bad):
    layer = make(cell, 3, 4, 2, bidirectional=True, dtype="float64", seed=0)
    x = rng.standard_normal((6, 3, 3))
    x[2, 1, 0] = bad
    lengths = np.array([6, 6, 4])
    out, h, _ = call(layer, x, lengths=lengths)
    with np.errstate(all="ignore"):
        ref_out, ref_h, _ = stacked_reference(layer, x, lengths=lengths)
    # Same values as the oracle, NaN where it has NaN: an inf input saturates the gates
    # (finite outputs), a NaN poisons its sequence from that step on.
    np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-10, equal_nan=True)
    np.testing.assert_allclose(h, ref_h, rtol=1e-10, atol=1e-10, equal_nan=True)
    if np.isnan(bad):
        assert np.isnan(out[:, 1]).any() and np.isnan(h[:, 1]).all()
    clean = np.delete(np.arange(3), 1)
    assert np.all(np.isfinite(out[:, clean])) and np.all(np.isfinite(h[:, clean]))
    dx, _, _ = back(layer, np.ones_like(out))
    assert np.all(np.isfinite(dx[:, clean]))
    if np.isnan(bad):
        assert np.isnan(dx[:, 1]).any()


# ----------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------

CTOR_ERRORS = [
    (lambda: GRU(0, 3), ValueError, "input_size must be >= 1, got 0"),
    (lambda: GRU(2.0, 3), TypeError, "input_size must be an int, got float"),
    (lambda: GRU(2, 0), ValueError, "hidden_size must be >= 1"),
    (lambda: GRU(2, 3, num_layers=0), ValueError, "num_layers must be >= 1"),
    (lambda: GRU(2, 3, bias=1), TypeError, "bias must be a bool, got int"),
    (lambda: GRU(2, 3, batch_first="yes"), TypeError, "batch_first must be a bool"),
    (lambda: GRU(2, 3, bidirectional=None), TypeError, "bidirectional must be a bool"),
    (lambda: GRU(2, 3, 2, dropout=1.5), ValueError, r"dropout must be a number in \[0, 1\], got 1.5"),
    (lambda: GRU(2, 3, 2, dropout=-0.1), ValueError, r"dropout must be a number in \[0, 1\]"),
    (lambda: GRU(2, 3, 2, dropout="0.5"), TypeError, "dropout must be a number"),
    (lambda: LSTM(2, 3, proj_size=3), ValueError, "proj_size must be smaller than hidden_size = 3, got 3"),
    (lambda: LSTM(2, 3, proj_size=-1), ValueError, "proj_size must be >= 0"),
    (lambda: LSTM(2, 3, activation="sigmoid"), ValueError, "activation must be 'tanh' or 'relu', got 'sigmoid'"),
    (lambda: RNN(2, 3, nonlinearity="gelu"), ValueError, "nonlinearity must be 'tanh' or 'relu'"),
    (lambda: GRU(2, 3, dtype="float16"), ValueError, "dtype must be 'float32' or 'float64', got float16"),
    (lambda: GRU(2, 3, dtype="banana"), TypeError, "dtype must be 'float32' or 'float64'"),
    (lambda: GRU(2, 3, seed=1.5), TypeError, "seed must be None, an int or a numpy.random.Generator"),
]


@pytest.mark.parametrize("fn,exc,msg", CTOR_ERRORS)
def test_constructor_errors(fn, exc, msg):
    with pytest.raises(exc, match=msg):
        fn()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_layers_beyond_memory_are_refused_before_allocating(cell):
    # Checked in closed form: 10**9 layers of 4 units fail at once instead of allocating
    # small arrays until memory runs out.
    with pytest.raises(MemoryError, match=r"num_layers=1000000000, hidden_size=4.* GiB"):
        make(cell, 3, 4, num_layers=10**9)
    with pytest.raises(MemoryError, match=r"num_layers=1, hidden_size=1000000000.* GiB"):
        make(cell, 3, 10**9)


@pytest.mark.parametrize("kw", [dict(), dict(num_layers=3, bidirectional=True),
                                dict(num_layers=2, bias=False), dict(num_layers=2, proj_size=2)])
def test_memory_check_counts_every_parameter(monkeypatch, kw):
    from fusedrnn import layers
    cls = LSTM if "proj_size" in kw else GRU
    built = cls(3, 5, **kw)
    numbers = sum(a.nbytes for a in built.params.values())
    need = 2 * (numbers + len(built.params) * layers._ARRAY_OVERHEAD)
    monkeypatch.setattr(layers, "_physical_memory", lambda: need)
    cls(3, 5, **kw)  # exactly fits
    monkeypatch.setattr(layers, "_physical_memory", lambda: need - 1)
    with pytest.raises(MemoryError, match=f"num_layers={built.num_layers}, hidden_size=5"):
        cls(3, 5, **kw)


def _lstm():
    return LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)  # float32, L*D = 4


X = np.zeros((5, 2, 3), np.float32)
H0 = np.zeros((4, 2, 4), np.float32)

FORWARD_ERRORS = [
    (lambda m: m(np.zeros((5, 2, 3, 1), np.float32)), ValueError,
     r"x must be 3-D \(T, B, I\) or 2-D \(T, I\).*got shape \(5, 2, 3, 1\)"),
    (lambda m: m(np.zeros(5, np.float32)), ValueError, r"x must be 3-D"),
    (lambda m: m(np.zeros((5, 2, 4), np.float32)), ValueError,
     r"x must have input_size = 3 features in its last axis, got shape \(5, 2, 4\)"),
    (lambda m: m(np.zeros((0, 2, 3), np.float32)), ValueError, "at least one step"),
    (lambda m: m(X.astype(np.float64)), TypeError,
     r"x must have dtype float32 \(the layer's dtype\), got float64; convert it with .astype\(np.float32\)"),
    (lambda m: m(X.astype(np.int32)), TypeError, "x must have dtype float32"),
    (lambda m: m(X.astype(np.complex64)), TypeError, "got complex64"),
    (lambda m: m(X, H0), TypeError, r"hx must be a tuple \(h0, c0\), got ndarray"),
    (lambda m: m(X, (H0,)), TypeError, r"tuple \(h0, c0\)"),
    (lambda m: m(X, (H0[:2], H0)), ValueError,
     r"h0 must have shape \(num_layers \* num_directions, B, H\) = \(4, 2, 4\), got \(2, 2, 4\)"),
    (lambda m: m(X, (H0, H0[:, :1])), ValueError, r"c0 must have shape .* = \(4, 2, 4\), got \(4, 1, 4\)"),
    (lambda m: m(X, (H0.astype(np.float64), H0)), TypeError, "h0 must have dtype float32"),
    (lambda m: m(X[:, 0], (H0, H0)), ValueError, r"h0 must have shape .* = \(4, 4\) \(x is unbatched"),
    (lambda m: m(X, lengths=[5, 6]), ValueError, r"lengths must lie in 1..T = 1..5, got values from 5 to 6"),
    (lambda m: m(X, lengths=[0, 5]), ValueError, "lengths must lie in 1..T"),
    (lambda m: m(X, lengths=[5, 5, 5]), ValueError, r"lengths must have shape \(B,\) = \(2,\)"),
    (lambda m: m(X, lengths=[2.0, 5.0]), TypeError, "lengths must be integers, got dtype float64"),
    (lambda m: m(X, lengths=[True, True]), TypeError, "lengths must be integers"),
    (lambda m: m(X[:, 0], lengths=[5]), ValueError, "lengths needs a batched"),
]


@pytest.mark.parametrize("fn,exc,msg", FORWARD_ERRORS)
def test_forward_errors(fn, exc, msg):
    with pytest.raises(exc, match=msg):
        fn(_lstm())


def test_forward_errors_other_layouts():
    gru = GRU(3, 4, batch_first=True, seed=0)
    with pytest.raises(ValueError, match=r"x must be 3-D \(B, T, I\)"):
        gru(np.zeros((2, 3, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(1, 2, 4\), got \(1, 5, 4\)"):
        gru(np.zeros((2, 5, 3), np.float32), np.zeros((1, 5, 4), np.float32))  # B is axis 0
    proj = LSTM(3, 4, proj_size=2, seed=0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(num_layers \* num_directions, B, P\) = \(1, 2, 2\)"):
        proj(X, (np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32)))


def test_backward_errors(rng):
    m = _lstm()
    with pytest.raises(RuntimeError, match="backward needs a forward first"):
        m.backward(np.zeros((5, 2, 8), np.float32))
    out, _ = m(X)
    assert out.shape == (5, 2, 8)
    with pytest.raises(ValueError, match=r"dout must have the shape of out, \(T, B, features\) = \(5, 2, 8\), got \(5, 2, 4\)"):
        m.backward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(TypeError, match="dout must have dtype float32"):
        m.backward(out.astype(np.float64))
    with pytest.raises(TypeError, match=r"dhx must be a tuple \(dh_n, dc_n\), got ndarray"):
        m.backward(out, H0)
    with pytest.raises(ValueError, match=r"dh_n must have shape .* = \(4, 2, 4\), got \(4, 2, 3\)"):
        m.backward(out, (H0[..., :3], H0))
    with pytest.raises(ValueError, match=r"dc_n must have shape"):
        m.backward(out, (H0, H0[:1]))
    m.backward(out)  # the failed calls above consumed nothing
    with pytest.raises(RuntimeError, match="backward already ran"):
        m.backward(out)
    bf = GRU(3, 4, batch_first=True, seed=0)
    bf(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B, T, features\) with batch_first=True = \(2, 5, 4\)"):
        bf.backward(np.zeros((5, 2, 4), np.float32))
    un = RNN(3, 4, seed=0)
    un(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(T, features\) unbatched = \(5, 4\)"):
        un.backward(np.zeros((5, 1, 4), np.float32))


def test_load_state_dict_errors():
    m = GRU(2, 3, seed=0)
    good = m.state_dict()
    before = m.state_dict()
    missing = {k: v for k, v in good.items() if k != "bias_hh_l0"}
    with pytest.raises(ValueError, match="state_dict is missing key 'bias_hh_l0'"):
        m.load_state_dict(missing)
    with pytest.raises(ValueError, match="state_dict has unexpected key 'weight_hr_l0'"):
        m.load_state_dict({**good, "weight_hr_l0": np.zeros((2, 3))})
    bad = dict(good, weight_hh_l0=np.zeros((9, 4)))
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l0'\] must have shape \(9, 3\), got \(9, 4\)"):
        m.load_state_dict(bad)
    with pytest.raises(TypeError, match=r"state_dict\['bias_ih_l0'\] must hold real numbers, got dtype <U1"):
        m.load_state_dict(dict(good, bias_ih_l0=np.array(list("abcdefghi"))))
    with pytest.raises(TypeError, match="state must be a mapping"):
        m.load_state_dict([("weight_ih_l0", good["weight_ih_l0"])])
    # a partly good state changes nothing: everything is checked before anything is written
    half = dict(good, weight_ih_l0=np.ones((9, 2)), weight_hh_l0=np.zeros((1,)))
    with pytest.raises(ValueError, match="weight_hh_l0"):
        m.load_state_dict(half)
    for k in before:
        np.testing.assert_array_equal(m.params[k], before[k])

"""fusedrnn.LSTM/GRU/RNN under fuzzed construction arguments, inputs, states, lengths,
state dicts and save/load; numeric results against a stack of the NumPy reference."""

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fusedrnn

from .counting import CASES, counted, examples, known_defects
from .oracle import assert_clean_error, assert_matches, layer_forward_backward, narrowed, widened
from .strategies import PROVENANCE, bad_values

CLASSES = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}
SMALL = st.sampled_from([1, 2, 3, 5, 8])


@st.composite
def layer_configs(draw):
    cell = draw(st.sampled_from(sorted(CLASSES)))
    H = draw(SMALL)
    cfg = dict(input_size=draw(SMALL), hidden_size=H, num_layers=draw(st.sampled_from([1, 1, 2, 3])),
               bias=draw(st.booleans()), batch_first=draw(st.booleans()),
               bidirectional=draw(st.booleans()),
               dtype=draw(st.sampled_from(["float32", "float64"])), seed=draw(st.integers(0, 99)))
    if cell == "lstm":
        cfg["proj_size"] = draw(st.integers(0, H - 1))
        cfg["activation"] = draw(st.sampled_from(["tanh", "relu"]))
    elif cell == "rnn":
        cfg["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    return cell, cfg


def make_inputs(layer, T, B, batched, with_state, with_lengths, seed):
    rng = np.random.default_rng(seed)
    dt = layer.dtype
    x = rng.standard_normal((T, B, layer.input_size)).astype(dt)
    LD, P, H = layer.num_layers * layer.num_directions, layer.proj_size or layer.hidden_size, layer.hidden_size
    h0 = rng.standard_normal((LD, B, P)).astype(dt) if with_state else None
    c0 = rng.standard_normal((LD, B, H)).astype(dt) if with_state and isinstance(layer, fusedrnn.LSTM) else None
    lengths = rng.integers(1, T + 1, size=B) if with_lengths and batched else None
    return x, h0, c0, lengths


def call(layer, x, h0, c0, lengths, batched):
    """Run the layer in its own layout; results back in time-major 3-D."""
    xin = x if not batched else (x.transpose(1, 0, 2) if layer.batch_first else x)
    if not batched:
        xin, h0 = x[:, 0], None if h0 is None else h0[:, 0]
        c0 = None if c0 is None else c0[:, 0]
    if isinstance(layer, fusedrnn.LSTM):
        out, (h_n, c_n) = layer(xin, None if h0 is None else (h0, c0), lengths)
    else:
        out, h_n = layer(xin, h0, lengths)
        c_n = None
    if not batched:
        return out[:, None], h_n[:, None], None if c_n is None else c_n[:, None]
    return (out.transpose(1, 0, 2) if layer.batch_first else out), h_n, c_n


@examples(60)
@given(layer_configs(), SMALL, SMALL, st.booleans(), st.booleans(), st.booleans(), st.integers(0, 9))
@counted
def test_layer_matches_stacked_reference(config, T, B, batched, with_state, with_lengths, seed):
    cell, cfg = config
    layer = CLASSES[cell](**cfg)
    B = B if batched else 1
    x, h0, c0, lengths = make_inputs(layer, T, B, batched, with_state, with_lengths, seed)
    out, h_n, c_n = call(layer, x, h0, c0, lengths, batched)
    rng = np.random.default_rng(seed + 1)
    dout = rng.standard_normal(out.shape).astype(layer.dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(layer.dtype)
    dc_n = None if c_n is None else rng.standard_normal(c_n.shape).astype(layer.dtype)
    act = cfg.get("activation", cfg.get("nonlinearity", "tanh"))
    r = narrowed(layer_forward_backward(cell, act, widened(layer.params), layer.num_layers,
                                        layer.num_directions, *widened((x, h0, c0)), lengths,
                                        *widened((dout, dh_n, dc_n))), layer.dtype)
    assert_matches(out, r[0], "out")
    assert_matches(h_n, r[1], "h_n")
    if c_n is not None:
        assert_matches(c_n, r[2], "c_n")
    d_out = dout if not batched else (dout.transpose(1, 0, 2) if layer.batch_first else dout)
    if not batched:
        d_out, dh, dc = d_out[:, 0], dh_n[:, 0], None if dc_n is None else dc_n[:, 0]
    else:
        dh, dc = dh_n, dc_n
    if cell == "lstm":
        dx, (dh0, dc0) = layer.backward(d_out, (dh, dc))
    else:
        dx, dh0 = layer.backward(d_out, dh)
    if batched and layer.batch_first:
        dx = dx.transpose(1, 0, 2)
    if not batched:
        dx, dh0 = dx[:, None], dh0[:, None]
    assert_matches(dx, r[3], "dx")
    assert_matches(dh0, r[4], "dh0")
    for k in r[6]:
        assert_matches(layer.grads[k], r[6][k], f"grads[{k}]")


CONSTRUCTOR_ARGS = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                    "bidirectional", "proj_size", "activation", "nonlinearity", "dtype", "seed"]
ARG_VALUES = [0, -1, 1, 3, 2.0, 0.5, 1.5, -0.1, float("nan"), float("inf"), True,
                              False, None, "3", "tanh", "float16", "float64", b"x", [3], (1,),
                              {"a": 1}, np.int64(3), np.float32(0.5), np.array(2), object(),
                              np.dtype("float32"), np.float16, complex(1, 1)]


CONSTRUCTOR_DEFECTS: dict = {}  # argument -> a known defect (one line); none today


@pytest.mark.parametrize("name", known_defects(CONSTRUCTOR_DEFECTS, CONSTRUCTOR_ARGS))
def test_constructor_arguments_are_checked(name):
    # Every (cell, value) pair: the value list is short enough to try exhaustively.
    for cell in sorted(CLASSES):
        for value in ARG_VALUES:
            check_constructor_argument(name, cell, value)


def check_constructor_argument(name, cell, value):
    CASES["constructor_arguments"] += 1
    base = dict(input_size=3, hidden_size=4, num_layers=2)
    if name == "activation" and cell != "lstm" or name == "nonlinearity" and cell != "rnn" \
            or name == "proj_size" and cell != "lstm":
        return
    kw = dict(base, **{name: value})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # dropout with one layer
            layer = CLASSES[cell](**kw)
    except Exception as exc:  # noqa: BLE001 -- the property classifies it
        assert_clean_error(exc, [name])
        return
    # Accepted: the layer must hold a sane, usable value for it.
    got = layer.get_config()[name] if name in layer.get_config() else getattr(layer, name, None)
    if name in ("input_size", "hidden_size", "num_layers"):
        assert isinstance(got, int) and got >= 1 and got == value
    elif name in ("bias", "batch_first", "bidirectional"):
        assert got is bool(value) and isinstance(value, (bool, np.bool_))
    elif name == "dropout":
        assert 0.0 <= got <= 1.0 and got == value
    elif name == "proj_size":
        assert isinstance(got, int) and 0 <= got < 4 and got == value
    elif name in ("activation", "nonlinearity"):
        assert got in ("tanh", "relu") and got == value
    elif name == "dtype":
        assert np.dtype(got) in (np.float32, np.float64)
    out = layer(np.zeros((2, 1, layer.input_size), layer.dtype))[0]
    assert np.all(np.isfinite(out))


CALL_DEFECTS: dict = {}  # argument -> a known defect (one line); none today


@pytest.mark.parametrize("name", known_defects(CALL_DEFECTS, ["x", "h0", "c0", "lengths"]))
@examples(30)
@given(config=layer_configs(), data=st.data())
@counted
def test_bad_call_arguments_are_clean_errors(name, config, data):
    cell, cfg = config
    layer = CLASSES[cell](**cfg)
    x, h0, c0, lengths = make_inputs(layer, 3, 2, True, True, True, 0)
    x = x.transpose(1, 0, 2).copy() if layer.batch_first else x
    args = {"x": x, "h0": h0, "c0": c0, "lengths": lengths}
    if args[name] is None:  # c0 of a GRU/RNN
        return
    label, value = data.draw(bad_values(args[name]), label="value")
    args[name] = value
    try:
        if cell == "lstm":
            layer(args["x"], (args["h0"], args["c0"]), args["lengths"])
        else:
            layer(args["x"], args["h0"], args["lengths"])
    except Exception as exc:  # noqa: BLE001
        # Another x shape changes T and B, so a state or lengths may be what no longer fits.
        assert_clean_error(exc, [name] if name != "x" else list(args))
        return
    # Accepted: None (zeros), an x of another shape that still fits everything else, or the
    # same lengths in another integer dtype.
    same_lengths = (name == "lengths" and isinstance(value, np.ndarray) and value.dtype.kind in "iu"
                    and np.array_equal(value, lengths))
    assert value is None or same_lengths or name == "x" and isinstance(value, np.ndarray) and \
        value.dtype == layer.dtype, f"{name} = {label} was accepted"


PROVENANCE_DEFECTS: dict = {}  # variant -> a known defect (one line); none today


@pytest.mark.parametrize("variant", known_defects(PROVENANCE_DEFECTS, sorted(PROVENANCE)))
@examples(12)
@given(config=layer_configs(), arg=st.sampled_from(["x", "h0", "dout"]))
@counted
def test_layer_input_provenance_does_not_change_results(variant, config, arg):
    cell, cfg = config
    layer = CLASSES[cell](**cfg)
    x, h0, c0, lengths = make_inputs(layer, 4, 3, True, True, False, 1)
    x = x.transpose(1, 0, 2).copy() if layer.batch_first else x
    state = (h0, c0) if cell == "lstm" else h0

    def run(xv, hv, dv):
        layer.zero_grad()
        st_ = (hv, c0) if cell == "lstm" else hv
        out = layer(xv, st_)
        d = layer.backward(dv)
        return out, d, {k: g.copy() for k, g in layer.grads.items()}

    out = layer(x, state)[0]
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(layer.dtype)
    layer.backward(dout)
    plain = run(x, h0, dout)
    vals = {"x": x, "h0": h0, "dout": dout}
    vals[arg] = PROVENANCE[variant](vals[arg])
    got = run(vals["x"], vals["h0"], vals["dout"])
    np.testing.assert_equal(got, plain, err_msg=f"{variant} {arg}")


@examples(100)
@given(config=layer_configs(), data=st.data())
@counted
def test_load_state_dict_checks_everything_before_writing(config, data):
    cell, cfg = config
    layer = CLASSES[cell](**cfg)
    before = layer.state_dict()
    state = CLASSES[cell](**dict(cfg, seed=cfg["seed"] + 1)).state_dict()
    op = data.draw(st.sampled_from(["bad-value", "missing", "extra", "ok-list", "ok-int"]), label="op")
    key = data.draw(st.sampled_from(sorted(state)), label="key")
    label = op
    if op == "bad-value":
        label, state[key] = data.draw(bad_values(state[key]), label="value")
    elif op == "missing":
        del state[key]
    elif op == "extra":
        state[key + "_x"] = state[key]
    elif op == "ok-list":
        state[key] = state[key].tolist()
    else:
        state[key] = np.round(state[key] * 10).astype(np.int32)
    try:
        layer.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        assert_clean_error(exc, [key])
        after = layer.state_dict()
        for k in before:
            np.testing.assert_array_equal(after[k], before[k], err_msg=f"{k} written by a failed load")
        return
    assert op.startswith("ok") or label.startswith("astype") or label == "scalar", \
        f"load_state_dict accepted {label} for {key}"
    for k, v in state.items():
        np.testing.assert_allclose(layer.params[k], np.asarray(v, np.float64), rtol=1e-6)


@examples(30)
@given(config=layer_configs())
@counted
def test_save_load_round_trip(tmp_path_factory, config):
    cell, cfg = config
    layer = CLASSES[cell](**cfg)
    path = tmp_path_factory.mktemp("layer") / "layer.npz"
    layer.save(path)
    back = type(layer).load(path)
    assert back.get_config() == layer.get_config()
    for k in layer.params:
        np.testing.assert_array_equal(back.params[k], layer.params[k])
    x = np.random.default_rng(0).standard_normal((3, 2, layer.input_size)).astype(layer.dtype)
    if layer.batch_first:
        x = x.transpose(1, 0, 2).copy()
    np.testing.assert_array_equal(back(x)[0], layer(x)[0])


@pytest.mark.parametrize("name", ["dout", "dh_n", "dc_n"])
@examples(30)
@given(config=layer_configs(), data=st.data())
@counted
def test_bad_backward_arguments_are_clean_errors(name, config, data):
    cell, cfg = config
    if name == "dc_n" and cell != "lstm":
        return
    layer = CLASSES[cell](**cfg)
    x, h0, c0, _ = make_inputs(layer, 3, 2, True, False, False, 0)
    x = x.transpose(1, 0, 2).copy() if layer.batch_first else x
    out = layer(x)
    h_n = out[1][0] if cell == "lstm" else out[1]
    args = {"dout": np.ones_like(out[0]), "dh_n": np.ones_like(h_n),
            "dc_n": np.ones_like(out[1][1]) if cell == "lstm" else None}
    label, args[name] = data.draw(bad_values(args[name]), label="value")
    before = {k: g.copy() for k, g in layer.grads.items()}
    try:
        if cell == "lstm":
            layer.backward(args["dout"], (args["dh_n"], args["dc_n"]))
        else:
            layer.backward(args["dout"], args["dh_n"])
    except Exception as exc:  # noqa: BLE001
        assert_clean_error(exc, [name])
        for k in before:  # a refused backward adds nothing
            np.testing.assert_array_equal(layer.grads[k], before[k], err_msg=k)
        return
    assert args[name] is None, f"{name} = {label} was accepted"

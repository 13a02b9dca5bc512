"""layer.step(): T one-step calls give the layer's whole-sequence forward, the NumPy reference
and torch's cells; bad input is refused with clear errors; the packed weights follow every
weight change (the version counter) and never go stale."""

import pickle

import numpy as np
import pytest

from conftest import assert_close
from fusedrnn import _core
from fusedrnn import reference as ref
from fusedrnn.layers import GRU, LSTM, RNN

CASES = [
    (LSTM, {}),
    (LSTM, {"proj_size": 3}),
    (LSTM, {"activation": "relu"}),
    (GRU, {}),
    (RNN, {"nonlinearity": "tanh"}),
    (RNN, {"nonlinearity": "relu"}),
    (GRU, {"bias": False}),
]
IDS = ["lstm", "lstm-proj", "lstm-relu", "gru", "rnn-tanh", "rnn-relu", "gru-nobias"]


def reference_stack(layer, x, h0, c0):
    """The unidirectional stack through fusedrnn.reference, layer by layer, in float64."""
    p = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
    inp = x.astype(np.float64)
    for li in range(layer.num_layers):
        s = f"_l{li}"
        args = (inp, p["weight_ih" + s], p["weight_hh" + s], p.get("bias_ih" + s), p.get("bias_hh" + s))
        if layer._cell == "lstm":
            inp = ref.lstm_forward(*args, h0[li], c0[li], w_hr=p.get("weight_hr" + s),
                                   activation=layer.activation)[0]
        elif layer._cell == "gru":
            inp = ref.gru_forward(*args, h0[li])[0]
        else:
            inp = ref.rnn_forward(*args, h0[li], nonlinearity=layer.nonlinearity)[0]
    return inp


def initial_state(layer, rng, B, dtype):
    h0 = rng.standard_normal((layer.num_layers, B, layer._P)).astype(dtype)
    c0 = rng.standard_normal((layer.num_layers, B, layer.hidden_size)).astype(dtype)
    return h0, c0


def steps(layer, x, state):
    outs = []
    for t in range(x.shape[0]):
        out, state = layer.step(x[t], state)
        outs.append(out)
    return np.stack(outs), state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_steps_equal_one_forward_and_the_reference(rng, cls, kw, dtype):
    T, B, I, H = 7, 3, 5, 6
    layer = cls(I, H, num_layers=2, dtype=dtype, seed=3, **kw)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = initial_state(layer, rng, B, dtype)
    lstm = cls is LSTM
    out, final = layer(x, (h0, c0) if lstm else h0)
    got, state = steps(layer, x, (h0, c0) if lstm else h0)
    assert got.dtype == np.dtype(dtype) and got.shape == out.shape
    assert_close(got, out, np.dtype(dtype), "T steps vs forward")
    assert_close(got, reference_stack(layer, x, h0, c0).astype(dtype), np.dtype(dtype), "steps vs reference")
    for a, b, name in zip(state if lstm else (state,), final if lstm else (final,), "hc"):
        assert_close(a, b, np.dtype(dtype), f"final {name}")


@pytest.mark.parametrize("cls,kw", CASES[:1] + CASES[3:5], ids=["lstm", "gru", "rnn"])
def test_unbatched_steps_and_a_state_carried_from_forward(rng, cls, kw):
    T, I, H = 6, 4, 5
    layer = cls(I, H, num_layers=3, dtype="float64", seed=1, **kw)
    x = rng.standard_normal((T, I))
    out, final = layer(x)
    # The first half through forward, the rest by steps from forward's final state.
    first, mid = layer(x[:3])
    got, state = steps(layer, x[3:], mid)
    assert got.shape == (3, H)
    assert_close(np.concatenate([first, got]), out, np.dtype("float64"), "forward + steps")
    # state None means zeros, as in forward
    zero_out, _ = layer.step(x[0], None)
    assert_close(zero_out, out[0], np.dtype("float64"), "step from None")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_matches_torch_cells(rng, dtype):
    torch = pytest.importorskip("torch")
    I, H, B, T = 6, 8, 2, 5
    layer = LSTM(I, H, num_layers=2, dtype=dtype, seed=7)
    cells = [torch.nn.LSTMCell(I if i == 0 else H, H).to(getattr(torch, dtype)) for i in range(2)]
    with torch.no_grad():
        for i, cell in enumerate(cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(torch.from_numpy(layer.params[f"{name}_l{i}"]))
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hs = [(torch.zeros(B, H, dtype=getattr(torch, dtype)),) * 2 for _ in cells]
    state = None
    with torch.no_grad():
        for t in range(T):
            out, state = layer.step(x[t], state)
            inp = torch.from_numpy(x[t])
            for i, cell in enumerate(cells):
                hs[i] = cell(inp, hs[i])
                inp = hs[i][0]
            assert_close(out, inp.numpy(), np.dtype(dtype), f"step {t} vs torch.nn.LSTMCell")
            assert_close(state[1][1], hs[1][1].numpy(), np.dtype(dtype), f"c at step {t}")


def test_every_isa_gives_the_same_step(rng):
    layer = GRU(9, 33, num_layers=2, dtype="float32", seed=2)  # 33: a partial panel
    x = rng.standard_normal((4, 2, 9)).astype(np.float32)
    want, _ = layer(x)
    before = _core.isa()
    try:
        for isa in ("baseline", "avx2", "avx512"):
            try:
                _core.set_isa(isa)
            except ValueError:
                continue  # not in this build or not on this CPU
            got, _ = steps(layer, x, None)
            assert_close(got, want, np.dtype("float32"), f"steps on {isa}")
    finally:
        _core.set_isa(before)


# --- bad input -----------------------------------------------------------------------------

def test_bidirectional_layers_have_no_step():
    layer = LSTM(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(np.zeros(3, np.float32))


@pytest.mark.parametrize("x,exc,match", [
    (np.zeros((2, 5), np.float32), ValueError, r"x must have shape \(B, 3\).*got \(2, 5\)"),
    (np.zeros((2, 2, 3), np.float32), ValueError, r"x must have shape.*got \(2, 2, 3\)"),
    (np.zeros((0, 3), np.float32), ValueError, r"x must have shape.*got \(0, 3\)"),
    (np.zeros(3, np.float64), TypeError, "x must have dtype float32"),
    ("abc", TypeError, "x must have dtype float32"),
])
def test_bad_x_is_refused(x, exc, match):
    layer = LSTM(3, 4, num_layers=2)
    with pytest.raises(exc, match=match):
        layer.step(x)


def test_bad_states_are_refused():
    lstm, gru = LSTM(3, 4, num_layers=2), GRU(3, 4)
    x = np.zeros((5, 3), np.float32)
    h, c = np.zeros((2, 5, 4), np.float32), np.zeros((2, 5, 4), np.float32)
    with pytest.raises(ValueError, match=r"h must have shape \(num_layers, B, H\) = \(2, 5, 4\), got \(1, 5, 4\)"):
        lstm.step(x, (h[:1], c))
    with pytest.raises(ValueError, match=r"c must have shape .* = \(2, 5, 4\), got \(2, 4, 4\)"):
        lstm.step(x, (h, c[:, :4]))
    with pytest.raises(ValueError, match=r"h must have shape \(num_layers, H\) = \(2, 4\).*unbatched"):
        lstm.step(x[0], (h, c))
    with pytest.raises(TypeError, match="h must have dtype float32"):
        lstm.step(x, (h.astype(np.float64), c))
    with pytest.raises(TypeError, match=r"state must be None or a tuple \(h, c\)"):
        lstm.step(x, h)
    with pytest.raises(ValueError, match=r"h must have shape .* = \(1, 5, 4\)"):
        gru.step(x, h)
    # a non-contiguous state is read correctly, not refused
    wide = np.zeros((2, 5, 8), np.float32)[:, :, ::2]
    out, _ = lstm.step(x, (wide, wide))
    np.testing.assert_array_equal(out, lstm.step(x)[0])


@pytest.mark.parametrize("dtype", [np.float64, np.int32, object, np.float16])
@pytest.mark.parametrize("name,arg", [("weight_hh_l0", "w_hh"), ("weight_ih_l1", "w_ih"),
                                      ("bias_ih_l0", "b_ih")])
def test_step_refuses_weights_of_another_dtype_as_the_forward_does(rng, dtype, name, arg):
    layer = LSTM(3, 4, num_layers=2, seed=0)
    x = rng.random((2, 3)).astype(np.float32)
    layer.step(x)  # packed with the float32 weights first
    layer.params[name] = layer.params[name].astype(dtype)
    with pytest.raises(TypeError) as fw:
        layer(x[None])
    with pytest.raises(TypeError, match=f"^{arg} ") as st:
        layer.step(x)
    assert str(st.value) == str(fw.value)


def test_step_takes_byte_swapped_arrays_as_the_forward_does(rng):
    for layer in (GRU(3, 4, seed=0), LSTM(3, 4, num_layers=2, seed=0)):
        x = rng.random((2, 3)).astype(np.float32)
        h = rng.random((layer.num_layers, 2, 4)).astype(np.float32)
        state = (h, h + 1) if isinstance(layer, LSTM) else h
        swapped = lambda a: a.astype(">f4")  # noqa: E731
        want = layer.step(x, state)
        layer.params["weight_hh_l0"] = swapped(layer.params["weight_hh_l0"])
        swapped_state = tuple(map(swapped, state)) if isinstance(state, tuple) else swapped(state)
        got = layer.step(swapped(x), swapped_state)
        np.testing.assert_array_equal(got[0], want[0])
        assert_close(got[0], layer(swapped(x)[None], swapped_state)[0][0], np.dtype(np.float32),
                     "the forward of the same arrays")


@pytest.mark.parametrize("name", ["bias_hh_l0", "weight_hh_l0", "weight_ih_l1", "weight_hr_l0"])
def test_a_missing_parameter_is_refused_by_name(rng, name):
    layer = LSTM(3, 5, num_layers=2, proj_size=2, seed=0)
    x = rng.random((2, 3)).astype(np.float32)
    layer.step(x)
    layer.eval()(x[None])  # packed copies made for both paths
    del layer.params[name]
    for mode in (layer.eval, layer.train):
        mode()
        with pytest.raises(ValueError, match=f"^params has no '{name}': LSTM needs each of its"):
            layer(x[None])
    with pytest.raises(ValueError, match=f"^params has no '{name}'"):
        layer.step(x)


# --- the packed weights follow the weights -------------------------------------------------

def _check_follows(layer, x, what):
    """step() gives the forward of the layer's current weights."""
    if layer.batch_first:  # as the Keras layers build theirs
        want = layer(x[:, None])[0][:, 0]
    else:
        want = layer(x[None])[0][0]
    got, _ = layer.step(x)
    assert_close(got, want, np.dtype(layer.dtype), what)


def test_weights_are_packed_once_until_they_change(rng):
    layer = LSTM(4, 5, dtype="float64", seed=0)
    x = rng.standard_normal((2, 4))
    layer.step(x)
    packed = layer._step_model
    layer.step(x)
    layer.eval()(x[None])
    assert layer._step_model is packed  # no repacking without a change
    layer.load_state_dict({k: v * 0.5 for k, v in layer.state_dict().items()})
    _check_follows(layer, x, "after load_state_dict")
    assert layer._step_model is not packed


@pytest.mark.parametrize("change", ["assign", "load_state_dict", "reset_parameters",
                                    "weights_changed", "keras_weights", "backward_and_update",
                                    "zero_grad"])
def test_every_weight_change_reaches_step(rng, change):
    layer = GRU(4, 5, dtype="float64", seed=0)
    x = rng.standard_normal((2, 4))
    before, _ = layer.step(x)
    if change == "assign":
        layer.params["weight_ih_l0"] = layer.params["weight_ih_l0"] * -1.0
    elif change == "load_state_dict":
        layer.load_state_dict({k: -v for k, v in layer.state_dict().items()})
    elif change == "reset_parameters":
        layer.reset_parameters()
    elif change == "weights_changed":
        layer.params["weight_ih_l0"][...] = 0  # in place: needs the explicit call
        layer.weights_changed()
    elif change == "keras_weights":
        layer.load_keras_weights([-w for w in layer.keras_weights()])
    elif change == "backward_and_update":
        out, _ = layer.train()(x[None])
        layer.backward(np.ones_like(out))
        layer.step(x)  # packed between backward and the update below ...
        for k, p in layer.params.items():
            p -= 0.5 * layer.grads[k]  # ... the hand-written optimiser step of the layer docs
        layer.zero_grad()
    elif change == "zero_grad":
        layer.params["bias_hh_l0"] += 1.0
        layer.zero_grad()
    _check_follows(layer, x, f"after {change}")
    assert not np.allclose(layer.step(x)[0], before)


def test_keras_training_and_set_weights_reach_the_wrapped_layer(rng):
    from fusedrnn.keras import Sequential
    from fusedrnn.keras.layers import LSTM as KerasLSTM

    model = Sequential([KerasLSTM(5)])
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    model.compile(optimizer="sgd", loss="mse")
    model.predict(x, verbose=0)
    inner = model.layers[0].layer
    inner.step(x[:, 0])
    version = inner.params.version
    model.set_weights([w * 0.5 for w in model.get_weights()])
    assert inner.params.version > version
    _check_follows(inner, x[:, 0], "after Model.set_weights")
    version = inner.params.version
    model.train_on_batch(x, np.ones((3, 5), np.float32))
    assert inner.params.version > version
    _check_follows(inner, x[:, 0], "after train_on_batch")


def test_a_pickled_layer_packs_again(rng):
    layer = RNN(3, 4, dtype="float64", seed=4)
    x = rng.standard_normal(3)
    out, _ = layer.step(x)
    copy = pickle.loads(pickle.dumps(layer))
    assert "_step_model" not in copy.__dict__
    np.testing.assert_array_equal(copy.step(x)[0], out)
    copy.params["weight_ih_l0"][...] = 0
    copy.weights_changed()
    assert not np.allclose(copy.step(x)[0], out)
    np.testing.assert_array_equal(layer.step(x)[0], out)  # the original is untouched


def test_device_weight_cache_uploads_on_a_new_version(monkeypatch):
    from fusedrnn import _device

    uploads = []

    class FakeDeviceArray:
        @staticmethod
        def from_numpy(a):
            uploads.append(a.copy())
            return FakeDeviceArray()

        def copy_from(self, a):
            uploads.append(a.copy())

    monkeypatch.setattr(_device._core, "DeviceArray", FakeDeviceArray, raising=False)
    cache, w = _device.DeviceState(), np.ones(3)
    first = cache.get("w", w, 0)
    assert cache.get("w", w, 0) is first and len(uploads) == 1
    w[0] = 5.0
    assert cache.get("w", w, 1) is first and len(uploads) == 2 and uploads[-1][0] == 5.0
    other = np.zeros(3)
    cache.get("w", other, 1)  # a replaced array is uploaded even at the same version
    assert len(uploads) == 3 and uploads[-1][0] == 0.0
    other[1] = 7.0  # edited in place outside every API: the version stays, the data differ
    assert cache.get("w", other, 1) is first and len(uploads) == 4 and uploads[-1][1] == 7.0
    cache.get("w", other, 1)
    assert len(uploads) == 4


def test_concurrent_steps_on_one_layer_match_serial_ones(rng):
    from concurrent.futures import ThreadPoolExecutor

    layer = LSTM(64, 64, num_layers=2, seed=1)  # B=64: large enough to release the GIL
    xs = [rng.standard_normal((B, 64)).astype(np.float32) for B in (64, 1, 64, 3) * 4]

    def run(x):
        state = None
        for _ in range(5):
            out, state = layer.step(x, state)
        return out

    serial = [run(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(run, xs))
    for a, b in zip(concurrent, serial):
        np.testing.assert_array_equal(a, b)

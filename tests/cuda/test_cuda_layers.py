"""Layers and the trainer with device='cuda' (the kernels on the device, NumPy at the API).

The stacked layers (multi-layer, bidirectional, projection, lengths, batch_first, dropout)
are checked against the NumPy reference run layer by layer, and their gradients against the
same layer on the CPU (itself checked against finite differences in tests/test_layers.py).
Weights stay on the device between calls and are copied again after the host arrays change.
"""

import numpy as np
import pytest

from conftest import assert_close
import fusedrnn
from fusedrnn import GRU, LSTM, RNN, Dense, Recurrent, Sequential
from fusedrnn import reference as ref

pytestmark = pytest.mark.skipif(not fusedrnn.cuda_available(),
                                reason="no CUDA device: fusedrnn.cuda_available() is False in this build")

CASES = [
    (LSTM, 2, True, dict(proj_size=3)),
    (LSTM, 2, False, dict(activation="relu")),
    (GRU, 2, True, {}),
    (RNN, 3, True, dict(nonlinearity="relu")),
]
IDS = ["lstm-bi-proj", "lstm-relu", "gru-bi", "rnn-relu-bi"]


def reference_stack(layer, x, lengths):
    """The layer's forward, direction by direction, with fusedrnn.reference."""
    p = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
    cell = layer._cell
    inp = x.astype(np.float64)
    for li in range(layer.num_layers):
        outs = []
        for d in range(layer.num_directions):
            sfx = f"_l{li}" + ("_reverse" if d else "")
            args = (inp, p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("bias_ih" + sfx), p.get("bias_hh" + sfx))
            kw = dict(lengths=lengths, reverse=bool(d))
            if cell == "lstm":
                out = ref.lstm_forward(*args, w_hr=p.get("weight_hr" + sfx), activation=layer.activation, **kw)[0]
            elif cell == "gru":
                out = ref.gru_forward(*args, **kw)[0]
            else:
                out = ref.rnn_forward(*args, nonlinearity=layer.nonlinearity, **kw)[0]
            outs.append(out)
        inp = np.concatenate(outs, axis=2)
    return inp


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls,L,bi,extra", CASES, ids=IDS)
def test_layer_on_device_matches_reference_and_cpu_gradients(rng, cls, L, bi, extra, dtype):
    T, B, I, H = 6, 3, 4, 5
    dev = cls(I, H, L, bidirectional=bi, dtype=dtype, seed=3, device="cuda", **extra)
    cpu = cls(I, H, L, bidirectional=bi, dtype=dtype, seed=3, **extra)
    assert dev.device == "cuda" and cpu.device == "cpu"
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = np.array([6, 2, 4])
    out, _ = dev(x, lengths=lengths)
    assert isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype)
    assert_close(out, reference_stack(dev, x, lengths), np.dtype(dtype), "out")
    out_c, _ = cpu(x, lengths=lengths)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, _ = dev.backward(dout)
    dx_c, _ = cpu.backward(dout)
    assert_close(dx, dx_c, np.dtype(dtype), "dx")
    for k in cpu.grads:
        assert isinstance(dev.grads[k], np.ndarray)
        assert_close(dev.grads[k], cpu.grads[k], np.dtype(dtype), k)


def test_weights_changed_on_the_host_reach_the_device(rng):
    layer = GRU(3, 4, dtype="float64", seed=0, device="cuda")
    x = rng.standard_normal((5, 2, 3))
    first, _ = layer(x)
    again, _ = layer(x)
    np.testing.assert_array_equal(first, again)
    layer.params["weight_hh_l0"] *= 0.5  # in place, as an optimiser step
    changed, _ = layer(x)
    want = ref.gru_forward(x, *(layer.params[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")))[0]
    assert_close(changed, want, np.float64, "out after an in-place update")
    assert not np.allclose(changed, first)
    layer.load_state_dict({k: np.zeros_like(v) for k, v in layer.state_dict().items()})
    zero, _ = layer(x)
    np.testing.assert_array_equal(zero, 0)


def test_a_device_layer_pickles_and_uploads_again(rng):
    import pickle

    layer = RNN(3, 4, dtype="float64", seed=5, device="cuda")
    x = rng.standard_normal((4, 2, 3))
    out, _ = layer(x)
    copy = pickle.loads(pickle.dumps(layer))
    assert copy.device == "cuda"
    np.testing.assert_array_equal(copy(x)[0], out)


def test_to_moves_between_devices_and_drops_the_trace(rng):
    layer = LSTM(3, 4, seed=1)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    cpu_out, _ = layer(x)
    assert layer.to("cuda") is layer and layer.device == "cuda"
    with pytest.raises(RuntimeError, match="backward needs a forward first"):
        layer.backward(np.zeros_like(cpu_out))
    dev_out, _ = layer(x)
    assert_close(dev_out, cpu_out, np.float32, "out")
    assert "device" not in layer.get_config()  # saved files load on any machine


def make_model(device, seed=0):
    model = Sequential([Recurrent(LSTM(3, 6, bidirectional=True, dtype="float64")),
                        Dense(12, 2, "softmax", dtype="float64")], seed=seed)
    assert model.to(device) is model
    assert model.layers[0].layer.device == device
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_trainer_fits_on_the_device_as_on_the_cpu(rng):
    """Same seed, same data: the loss history and final weights of a fit with the recurrent
    layer on the device equal the CPU fit's (the optimiser runs on the host arrays)."""
    x = rng.standard_normal((40, 5, 3))
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    lengths = rng.integers(2, 6, size=40)
    hist = {}
    weights = {}
    for device in ("cpu", "cuda"):
        model = make_model(device)
        h = model.fit(x, y, batch_size=8, epochs=3, verbose=0, lengths=lengths)
        hist[device] = np.array(h.history["loss"])
        weights[device] = model.get_weights()
    assert hist["cuda"][-1] < hist["cuda"][0]
    np.testing.assert_allclose(hist["cuda"], hist["cpu"], rtol=1e-9)
    for a, b in zip(weights["cuda"], weights["cpu"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)

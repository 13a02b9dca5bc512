"""Training state kept on the device: the optimiser step on device arrays, gradients summed on
the device, and what crosses between host and device in a training loop.

Oracles: the host optimiser (itself bit-identical to the NumPy formulation of each rule,
tests/test_trainer_fast_paths.py), the same layer and model on the CPU, and the emulated
device's own count of the bytes copied each way.
"""

import copy
import pickle

import numpy as np
import pytest

from conftest import assert_close
import fusedrnn
from fusedrnn import GRU, LSTM, RNN, Dense, Recurrent, Sequential, _core
from fusedrnn.keras import optimizers

pytestmark = pytest.mark.skipif(not fusedrnn.cuda_available(),
                                reason="no CUDA device: fusedrnn.cuda_available() is False in this build")

RULES = {
    "sgd": lambda **kw: optimizers.SGD(0.05, **kw),
    "sgd-momentum": lambda **kw: optimizers.SGD(0.05, momentum=0.9, **kw),
    "sgd-nesterov": lambda **kw: optimizers.SGD(0.05, momentum=0.8, nesterov=True, **kw),
    "adam": lambda **kw: optimizers.Adam(0.01, **kw),
    "adamw": lambda **kw: optimizers.AdamW(0.01, weight_decay=0.1, **kw),
    "rmsprop": lambda **kw: optimizers.RMSprop(0.01, **kw),
    "rmsprop-momentum": lambda **kw: optimizers.RMSprop(0.01, momentum=0.5, **kw),
}
SHAPES = [(12, 5), (12,), (7, 3, 2)]


def arrays(rng, dtype, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in SHAPES]


def run_steps(opt, params, grad_steps, device):
    """params after len(grad_steps) steps, and the optimiser's state, run on one side."""
    D = _core.DeviceArray
    ps = [D.from_numpy(p) for p in params] if device else [p.copy() for p in params]
    for grads in grad_steps:
        gs = [D.from_numpy(g) for g in grads] if device else grads
        opt.apply([(f"k{i}", p, g) for i, (p, g) in enumerate(zip(ps, gs))])
    return [p.numpy() if device else p for p in ps], opt.get_state()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", list(RULES))
def test_device_step_is_bit_identical_to_the_host_step(rng, rule, dtype):
    params = arrays(rng, dtype)
    steps = [arrays(rng, dtype) for _ in range(3)]
    host, host_state = run_steps(RULES[rule](), params, steps, device=False)
    dev, dev_state = run_steps(RULES[rule](), params, steps, device=True)
    for a, b in zip(dev, host):
        np.testing.assert_array_equal(a, b)
    assert dev_state[0] == host_state[0] == 3
    assert dev_state[1].keys() == host_state[1].keys()
    for slot, table in host_state[1].items():
        for key, arr in table.items():
            got = dev_state[1][slot][key]
            assert isinstance(got, np.ndarray)  # get_state reads the device slots back
            np.testing.assert_array_equal(got, arr, err_msg=f"{slot}[{key}]")


def test_clipvalue_on_the_device_is_exact(rng):
    params = arrays(rng, np.float32)
    steps = [arrays(rng, np.float32, scale=3.0) for _ in range(2)]
    host, _ = run_steps(optimizers.Adam(0.01, clipvalue=0.5), params, steps, device=False)
    dev, _ = run_steps(optimizers.Adam(0.01, clipvalue=0.5), params, steps, device=True)
    for a, b in zip(dev, host):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_norm_clipping_on_the_device(rng, clip, dtype):
    """The norms are summed in double on the device and in the BLAS's way on the host: the
    scale factors may differ in the last bits, the step no further."""
    params = arrays(rng, dtype)
    steps = [arrays(rng, dtype, scale=4.0) for _ in range(2)]
    host, _ = run_steps(optimizers.SGD(0.1, momentum=0.5, **{clip: 1.0}), params, steps, device=False)
    dev, _ = run_steps(optimizers.SGD(0.1, momentum=0.5, **{clip: 1.0}), params, steps, device=True)
    plain, _ = run_steps(optimizers.SGD(0.1, momentum=0.5), params, steps, device=False)
    for a, b, c in zip(dev, host, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
        assert not np.allclose(a, c)  # the clipping did act


def test_host_and_device_triples_in_one_step_share_the_global_norm(rng):
    params = arrays(rng, np.float64)
    steps = [arrays(rng, np.float64, scale=4.0) for _ in range(2)]
    host, _ = run_steps(optimizers.Adam(0.01, global_clipnorm=1.0), params, steps, device=False)
    D = _core.DeviceArray
    opt = optimizers.Adam(0.01, global_clipnorm=1.0)
    ps = [p.copy() if i % 2 else D.from_numpy(p) for i, p in enumerate(params)]
    for grads in steps:
        gs = [g if i % 2 else D.from_numpy(g) for i, g in enumerate(grads)]
        opt.apply([(f"k{i}", p, g) for i, (p, g) in enumerate(zip(ps, gs))])
    for i, (p, want) in enumerate(zip(ps, host)):
        np.testing.assert_allclose(p if i % 2 else p.numpy(), want, rtol=1e-12, atol=1e-14)


def test_a_subclassed_rule_runs_on_host_copies_of_device_arrays(rng):
    class HalfSGD(optimizers.SGD):
        def _update(self, p, g, lr, slots):
            p -= p.dtype.type(lr / 2) * g

    params = arrays(rng, np.float64)
    steps = [arrays(rng, np.float64) for _ in range(2)]
    host, _ = run_steps(HalfSGD(0.1), params, steps, device=False)
    dev, _ = run_steps(HalfSGD(0.1), params, steps, device=True)
    for a, b in zip(dev, host):
        np.testing.assert_array_equal(a, b)


def test_a_state_restored_from_the_host_continues_on_the_device(rng):
    params = arrays(rng, np.float32)
    steps = [arrays(rng, np.float32) for _ in range(4)]
    want, _ = run_steps(optimizers.Adam(0.01), params, steps, device=False)
    first = optimizers.Adam(0.01)
    mid, _ = run_steps(first, params, steps[:2], device=False)
    second = optimizers.Adam(0.01)
    second.set_state(*first.get_state())
    got, _ = run_steps(second, mid, steps[2:], device=True)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_bad_device_arguments_raise_clearly(rng):
    D = _core.DeviceArray
    p, g = D.from_numpy(np.zeros(3, np.float32)), D.from_numpy(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(4,\), expected \(3,\)"):
        _core.cuda_optimizer_update("sgd", [p], [g], [], lr=0.1)
    with pytest.raises(TypeError, match=r"grads\[0\] must be a DeviceArray"):
        _core.cuda_optimizer_update("sgd", [p], [np.zeros(3, np.float32)], [], lr=0.1)
    with pytest.raises(ValueError, match="keeps 2 slot lists, got 0"):
        _core.cuda_optimizer_update("adam", [p], [p.copy()], [], lr=0.1)
    with pytest.raises(ValueError, match="must not share device memory"):
        _core.cuda_optimizer_update("sgd", [p], [p.copy()], [[p]], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="rule must be"):
        _core.cuda_optimizer_update("lion", [p], [p.copy()], [], lr=0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.cuda_add_into(D.empty([3], np.dtype(np.int32)), D.empty([3], np.dtype(np.int32)))


# --- layers ---------------------------------------------------------------------------------

CELLS = [(LSTM, dict(proj_size=3)), (GRU, {}), (RNN, dict(nonlinearity="relu"))]


@pytest.mark.parametrize("cls,extra", CELLS, ids=["lstm-proj", "gru", "rnn-relu"])
def test_layer_gradients_sum_on_the_device_and_read_back(rng, cls, extra):
    dev = cls(4, 6, 2, bidirectional=True, dtype="float64", seed=2, device="cuda", **extra)
    cpu = cls(4, 6, 2, bidirectional=True, dtype="float64", seed=2, **extra)
    for _ in range(2):  # two backward calls add up
        x = rng.standard_normal((5, 3, 4))
        for layer in (dev, cpu):
            out, _ = layer(x)
            layer.backward(np.ones_like(out))
    assert dev._dev.grads_on == "device"
    for k, g in cpu.grads.items():
        assert_close(dev.grads[k], g, np.float64, k)
    dev.zero_grad()
    assert dev._dev.grads_on == "device"  # zeroed where they are kept
    assert all(not np.any(g) for g in dev.grads.values())


def test_layer_trainable_steps_on_the_device_and_params_read_back(rng):
    dev = LSTM(3, 5, dtype="float64", seed=4, device="cuda")
    cpu = LSTM(3, 5, dtype="float64", seed=4)
    opts = {id(dev): optimizers.Adam(0.05), id(cpu): optimizers.Adam(0.05)}
    xs = [rng.standard_normal((4, 2, 3)) for _ in range(3)]
    for x in xs:
        for layer in (dev, cpu):
            layer.zero_grad()
            out, _ = layer(x)
            layer.backward(out - 1.0)
            opts[id(layer)].apply(layer.trainable())
    assert dev._dev.params_newer  # the host arrays are not refreshed until read
    triples = dev.trainable()
    assert all(isinstance(p, _core.DeviceArray) for _, p, _ in triples)
    for k, p in cpu.params.items():
        assert isinstance(dev.params[k], np.ndarray)
        assert_close(dev.params[k], p, np.float64, k)
    assert not dev._dev.params_newer
    out_dev, _ = dev(xs[0])
    out_cpu, _ = cpu(xs[0])
    assert_close(out_dev, out_cpu, np.float64, "out after training")


def test_host_edits_after_device_steps_reach_the_device(rng):
    layer = GRU(3, 4, dtype="float64", seed=1, device="cuda")
    x = rng.standard_normal((4, 2, 3))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    optimizers.SGD(0.1).apply(layer.trainable())
    layer.params["weight_hh_l0"][...] = 0  # read (pulls the device's values), then edited
    layer.load_state_dict({**layer.state_dict(), "bias_ih_l0": np.full(12, 0.25)})
    p = layer.state_dict()
    assert not np.any(p["weight_hh_l0"]) and np.all(p["bias_ih_l0"] == 0.25)
    ref = GRU(3, 4, dtype="float64")
    ref.load_state_dict(p)
    assert_close(layer(x)[0], ref(x)[0], np.float64, "out after host edits")
    optimizers.SGD(0.1).apply(layer.trainable())  # the device is ahead again
    layer.params = {k: np.full_like(v, 0.01) for k, v in p.items()}  # new arrays altogether
    ref.load_state_dict(layer.params)
    assert_close(layer(x)[0], ref(x)[0], np.float64, "out after new arrays")


def test_pickle_copy_and_to_cpu_carry_the_device_weights(rng):
    layer = RNN(3, 4, dtype="float64", seed=7, device="cuda")
    x = rng.standard_normal((4, 2, 3))
    for _ in range(2):
        layer.zero_grad()
        out, _ = layer(x)
        layer.backward(out)
        optimizers.SGD(0.2, momentum=0.5).apply(layer.trainable())
    want, _ = layer(x)
    for other in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        np.testing.assert_array_equal(other(x)[0], want)
    layer.to("cpu")
    assert layer._dev is None
    assert_close(layer(x)[0], want, np.float64, "out on the CPU")


# --- what crosses between host and device ----------------------------------------------------

def traffic():
    return np.array(_core._emu_traffic(), dtype=np.int64)


needs_emulation = pytest.mark.skipif(not getattr(_core, "cuda_emulated", False),
                                     reason="the byte count is the emulated device's")


@needs_emulation
def test_a_training_loop_moves_no_weights_or_gradients(rng):
    """Per step, only the batch's activations cross: on the device, the weights, gradients and
    Adam's moments (here 4x the batch's bytes) are neither copied up nor back."""
    layer = LSTM(8, 64, dtype="float32", seed=0, device="cuda")
    param_bytes = sum(p.nbytes for p in layer.params.values())
    opt = optimizers.Adam(1e-3)
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)

    def step():
        layer.zero_grad()
        out, _ = layer(x)
        layer.backward(out)
        opt.apply(layer.trainable())

    step()  # first step: uploads the weights and makes the slots
    before = traffic()
    for _ in range(5):
        step()
    moved = (traffic() - before) / 5
    assert moved.sum() < param_bytes / 4, (moved, param_bytes)

    # The same loop with the step on the host copies moves every gradient down and every
    # weight up (at the next forward).
    host_opt = optimizers.Adam(1e-3)
    before = traffic()
    for _ in range(3):
        layer.zero_grad()
        out, _ = layer(x)
        layer.backward(out)
        host_opt.apply((k, layer.params[k], layer.grads[k]) for k in layer.params)
    layer(x)
    up, down = traffic() - before
    assert down >= 3 * param_bytes and up >= 3 * param_bytes, (up, down, param_bytes)


@needs_emulation
def test_keras_fit_on_the_device_keeps_the_recurrent_state_there(rng):
    x = rng.standard_normal((32, 4, 3))
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)

    def model(device):
        m = Sequential([Recurrent(LSTM(3, 128, dtype="float64")), Dense(128, 2, "softmax", dtype="float64")],
                       seed=0)
        m.to(device)
        m.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        return m

    dev, cpu = model("cuda"), model("cpu")
    lstm_bytes = sum(p.nbytes for p in dev.layers[0].layer.params.values())
    dev.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    before = traffic()
    h_dev = dev.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    moved = (traffic() - before) / 8  # per step
    assert moved.sum() < lstm_bytes / 2, (moved, lstm_bytes)
    cpu.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    h_cpu = cpu.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    np.testing.assert_allclose(h_dev.history["loss"], h_cpu.history["loss"], rtol=1e-9)
    for a, b in zip(dev.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    it_d, st_d = dev.optimizer.get_state()
    it_c, st_c = cpu.optimizer.get_state()
    assert it_d == it_c
    for slot in st_c:
        for key in st_c[slot]:
            np.testing.assert_allclose(st_d[slot][key], st_c[slot][key], rtol=1e-7, atol=1e-12)

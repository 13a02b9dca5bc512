"""backward(..., need_dx=False): the product for dx is skipped, dx comes back None, and every
other gradient is bit-identical to the full backward's (kernels on each ISA, the torch-like
layers, and the Keras models, which ask for it at the first layer with parameters: Sequential by
position, a subclassed model by its tape)."""

import numpy as np
import pytest

from conftest import CELL_CONFIGS, OPTIONS, make_case, make_cotangents, run_forward, use_isa

from fusedrnn import GRU, LSTM, RNN, ops
from fusedrnn.keras import Model, Sequential, optimizers, pieces
from fusedrnn.keras import layers as klayers
from fusedrnn.keras.layers import Dense, Dropout, Embedding, Masking


def _backward(cell, cache, dout, dh_n, dc_n, need_dx):
    if cell == "lstm":
        return ops.lstm_backward(cache, dout, dh_n, dc_n, need_dx=need_dx)
    fn = ops.gru_backward if cell == "gru" else ops.rnn_backward
    return fn(cache, dout, dh_n, need_dx=need_dx)


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("option", ["plain", "lengths", "reverse_lengths", "proj_lengths"])
@pytest.mark.parametrize("config", sorted(CELL_CONFIGS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_skip_dx_and_keep_every_other_gradient(request, isa, option, config, dtype):
    cell, act = CELL_CONFIGS[config]
    case_opts, fwd_opts, proj = OPTIONS[option]
    if proj and cell != "lstm":
        pytest.skip("the projection is the LSTM's")
    use_isa(request, isa)
    rng = np.random.default_rng(7)
    case = make_case(rng, cell, 9, 5, 6, 8, dtype, proj=proj, **case_opts)
    out, h_n, c_n, cache = run_forward(ops, cell, act, case, training=True, **fwd_opts)
    dout, dh_n, dc_n = make_cotangents(rng, out, h_n, c_n, dtype)
    full = _backward(cell, cache, dout, dh_n, dc_n, True)
    part = _backward(cell, cache, dout, dh_n, dc_n, False)
    assert full["dx"] is not None and full["dx"].shape == case["x"].shape
    assert part["dx"] is None
    assert sorted(part) == sorted(full)
    for k in full:
        if k != "dx":
            np.testing.assert_array_equal(part[k], full[k], err_msg=k)


@pytest.mark.parametrize("make", [
    lambda: LSTM(6, 8, num_layers=2, bidirectional=True, seed=3),
    lambda: LSTM(6, 8, num_layers=2, proj_size=5, seed=3),
    lambda: GRU(6, 8, num_layers=2, bidirectional=True, seed=3, dtype="float64"),
    lambda: RNN(6, 8, nonlinearity="relu", seed=3),
])
def test_layers_skip_only_the_first_layers_input_gradient(make):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((7, 4, 6)).astype(make().dtype)
    runs = []
    for need_dx in (True, False):
        layer = make()
        out, state = layer(x)
        dout = np.cos(out)
        dstate = tuple(np.sin(s) for s in state) if isinstance(state, tuple) else np.sin(state)
        dx, dstate0 = layer.backward(dout, dstate, need_dx=need_dx)
        runs.append((dx, dstate0, {k: g.copy() for k, g in layer.grads.items()}))
    (dx, ds_full, g_full), (none, ds_part, g_part) = runs
    assert dx.shape == x.shape and none is None
    for a, b in zip(np.atleast_1d(ds_full) if not isinstance(ds_full, tuple) else ds_full,
                    np.atleast_1d(ds_part) if not isinstance(ds_part, tuple) else ds_part):
        np.testing.assert_array_equal(a, b)
    assert sorted(g_full) == sorted(g_part)
    for k in g_full:
        np.testing.assert_array_equal(g_part[k], g_full[k], err_msg=k)


def _calls(monkeypatch):
    """The need_dx of every kernel backward call, in order."""
    seen = []
    real = ops._backward

    def spy(cell, cache, dout, dh_n, dc_n, need_dx=True):
        seen.append(need_dx)
        return real(cell, cache, dout, dh_n, dc_n, need_dx)

    monkeypatch.setattr(ops, "_backward", spy)
    return seen


def _fit(build, x, y, skip, monkeypatch):
    with monkeypatch.context() as m:
        if not skip:  # the full backward: every layer computes its input gradient
            m.setattr(pieces.Recurrent, "skips_input_grad", False)
            m.setattr(klayers.Bidirectional, "skips_input_grad", False)
        model = build()
        model.compile(optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    return hist.history["loss"], model.get_weights()


class _Subclassed(Model):
    """A subclassed model (its backward walks the tape): Dropout on the input, then an LSTM
    with return_state (a layer of several outputs) under a GRU."""

    def __init__(self):
        super().__init__(seed=2)
        self.drop = klayers.Dropout(0.1)
        self.lstm = klayers.LSTM(8, return_sequences=True, return_state=True)
        self.gru = klayers.GRU(6)
        self.head = Dense(3, activation="softmax")

    def call(self, x, training=False):
        seq, h, c = self.lstm(self.drop(x, training=training))
        return self.head(self.gru(seq))


MODELS = {
    # (model, expected need_dx of the kernel calls of one step, last layer first)
    "lstm_first": (lambda: Sequential([klayers.LSTM(8, return_sequences=True), klayers.GRU(6),
                                       Dense(3, activation="softmax")], seed=0), [True, False]),
    "after_masking_and_dropout": (lambda: Sequential([Masking(0.0), Dropout(0.2),
                                                      klayers.SimpleRNN(8),
                                                      Dense(3, activation="softmax")], seed=0),
                                  [False]),
    "after_embedding": (lambda: Sequential([Embedding(10, 4), klayers.LSTM(8),
                                            Dense(3, activation="softmax")], seed=0), [True]),
    "bidirectional_first": (lambda: Sequential([klayers.Bidirectional(klayers.LSTM(8)),
                                                Dense(3, activation="softmax")], seed=0),
                            [False, False]),
    # a subclassed model's backward walks its tape: the GRU's input comes from the LSTM, the
    # LSTM's from the input through Dropout
    "subclassed": (_Subclassed, [True, False]),
    # a wrapper without need_dx takes the full backward
    "time_distributed_first": (lambda: Sequential([klayers.TimeDistributed(Dense(4)),
                                                   klayers.GRU(6),
                                                   Dense(3, activation="softmax")], seed=0),
                               [True]),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_train_the_same_without_the_input_gradient(monkeypatch, name):
    build, expected = MODELS[name]
    rng = np.random.default_rng(5)
    if name == "after_embedding":
        x = rng.integers(0, 10, (24, 6))
    else:
        x = rng.standard_normal((24, 6, 5)).astype(np.float32)
        x[::5, 4:] = 0.0  # masked steps for the Masking model
    y = rng.integers(0, 3, 24)
    seen = _calls(monkeypatch)
    loss, weights = _fit(build, x, y, True, monkeypatch)
    assert seen[:len(expected)] == expected
    seen.clear()
    loss_full, weights_full = _fit(build, x, y, False, monkeypatch)
    assert all(seen)
    assert loss == loss_full
    for a, b in zip(weights, weights_full):
        np.testing.assert_array_equal(a, b)

"""fusedrnn.keras.layers: Keras-argument construction, get_weights in Keras' layout, and numbers
equal to the Keras cell equations (tests/keras_reference.py) and to the torch-shaped layers fed
the same weights; Keras' published constant-weight outputs; gradients by finite differences.

Layouts stated here are Keras 2/3's public ones (layer.get_weights()):
    Dense           [kernel (in, units), bias (units,)]
    LSTM            [kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)]   gates i, f, c, o
    GRU             [kernel (I, 3H), recurrent_kernel (H, 3H), bias (2, 3H)] gates z, r, h
    SimpleRNN       [kernel (I, H), recurrent_kernel (H, H), bias (H,)]
    Bidirectional   the forward layer's list, then the backward layer's
    Embedding       [embeddings (input_dim, output_dim)]
"""

import numpy as np
import pytest

import fusedrnn
from conftest import assert_close
from fusedrnn.keras import layers, models
from keras_reference import GATES, constant_weights, keras_forward, random_keras

KERAS = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}
TORCH_SHAPED = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}
B, T, I, H = 3, 5, 4, 6


def keras_param_count(cell, I, H, use_bias=True):
    G = GATES[cell]
    bias = (2 * G * H if cell == "gru" else G * H) if use_bias else 0
    return G * (I * H + H * H) + bias


def built(layer, dtype="float64"):
    model = models.Sequential([layer])
    model.build((None, T, I))
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_recurrent_layout_counts_and_numbers(rng, cell, use_bias):
    layer = KERAS[cell](units=H, use_bias=use_bias, return_sequences=True, input_shape=(T, I),
                        dtype="float64")
    G = GATES[cell]
    expected = [(I, G * H), (H, G * H)] + ([(2, 3 * H) if cell == "gru" else (G * H,)] if use_bias else [])
    assert [w.shape for w in layer.get_weights()] == expected
    assert layer.count_params() == keras_param_count(cell, I, H, use_bias)

    weights = random_keras(rng, cell, I, H, use_bias)
    layer.set_weights(weights)
    for a, b in zip(layer.get_weights(), weights):
        assert_close(a, b, np.float64, "get_weights after set_weights")
    x = rng.standard_normal((B, T, I))
    zeros = np.zeros((B, H))
    ref, _, _ = keras_forward(cell, x, *weights[:2], weights[2] if use_bias else None, zeros, zeros)
    assert_close(layer(x), ref, np.float64, "Keras equations")

    torch_shaped = TORCH_SHAPED[cell](I, H, bias=use_bias, batch_first=True, dtype="float64")
    torch_shaped.load_keras_weights(weights)
    assert_close(layer(x), torch_shaped(x)[0], np.float64, "torch-shaped layer")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bidirectional_layout_and_numbers(rng, cell):
    bi = layers.Bidirectional(KERAS[cell](H, dtype="float64"), input_shape=(T, I))
    assert bi.count_params() == 2 * keras_param_count(cell, I, H)
    fw_w, bw_w = random_keras(rng, cell, I, H, True), random_keras(rng, cell, I, H, True)
    bi.set_weights(fw_w + bw_w)
    assert [w.shape for w in bi.get_weights()] == [w.shape for w in fw_w + bw_w]
    x = rng.standard_normal((B, T, I))
    zeros = np.zeros((B, H))
    _, h_fw, _ = keras_forward(cell, x, *fw_w, zeros, zeros)
    _, h_bw, _ = keras_forward(cell, x, *bw_w, zeros, zeros, go_backwards=True)
    assert_close(bi(x), np.concatenate([h_fw, h_bw], axis=1), np.float64, "Bidirectional")
    assert bi.compute_output_shape((None, T, I)) == (None, 2 * H)


def test_lstm_matches_keras_published_numbers():
    """keras-team/keras lstm_test.py: LSTM(3) with Constant 0.01 / 0.02 / 0.03 initialisers on
    arange(72).reshape(3, 6, 4), and the same with go_backwards=True."""
    x = np.arange(72).reshape((3, 6, 4)).astype(np.float32)
    for go_backwards, expected in ((False, [0.6288687, 0.86899155, 0.9460773]),
                                   (True, [0.35622165, 0.74789524, 0.8872726])):
        layer = layers.LSTM(3, go_backwards=go_backwards)
        layer.build((None, 6, 4))
        layer.set_weights(constant_weights("lstm", 4, 3))
        np.testing.assert_allclose(layer(x), np.repeat(np.array(expected)[:, None], 3, 1), rtol=1e-5)


def test_gru_and_simple_rnn_match_keras_published_numbers():
    x = np.arange(72).reshape((3, 6, 4)).astype(np.float32)
    gru = layers.GRU(3)
    gru.build((None, 6, 4))
    gru.set_weights(constant_weights("gru", 4, 3))
    np.testing.assert_allclose(gru(x), np.repeat([[0.5217289], [0.6371659], [0.39384964]], 3, 1),
                               rtol=1e-5)
    x = np.arange(24).reshape((2, 3, 4)).astype(np.float32)
    rnn = layers.SimpleRNN(4)
    rnn.build((None, 3, 4))
    rnn.set_weights(constant_weights("rnn", 4, 4))
    np.testing.assert_allclose(rnn(x), np.repeat([[0.405432], [0.73605347]], 4, 1), rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_return_state_and_go_backwards(rng, cell):
    layer = KERAS[cell](H, return_sequences=True, return_state=True, go_backwards=True,
                        input_shape=(T, I), dtype="float64")
    weights = random_keras(rng, cell, I, H, True)
    layer.set_weights(weights)
    x = rng.standard_normal((B, T, I))
    zeros = np.zeros((B, H))
    out_ref, h_ref, c_ref = keras_forward(cell, x, *weights, zeros, zeros, go_backwards=True)
    outs = layer(x)
    assert len(outs) == (3 if cell == "lstm" else 2)
    assert_close(outs[0], out_ref, np.float64, "sequence, in processing order")
    assert_close(outs[1], h_ref, np.float64, "state_h")
    if cell == "lstm":
        assert_close(outs[2], c_ref, np.float64, "state_c")


def test_lstm_equals_torch_nn_given_the_same_weights(rng):
    torch = pytest.importorskip("torch")
    layer = layers.LSTM(H, return_sequences=True, input_shape=(T, I), dtype="float64")
    layer.set_weights(random_keras(rng, "lstm", I, H, True))
    ref = torch.nn.LSTM(I, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for k, v in layer.layer.params.items():
            getattr(ref, k).copy_(torch.from_numpy(v))
    x = rng.standard_normal((B, T, I))
    assert_close(layer(x), ref(torch.from_numpy(x))[0].detach().numpy(), np.float64, "torch.nn")


def test_dense_embedding_time_distributed(rng):
    dense = layers.Dense(units=5, activation="tanh", input_shape=(I,), dtype="float64")
    kernel, bias = rng.standard_normal((I, 5)), rng.standard_normal(5)
    dense.set_weights([kernel, bias])
    assert [w.shape for w in dense.get_weights()] == [(I, 5), (5,)]
    x = rng.standard_normal((B, I))
    assert_close(dense(x), np.tanh(x @ kernel + bias), np.float64, "Dense")

    td = layers.TimeDistributed(layers.Dense(5, dtype="float64"))
    seq = rng.standard_normal((B, T, I))
    y = td(seq)  # built on first use
    kernel, bias = td.get_weights()
    assert_close(y, seq @ kernel + bias, np.float64, "TimeDistributed(Dense)")
    assert td.compute_output_shape((None, T, I)) == (None, T, 5)

    emb = layers.Embedding(input_dim=10, output_dim=3)
    table = rng.standard_normal((10, 3)).astype(np.float32)
    emb.set_weights([table])
    ids = rng.integers(0, 10, (B, T))
    np.testing.assert_array_equal(emb(ids), table[ids])


def test_sequential_get_weights_is_keras_order(rng):
    model = models.Sequential([layers.LSTM(H, input_shape=(T, I)), layers.Dropout(0.1),
                               layers.Dense(2, activation="softmax")])
    assert [w.shape for w in model.get_weights()] == [(I, 4 * H), (H, 4 * H), (4 * H,), (H, 2), (2,)]
    new = [rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    assert model.count_params() == keras_param_count("lstm", I, H) + H * 2 + 2


def test_weights_of_a_model_not_built_yet_are_a_value_error(tmp_path, rng):
    src = models.Sequential([layers.LSTM(H, input_shape=(T, I)), layers.Dense(1)], seed=0)
    path = tmp_path / "w.npz"
    src.save_weights(path)
    calls = {"reading": lambda m: m.get_weights(),
             "setting": lambda m: m.set_weights(src.get_weights()),
             "loading": lambda m: m.load_weights(path),
             "saving": lambda m: m.save(tmp_path / "m.keras")}
    for doing, call in calls.items():
        model = models.Sequential([layers.LSTM(H), layers.Dense(1)], seed=0)  # no input_shape
        with pytest.raises(ValueError, match=f"the model is not built yet: .* before {doing}"):
            call(model)
    for layer in (layers.LSTM(H, name="rec"), layers.Bidirectional(layers.GRU(H))):
        with pytest.raises(ValueError, match="is not built yet: .* reading its weights"):
            layer.get_weights()
        with pytest.raises(ValueError, match="is not built yet: .* setting its weights"):
            layer.set_weights(random_keras(rng, "gru", I, H, True))


@pytest.mark.parametrize("padding", ["post", "pre"])
def test_masking_turns_padding_into_lengths(rng, padding):
    """Each padded sequence gives what the Keras equations give on the sequence alone."""
    weights = random_keras(rng, "gru", I, H, True)
    model = models.Sequential([layers.Masking(0.0, input_shape=(T, I)),
                               layers.GRU(H, dtype="float64")])
    model.set_weights(weights)
    lens = np.array([5, 2, 3])
    seqs = [rng.standard_normal((n, I)) for n in lens]
    x = fusedrnn.keras.utils.pad_sequences(seqs, maxlen=T, dtype="float64", padding=padding)
    out = model.predict(x)
    for b, s in enumerate(seqs):
        _, h, _ = keras_forward("gru", s[None], *weights, np.zeros((1, H)))
        assert_close(out[b], h[0], np.float64, f"sequence {b}")


def test_embedding_mask_zero_with_sequence_output(rng):
    """mask_zero on left-padded ids: steps are rolled for the kernels and back for predict;
    outputs past (here: before) a sequence are zero."""
    weights = random_keras(rng, "lstm", 3, H, True)
    emb = layers.Embedding(7, 3, mask_zero=True, dtype="float64")
    model = models.Sequential([emb, layers.LSTM(H, return_sequences=True, dtype="float64")])
    ids = np.array([[0, 0, 4, 5, 6], [1, 2, 3, 4, 5]])
    model.predict(ids)  # builds
    model.set_weights([emb.get_weights()[0]] + weights)
    out = model.predict(ids)
    vecs = emb.get_weights()[0][ids]
    ref0, _, _ = keras_forward("lstm", vecs[:1, 2:], *weights, np.zeros((1, H)), np.zeros((1, H)))
    ref1, _, _ = keras_forward("lstm", vecs[1:], *weights, np.zeros((1, H)), np.zeros((1, H)))
    assert_close(out[0, 2:], ref0[0], np.float64, "left-padded sequence")
    np.testing.assert_array_equal(out[0, :2], 0)
    assert_close(out[1], ref1[0], np.float64, "full sequence")


def test_mask_with_a_hole_is_refused():
    model = models.Sequential([layers.Masking(0.0), layers.LSTM(2)])
    x = np.ones((2, 4, 1), np.float32)
    x[0, 1] = 0  # padding between valid steps
    with pytest.raises(ValueError, match="sample 0 has padding between valid steps"):
        model.predict(x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(recurrent_dropout=0.2), "recurrent_dropout is not supported"),
    (dict(recurrent_activation="hard_sigmoid"), "recurrent_activation='sigmoid'"),
    (dict(activation="elu"), "activation 'elu' is not supported"),
    (dict(kernel_regularizer="l2"), "kernel_regularizer='l2' is not supported"),
])
def test_unsupported_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.LSTM(4, **kwargs)
    with pytest.raises(ValueError, match="reset_after=False"):
        layers.GRU(4, reset_after=False)
    with pytest.raises(ValueError, match="merge_mode='sum'"):
        layers.Bidirectional(layers.LSTM(4), merge_mode="sum")


def fd_check(model, x, y, eps=1e-6, samples=4, rng=None):
    """Every trainable parameter's gradient against central differences (a few entries each)."""
    value, grads = model.loss_and_gradients(x, y)
    params = {k: p for k, p, _ in model._trainable()}
    for k, p in params.items():
        flat = p.reshape(-1)
        for j in rng.choice(flat.size, min(samples, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + eps
            up = model.loss_and_gradients(x, y)[0]
            flat[j] = old - eps
            down = model.loss_and_gradients(x, y)[0]
            flat[j] = old
            np.testing.assert_allclose(grads[k].reshape(-1)[j], (up - down) / (2 * eps),
                                       rtol=1e-5, atol=1e-8, err_msg=k)


def test_sequential_of_keras_layers_gradients(rng):
    model = models.Sequential([
        layers.Bidirectional(layers.GRU(3, return_sequences=True, dtype="float64"), input_shape=(T, I)),
        layers.LSTM(4, dropout=0.0, dtype="float64"), layers.Dense(2, dtype="float64")], seed=1)
    model.compile("sgd", "mse")
    fd_check(model, rng.standard_normal((B, T, I)), rng.standard_normal((B, 2)), rng=rng)


@pytest.mark.parametrize("path", ["sequence", "state_h", "state_c"])
def test_subclassed_model_gradients_through_each_output(rng, path):
    """call() feeds one of the LSTM's outputs (return_state) through Dropout(0) and a Dense."""
    class Net(models.Model):
        def __init__(self):
            super().__init__(seed=2)
            self.lstm = layers.LSTM(4, return_state=True, dtype="float64")
            self.drop = layers.Dropout(0.0)
            self.head = layers.Dense(1, dtype="float64")

        def call(self, x, training=False):
            seq, h, c = self.lstm(x, training=training)
            chosen = {"sequence": seq, "state_h": h, "state_c": c}[path]
            return self.head(self.drop(chosen, training=training))

    net = Net()
    net.compile("sgd", "mse")
    fd_check(net, rng.standard_normal((B, T, I)), rng.standard_normal(B), rng=rng)
    assert [w.shape for w in net.get_weights()] == [(I, 16), (4, 16), (16,), (4, 1), (1,)]


def test_subclassed_model_refuses_untraceable_operations(rng):
    class Net(models.Model):
        def __init__(self):
            super().__init__()
            self.lstm = layers.LSTM(4)
            self.head = layers.Dense(1)

        def call(self, x, training=False):
            return self.head(self.lstm(x) * 2.0)  # an operation the backward pass cannot see

    net = Net()
    net.compile("sgd", "mse")
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    assert net.predict(x).shape == (B, 1)  # inference is fine
    with pytest.raises(ValueError, match="dense.*neither the model's input nor a layer's output"):
        net.fit(x, np.zeros(B), verbose=0)


def test_left_padding_trains_as_right_padding(rng):
    """A mask padded at the start is rolled to the end for the kernels: same loss, same
    gradients as the right-padded data, per-step targets rolled along."""
    def model():
        m = models.Sequential([layers.Masking(0.0), layers.LSTM(3, return_sequences=True, dtype="float64"),
                               layers.Dense(1, dtype="float64")], seed=6)
        m.compile("sgd", "mse")
        return m

    lens = np.array([5, 3, 1, 4])
    right = np.zeros((4, T, I))
    y_right = np.zeros((4, T))
    for b, n in enumerate(lens):
        right[b, :n] = rng.standard_normal((n, I))
        y_right[b, :n] = rng.standard_normal(n)
    left = np.stack([np.roll(r, T - n, axis=0) for r, n in zip(right, lens)])
    y_left = np.stack([np.roll(r, T - n) for r, n in zip(y_right, lens)])
    y_left[2, 0] = y_right[1, 4] = np.nan  # padding: never read
    v_right, g_right = model().loss_and_gradients(right, y_right)
    v_left, g_left = model().loss_and_gradients(left, y_left)
    assert v_left == pytest.approx(v_right, rel=1e-12)
    for k in g_right:
        assert_close(g_left[k], g_right[k], np.float64, k)


def test_rnn_input_dropout_is_one_mask_per_sequence(rng):
    """Keras' dropout= on a recurrent layer drops the same input features at every step."""
    layer = layers.GRU(H, dropout=0.5, input_shape=(T, I), dtype="float64")
    x = rng.standard_normal((B, T, I))
    out = layer(x, training=True)
    mask = layer._drop_mask
    dx = layer.backward(np.ones_like(out))
    assert mask.shape == (B, 1, I) and set(np.unique(mask)) == {0.0, 2.0}
    np.testing.assert_array_equal(dx[np.broadcast_to(mask == 0, dx.shape)], 0)
    assert_close(out, layer(x * mask), np.float64, "training output = inference on masked x")
    np.testing.assert_array_equal(layer(x), layer(x))  # inference: no dropout


def test_subclassed_model_build_and_summary():
    class Net(models.Model):
        def __init__(self):
            super().__init__(name="net")
            self.gru = layers.GRU(3)
            self.out = layers.Dense(2)

        def call(self, x):
            return self.out(self.gru(x))

    net = Net()
    net.build((None, T, I))
    lines = []
    net.summary(print_fn=lines.append)
    assert lines[0] == 'Model: "net"' and "(None, 3)" in lines[4] and "(None, 2)" in lines[6]
    assert f"Total params: {keras_param_count('gru', I, 3) + 8:,}" in lines

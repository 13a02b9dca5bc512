"""Keras' conventions that programs rely on, each checked against a NumPy computation from the
model's own predictions (never against stored numbers): (N,) labels, validation_split,
sample_weight / class_weight, History, evaluate's return shapes, predict batching, summary's
table, file names, NaN input, TerminateOnNaN, the progress line without tqdm, optimizer and
loss arguments, metrics, utils.

Keras' behaviour assumed here (Keras 2.x / 3.x public API):
* a loss with sample weights is sum(w * loss) / N (Keras' 'sum_over_batch_size');
* evaluate returns the loss alone without metrics, else [loss, *metrics];
* summary: 'Model: "name"', a 65-wide table 'Layer (type) | Output Shape | Param #' with
  '(None, ...)' shapes, then 'Total params: n' with thousands separators (tf.keras 2.9-2.15);
* History.params == {'verbose', 'epochs', 'steps'}.
"""

import numpy as np
import pytest

from fusedrnn.keras import callbacks, layers, losses, metrics, models, optimizers, utils


def regression_model(seed=0, units=4):
    model = models.Sequential([layers.LSTM(units, input_shape=(5, 2)), layers.Dense(1)], seed=seed)
    model.compile("adam", "mse", metrics=["mae"])
    return model


def data(rng, n=20):
    x = rng.standard_normal((n, 5, 2)).astype(np.float32)
    return x, x[:, :, 0].sum(axis=1)


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy", "huber"])
def test_labels_of_shape_n_equal_labels_of_shape_n_1(rng, loss):
    x, y = data(rng)
    y = (y > 0).astype(np.float32) if loss == "binary_crossentropy" else y
    act = "sigmoid" if loss == "binary_crossentropy" else None
    m = models.Sequential([layers.LSTM(3, input_shape=(5, 2)), layers.Dense(1, activation=act)], seed=1)
    m.compile("sgd", loss)
    flat, col = m.loss_and_gradients(x, y), m.loss_and_gradients(x, y[:, None])
    assert flat[0] == col[0]
    for k in flat[1]:
        np.testing.assert_array_equal(flat[1][k], col[1][k])


def test_sample_weight_reduction_and_class_weight(rng):
    x, y = data(rng)
    m = regression_model()
    w = rng.uniform(0, 2, len(x))
    per_sample = (m.predict(x)[:, 0] - y) ** 2
    assert m.evaluate(x, y, sample_weight=w)[0] == pytest.approx((w * per_sample).sum() / len(x), rel=1e-5)

    labels = rng.integers(0, 3, len(x))
    clf = models.Sequential([layers.GRU(3, input_shape=(5, 2)), layers.Dense(3, activation="softmax")], seed=2)
    clf.compile("sgd", "sparse_categorical_crossentropy")
    table = {0: 1.0, 1: 3.0, 2: 0.5}
    a = clf.loss_and_gradients(x, labels, sample_weight=np.array([table[c] for c in labels]))
    clf2 = models.Sequential([layers.GRU(3, input_shape=(5, 2)), layers.Dense(3, activation="softmax")], seed=2)
    clf2.compile("sgd", "sparse_categorical_crossentropy")
    h1 = clf.fit(x, labels, class_weight=table, epochs=2, shuffle=False, verbose=0)
    h2 = clf2.fit(x, labels, sample_weight=[table[c] for c in labels], epochs=2, shuffle=False, verbose=0)
    assert h1.history == h2.history
    p = clf.predict(x)  # after training; a is the weighted loss before it
    assert np.isfinite(a[0])
    with pytest.raises(ValueError, match=r"class_weight has no weight for classes \[2\]"):
        clf.fit(x, labels, class_weight={0: 1.0, 1: 1.0}, verbose=0)
    assert p.shape == (len(x), 3)


def test_validation_split_history_and_evaluate_shapes(rng):
    x, y = data(rng, 30)
    m = regression_model()
    hist = m.fit(x, y, epochs=3, batch_size=8, validation_split=0.2, shuffle=False, verbose=0)
    assert hist.params == {"verbose": 0, "epochs": 3, "steps": 3}  # 24 samples in batches of 8
    assert set(hist.history) == {"loss", "mae", "val_loss", "val_mae"} and hist.epoch == [0, 1, 2]
    assert m.history is hist
    # the last 20 % (before shuffling) is the validation set
    assert hist.history["val_loss"][-1] == pytest.approx(m.evaluate(x[24:], y[24:])[0], rel=1e-6)
    loss, mae = m.evaluate(x, y)
    assert mae == pytest.approx(np.abs(m.predict(x)[:, 0] - y).mean(), rel=1e-5)
    only = regression_model()
    only.compile("adam", "mse")
    assert isinstance(only.evaluate(x, y), float)
    assert set(m.evaluate(x, y, return_dict=True)) == {"loss", "mae"}


def test_predict_batching_does_not_change_results(rng):
    """The recurrent kernels' rows do not depend on the batch size: bitwise equal.  The Dense
    head is NumPy's matrix product, which OpenBLAS may round differently for another row count
    (it picks kernels by shape, and does so on AVX-512 machines): equal to rounding there."""
    x, _ = data(rng, 23)
    m = regression_model()
    lstm = models.Sequential([m.layers[0]])
    np.testing.assert_array_equal(lstm.predict(x, batch_size=5), lstm.predict(x, batch_size=100))
    np.testing.assert_allclose(m.predict(x, batch_size=5), m.predict(x, batch_size=100), rtol=1e-6, atol=1e-7)
    assert m.predict(x).shape == (23, 1)


def test_summary_is_keras_table():
    m = models.Sequential([layers.LSTM(32, input_shape=(10, 8), name="lstm_a"),
                           layers.Dense(1, name="dense_a")], name="sequential_x")
    lines = []
    m.summary(print_fn=lines.append)
    assert lines[0] == 'Model: "sequential_x"'
    assert lines[1] == "_" * 65 and lines[3] == "=" * 65
    header = lines[2]
    # columns at int(65 * 0.45) = 29 and int(65 * 0.85) = 55, as Keras prints them
    assert header == " Layer (type)" + " " * 16 + "Output Shape" + " " * 14 + "Param #" + " " * 3
    row = lines[4]
    assert row.startswith(" lstm_a (LSTM)") and row.index("(None, 32)") == 29 and len(row) == 65
    assert row.split()[-1] == str(4 * (8 * 32 + 32 * 32 + 32))  # Keras' LSTM count
    assert f"Total params: {4 * (8 * 32 + 32 * 32 + 32) + 33:,}" in lines
    assert "Non-trainable params: 0" in lines
    lines = []
    models.Sequential([layers.Bidirectional(layers.GRU(4), input_shape=(None, 3), name="bidirectional")]
                      ).summary(print_fn=lines.append)
    # a name longer than its column goes on to the next line, as in Keras
    assert lines[4].startswith(" bidirectional (Bidirectiona  (None, 8)")
    assert lines[5] == " l)" + " " * 62


def test_file_names(tmp_path, rng):
    x, y = data(rng)
    m = regression_model()
    m.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"HDF5 files are not supported.*'\.keras' or '\.npz'"):
        m.save(tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists() and not list(tmp_path.iterdir())
    for name in ("m.keras", "m.npz"):
        m.save(tmp_path / name)
        back = models.load_model(tmp_path / name)
        np.testing.assert_array_equal(back.predict(x), m.predict(x))
        assert back.evaluate(x, y) == m.evaluate(x, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "m.npz"]


def test_every_layer_kind_survives_save_and_load(tmp_path, rng):
    ids = rng.integers(1, 9, (12, 6))
    ids[:4, :2] = 0  # left padding, masked
    m = models.Sequential([
        layers.Embedding(9, 4, mask_zero=True),
        layers.Bidirectional(layers.GRU(3, return_sequences=True)),
        layers.LSTM(5, return_sequences=True, dropout=0.1),
        layers.TimeDistributed(layers.Dense(2, activation="softmax")),
    ], seed=4)
    m.compile(optimizers.Adam(clipnorm=1.0), "sparse_categorical_crossentropy", ["accuracy"])
    target = ids % 2
    m.fit(ids, target, epochs=2, batch_size=4, verbose=0)
    m.save(tmp_path / "all.keras")
    back = models.load_model(tmp_path / "all.keras")
    np.testing.assert_array_equal(back.predict(ids), m.predict(ids))
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    h1 = m.fit(ids, target, epochs=1, batch_size=4, verbose=0)
    h2 = back.fit(ids, target, epochs=1, batch_size=4, verbose=0)
    assert h1.history == h2.history  # optimiser and random state resume exactly

    mask = models.Sequential([layers.Masking(-1.0, input_shape=(5, 2)), layers.SimpleRNN(3)], seed=5)
    mask.save(tmp_path / "mask.npz")
    x = rng.standard_normal((3, 5, 2)).astype(np.float32)
    x[0, 3:] = -1.0
    np.testing.assert_array_equal(models.load_model(tmp_path / "mask.npz").predict(x), mask.predict(x))


def test_checkpoint_and_early_stopping_keras_arguments(tmp_path, rng):
    x, y = data(rng)
    with pytest.raises(ValueError, match="HDF5 files are not supported"):
        callbacks.ModelCheckpoint(str(tmp_path / "best.h5"), save_best_only=True)
    m = regression_model()
    ckpt = callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch}.npz"), monitor="loss",
                                     save_weights_only=True, verbose=0)
    stop = callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9, verbose=1)
    m.fit(x, y, epochs=5, verbose=0, callbacks=[ckpt, stop])
    assert ckpt.saved == [str(tmp_path / "w-1.npz"), str(tmp_path / "w-2.npz")]  # stopped after 2
    other = regression_model(seed=9)
    other.load_weights(tmp_path / "w-2.npz")
    np.testing.assert_array_equal(other.predict(x), m.predict(x))


def test_subclassed_model_saves_weights_only(tmp_path, rng):
    class Net(models.Model):
        def __init__(self):
            super().__init__(seed=3)
            self.rnn = layers.SimpleRNN(3)
            self.out = layers.Dense(1)

        def call(self, x, training=False):
            return self.out(self.rnn(x))

    x, _ = data(rng)
    net = Net()
    net.predict(x)
    with pytest.raises(ValueError, match="save_weights"):
        net.save(tmp_path / "n.keras")
    net.save_weights(tmp_path / "n.weights.npz")
    other = Net.__new__(Net)
    Net.__init__(other)
    other.predict(x)
    other.rnn.set_weights([w + 1 for w in other.rnn.get_weights()])
    other.load_weights(tmp_path / "n.weights.npz")
    np.testing.assert_array_equal(other.predict(x), net.predict(x))


def test_nan_input_is_refused_before_any_update(rng):
    x, y = data(rng)
    m = regression_model()
    before = m.get_weights()
    bad = x.copy()
    bad[7, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"x holds nan at index \(7, 3, 1\)"):
        m.fit(bad, y, verbose=0)
    y_bad = y.copy()
    y_bad[2] = np.inf
    with pytest.raises(ValueError, match=r"y holds inf at index \(2,\)"):
        m.fit(x, y_bad, verbose=0)
    with pytest.raises(ValueError, match="of validation_data holds nan"):
        m.fit(x, y, validation_data=(bad, y), verbose=0)
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    # padding past a sequence's length may hold anything
    lens = np.full(len(x), 5)
    lens[7] = 3
    m.fit(bad, y, lengths=lens, verbose=0)
    assert all(np.isfinite(w).all() for w in m.get_weights())


def test_terminate_on_nan_stops_at_the_first_bad_batch(rng, capsys):
    x, y = data(rng, 32)
    m = regression_model()
    seen = []

    class Count(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(batch)

    with pytest.warns(RuntimeWarning, match="loss became inf"), np.errstate(over="ignore"):
        hist = m.fit(x, y * np.float32(1e30), epochs=3, batch_size=8, verbose=0,
                     callbacks=[callbacks.TerminateOnNaN(), Count()])
    assert seen == [0] and len(hist.history["loss"]) == 1
    assert "invalid loss, terminating training" in capsys.readouterr().out


def test_progress_line_without_tqdm(rng, capsys, monkeypatch, no_tqdm):
    monkeypatch.setattr("fusedrnn.keras.progress._MIN_INTERVAL", 0.0)
    x, y = data(rng, 24)
    regression_model().fit(x, y, epochs=1, batch_size=8, verbose=1)
    out = capsys.readouterr().out
    # drawn after every batch, before the epoch ends, not only at its end
    assert "\r1/3 [" in out and "\r2/3 [" in out and "\r3/3 [" in out and out.endswith("\n")


def test_optimizer_keras_arguments(rng):
    g = np.array([3.0, 4.0])  # norm 5

    def step(opt):
        p = np.zeros(2)
        opt.apply([("p", p, g.copy())])
        return p

    np.testing.assert_allclose(step(optimizers.SGD(lr=0.1)), -0.1 * g)
    np.testing.assert_allclose(step(optimizers.SGD(0.1, clipnorm=1.0)), -0.1 * g / 5)
    np.testing.assert_allclose(step(optimizers.SGD(0.1, clipvalue=3.5)), -0.1 * np.minimum(g, 3.5))
    np.testing.assert_allclose(step(optimizers.SGD(0.1, global_clipnorm=2.5)), -0.1 * g / 2)
    assert optimizers.Adam(lr=0.02).lr == optimizers.Adam(learning_rate=0.02).lr == 0.02
    with pytest.raises(ValueError, match="at most one of clipnorm, clipvalue and global_clipnorm"):
        optimizers.Adam(clipnorm=1.0, clipvalue=1.0)
    again = optimizers.from_config(optimizers.to_config(optimizers.RMSprop(clipnorm=2.0)))
    assert again.clipnorm == 2.0


def test_huber_value_and_gradient(rng):
    y, p = rng.standard_normal((6, 2)), rng.standard_normal((6, 2)) * 3
    value, grad = losses.get("huber").value_and_grad(y, p)
    d = p - y
    per = np.where(np.abs(d) <= 1, 0.5 * d * d, np.abs(d) - 0.5)
    assert value == pytest.approx(per.mean())
    eps = 1e-6
    for i in range(6):
        for j in range(2):
            up, down = p.copy(), p.copy()
            up[i, j] += eps
            down[i, j] -= eps
            fd = (losses.Huber()(y, up) - losses.Huber()(y, down)) / (2 * eps)
            assert grad[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_metrics_by_keras_names(rng):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    y = rng.integers(0, 2, 50)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 50), 0, 1)[:, None]
    p[::7] = 0.5  # ties
    auc = metrics.get("auc")
    auc.update(y[:20], p[:20])
    auc.update(y[20:], p[20:])
    assert auc.result() == pytest.approx(sklearn_metrics.roc_auc_score(y, p[:, 0]), rel=1e-12)
    acc = metrics.get("binary_accuracy")
    acc.update(y, p)
    assert acc.result() == pytest.approx(np.mean((p[:, 0] > 0.5) == y))
    mse = metrics.get("mse")
    mse.update(y, p)
    assert mse.result() == pytest.approx(np.mean((p[:, 0] - y) ** 2))


def test_utils():
    np.testing.assert_array_equal(utils.to_categorical([2, 0, 1]), np.eye(3)[[2, 0, 1]])
    assert utils.to_categorical([1], num_classes=4).shape == (1, 4)
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    np.testing.assert_array_equal(utils.pad_sequences(seqs, maxlen=4),
                                  [[0, 1, 2, 3], [0, 0, 0, 4], [6, 7, 8, 9]])
    np.testing.assert_array_equal(utils.pad_sequences(seqs, maxlen=4, padding="post", truncating="post"),
                                  [[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 7, 8]])

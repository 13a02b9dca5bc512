"""Sequential end to end on tiny synthetic data: fit, evaluate, predict, reproducibility,
save/load and exact resumption, callbacks, variable lengths, error messages."""

import os

import numpy as np
import pytest

import fusedrnn
from fusedrnn import GRU, LSTM, RNN, Dense, Dropout, Embedding, Recurrent, Sequential
from fusedrnn import callbacks, optimizers


def sign_task(rng, n=96, T=6, lengths=False):
    """Class 1 when the valid steps of feature 0 sum above 0."""
    x = rng.standard_normal((n, T, 3)).astype(np.float32)
    lens = rng.integers(2, T + 1, n) if lengths else np.full(n, T)
    for i, L in enumerate(lens):
        x[i, L:] = 0
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
    return x, y, (lens if lengths else None)


def small_model(seed=0, head_dropout=0.2, cell=LSTM, **kw):
    return Sequential([Recurrent(cell(3, 8, **kw)), Dense(8, 8, "relu"), Dropout(head_dropout),
                       Dense(8, 2, "softmax")], seed=seed)


def test_fit_reduces_loss_and_reports_history(rng):
    x, y, _ = sign_task(rng)
    model = small_model()
    model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    before = model.evaluate(x, y)[0]
    hist = model.fit(x, y, epochs=8, batch_size=16, verbose=0, validation_split=0.25)
    assert hist.epoch == list(range(8))
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert hist.history["loss"][-1] < 0.8 * hist.history["loss"][0]
    assert model.evaluate(x, y)[0] < before
    assert model.epoch == 8


def test_same_seed_same_training(rng):
    x, y, _ = sign_task(rng)
    runs = []
    for _ in range(2):
        model = small_model(seed=3)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    other = small_model(seed=4)
    assert not np.array_equal(other.get_weights()[0], runs[0][0])


@pytest.mark.parametrize("opt", ["adam", "sgd-nesterov", "rmsprop", "adamw-schedule"])
def test_resume_from_checkpoint_is_exact(rng, tmp_path, opt):
    """fit 4 epochs == fit 2, save, load, fit epochs 2..3 (shuffling, dropout, optimiser state,
    a stacked layer's inter-layer dropout all continue)."""
    x, y, lengths = sign_task(rng, n=40, lengths=True)

    def optimizer():
        return {"adam": lambda: optimizers.Adam(0.01, global_clipnorm=1.0),
                "sgd-nesterov": lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                "rmsprop": lambda: optimizers.RMSprop(0.005, momentum=0.5),
                "adamw-schedule": lambda: optimizers.AdamW(
                    optimizers.ExponentialDecay(0.01, 5, 0.5))}[opt]()

    def build():
        model = small_model(seed=1, num_layers=2, dropout=0.3)
        model.compile(optimizer(), "sparse_categorical_crossentropy", ["accuracy"])
        return model

    straight = build()
    h_straight = straight.fit(x, y, epochs=4, batch_size=8, verbose=0, lengths=lengths)

    first = build()
    first.fit(x, y, epochs=2, batch_size=8, verbose=0, lengths=lengths)
    path = tmp_path / "ckpt.npz"
    first.save(path)
    resumed = Sequential.load(path)
    assert resumed.epoch == 2
    h_resumed = resumed.fit(x, y, epochs=4, batch_size=8, verbose=0, lengths=lengths,
                            initial_epoch=resumed.epoch)
    assert h_resumed.epoch == [2, 3]
    assert h_resumed.history["loss"] == h_straight.history["loss"][2:]
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_is_atomic_and_load_checks(tmp_path, monkeypatch, rng):
    from fusedrnn import _npz

    model = small_model()
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def broken(fileobj, arrays):
        fileobj.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(_npz, "_write_archive", broken)
    with pytest.raises(OSError, match="disk full"):
        small_model(seed=9).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    monkeypatch.undo()
    loaded = Sequential.load(path)
    assert loaded.optimizer is None  # saved uncompiled
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    LSTM(2, 3).save(tmp_path / "layer.npz")
    with pytest.raises(ValueError, match="does not hold a fusedrnn Sequential model"):
        Sequential.load(tmp_path / "layer.npz")


def test_predict_shapes_and_sequence_padding(rng):
    x = rng.standard_normal((5, 7, 3)).astype(np.float32)
    lengths = np.array([7, 2, 3, 7, 1])
    last = Sequential([Recurrent(GRU(3, 4, bidirectional=True)), Dense(8, 3)], seed=0)
    assert last.predict(x, batch_size=2).shape == (5, 3)
    assert last.predict(x, batch_size=2, lengths=lengths).shape == (5, 3)
    seq = Sequential([Recurrent(RNN(3, 4), return_sequences=True), Dense(4, 2)], seed=0)
    out = seq.predict(x, batch_size=2, lengths=lengths)
    assert out.shape == (5, 7, 2)
    assert np.all(out[1, 2:] == 0) and np.all(out[4, 1:] == 0)  # padded back with zeros
    np.testing.assert_allclose(out[0], seq.predict(x[:1])[0], rtol=1e-6)
    tokens = Sequential([Embedding(10, 4), Recurrent(LSTM(4, 5), return_sequences=True),
                         Dense(5, 10, "softmax")], seed=0)
    probs = tokens.predict(rng.integers(0, 10, (3, 6)))
    assert probs.shape == (3, 6, 10)
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-5)


def test_lengths_batches_match_unpadded_evaluation(rng):
    """A padded, trimmed batch gives each sequence the loss it has alone, unpadded."""
    x, y, lengths = sign_task(rng, n=6, T=8, lengths=True)
    model = small_model(head_dropout=0.0)
    model.compile("adam", "sparse_categorical_crossentropy")
    probs = model.predict(x, lengths=lengths, batch_size=4)
    for i in range(6):
        alone = model.predict(x[i:i + 1, :lengths[i]])
        np.testing.assert_allclose(probs[i], alone[0], rtol=1e-5)


def test_early_stopping_and_restore_best(rng):
    x, y, _ = sign_task(rng, n=32)
    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    seen = []

    class Snap(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.get_weights())

    # min_delta so large that nothing after the first epoch counts as an improvement
    stop = callbacks.EarlyStopping("loss", min_delta=1e9, patience=1, restore_best_weights=True)
    hist = model.fit(x, y, epochs=10, verbose=0, callbacks=[Snap(), stop])
    assert hist.epoch == [0, 1, 2] and stop.stopped_epoch == 2 and stop.best_epoch == 0
    for a, b in zip(model.get_weights(), seen[0]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(KeyError, match="monitors 'val_loss'"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.EarlyStopping()])


def test_model_checkpoint_files(rng, tmp_path):
    x, y, _ = sign_task(rng, n=32)
    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    every = callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}.npz"))
    best = callbacks.ModelCheckpoint(tmp_path / "best.npz", monitor="val_accuracy",
                                     save_best_only=True)
    model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y), callbacks=[every, best])
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "m-01.npz", "m-02.npz", "m-03.npz"]
    assert 1 <= len(best.saved) <= 3
    np.testing.assert_array_equal(Sequential.load(tmp_path / "m-03.npz").get_weights()[0],
                                  model.get_weights()[0])


def test_history_plot_png(rng, tmp_path):
    pytest.importorskip("matplotlib")
    x, y, _ = sign_task(rng, n=16)
    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.HistoryPlot(tmp_path / "h.png")])
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_rate_scheduler_callback(rng):
    x, y, _ = sign_task(rng, n=16)
    model = small_model()
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0,
              callbacks=[callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))])
    assert model.optimizer.lr == pytest.approx(0.1 / 3)


def test_stateful_truncated_bptt_fit(rng):
    """Two streams cut into chunks, batches in order: the state carries between chunks."""
    stream = rng.integers(0, 5, (2, 41))
    x = np.concatenate([stream[:, i:i + 10] for i in range(0, 40, 10)])   # chunk-major order
    y = np.concatenate([stream[:, i + 1:i + 11] for i in range(0, 40, 10)])
    model = Sequential([Embedding(5, 4), Recurrent(LSTM(4, 8), return_sequences=True, stateful=True),
                        Dense(8, 5, "softmax")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    hist = model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    assert len(hist.history["loss"]) == 2
    with pytest.raises(ValueError, match="needs the batches in order: pass shuffle=False"):
        model.fit(x, y, batch_size=2, epochs=1, verbose=0)


def test_binary_and_regression_models(rng):
    x, y, _ = sign_task(rng, n=48)
    binary = Sequential([Recurrent(LSTM(3, 6)), Dense(6, 1, "sigmoid")], seed=0)
    binary.compile(optimizers.Adam(0.02), "binary_crossentropy", ["accuracy"])
    h = binary.fit(x, y[:, None].astype(np.float32), epochs=5, batch_size=8, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    reg = Sequential([Recurrent(LSTM(3, 6, activation="relu")), Dense(6, 1)], seed=0)
    reg.compile("adam", "mse", ["mae"])
    target = x[:, :, :1].sum(1)
    h = reg.fit(x, target, epochs=5, batch_size=8, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    loss, mae = reg.evaluate(x, target)
    assert loss > 0 and mae > 0
    assert reg.evaluate(x, target, return_dict=True).keys() == {"loss", "mae"}


def test_summary_lists_layers_and_params(rng):
    model = small_model()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    # Keras' table: "name (Type)", the output shape once known, the parameter count
    assert " Layer (type)" in text and "(Recurrent)" in text and "?" in text
    model.predict(rng.standard_normal((2, 4, 3)).astype(np.float32))
    lines.clear()
    model.summary(print_fn=lines.append)
    assert "(None, 8)" in "\n".join(lines)
    assert f"Total params: {model.count_params():,}" in lines


def test_progress_output(rng, capsys, request):
    x, y, _ = sign_task(rng, n=16)
    model = small_model()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=1, verbose=2)
    assert "Epoch 1/1" in capsys.readouterr().out
    request.getfixturevalue("no_tqdm")
    model.fit(x, y, epochs=1, verbose=1)  # plain line without tqdm
    assert "accuracy:" in capsys.readouterr().out


def test_error_messages(rng):
    x, y, _ = sign_task(rng, n=8)
    with pytest.raises(TypeError, match=r"wrap the LSTM in fusedrnn.Recurrent"):
        Sequential([LSTM(3, 4)])
    with pytest.raises(TypeError, match="one dtype"):
        Sequential([Recurrent(LSTM(3, 4)), Dense(4, 1, dtype="float64")])
    with pytest.raises(ValueError, match="Embedding takes token ids"):
        Sequential([Dense(2, 2), Embedding(3, 2)])
    model = small_model()
    with pytest.raises(RuntimeError, match="compile the model first"):
        model.fit(x, y)
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"one row per sample of x \(8\)"):
        model.fit(x, y[:5])
    with pytest.raises(ValueError, match=r"lengths must lie in 1\.\.T = 1\.\.6"):
        model.fit(x, y, lengths=np.full(8, 7))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.fit(x, y, batch_size=0)
    with pytest.raises(ValueError, match=r"Dense\(8, 8\) needs input of shape \(\.\.\., 8\)"):
        Sequential([Dense(8, 8)]).predict(x)
    with pytest.raises(ValueError, match="Recurrent input must be batch-first"):
        Sequential([Recurrent(LSTM(3, 4))]).predict(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="validation_data must be"):
        model.fit(x, y, validation_data=(x,))
    with pytest.raises(TypeError, match="integer token ids"):
        Sequential([Embedding(3, 2)]).predict(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"Embedding ids must lie in 0\.\.2"):
        Sequential([Embedding(3, 2)]).predict(np.array([[0, 3]]))


def test_public_names():
    for name in ("Sequential", "Dense", "Dropout", "Embedding", "Recurrent", "losses",
                 "optimizers", "metrics", "callbacks"):
        assert name in fusedrnn.__all__ and hasattr(fusedrnn, name)

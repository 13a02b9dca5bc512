"""Five classic Keras/TensorFlow RNN programs, each as its tutorial writes it with only the
import lines changed, on small synthetic data: each must learn (loss falls, accuracy above
chance, regression error well below the data's spread).

The programs' bodies are kept as written for tf.keras (Keras 2) / Keras 3; the lines marked
`# import` are the only ones that differ from the originals.
"""

import numpy as np
import pytest

from fusedrnn.keras.utils import set_random_seed


@pytest.fixture(autouse=True)
def seeded():
    """What the programs' own `keras.utils.set_random_seed(...)` line does: runs repeat."""
    set_random_seed(7)
    yield
    import fusedrnn.keras.utils as utils

    utils._global_seeds = None


def classes_task(rng, n, T=8, F=3):
    """Class = the feature with the largest mean over the sequence."""
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    return x, x.mean(axis=1).argmax(axis=1)


def test_lstm_classifier_with_dense_and_dropout(rng):
    from fusedrnn.keras.layers import LSTM, Dense, Dropout  # import
    from fusedrnn.keras.models import Sequential  # import
    from fusedrnn.keras.utils import to_categorical  # import

    x_train, y_train = classes_task(rng, 240)
    x_test, y_test = classes_task(rng, 90)
    T, F = x_train.shape[1:]

    model = Sequential()
    model.add(LSTM(24, input_shape=(T, F)))
    model.add(Dropout(0.2))
    model.add(Dense(16, activation='relu'))
    model.add(Dense(3, activation='softmax'))
    model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
    history = model.fit(x_train, to_categorical(y_train), epochs=25, batch_size=32,
                        validation_split=0.2, verbose=0)
    loss, accuracy = model.evaluate(x_test, to_categorical(y_test), verbose=0)

    assert history.history['loss'][-1] < 0.6 * history.history['loss'][0]
    assert set(history.history) == {'loss', 'accuracy', 'val_loss', 'val_accuracy'}
    assert accuracy > 0.7  # chance: 1/3
    pred = model.predict(x_test)
    assert pred.shape == (90, 3)
    np.testing.assert_allclose(pred.sum(axis=1), 1, rtol=1e-5)


def test_binary_lstm_on_padded_token_sequences(rng):
    from fusedrnn.keras.layers import LSTM, Dense, Embedding  # import
    from fusedrnn.keras.metrics import AUC  # import
    from fusedrnn.keras.models import Sequential  # import
    from fusedrnn.keras.optimizers import Adam  # import
    from fusedrnn.keras.utils import pad_sequences  # import

    # Reviews of 3..12 tokens from a vocabulary of 20; positive when token 1 occurs more than token 2.
    docs = [rng.integers(1, 20, rng.integers(3, 13)) for _ in range(360)]
    labels = np.array([int((d == 1).sum() > (d == 2).sum()) for d in docs])
    X = pad_sequences(docs, maxlen=12)  # Keras' default: padded at the start

    model = Sequential()
    model.add(Embedding(20, 16, mask_zero=True))
    model.add(LSTM(16))
    model.add(Dense(1, activation='sigmoid'))
    model.compile(loss='binary_crossentropy', optimizer=Adam(lr=0.01, clipnorm=1.0),
                  metrics=['accuracy', AUC()])
    history = model.fit(X[:300], labels[:300], epochs=12, batch_size=32, verbose=0,
                        validation_data=(X[300:], labels[300:]))
    scores = model.evaluate(X[300:], labels[300:], verbose=0)

    assert history.history['loss'][-1] < 0.7 * history.history['loss'][0]
    assert len(scores) == 3  # loss, accuracy, auc
    majority = max(labels[300:].mean(), 1 - labels[300:].mean())
    assert scores[1] > majority + 0.1
    assert scores[2] > 0.85


def test_relu_lstm_time_series_regressor(rng):
    from fusedrnn.keras.layers import LSTM, Dense  # import
    from fusedrnn.keras.models import Sequential  # import

    def split_sequence(sequence, n_steps):
        X, y = list(), list()
        for i in range(len(sequence)):
            end_ix = i + n_steps
            if end_ix > len(sequence) - 1:
                break
            seq_x, seq_y = sequence[i:end_ix], sequence[end_ix]
            X.append(seq_x)
            y.append(seq_y)
        return np.array(X), np.array(y)

    raw_seq = np.sin(np.arange(160) * 0.3) + 0.05 * rng.standard_normal(160)
    n_steps = 5
    X, y = split_sequence(raw_seq, n_steps)
    n_features = 1
    X = X.reshape((X.shape[0], X.shape[1], n_features))

    model = Sequential()
    model.add(LSTM(32, activation='relu', input_shape=(n_steps, n_features)))
    model.add(Dense(1))
    model.compile(optimizer='adam', loss='mse')
    history = model.fit(X, y, epochs=60, verbose=0)  # y has shape (N,): one label per sample
    x_input = raw_seq[-n_steps:].reshape((1, n_steps, n_features))
    yhat = model.predict(x_input, verbose=0)

    assert yhat.shape == (1, 1)
    assert history.history['loss'][-1] < 0.05 * history.history['loss'][0]
    assert history.history["loss"][-1] < 0.1 * y.var()  # well below the data's spread
    assert abs(yhat[0, 0] - np.sin(160 * 0.3)) < 0.25


def test_subclassed_model_with_training_flag(rng):
    import fusedrnn as tf  # import

    class SequenceClassifier(tf.keras.Model):
        def __init__(self, num_classes):
            super().__init__()
            self.lstm = tf.keras.layers.LSTM(24)
            self.dropout = tf.keras.layers.Dropout(0.2)
            self.dense = tf.keras.layers.Dense(num_classes, activation='softmax')

        def call(self, inputs, training=False):
            x = self.lstm(inputs)
            x = self.dropout(x, training=training)
            return self.dense(x)

    x_train, y_train = classes_task(rng, 240)
    x_test, y_test = classes_task(rng, 90)
    model = SequenceClassifier(3)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=1e-2),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(),
                  metrics=['accuracy'])
    history = model.fit(x_train, y_train, batch_size=32, epochs=15, verbose=0)
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)

    assert history.history['loss'][-1] < 0.6 * history.history['loss'][0]
    assert test_acc > 0.7
    assert [w.shape for w in model.get_weights()] == [(3, 96), (24, 96), (96,), (24, 3), (3,)]
    # training=False: dropout off, the same answer twice; training=True: dropout on
    a, b = model(x_test[:5]), model(x_test[:5])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model(x_test[:5], training=True), a)


def test_hand_written_numpy_loop_over_the_torch_shaped_layer(rng):
    """A char-RNN-style loop written by hand: the recurrent layer's forward/backward come
    from fusedrnn.RNN (its ``params``/``grads``), the softmax head and Adagrad are NumPy."""
    import fusedrnn  # import

    text = "hello world, hello numpy. " * 8
    chars = sorted(set(text))
    V, H, T = len(chars), 32, 12
    ids = np.array([chars.index(c) for c in text])
    onehot = np.eye(V, dtype=np.float32)

    rnn = fusedrnn.RNN(V, H, batch_first=True, seed=0)
    Why = (rng.standard_normal((V, H)) * 0.01).astype(np.float32)
    by = np.zeros(V, np.float32)
    mem = {k: np.zeros_like(p) for k, p in rnn.params.items()}
    mem_head = [np.zeros_like(Why), np.zeros_like(by)]
    losses = []
    for it in range(60):
        starts = rng.integers(0, len(ids) - T - 1, 16)
        inputs = np.stack([onehot[ids[s:s + T]] for s in starts])
        targets = np.stack([ids[s + 1:s + T + 1] for s in starts])
        hs, _ = rnn(inputs)  # (B, T, H)
        logits = hs @ Why.T + by
        logits -= logits.max(axis=-1, keepdims=True)
        ps = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        B = len(starts)
        losses.append(-np.log(ps[np.arange(B)[:, None], np.arange(T), targets]).mean())
        dy = ps.copy()
        dy[np.arange(B)[:, None], np.arange(T), targets] -= 1
        dy /= B * T
        dWhy, dby = np.einsum("btv,bth->vh", dy, hs), dy.sum(axis=(0, 1))
        rnn.zero_grad()
        rnn.backward(dy @ Why)
        for k, p in rnn.params.items():  # Adagrad, as the original
            g = np.clip(rnn.grads[k], -5, 5)
            mem[k] += g * g
            p -= 0.1 * g / np.sqrt(mem[k] + 1e-8)
        for p, g, m in zip((Why, by), (dWhy, dby), mem_head):
            g = np.clip(g, -5, 5)
            m += g * g
            p -= 0.1 * g / np.sqrt(m + 1e-8)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    for cls in (fusedrnn.LSTM, fusedrnn.GRU, fusedrnn.RNN):  # what this loop needed to know
        assert "INPUT IS TIME-MAJOR" in cls.__doc__ and "batch_first=True" in cls.__doc__
        assert "params" in cls.__doc__ and "grads" in cls.__doc__ and "zero_grad()" in cls.__doc__
    assert np.mean(losses[:5]) > 0.8 * np.log(V)  # it started at chance

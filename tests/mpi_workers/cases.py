"""Models and data shared by the MPI worker and the single-process runs it is compared with.

Each case returns a fresh compiled model and fit's arguments; everything is seeded, so a
worker rank and the test process build identical copies.
"""

import numpy as np

from fusedrnn import LSTM, Dense, Recurrent, Sequential, datasets, optimizers
from fusedrnn.train_cli import build_model


def classifier():
    """float64 LSTM on padded sequences with sample weights and clipnorm; 17 samples in
    batches of 8 leave a last batch of one row (rank 0 of two gets none), the 5 validation
    samples split 2 / 3."""
    rng = np.random.default_rng(7)
    N, T, F, H, C = 17, 9, 5, 12, 4
    x = rng.standard_normal((N, T, F))
    lengths = rng.integers(2, T + 1, N)
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    y = rng.integers(0, C, N)
    sw = rng.uniform(0.2, 2.0, N)
    xv, yv, lv = rng.standard_normal((5, T, F)), rng.integers(0, C, 5), rng.integers(3, T + 1, 5)
    model = Sequential([Recurrent(LSTM(F, H, dtype=np.float64)),
                        Dense(H, C, activation="softmax", dtype=np.float64)], seed=3)
    model.compile(optimizers.Adam(0.02, clipnorm=0.05), "sparse_categorical_crossentropy",
                  ["accuracy"])
    fit = dict(x=x, y=y, lengths=lengths, sample_weight=sw, batch_size=8, epochs=3,
               validation_data=(xv, yv, lv), shuffle=True, verbose=0)
    return model, fit


def sequences32():
    """float32 LSTM returning every step, mse on per-step targets, global_clipnorm, SGD with
    momentum; 23 samples in batches of 6 (6, 6, 6, 5: the last one splits 2 / 3)."""
    rng = np.random.default_rng(11)
    N, T, F, H = 23, 6, 3, 8
    x = rng.standard_normal((N, T, F)).astype(np.float32)
    y = rng.standard_normal((N, T, 2)).astype(np.float32)
    model = Sequential([Recurrent(LSTM(F, H), return_sequences=True), Dense(H, 2)], seed=5)
    model.compile(optimizers.SGD(0.05, momentum=0.9, global_clipnorm=0.5), "mse", ["mae"])
    return model, dict(x=x, y=y, batch_size=6, epochs=2, shuffle=True, verbose=0)


def stateful_chars():
    """The character model of `fusedrnn train` (stateful, truncated BPTT): 4 streams, each
    rank keeps the state of its 2."""
    text = "def f(x):\n    return x * 2 + 1\n" * 12
    vocab = datasets.CharVocab(text)
    x, y = datasets.tbptt_arrays(vocab.encode(text), 4, 10)
    model = build_model(vocab.size, embed=6, hidden=10, layers=1, seed=2)
    model.compile(optimizers.Adam(0.01, global_clipnorm=1.0), "sparse_categorical_crossentropy",
                  ["accuracy"])
    return model, dict(x=x, y=y, batch_size=4, epochs=2, shuffle=False, verbose=0)


def binary():
    """float64 GRU with a sigmoid output, AUC (gathered across ranks, not added) and accuracy;
    13 samples in batches of 5 (5, 5, 3)."""
    from fusedrnn import GRU

    rng = np.random.default_rng(13)
    N, T, F, H = 13, 5, 3, 6
    x = rng.standard_normal((N, T, F))
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.float64)
    model = Sequential([Recurrent(GRU(F, H, dtype=np.float64)),
                        Dense(H, 1, activation="sigmoid", dtype=np.float64)], seed=9)
    model.compile(optimizers.RMSprop(0.01), "binary_crossentropy", ["auc", "accuracy"])
    return model, dict(x=x, y=y, batch_size=5, epochs=3, shuffle=True, verbose=0,
                       validation_split=0.3)


CASES = {"classifier": classifier, "sequences32": sequences32, "stateful_chars": stateful_chars,
         "binary": binary}
RESUME_AT = 2  # the resume case: epochs run by two ranks before the checkpoint
RESUME_EPOCHS = 4


def resume_case():
    """classifier() trained for RESUME_EPOCHS without validation data."""
    model, fit = classifier()
    fit.pop("validation_data")
    fit["epochs"] = RESUME_EPOCHS
    return model, fit

"""Real data for the examples, offline, plus the text helpers of the character model.

    load_digits()          scikit-learn's 8x8 digits, each image a sequence of 8 rows of 8 pixels
    load_japanese_vowels() sktime's JapaneseVowels: 12 LPC features, lengths 7..29, 9 speakers
    load_sunspots()        statsmodels' yearly sunspot numbers, 1700..2008
    read_text(path=None)   a text file, or the Python standard library's own source files
    CharVocab, tbptt_arrays   character ids, and the layout for truncated BPTT

The first three need the optional packages: pip install "fusedrnn[examples]".  They are imported
only when a loader is called.
"""

from __future__ import annotations

import glob
import os
import sysconfig

import numpy as np

__all__ = ["load_digits", "load_japanese_vowels", "load_sunspots", "windows", "read_text",
           "CharVocab", "tbptt_arrays", "one_hot"]


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this loader needs {package}: pip install \"fusedrnn[examples]\" "
                          f"(or pip install {package})") from exc


def one_hot(ids, classes: int, dtype="float32") -> np.ndarray:
    ids = np.asarray(ids)
    return np.eye(classes, dtype=dtype)[ids]


def _split(n, test_size, seed):
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_size))
    return order[n_test:], order[:n_test]


def load_digits(test_size=0.25, seed=0):
    """((x_train, y_train), (x_test, y_test)): x (N, 8, 8) float32 in [0, 1], rows as time
    steps; y class ids 0..9.  A seeded random split, stratified by class."""
    datasets = _require("sklearn.datasets", "scikit-learn")
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    train, test = [], []
    for c in range(10):
        members = np.flatnonzero(y == c)
        tr, te = _split(len(members), test_size, seed + c)
        train.append(members[tr])
        test.append(members[te])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    return (x[train], y[train]), (x[test], y[test])


def load_japanese_vowels():
    """((x_train, y_train, lengths_train), (x_test, y_test, lengths_test)) with the dataset's
    own split (270 / 370): x (N, 29, 12) float32, right-padded with zeros, standardised by
    the training set's per-feature mean and deviation over valid steps; y speaker ids 0..8."""
    sk = _require("sktime.datasets", "sktime")
    parts = []
    for split in ("train", "test"):
        X, y = sk.load_japanese_vowels(split=split, return_X_y=True)
        seqs = [np.stack([np.asarray(X.iloc[i, j], dtype=np.float64) for j in range(X.shape[1])],
                         axis=1) for i in range(len(X))]
        # sktime pads ragged series with NaN in some versions: cut those steps
        seqs = [s[~np.isnan(s).any(axis=1)] for s in seqs]
        parts.append((seqs, np.asarray(y).astype(np.int64) - 1))
    T = max(len(s) for seqs, _ in parts for s in seqs)
    train_steps = np.concatenate(parts[0][0])
    mean, std = train_steps.mean(0), train_steps.std(0) + 1e-8
    out = []
    for seqs, y in parts:
        x = np.zeros((len(seqs), T, seqs[0].shape[1]), np.float32)
        lengths = np.array([len(s) for s in seqs], np.int64)
        for i, s in enumerate(seqs):
            x[i, :len(s)] = (s - mean) / std
        out.append((x, y, lengths))
    return out[0], out[1]


def load_sunspots() -> np.ndarray:
    """Yearly mean sunspot numbers 1700..2008 (309 values, float64)."""
    sm = _require("statsmodels.datasets.sunspots", "statsmodels")
    return sm.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)


def windows(series, steps: int):
    """Sliding windows for one-step-ahead forecasting: x (N, steps, 1) holds series[i:i+steps],
    y (N, 1) holds series[i+steps]."""
    s = np.asarray(series, np.float64)
    if len(s) <= steps:
        raise ValueError(f"series of length {len(s)} is too short for windows of {steps} steps")
    idx = np.arange(len(s) - steps)[:, None] + np.arange(steps)[None, :]
    return s[idx][:, :, None], s[steps:, None]


# --- text -------------------------------------------------------------------------------------

def stdlib_sources() -> list:
    """The .py files at the top of the running Python's standard library, sorted."""
    root = sysconfig.get_paths()["stdlib"]
    return sorted(glob.glob(os.path.join(root, "*.py")))


def read_text(path=None, max_chars=None) -> str:
    """The text of ``path`` (UTF-8, undecodable bytes replaced), or with path None, the standard
    library's source files concatenated in name order; at most max_chars characters."""
    if path is not None:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read() if max_chars is None else f.read(max_chars)
        if not text:
            raise ValueError(f"{path} is empty")
        return text
    pieces, total = [], 0
    for name in stdlib_sources():
        with open(name, encoding="utf-8", errors="replace") as f:
            piece = f.read()
        pieces.append(piece)
        total += len(piece)
        if max_chars is not None and total >= max_chars:
            break
    if not pieces:
        raise FileNotFoundError("found no standard library sources; pass a text file")
    text = "".join(pieces)
    return text if max_chars is None else text[:max_chars]


class CharVocab:
    """Characters <-> ids 0..size-1, in sorted order of the characters seen."""

    def __init__(self, chars):
        self.chars = sorted(set(chars))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text) -> np.ndarray:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)[:20]!r}")
        return np.fromiter((self.index[c] for c in text), np.int64, len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def tbptt_arrays(ids, batch_size: int, steps: int):
    """Lay a token stream out for truncated backpropagation through time with a stateful model.

    The stream is cut into batch_size equal streams; x holds consecutive chunks of ``steps``
    tokens and y the same shifted by one, ordered chunk-major, so that batch k of
    fit(batch_size=batch_size, shuffle=False) continues, row by row, where batch k-1 stopped.
    Returns (x, y), both (chunks * batch_size, steps) int64."""
    ids = np.asarray(ids)
    per = (len(ids) - 1) // batch_size
    chunks = per // steps
    if chunks < 1:
        raise ValueError(f"{len(ids)} tokens are too few for batch_size={batch_size} streams of "
                         f"at least steps={steps} + 1 tokens")
    n = chunks * steps
    streams = np.stack([ids[b * per:b * per + n + 1] for b in range(batch_size)])
    x = streams[:, :n].reshape(batch_size, chunks, steps).transpose(1, 0, 2).reshape(-1, steps)
    y = streams[:, 1:].reshape(batch_size, chunks, steps).transpose(1, 0, 2).reshape(-1, steps)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)

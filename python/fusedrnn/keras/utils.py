"""Keras' data helpers: to_categorical and pad_sequences."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["to_categorical", "pad_sequences", "set_random_seed"]

_global_seeds = None  # set by set_random_seed: where models built without a seed draw theirs


def set_random_seed(seed) -> None:
    """As Keras': every model made afterwards without its own seed draws one from this
    sequence (weight init, shuffling, dropout), and NumPy's global generator is seeded."""
    global _global_seeds
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    _global_seeds = np.random.SeedSequence(int(seed))
    np.random.seed(int(seed) % 2**32)


def next_model_seed():
    """A seed for a model made with seed=None: drawn after set_random_seed, else None."""
    if _global_seeds is None:
        return None
    return int(_global_seeds.spawn(1)[0].generate_state(1)[0])


def to_categorical(y, num_classes=None, dtype="float32"):
    """Class ids (any shape) -> one-hot rows over a new last axis (a trailing axis of size 1
    is dropped first, as Keras does)."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ValueError("to_categorical takes integer class ids, got fractional values")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise TypeError(f"to_categorical takes integer class ids, got dtype {y.dtype}")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.size and y.min() < 0:
        raise ValueError(f"class ids must be >= 0, got {y.min()}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    elif y.size and y.max() >= num_classes:
        raise ValueError(f"class ids must lie in 0..{num_classes - 1}, got {y.max()}")
    out = np.zeros(y.shape + (int(num_classes),), dtype)
    np.put_along_axis(out, y[..., None].astype(np.int64), 1, axis=-1)
    return out


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """A list of sequences (each a list of ids or of feature vectors) -> one array (N, maxlen,
    ...), Keras' defaults included: padding and truncation at the start ('pre').  Models take
    either end padded (a Masking / Embedding(mask_zero=True) mask becomes lengths)."""
    for name, v in (("padding", padding), ("truncating", truncating)):
        if v not in ("pre", "post"):
            raise ValueError(f"{name} must be 'pre' or 'post', got {v!r}")
    seqs = [np.asarray(s) for s in sequences]
    if maxlen is None:
        maxlen = max((len(s) for s in seqs), default=0)
    elif isinstance(maxlen, bool) or not isinstance(maxlen, numbers.Integral) or maxlen < 1:
        raise ValueError(f"maxlen must be a positive int, got {maxlen!r}")
    tail = next((s.shape[1:] for s in seqs if len(s)), ())
    out = np.full((len(seqs), maxlen) + tail, value, dtype=dtype)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        if s.shape[1:] != tail:
            raise ValueError(f"sequence {i} has steps of shape {s.shape[1:]}, the first {tail}")
        s = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if padding == "post":
            out[i, :len(s)] = s
        else:
            out[i, maxlen - len(s):] = s
    return out

"""What fit/evaluate/predict do to the arrays before any layer sees them: checks, masks turned
into lengths, sample and class weights, validation split, and batching.

Inputs are batch-first: (N, T, F) float sequences or (N, T) token ids (for an Embedding).
A mask from the model's first layer (Masking, Embedding(mask_zero=True)) becomes ``lengths``;
left-padded sequences (Keras' pad_sequences default) are rolled to right-padded ones, which the
kernels take, and sequence outputs rolled back.  Non-finite values in the data are refused
here, before the first batch: one NaN would otherwise turn every weight into NaN at the first
update and leave a model that predicts NaN for everything.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _dask, ops
from .._checks import shape_str

__all__ = ["Data", "prepare", "batches"]


class Data:
    """x, y, lengths, per-sample weights and the roll that made left padding right padding
    (None when nothing was rolled), sliced together."""

    def __init__(self, x, y=None, lengths=None, sample_weight=None, shift=None, per_step_y=False):
        self.x, self.y, self.lengths = x, y, lengths
        self.sample_weight, self.shift = sample_weight, shift
        self.per_step_y = per_step_y  # y has a time axis that follows x's

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx, trim=True):
        """The samples ``idx``; with lengths, trimmed to the batch's longest sequence (the
        steps after it are padding for all, and a per-step target is trimmed with them)."""
        part = [None if a is None else a[idx] for a in
                (self.x, self.y, self.lengths, self.sample_weight, self.shift)]
        xb, yb, lb = part[:3]
        if lb is not None and trim:
            t = int(lb.max())
            xb = xb[:, :t]
            if self.per_step_y:
                yb = yb[:, :t]
        return Data(xb, yb, lb, part[3], part[4], self.per_step_y)

    def split(self, cut):
        head = Data(*(None if a is None else a[:cut] for a in self._arrays()), self.per_step_y)
        tail = Data(*(None if a is None else a[cut:] for a in self._arrays()), self.per_step_y)
        return head, tail

    def _arrays(self):
        return self.x, self.y, self.lengths, self.sample_weight, self.shift


def batches(rng, n, batch_size, shuffle):
    order = rng.permutation(n) if shuffle else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def check_batch_size(batch_size) -> int:
    if batch_size is None:
        return 32  # Keras' default
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _as_array(value, name):
    """np.asarray(value), or a TypeError naming the argument (ragged nested lists, objects)."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array, got a {type(value).__name__} that is not one "
                        f"({exc})") from None


def _check_x(x, embedding, dtype, what):
    x = _as_array(x, f"x{what}")
    if embedding:
        if x.dtype.kind not in "iu":
            raise TypeError(f"x{what} feeds an Embedding, so it must hold integer token ids, "
                            f"got dtype {x.dtype}")
    elif x.dtype.kind not in "fiub":
        raise TypeError(f"x{what} must be numeric, got dtype {x.dtype}")
    else:
        x = x.astype(dtype, copy=False)
    if x.ndim < 2:
        raise ValueError(f"x{what} must have a batch axis first, (N, ...), got shape {shape_str(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x{what} holds no samples")
    return x


def _check_lengths(lengths, N, T, what):
    # The kernels' check under the trainer's names; the copy keeps what this function always
    # did: the data holds its own lengths, not the caller's array.
    return ops._lengths(lengths, T, N, name=f"lengths{what}", batch="N").copy()


def _lengths_from_mask(mask, what):
    """(lengths, shift): a right-padded mask gives shift 0, a left-padded one the number of
    leading padding steps; anything else is refused."""
    N, T = mask.shape
    lengths = mask.sum(axis=1)
    steps = np.arange(T)[None, :]
    right = mask == (steps < lengths[:, None])
    left = mask == (steps >= (T - lengths)[:, None])
    bad = ~(right.all(axis=1) | left.all(axis=1))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"the mask of x{what} sample {i} has padding between valid steps "
                         f"({mask[i].astype(int).tolist()[:20]}...); the kernels take sequences "
                         "padded at one end only (pad_sequences does that)")
    if lengths.min() < 1:
        i = int(np.argmin(lengths))
        raise ValueError(f"x{what} sample {i} is padding at every step; drop it (a sequence "
                         "needs at least one valid step)")
    shift = np.where(right.all(axis=1), 0, T - lengths)
    return lengths.astype(np.int64), (shift if shift.any() else None)


def roll(a, shift, back=False):
    """Each row of a moved left by its shift along axis 1 (right by it with back=True)."""
    T = a.shape[1]
    s = -shift if back else shift
    idx = (np.arange(T)[None, :] + s[:, None]) % T
    return a[np.arange(len(a))[:, None], idx]


def _first_non_finite(a, valid, name):
    bad = ~np.isfinite(a)
    if valid is not None:
        bad &= valid.reshape(valid.shape + (1,) * (a.ndim - valid.ndim))
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), a.shape)
        raise ValueError(
            f"{name} holds {a[where]} at index {tuple(int(i) for i in where)}: one non-finite value "
            "turns every weight into NaN at the first update; clean the data (padding past a "
            "sequence's length may hold anything)")


def _check_sample_weight(sw, N, what):
    sw = np.asarray(sw, dtype=np.float64)
    if sw.shape != (N,):
        raise ValueError(f"sample_weight{what} must have shape (N,) = ({N},), got {shape_str(sw.shape)}")
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError(f"sample_weight{what} must be finite and >= 0")
    return sw


def class_weights(y, class_weight, N):
    """Keras' class_weight {class: weight} as one weight per sample of y (class ids, one-hot
    rows, or 0/1 labels of a single output unit)."""
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class: weight}}, got {type(class_weight).__name__}")
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        ids = y.argmax(axis=-1)
    else:
        ids = np.rint(y.reshape(N, -1)[:, 0]).astype(np.int64)
    if ids.ndim != 1:
        raise ValueError("class_weight needs one class per sample (not per step)")
    table = {int(k): float(v) for k, v in class_weight.items()}
    missing = sorted(set(np.unique(ids).tolist()) - set(table))
    if missing:
        raise ValueError(f"class_weight has no weight for classes {missing[:10]}")
    return np.array([table[int(c)] for c in ids], np.float64)


def prepare(model, x, y=None, lengths=None, sample_weight=None, class_weight=None, what=""):
    """Checked arrays as a Data; see the module's docstring."""
    _dask.refuse("training and evaluation", x=x, y=y, lengths=lengths, sample_weight=sample_weight)
    x = _check_x(x, model._takes_ids(), model.dtype, what)
    N = x.shape[0]
    if y is not None:
        y = _as_array(y, f"y{what}")
        if y.ndim == 0 or y.shape[0] != N:
            raise ValueError(f"y{what} must have one row per sample of x ({N}), got shape "
                             f"{shape_str(y.shape)}")
    per_step_y = y is not None and y.ndim >= 2 and x.ndim >= 2 and y.shape[1] == x.shape[1] \
        and model._sequence_output()
    shift = None
    mask_layer = model._mask_layer()
    if mask_layer is not None:
        if lengths is not None:
            raise ValueError(f"give lengths{what} or a mask (the model's {type(mask_layer).__name__}), "
                             "not both")
        if x.ndim < 2 or (x.ndim == 2 and not model._takes_ids()):
            raise ValueError(f"{type(mask_layer).__name__} needs sequences, got x{what} of shape "
                             f"{shape_str(x.shape)}")
        lengths, shift = _lengths_from_mask(mask_layer.mask_of(x), what)
        if shift is not None:
            x = roll(x, shift)
            if per_step_y:
                y = roll(y, shift)
    elif lengths is not None:
        lengths = _check_lengths(lengths, N, x.shape[1], what)
    valid = None if lengths is None else np.arange(x.shape[1])[None, :] < lengths[:, None]
    if x.dtype.kind == "f":
        _first_non_finite(x, valid, f"x{what}")
    if y is not None and y.dtype.kind == "f":
        _first_non_finite(y, valid if per_step_y else None, f"y{what}")
    sw = None if sample_weight is None else _check_sample_weight(sample_weight, N, what)
    if class_weight is not None:
        if y is None:
            raise ValueError("class_weight needs y")
        cw = class_weights(y, class_weight, N)
        sw = cw if sw is None else sw * cw
    return Data(x, y, lengths, sw, shift, per_step_y)

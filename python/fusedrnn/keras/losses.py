"""Losses: value and gradient with respect to the prediction, in one call.

    loss = get('categorical_crossentropy')            # or a Loss instance
    value, dpred = loss.value_and_grad(y_true, y_pred, weights=None)

Reduction, as Keras: the per-element loss is averaged (mse, mae, binary cross-entropy) or summed
(categorical cross-entropies) over the last axis, then averaged over every other axis.
``weights`` (same shape as that per-sample loss, e.g. (B,) or (B, T)) turns the average into
sum(w * l) / sum(w): Sequential passes a 0/1 mask of the valid steps of padded sequences.
Samples of weight 0 are left out by selection, so whatever their targets or predictions hold
(NaN, inf) changes neither the value nor the gradient.

Cross-entropies take probabilities (clipped to [eps, 1 - eps]) or, with ``from_logits=True``,
logits, handled by log-sum-exp and softplus so nothing overflows.  Sequential fuses a final
softmax/sigmoid Dense with its cross-entropy and feeds logits, so the probability path is used
only when a model outputs probabilities some other way.
"""

from __future__ import annotations

import numpy as np

from .._checks import shape_str

__all__ = ["Loss", "MeanSquaredError", "MeanAbsoluteError", "Huber", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "get", "EPSILON"]

EPSILON = 1e-7


def check_weights(weights, shape):
    """weights as a float64 array of the per-sample shape: finite, >= 0, not all zero."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != tuple(shape):
        raise ValueError(f"weights must have shape {shape_str(shape)} (one per sample), got {shape_str(w.shape)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0")
    if w.sum() <= 0:
        raise ValueError("weights sum to zero: nothing to average")
    return w


def mask_targets(y, w):
    """y with the entries of zero-weight samples replaced by 0: a padded step may hold anything
    (NaN included), and 0 * NaN would still be NaN, so it must never enter the arithmetic."""
    if w is None or y.shape[:w.ndim] != w.shape:
        return y
    valid = (w != 0).reshape(w.shape + (1,) * (y.ndim - w.ndim))
    return np.where(valid, y, np.zeros((), y.dtype))


def single_unit_target(y, p):
    """y with a trailing axis added when p has one output unit and y has none: Keras reads
    labels of shape (N,) against a (N, 1) output as one label per sample."""
    if p.shape[-1:] == (1,) and y.shape == p.shape[:-1]:
        return y[..., None]
    return y


def _reduce(per_sample, w):
    """Weighted mean of the per-sample losses and the factor each one's gradient carries;
    zero-weight samples are left out by selection, not multiplied by 0."""
    if w is None:
        n = per_sample.size
        return float(per_sample.sum(dtype=np.float64)) / n, np.full(per_sample.shape, 1.0 / n)
    total = w.sum()
    valid = w != 0
    return float((per_sample[valid] * w[valid]).sum()) / total, w / total


class Loss:
    name = ""

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"

    def __call__(self, y_true, y_pred, weights=None) -> float:
        return self.value_and_grad(y_true, y_pred, weights)[0]

    def value_and_grad(self, y_true, y_pred, weights=None):
        y_pred = np.asarray(y_pred)
        if y_pred.dtype.kind != "f":
            raise TypeError(f"y_pred must be floating point, got dtype {y_pred.dtype}")
        w = None if weights is None else check_weights(weights, y_pred.shape[:-1])
        y_true = self._target(mask_targets(np.asarray(y_true), w), y_pred)
        with np.errstate(invalid="ignore", over="ignore"):
            per, dper = self._elementwise(y_true, y_pred)
            value, scale = _reduce(per, w)
            scale = scale.reshape(scale.shape + (1,) * (dper.ndim - scale.ndim))
            grad = dper * scale
        if w is not None:
            grad = np.where(scale != 0, grad, 0)
        return value, grad.astype(y_pred.dtype, copy=False)

    def _target(self, y_true, y_pred):
        y = single_unit_target(np.asarray(y_true), y_pred)
        if y.shape != y_pred.shape:
            raise ValueError(f"{self.name}: y_true must have the shape of the predictions "
                             f"{shape_str(y_pred.shape)}, got {shape_str(y.shape)}")
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: y_true must be numeric, got dtype {y.dtype}")
        return y.astype(y_pred.dtype, copy=False)

    def _elementwise(self, y, p):
        """(per-sample loss over all but the last axis, d per-sample / d prediction)."""
        raise NotImplementedError


class _Regression(Loss):
    """A loss on values, not on probabilities: no from_logits."""

    def __init__(self):
        super().__init__(False)

    def get_config(self) -> dict:
        return {}


class MeanSquaredError(_Regression):
    name = "mse"

    def _elementwise(self, y, p):
        d = p - y
        F = p.shape[-1]
        return np.mean(d * d, axis=-1), d * (2.0 / F)


class MeanAbsoluteError(_Regression):
    name = "mae"

    def _elementwise(self, y, p):
        d = p - y
        F = p.shape[-1]
        return np.mean(np.abs(d), axis=-1), np.sign(d) / F


class Huber(_Regression):
    """0.5 d^2 where |d| <= delta, delta (|d| - 0.5 delta) beyond (d = prediction - target),
    averaged over the last axis as Keras' Huber."""

    name = "huber"

    def __init__(self, delta=1.0):
        super().__init__()
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0:
            raise ValueError(f"delta must be a number > 0, got {delta!r}")
        self.delta = float(delta)

    def get_config(self) -> dict:
        return {"delta": self.delta}

    def _elementwise(self, y, p):
        d = p - y
        F = p.shape[-1]
        small = np.abs(d) <= self.delta
        per = np.where(small, 0.5 * d * d, self.delta * (np.abs(d) - 0.5 * self.delta))
        # d/dp: d inside the quadratic zone, delta * sign(d) outside
        return per.mean(axis=-1), np.where(small, d, self.delta * np.sign(d)) / F


class BinaryCrossentropy(Loss):
    """Targets in [0, 1] (usually 0/1), one per output unit."""

    name = "binary_crossentropy"

    def _elementwise(self, y, p):
        F = p.shape[-1]
        if self.from_logits:
            # -[y log s(z) + (1-y) log(1-s(z))] = max(z, 0) - z y + log(1 + exp(-|z|))
            z = p
            per = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
            e = np.exp(-np.abs(z))
            s = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
            return per.mean(axis=-1), (s - y) / F  # d/dz = sigmoid(z) - y
        q = np.clip(p, EPSILON, 1 - EPSILON)
        per = -(y * np.log(q) + (1 - y) * np.log1p(-q))
        inside = (p > EPSILON) & (p < 1 - EPSILON)
        return per.mean(axis=-1), np.where(inside, (q - y) / (q * (1 - q)), 0) / F


class CategoricalCrossentropy(Loss):
    """One-hot (or any distribution) targets over the last axis."""

    name = "categorical_crossentropy"

    def _elementwise(self, y, p):
        if self.from_logits:
            log_soft = _log_softmax(p)
            per = -(y * log_soft).sum(axis=-1)
            # d/dz = softmax(z) * sum(y) - y   (= softmax - y for a one-hot y)
            return per, np.exp(log_soft) * y.sum(axis=-1, keepdims=True) - y
        q = np.clip(p, EPSILON, 1 - EPSILON)
        inside = (p > EPSILON) & (p < 1 - EPSILON)
        return -(y * np.log(q)).sum(axis=-1), np.where(inside, -y / q, 0)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Integer class ids: y_true has the prediction's shape without its last (class) axis
    (a trailing axis of size 1 is accepted too)."""

    name = "sparse_categorical_crossentropy"

    def value_and_grad(self, y_true, y_pred, weights=None):
        """From logits without weights (what Sequential's fused softmax feeds every step): the
        class ids index the log-softmax instead of multiplying a one-hot target; the same
        operations on the same values otherwise, so the results are those of the general
        path (Loss.value_and_grad) bit for bit, with one exception: a logit of -inf for a class
        other than the target leaves the loss finite here (its probability is 0), where the
        general path's 0 * -inf makes it NaN."""
        y_pred = np.asarray(y_pred)
        if not self.from_logits or weights is not None or y_pred.dtype.kind != "f" \
                or y_pred.ndim < 2 or y_pred.size == 0:
            return super().value_and_grad(y_true, y_pred, weights)
        ids = self._ids(y_true, y_pred).reshape(-1)
        rows = np.arange(ids.size)
        z = y_pred.reshape(-1, y_pred.shape[-1])
        with np.errstate(invalid="ignore", over="ignore"):
            log_soft = _log_softmax(z)
            per = -log_soft[rows, ids]
            dper = np.exp(log_soft)
            dper[rows, ids] -= 1
            value = float(per.sum(dtype=np.float64)) / ids.size
            grad = np.multiply(dper, 1.0 / ids.size, dtype=np.float64).reshape(y_pred.shape)
        return value, grad.astype(y_pred.dtype, copy=False)

    def _target(self, y_true, y_pred):
        return _one_hot(self._ids(y_true, y_pred), y_pred.shape[-1], y_pred.dtype)

    def _ids(self, y_true, y_pred):
        """y_true checked and read as integer class ids of y_pred's shape without its last axis."""
        y = np.asarray(y_true)
        if y.ndim == y_pred.ndim and y.shape[-1:] == (1,):
            y = y[..., 0]
        if y.shape != y_pred.shape[:-1]:
            raise ValueError(f"{self.name}: y_true must hold one class id per prediction, shape "
                             f"{shape_str(y_pred.shape[:-1])}, got {shape_str(y.shape)}")
        if y.dtype.kind == "f":
            if not np.all(y == np.round(y)):
                raise TypeError(f"{self.name}: y_true must be integer class ids, got fractional values")
            y = y.astype(np.int64)
        if y.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: y_true must be integer class ids, got dtype {y.dtype}")
        C = y_pred.shape[-1]
        if y.size and (y.min() < 0 or y.max() >= C):
            raise ValueError(f"{self.name}: class ids must lie in 0..{C - 1}, got values from "
                             f"{y.min()} to {y.max()}")
        return y


def _log_softmax(z):
    """log softmax over the last axis: z - max - log sum exp(z - max)."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _one_hot(ids, C, dtype):
    out = np.zeros(ids.shape + (C,), dtype)
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out


_BY_NAME = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
_CLASSES = {c.__name__: c for c in set(_BY_NAME.values())}


def get(loss) -> Loss:
    """A Loss from its Keras name ('mse', 'categorical_crossentropy', ...) or a Loss instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if isinstance(loss, str) and loss.lower() in _BY_NAME:
        return _BY_NAME[loss.lower()]()
    raise ValueError(f"unknown loss {loss!r}; choose from {sorted(_BY_NAME)} or pass a Loss instance")


def to_config(loss: Loss) -> dict:
    return {"class": type(loss).__name__, "config": loss.get_config()}


def from_config(cfg) -> Loss:
    return _CLASSES[cfg["class"]](**cfg["config"])

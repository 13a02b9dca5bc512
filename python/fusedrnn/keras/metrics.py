"""Metrics: 'accuracy' and 'mae', as running means over an epoch.

    m = get('accuracy', loss)          # accuracy's flavour follows the loss, as in Keras
    m.update(y_true, y_pred, weights)  # per batch;  m.result(), m.reset()

Accuracy compares argmax of the prediction with the class id (sparse categorical) or with the
target's argmax (categorical); for a binary cross-entropy, with predictions thresholded at 0.5 (at 0 for logits).
Its flavour follows Keras: binary for binary_crossentropy, sparse for
sparse_categorical_crossentropy, categorical for categorical_crossentropy; for any other loss,
binary when the model has a single output unit and categorical when it has several.
``weights`` is the same per-sample weighting/mask the loss gets; zero-weight samples are left
out by selection (NaN in padding changes nothing).  A target whose shape does not fit the
prediction is a ValueError (``check`` raises it before a training step changes any weight).
"""

from __future__ import annotations

import numpy as np

from . import losses as _losses
from .._checks import shape_str

__all__ = ["Metric", "Accuracy", "MeanAbsoluteError", "MeanSquaredError", "AUC", "get"]


class Metric:
    name = ""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._count = 0.0

    def result(self) -> float:
        return self._total / self._count if self._count else float("nan")

    def update(self, y_true, y_pred, weights=None) -> None:
        per, w = self._evaluate(y_true, y_pred, weights)
        if w is None:
            self._total += float(per.sum())
            self._count += per.size
        else:
            valid = w != 0
            self._total += float((per[valid] * w[valid]).sum())
            self._count += float(w.sum())

    def check(self, y_true, y_pred, weights=None) -> None:
        """Raise the ValueError update would raise, changing nothing."""
        self._evaluate(y_true, y_pred, weights)

    def _evaluate(self, y_true, y_pred, weights):
        y, p = np.asarray(y_true), np.asarray(y_pred)
        if p.ndim < 1:
            raise ValueError(f"{self.name}: predictions need at least one axis, got shape {shape_str(p.shape)}")
        w = None if weights is None else _losses.check_weights(weights, p.shape[:-1])
        with np.errstate(invalid="ignore"):
            per = self._per_sample(_losses.mask_targets(y, w), p)
        if per.shape != p.shape[:-1]:
            raise AssertionError(f"{self.name}: per-sample shape {per.shape} for predictions {p.shape}")
        return per, w

    def _per_sample(self, y, p):
        """One value per prediction row (shape p.shape[:-1]); ValueError if y does not fit p."""
        raise NotImplementedError

    def _same_shape(self, y, p, what):
        y = _losses.single_unit_target(y, p)
        if y.shape == p.shape:
            return y
        raise ValueError(f"{self.name}: y_true must have the shape of the predictions {shape_str(p.shape)} "
                         f"({what}), got {shape_str(y.shape)}")


class Accuracy(Metric):
    name = "accuracy"

    def __init__(self, kind: str = "sparse", threshold: float = 0.5):
        if kind not in ("sparse", "categorical", "binary", "auto"):
            raise ValueError(f"kind must be 'sparse', 'categorical', 'binary' or 'auto', got {kind!r}")
        self.kind = kind
        self.threshold = float(threshold)
        super().__init__()

    def _per_sample(self, y, p):
        kind = self.kind
        if kind == "auto":  # Keras' rule for a loss that says nothing about classes
            kind = "binary" if p.shape[-1] == 1 else "categorical"
        if kind == "binary":
            y = self._same_shape(y, p, "binary accuracy: one 0/1 target per output unit")
            return np.mean((p > self.threshold) == (y > 0.5), axis=-1)
        pred = p.argmax(axis=-1)
        if kind == "categorical":
            y = self._same_shape(y, p, "categorical accuracy: one-hot targets")
            return (pred == y.argmax(axis=-1)).astype(np.float64)
        if y.ndim == p.ndim and y.shape[-1] == 1:
            y = y[..., 0]
        if y.shape != p.shape[:-1]:
            raise ValueError(f"{self.name}: y_true must hold one class id per prediction, shape "
                             f"{shape_str(p.shape[:-1])} (sparse categorical accuracy), got {shape_str(y.shape)}")
        return (pred == y).astype(np.float64)


class MeanAbsoluteError(Metric):
    name = "mae"

    def _per_sample(self, y, p):
        y = self._same_shape(y, p, "mae")
        return np.mean(np.abs(p - y), axis=-1)


class MeanSquaredError(Metric):
    name = "mse"

    def _per_sample(self, y, p):
        y = self._same_shape(y, p, "mse")
        return np.mean((p - y) ** 2, axis=-1)


class AUC(Metric):
    """Area under the ROC curve of binary targets, computed exactly over every prediction
    of the epoch (Keras approximates it with 200 thresholds; the two agree to about 1e-2).
    Each output unit is one more set of (score, label) pairs, as Keras' default."""

    name = "auc"

    def reset(self) -> None:
        self._scores, self._labels, self._weights = [], [], []

    def update(self, y_true, y_pred, weights=None) -> None:
        y, p = np.asarray(y_true), np.asarray(y_pred)
        y = self._same_shape(_losses.single_unit_target(y, p), p, "auc: 0/1 targets")
        w = np.ones(p.shape[:-1]) if weights is None else _losses.check_weights(weights, p.shape[:-1])
        keep = np.broadcast_to((w != 0)[..., None], p.shape)
        self._scores.append(p[keep].astype(np.float64))
        self._labels.append(y[keep] > 0.5)
        self._weights.append(np.broadcast_to(w[..., None], p.shape)[keep])

    def check(self, y_true, y_pred, weights=None) -> None:
        y, p = np.asarray(y_true), np.asarray(y_pred)
        self._same_shape(_losses.single_unit_target(y, p), p, "auc: 0/1 targets")

    def result(self) -> float:
        if not self._scores:
            return float("nan")
        s, pos, w = (np.concatenate(a) for a in (self._scores, self._labels, self._weights))
        wp, wn = w * pos, w * ~pos
        if wp.sum() == 0 or wn.sum() == 0:
            return 0.0  # one class only: no curve (Keras reports 0 too)
        # Sum over positives of the negative weight ranked below them; ties count half.
        order = np.argsort(s, kind="mergesort")
        s, wp, wn = s[order], wp[order], wn[order]
        uniq, start = np.unique(s, return_index=True)
        neg_tie = np.add.reduceat(wn, start)
        pos_tie = np.add.reduceat(wp, start)
        neg_below = np.cumsum(neg_tie) - neg_tie
        area = np.sum(pos_tie * (neg_below + 0.5 * neg_tie))
        return float(area / (wp.sum() * wn.sum()))


_ACCURACY_KINDS = {"binary_accuracy": "binary", "categorical_accuracy": "categorical",
                   "sparse_categorical_accuracy": "sparse"}


def get(metric, loss=None) -> Metric:
    """A fresh metric from a name ('accuracy'/'acc', 'binary_accuracy', 'categorical_accuracy',
    'sparse_categorical_accuracy', 'mae', 'mse', 'auc') or a Metric instance."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, type) and issubclass(metric, Metric):
        return metric()
    if metric in _ACCURACY_KINDS:
        return Accuracy(_ACCURACY_KINDS[metric])
    if metric in ("mse", "mean_squared_error"):
        return MeanSquaredError()
    if metric in ("auc", "AUC"):
        return AUC()
    if metric in ("accuracy", "acc"):
        if isinstance(loss, _losses.SparseCategoricalCrossentropy):
            return Accuracy("sparse")
        if isinstance(loss, _losses.CategoricalCrossentropy):
            return Accuracy("categorical")
        if isinstance(loss, _losses.BinaryCrossentropy):
            # logits are thresholded at 0, probabilities at 0.5
            return Accuracy("binary", 0.0 if loss.from_logits else 0.5)
        return Accuracy("auto")
    if metric in ("mae", "mean_absolute_error"):
        return MeanAbsoluteError()
    raise ValueError(f"unknown metric {metric!r}; choose from 'accuracy', 'binary_accuracy', "
                     "'categorical_accuracy', 'sparse_categorical_accuracy', 'mae', 'mse', 'auc' "
                     "or pass a Metric")

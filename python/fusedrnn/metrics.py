"""Metrics: 'accuracy' and 'mae', as running means over an epoch.

    m = get('accuracy', loss)          # accuracy's flavour follows the loss, as in Keras
    m.update(y_true, y_pred, weights)  # per batch;  m.result(), m.reset()

Accuracy compares argmax of the prediction with the class id (sparse categorical) or with the
target's argmax (categorical); for a binary cross-entropy, with predictions thresholded at 0.5 (at 0 for logits).
``weights`` is the same per-sample weighting/mask the loss gets.
"""

from __future__ import annotations

import numpy as np

from . import losses as _losses

__all__ = ["Metric", "Accuracy", "MeanAbsoluteError", "get"]


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
        per = self._per_sample(np.asarray(y_true), np.asarray(y_pred))
        if weights is None:
            self._total += float(per.sum())
            self._count += per.size
        else:
            w = np.asarray(weights, np.float64)
            self._total += float((per * w).sum())
            self._count += float(w.sum())

    def _per_sample(self, y, p):
        raise NotImplementedError


class Accuracy(Metric):
    name = "accuracy"

    def __init__(self, kind: str = "sparse", threshold: float = 0.5):
        if kind not in ("sparse", "categorical", "binary"):
            raise ValueError(f"kind must be 'sparse', 'categorical' or 'binary', got {kind!r}")
        self.kind = kind
        self.threshold = float(threshold)
        super().__init__()

    def _per_sample(self, y, p):
        if self.kind == "binary":
            return np.mean((p > self.threshold) == (y > 0.5), axis=-1)
        pred = p.argmax(axis=-1)
        if self.kind == "categorical":
            return (pred == y.argmax(axis=-1)).astype(np.float64)
        if y.ndim == p.ndim and y.shape[-1] == 1:
            y = y[..., 0]
        return (pred == y).astype(np.float64)


class MeanAbsoluteError(Metric):
    name = "mae"

    def _per_sample(self, y, p):
        return np.mean(np.abs(p - y.reshape(p.shape)), axis=-1)


def get(metric, loss=None) -> Metric:
    """A fresh metric from a name ('accuracy'/'acc', 'mae') or a Metric instance."""
    if isinstance(metric, Metric):
        return metric
    if metric in ("accuracy", "acc"):
        if isinstance(loss, _losses.SparseCategoricalCrossentropy):
            return Accuracy("sparse")
        if isinstance(loss, _losses.CategoricalCrossentropy):
            return Accuracy("categorical")
        if isinstance(loss, _losses.BinaryCrossentropy):
            # logits are thresholded at 0, probabilities at 0.5
            return Accuracy("binary", 0.0 if loss.from_logits else 0.5)
        return Accuracy("sparse")
    if metric in ("mae", "mean_absolute_error"):
        return MeanAbsoluteError()
    raise ValueError(f"unknown metric {metric!r}; choose from 'accuracy', 'mae' or pass a Metric")

"""One training step of a distributed fit, and the reductions that make every rank's loss and
metrics those of the whole batch (distributed.py describes the scheme).

Running-mean metrics add their (total, count) over the ranks; AUC gathers its (score, label,
weight) triples, in rank order, so its result is computed over every prediction everywhere.
"""

from __future__ import annotations

import numpy as np

from . import metrics as _metrics

__all__ = ["FlatGradients", "metric_kind", "train_batch", "reduce_evaluation"]


def metric_kind(m) -> str:
    """'mean' for running means (their totals add over ranks), 'gather' for AUC (its pairs are
    gathered); any other kept state cannot be combined."""
    base = _metrics.Metric
    if all(getattr(type(m), f) is getattr(base, f) for f in ("update", "result", "reset")):
        return "mean"
    if isinstance(m, _metrics.AUC):
        return "gather"
    raise ValueError(f"metric {type(m).__name__} keeps a state that a distributed fit cannot "
                     "combine across ranks; subclass fusedrnn.keras.metrics.Metric and define "
                     "_per_sample (a running mean)")


class FlatGradients:
    """Every gradient laid end to end in one buffer, followed by a step's loss and metric sums,
    for one allreduce per step (one synchronisation of the ranks).  The sums travel in the
    gradient's dtype: the count the loss divides by is a whole number (exact in float32 up to
    2**24), the loss sum keeps float32's 1e-7 relative precision in a float32 model."""

    def __init__(self, model, n_stats):
        self.model = model
        grads = [g for _, _, g in model._trainable()]
        dtype = np.result_type(*grads) if grads else np.float64
        self.size = sum(g.size for g in grads)
        self.buf = np.empty(self.size + n_stats, dtype)

    def allreduce(self, group, stats):
        """Sum the ranks' (summed) gradients and stats; write the sums divided by the global
        count stats[1] into the grads; return the summed stats (float64)."""
        n = self.size
        # Read each step: on CUDA, reading a layer's grads brings the device's sums back.
        self.grads = [g for _, _, g in self.model._trainable()]
        if n:
            np.concatenate([g.reshape(-1) for g in self.grads], out=self.buf[:n])
        self.buf[n:] = stats
        group.allreduce(self.buf)
        sums = self.buf[n:].astype(np.float64)
        # Divided on the way back, in the gradient's dtype (a Python float divisor: a float64
        # one would send every element through a float64 round trip, several times slower).
        count, offset = float(sums[1]), 0
        for g in self.grads:
            np.divide(self.buf[offset:offset + g.size].reshape(g.shape), count, out=g)
            offset += g.size
        return sums


def _marks(model, kinds):
    """Where each metric's state stands now, to tell what one batch added."""
    return [(m._total, m._count) if k == "mean" else len(m._scores)
            for m, k in zip(model.metrics, kinds)]


def _mean_deltas(model, kinds, marks):
    out = []
    for m, k, mark in zip(model.metrics, kinds, marks):
        if k == "mean":
            out += [m._total - mark[0], m._count - mark[1]]
    return out


def _set_means(model, kinds, marks, sums):
    i = 0
    for m, k, mark in zip(model.metrics, kinds, marks):
        if k == "mean":
            m._total, m._count = mark[0] + float(sums[i]), mark[1] + float(sums[i + 1])
            i += 2


def _gather_pairs(group, model, kinds, marks):
    """Replace what each AUC added on this rank by what every rank added, in rank order."""
    for m, k, mark in zip(model.metrics, kinds, marks):
        if k != "gather":
            continue
        mine = [np.concatenate(a[mark:]) if len(a) > mark else np.empty(0, dt)
                for a, dt in ((m._scores, np.float64), (m._labels, bool), (m._weights, np.float64))]
        everyone = group.allgather(mine, "metric gather")
        del m._scores[mark:], m._labels[mark:], m._weights[mark:]
        for part in everyone:
            if part[0].size:
                m._scores.append(part[0])
                m._labels.append(part[1])
                m._weights.append(part[2])


def train_batch(group, model, data, idx) -> float:
    """One optimiser step on the global batch idx: this rank's rows forward and backward, the
    summed loss and gradients added over the ranks and divided by the global count; returns
    the batch's loss, the same on every rank."""
    mine = group.rows(idx)
    kinds = group.metric_kinds
    marks = _marks(model, kinds)
    model.zero_grad()
    loss_sum = count = 0.0
    if len(mine):
        batch = data.take(mine)
        loss_sum, pred, weights = model._step(batch, train=True, summed=True)
        count = model._loss_count
        for m in model.metrics:
            m.update(batch.y, pred, weights)
    stats = group.gradients.allreduce(group, [loss_sum, count] + _mean_deltas(model, kinds, marks))
    model.optimizer.apply(model._trainable())
    _set_means(model, kinds, marks, stats[2:])
    _gather_pairs(group, model, kinds, marks)
    return float(stats[0] / stats[1])


def reduce_evaluation(group, model, total: float, weight: float):
    """(total, weight) of an evaluation added over the ranks; the metrics' states likewise."""
    kinds = group.metric_kinds
    zero = [(0.0, 0.0) if k == "mean" else 0 for k in kinds]
    stats = np.array([total, weight] + _mean_deltas(model, kinds, zero), np.float64)
    group.allreduce(stats, "evaluation allreduce")
    _set_means(model, kinds, zero, stats[2:])
    _gather_pairs(group, model, kinds, zero)
    return float(stats[0]), float(stats[1])

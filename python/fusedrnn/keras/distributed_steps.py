"""One training step of a distributed fit, and the reductions that make every rank's loss and
metrics those of the whole batch (distributed.py describes the scheme).

Running-mean metrics add their (total, count) over the ranks; AUC gathers its (score, label,
weight) triples, in rank order, so its result is computed over every prediction everywhere.
"""

from __future__ import annotations

import numpy as np

__all__ = ["train_batch", "reduce_evaluation"]


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

"""Callbacks for Sequential.fit: EarlyStopping, ModelCheckpoint, LearningRateScheduler and
HistoryPlot (a PNG of the loss/metric curves; needs matplotlib).

A callback overrides any of the hooks below; ``self.model`` is set before training starts.
``logs`` holds the epoch's averages ('loss', 'accuracy', ..., 'val_loss', ...).  Setting
``model.stop_training = True`` ends fit after the current epoch.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .._files import write_atomic
from .distributed import writes_files
from .saving import check_path

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "HistoryPlot", "TerminateOnNaN"]


class Callback:
    model = None
    params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params) -> None:
        """fit's settings, as Keras gives them: {'verbose', 'epochs', 'steps'}."""
        self.params = dict(params)

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...


class History(Callback):
    """What fit returns: ``history`` maps each log name to its per-epoch values, ``epoch``
    lists the epoch indices run."""

    def __init__(self):
        self.history: dict = {}
        self.epoch: list = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite (the batch's update is
    already applied, as in Keras; the model then holds non-finite weights, so reload a
    checkpoint rather than keep it)."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training", flush=True)
            self.model.stop_training = True


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


class _Monitor(Callback):
    def __init__(self, monitor, mode, min_delta=0.0):
        self.monitor = monitor
        self.mode = _mode(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf

    def _value(self, logs):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r}, which fit does not "
                           f"log (logged: {sorted(logs)}); pass validation data for 'val_*' names")
        return float(logs[self.monitor])

    def _improved(self, value) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than min_delta for ``patience`` epochs;
    with restore_best_weights, put back the weights of the best epoch when stopping (or at the
    end of training)."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False, *, verbose=0, baseline=None, start_from_epoch=0):
        if baseline is not None or start_from_epoch:
            raise ValueError("EarlyStopping: baseline and start_from_epoch are not supported")
        super().__init__(monitor, mode, min_delta)
        self.verbose = verbose
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.wait = 0
        self.stopped_epoch = None
        self.best_epoch = None
        self._best_weights = None

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = None
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self._best_weights is not None:
            self.model.set_weights(self._best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model (Sequential.save: weights, optimiser, random state) at the end of each
    epoch to ``filepath``, which may hold '{epoch}' and log names ('{epoch:03d}-{val_loss:.3f}');
    epochs are numbered from 1 there, as Keras does.  save_best_only keeps only improvements of
    ``monitor``.  In a distributed fit, rank 0 alone writes (the ranks' models are identical)."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", *,
                 save_weights_only=False, verbose=0):
        super().__init__(monitor, mode)
        self.filepath = check_path(filepath, overwrite=True)  # an .h5 name fails now, not after an epoch
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.verbose = verbose
        self.saved: list = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._value(logs)
            if not self._improved(value):
                return
            self.best = value
        if not writes_files(self.model):
            return  # rank 0 of a distributed fit writes for the job
        path = self.filepath.format(epoch=epoch + 1, **logs)
        (self.model.save_weights if self.save_weights_only else self.model.save)(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}", flush=True)
        self.saved.append(path)


class LearningRateScheduler(Callback):
    """Set the optimiser's learning rate at the start of each epoch to schedule(epoch, lr)."""

    def __init__(self, schedule):
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        value = self.schedule(epoch, opt.lr)
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = None
        if rate is None or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"LearningRateScheduler: the schedule returned {value!r} for epoch {epoch}; "
                             "a learning rate must be a finite number >= 0")
        opt.learning_rate = rate


def require_matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError('HistoryPlot needs matplotlib: pip install "fusedrnn[examples]" '
                          '(or pip install matplotlib)') from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_history(history, path) -> None:
    """One panel per quantity (loss, each metric), training and validation curves, to path."""
    plt = require_matplotlib()
    hist = history.history if isinstance(history, History) else dict(history)
    names = [k for k in hist if not k.startswith("val_")]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.5 * max(1, len(names)), 3.5),
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(hist[name]) + 1)
        ax.plot(epochs, hist[name], label="train")
        if "val_" + name in hist:
            ax.plot(epochs, hist["val_" + name], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fmt = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
    try:
        write_atomic(path, lambda f: fig.savefig(f, format=fmt))
    finally:
        plt.close(fig)


class HistoryPlot(Callback):
    """Write the curves of every logged quantity to a PNG after each epoch (needs matplotlib:
    the error comes at construction, not after training)."""

    def __init__(self, path):
        require_matplotlib()
        self.path = os.fspath(path)
        self._history = History()

    def on_train_begin(self, logs=None):
        self._history = History()

    def on_epoch_end(self, epoch, logs=None):
        self._history.on_epoch_end(epoch, logs)
        if writes_files(self.model):
            plot_history(self._history, self.path)

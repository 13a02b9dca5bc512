"""compile / fit / evaluate / predict: the training loop every model shares.

A model class provides ``_forward(x, training, lengths)``, ``_backward(dy, from_logits)``,
``_trainable()`` (key, param, grad triples), ``_output_layer()`` (a final Dense whose
softmax/sigmoid can fuse with the loss, or None), ``reset_states()`` and the data hooks that
data.prepare asks (``_takes_ids``, ``_mask_layer``, ``_sequence_output``, ``dtype``).

Reductions, as Keras: the loss is averaged over samples (over valid steps of padded sequence
outputs); ``sample_weight``/``class_weight`` multiply each sample's loss, and the sum is still
divided by the number of samples (steps), not by the sum of the weights.  Metrics are weighted
means.  A final Dense with softmax (sigmoid) under a categorical (binary) cross-entropy is
trained through its logits (log-sum-exp; the gradient probabilities - targets skips the
activation's Jacobian); predict still returns probabilities.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import warnings

import numpy as np

from . import callbacks as _callbacks
from . import data as _data
from . import distributed as _distributed
from . import distributed_steps as _steps
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from .. import _dask
from .._checks import check_int
from .progress import Progress

__all__ = ["Trainer"]


def _numpy_blas_one_thread():
    """Run NumPy's own BLAS on one thread for the duration (when threadpoolctl is installed).

    NumPy and fusedrnn each bring a BLAS with its own thread pool.  In a training loop they
    alternate every few milliseconds, and the threads of the idle pool spin on the cores the
    busy one needs: measured on 2 cores, an LSTM step with two small Dense layers ran 1.4x
    slower than without them.  The Dense matmuls are small, so NumPy loses little on one thread.
    """
    global _NUMPY_POOLS
    if _NUMPY_POOLS is None:
        _NUMPY_POOLS = _find_numpy_pools()
    return _NUMPY_POOLS.limit(limits=1) if _NUMPY_POOLS else contextlib.nullcontext()


_NUMPY_POOLS = None  # found once: scanning the loaded libraries costs milliseconds


def _find_numpy_pools():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return False
    controller = ThreadpoolController()
    numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
    paths = [lib.filepath for lib in controller.lib_controllers
             if lib.user_api == "blas" and "numpy" in os.path.relpath(lib.filepath, numpy_dir)]
    return controller.select(filepath=paths) if paths else False


def _callback_list(callbacks) -> list:
    if callbacks is None:
        return []
    if isinstance(callbacks, _callbacks.Callback):
        raise TypeError("callbacks must be a list of Callback instances, got a single "
                        f"{type(callbacks).__name__}; pass [it]")
    try:
        items = list(callbacks) if not isinstance(callbacks, (str, bytes)) else None
    except TypeError:
        items = None
    if items is None:
        raise TypeError(f"callbacks must be a list of Callback instances, got {type(callbacks).__name__}")
    for i, cb in enumerate(items):
        if not isinstance(cb, _callbacks.Callback):
            raise TypeError(f"callbacks[{i}] must be a fusedrnn.keras.callbacks.Callback, got "
                            f"{type(cb).__name__}")
    return items


def _verbose(verbose) -> int:
    if isinstance(verbose, str) and verbose == "auto":
        return 1
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    if isinstance(verbose, numbers.Integral) and int(verbose) in (0, 1, 2):
        return int(verbose)
    raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")


def _shuffle(shuffle) -> bool:
    if isinstance(shuffle, (bool, np.bool_)) or (isinstance(shuffle, numbers.Integral) and shuffle in (0, 1)):
        return bool(shuffle)
    raise TypeError(f"shuffle must be True or False, got {shuffle!r}")


def _fraction(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _step_weights(pred, batch):
    """(weights for the loss and metrics or None, the count the loss is divided by)."""
    mask = None
    if batch.lengths is not None and pred.ndim == 3:
        mask = (np.arange(pred.shape[1])[None, :] < batch.lengths[:, None]).astype(np.float64)
    sw = batch.sample_weight
    if sw is None:
        return mask, None
    count = float(mask.sum()) if mask is not None else float(len(sw))
    w = sw.reshape(sw.shape + (1,) * (pred.ndim - 2)) * (1.0 if mask is None else mask)
    return np.broadcast_to(w, pred.shape[:-1]), count


class Trainer:
    """The training half of a model (see the module's docstring)."""

    optimizer = None
    loss = None
    _fused_loss = None
    _group = None  # the ranks of a distributed fit while it runs (distributed.py)
    _loss_count = 0.0  # what the last step's loss was divided by

    def _init_training(self):
        self.optimizer = None
        self.loss = None
        self.metrics: list = []
        self._metric_names: list = []
        self._fused_loss = None
        self.stop_training = False
        self.epoch = 0  # epochs completed (what initial_epoch should be to resume)
        self.history = None

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                weighted_metrics=None, run_eagerly=None, steps_per_execution=None,
                jit_compile=None, **kwargs) -> None:
        """optimizer: a name ('adam', 'sgd', 'rmsprop', 'adamw') or an optimizer; loss: a name
        ('mse', 'mae', 'huber', 'binary_crossentropy', 'categorical_crossentropy',
        'sparse_categorical_crossentropy') or a Loss; metrics: names ('accuracy', 'mae', 'mse',
        'auc', ...) or Metric instances.  run_eagerly / jit_compile / steps_per_execution are
        accepted and change nothing (every step runs the fused kernels)."""
        if kwargs:
            raise TypeError(f"compile() got unexpected arguments {sorted(kwargs)}")
        if loss_weights is not None or weighted_metrics is not None:
            raise ValueError("loss_weights and weighted_metrics are not supported (one output per model)")
        self._check_has_layers()
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='mse'")
        self.optimizer = _optimizers.get(optimizer)
        self.loss = _losses.get(loss)
        if isinstance(metrics, (str, _metrics.Metric)):
            metrics = [metrics]
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics must be a list of metric names or Metric instances, got "
                            f"{type(metrics).__name__}")
        self.metrics = [_metrics.get(m, self.loss) for m in (metrics or [])]
        self._metric_names = [m if isinstance(m, str) else m.name for m in (metrics or [])]
        self._fused_loss = self._fusion()

    def _fusion(self):
        last = self._output_layer()
        if last is None or self.loss.from_logits:
            return None
        if last.activation == "softmax" and isinstance(self.loss, _losses.CategoricalCrossentropy):
            return type(self.loss)(from_logits=True)
        if last.activation == "sigmoid" and isinstance(self.loss, _losses.BinaryCrossentropy):
            return _losses.BinaryCrossentropy(from_logits=True)
        return None

    def _check_compiled(self):
        if self.loss is None:
            raise RuntimeError("compile the model first: model.compile(optimizer, loss, metrics)")

    # --- one step ---------------------------------------------------------------------------

    def _step(self, batch, train: bool, summed: bool = False):
        """Forward (and backward) on one batch: (loss, predictions, weights).  The loss is the
        mean over the batch (module docstring); with summed=True, it and its gradient are
        multiplied by the count the mean divides by (kept in _loss_count), so that a
        distributed fit can add them over ranks and divide by the global count."""
        pred = self._forward(batch.x, training=train, lengths=batch.lengths)
        weights, count = _step_weights(pred, batch)
        self._loss_count = count if count is not None else \
            float(np.sum(weights)) if weights is not None else float(math.prod(pred.shape[:-1]))
        if weights is not None and count is not None and not np.any(weights):
            value, dz = 0.0, np.zeros_like(pred)  # every sample of the batch weighs 0
        else:
            fused = self._fused_loss is not None
            loss = self._fused_loss if fused else self.loss
            value, dz = loss.value_and_grad(batch.y, self._output_layer().logits() if fused else pred,
                                            weights)
            if count is not None:  # Keras divides by the samples, not by the weights' sum
                scale = float(np.sum(weights)) / count
                value, dz = value * scale, dz * dz.dtype.type(scale)
        if summed:
            value, dz = value * self._loss_count, dz * dz.dtype.type(self._loss_count)
        for m in self.metrics:  # a target that does not fit fails here, before any update
            m.check(batch.y, pred, weights)
        if train:
            self._backward(dz, self._fused_loss is not None)
        return value, pred, weights

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def loss_and_gradients(self, x, y, lengths=None, sample_weight=None):
        """Loss on (x, y) in training mode and the gradient of every parameter, keyed
        '<layer index>.<name>', without updating anything (gradient checks, custom loops)."""
        self._check_compiled()
        data = _data.prepare(self, x, y, lengths, sample_weight)
        self.zero_grad()
        value, _, _ = self._step(data, train=True)
        return value, {k: g.copy() for k, _, g in self._trainable()}

    def train_on_batch(self, x, y, lengths=None, sample_weight=None, class_weight=None) -> float:
        """One optimiser step on one batch; returns its loss."""
        self._check_compiled()
        data = _data.prepare(self, x, y, lengths, sample_weight, class_weight)
        return self._train_batch(data)[0]

    def _train_batch(self, batch):
        self.zero_grad()
        out = self._step(batch, train=True)
        self.optimizer.apply(self._trainable(device=True))
        return out

    # --- fit / evaluate / predict -----------------------------------------------------------

    def fit(self, x, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, lengths=None,
            distributed=None):
        """Train for epochs initial_epoch .. epochs-1 (Keras' meaning); returns a History.

        validation_data: (x, y) or (x, y, lengths); validation_split: the last fraction of
        the data (before shuffling) is held out instead.  verbose: 0 quiet, 1 a progress bar
        (tqdm when installed, else one updating line), 2 one line per epoch.
        distributed: True (MPI_COMM_WORLD) or an mpi4py communicator: data-parallel training
        over the processes of an MPI job, every one calling fit with the same model and data
        (see fusedrnn.keras.distributed); with one process, the plain fit."""
        if steps_per_epoch is not None:
            raise ValueError("steps_per_epoch is not supported: x and y are whole arrays, "
                             "so an epoch is every batch of them")
        group = _distributed.start(distributed)

        def run():
            return self._fit(x, y, batch_size, epochs, _verbose(verbose), callbacks,
                             validation_split, validation_data, shuffle, class_weight,
                             sample_weight, initial_epoch, lengths)

        with _numpy_blas_one_thread():
            if group is None:
                return run()
            self._group = group
            try:
                with group.guard():
                    return run()
            finally:
                self._group = None

    def _validation(self, data, validation_split, validation_data):
        if validation_data is not None and validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            n_val = int(round(len(data) * validation_split))
            if n_val < 1 or n_val >= len(data):
                raise ValueError(f"validation_split={validation_split} leaves {n_val} of {len(data)} "
                                 "samples for validation; it must leave at least one on each side")
            return data.split(len(data) - n_val)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (x, y) or (x, y, lengths)")
            return data, _data.prepare(self, *validation_data, what=" of validation_data")
        return data, None

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
             validation_data, shuffle, class_weight, sample_weight, initial_epoch, lengths):
        def prepare():
            self._check_compiled()
            s = {"batch_size": _data.check_batch_size(batch_size),
                 "epochs": check_int(epochs, "epochs", 0),
                 "initial_epoch": check_int(initial_epoch, "initial_epoch", 0),
                 "shuffle": _shuffle(shuffle)}
            split = _fraction(validation_split, "validation_split")
            if y is None:
                raise ValueError("fit needs targets y")
            data = _data.prepare(self, x, y, lengths, sample_weight, class_weight)
            if self.stateful and s["shuffle"]:
                raise ValueError("a stateful layer carries its state from one batch to the next, "
                                 "which needs the batches in order: pass shuffle=False")
            s["data"], s["val"] = self._validation(data, split, validation_data)
            s["callbacks"] = _callback_list(callbacks)
            return s

        group = self._group
        s = prepare() if group is None else group.setup(self, prepare)
        if group is not None and group.rank != 0:
            verbose = 0  # one progress display for the job
        batch_size, epochs, shuffle, data, val = (s[k] for k in (
            "batch_size", "epochs", "shuffle", "data", "val"))
        steps = -(-len(data) // batch_size)
        history = _callbacks.History()
        cbs = [history] + s["callbacks"]
        for cb in cbs:
            cb.set_model(self)
            cb.set_params({"verbose": verbose, "epochs": epochs, "steps": steps})
        self.stop_training = False
        self.history = history
        for cb in cbs:
            cb.on_train_begin()
        for epoch in range(s["initial_epoch"], epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            progress = Progress(verbose, epoch, epochs, steps)
            logs = self._fit_epoch(data, batch_size, shuffle, progress, cbs)
            if val is not None and not self.stop_training:
                self.reset_states()
                for k, v in self._evaluate(val, batch_size, group).items():
                    logs["val_" + k] = v
            self.epoch = epoch + 1
            if group is not None:
                group.check_replicas(self)
            progress.close(logs)
            for cb in cbs:
                cb.on_epoch_end(epoch, dict(logs))
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()
        return history

    def _reset_on_new_size(self, n, last):
        """A distributed fit's ranks see their slices, not the batch: reset the state of a
        stateful model where the global batch size changes, as one process would."""
        if self.stateful and last is not None and n != last:
            self.reset_states()
        return n

    def _fit_epoch(self, data, batch_size, shuffle, progress, cbs):
        self.reset_states()
        for m in self.metrics:
            m.reset()
        total, count, logs, size = 0.0, 0, {}, None
        for b, idx in enumerate(_data.batches(self.rng, len(data), batch_size, shuffle)):
            if self._group is None:
                batch = data.take(idx)
                value, pred, weights = self._train_batch(batch)
                for m in self.metrics:
                    m.update(batch.y, pred, weights)
            else:
                size = self._reset_on_new_size(len(idx), size)
                value = _steps.train_batch(self._group, self, data, idx)
            if not math.isfinite(value):
                warnings.warn(f"loss became {value} at epoch {self.epoch + 1}, batch {b + 1}",
                              RuntimeWarning, stacklevel=4)
            total += value * len(idx)
            count += len(idx)
            logs = {"loss": total / count}
            logs.update({n: m.result() for n, m in zip(self._metric_names, self.metrics)})
            progress.update(logs)
            for cb in cbs:
                cb.on_batch_end(b, logs)
            if self.stop_training:
                break
        return logs

    def _evaluate(self, data, batch_size, group=None):
        """Loss and metrics over data; with the group of a distributed fit, over this rank's
        rows of each batch, then added over the ranks."""
        for m in self.metrics:
            m.reset()
        total, weight, size = 0.0, 0.0, None
        for idx in _data.batches(self.rng, len(data), batch_size, False):
            if group is not None:
                size = self._reset_on_new_size(len(idx), size)
                idx = group.rows(idx)
                if not len(idx):
                    continue
            batch = data.take(idx)
            value, pred, weights = self._step(batch, train=False)
            w = len(idx) if batch.lengths is None or pred.ndim != 3 else float(batch.lengths.sum())
            total += value * w
            weight += w
            for m in self.metrics:
                m.update(batch.y, pred, weights)
        if group is not None:
            total, weight = _steps.reduce_evaluation(group, self, total, weight)
        logs = {"loss": total / weight}
        logs.update({n: m.result() for n, m in zip(self._metric_names, self.metrics)})
        return logs

    def evaluate(self, x, y=None, batch_size=None, verbose=0, sample_weight=None, lengths=None,
                 return_dict=False):
        """Loss (and metrics) on (x, y) in inference mode: the loss alone, or [loss, *metrics]
        as Keras returns them, or a dict with return_dict=True."""
        self._check_compiled()
        batch_size = _data.check_batch_size(batch_size)
        data = _data.prepare(self, x, y, lengths, sample_weight)
        with _numpy_blas_one_thread():
            logs = self._evaluate(data, batch_size)
        if _verbose(verbose):
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose=0, lengths=None):
        """Outputs for x in inference mode, batch by batch (sequence outputs padded with zeros
        back to x's T when lengths trimmed a batch).  A dask x (chunked along N) gives a dask
        array, computed block by block on any Dask scheduler (fusedrnn/_dask.py)."""
        if _dask.is_dask_array(x):
            _verbose(verbose)
            return _dask.model_predict(self, x, batch_size, lengths)
        batch_size = _data.check_batch_size(batch_size)
        data = _data.prepare(self, x, None, lengths)
        with _numpy_blas_one_thread():
            out = self._predict(data, batch_size)
        if _verbose(verbose):
            print(f"predicted {len(data)} samples")
        return out

    def _predict(self, data, batch_size):
        outs = []
        T_full = data.x.shape[1]
        for idx in _data.batches(self.rng, len(data), batch_size, False):
            batch = data.take(idx)
            pred = self._forward(batch.x, training=False, lengths=batch.lengths)
            if isinstance(pred, list):
                raise ValueError("predict takes a model with one output; this one returns "
                                 f"{len(pred)} (return_state=True)")
            if batch.lengths is not None and pred.ndim == 3 and pred.shape[1] < T_full \
                    and self._sequence_output():
                pad = np.zeros((pred.shape[0], T_full - pred.shape[1]) + pred.shape[2:], pred.dtype)
                pred = np.concatenate([pred, pad], axis=1)
            outs.append(pred)
        out = np.concatenate(outs, axis=0)
        if data.shift is not None and out.ndim == 3 and out.shape[1] == T_full:
            out = _data.roll(out, data.shift, back=True)
        return out

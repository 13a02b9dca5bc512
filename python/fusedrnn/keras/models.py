"""Sequential: a stack of model pieces trained Keras-style.

    model = Sequential([Recurrent(LSTM(8, 128)), Dense(128, 64, "relu"), Dropout(0.5),
                        Dense(64, 10, "softmax")], seed=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=20, batch_size=32, validation_data=(xv, yv))
    model.evaluate(xt, yt);  model.predict(xt);  model.summary()
    model.save("m.npz");  model = Sequential.load("m.npz")   # compiled, ready to resume

Inputs are batch-first: (N, T, F) float sequences or (N, T) token ids (for an Embedding).
Variable-length sequences are right-padded with ``lengths`` (N,) passed to fit/evaluate/predict
(and as a third element of validation_data): recurrent layers never read the padding, each
batch is trimmed to its longest sequence, and losses/metrics on sequence outputs count only
valid steps.

Randomness (weight init when ``seed`` is given, shuffling, dropout masks) comes from generators
the model owns, spawned from ``seed``; save() stores their states with the weights and the
optimiser's, so fit after load() continues exactly as uninterrupted training would (pass
``initial_epoch=model.epoch`` to keep the epoch numbering).

A final Dense with softmax (sigmoid) under a categorical (binary) cross-entropy is trained
through the logits: the loss is computed from logits (log-sum-exp) and its gradient,
probabilities - targets, skips the activation's Jacobian.  predict still returns probabilities.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings

import numpy as np

from .. import _npz
from . import callbacks as _callbacks
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from ..layers import _RNNBase
from .pieces import LAYER_CLASSES, Dense, Embedding, Layer, Recurrent

__all__ = ["Sequential"]

_FILE_FORMAT = 1


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if s is None else str(int(s)) for s in shape) \
        + ("," if len(shape) == 1 else "") + ")"


def _lengths_mask(lengths, T):
    """(B, T) 1/0 weights of the valid steps."""
    return (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)


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
            raise TypeError(f"callbacks[{i}] must be a fusedrnn.callbacks.Callback, got {type(cb).__name__}")
    return items


class _Progress:
    """Per-epoch progress: a tqdm bar when tqdm is importable and verbose == 1, otherwise one
    plain line at the end of the epoch (verbose 1 or 2); nothing for verbose 0."""

    def __init__(self, verbose, epoch, epochs, steps):
        self.verbose, self.steps = verbose, steps
        self.label = f"Epoch {epoch + 1}/{epochs}"
        self.bar = None
        self.start = time.perf_counter()
        if verbose == 1:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=steps, desc=self.label, unit="batch", leave=True,
                                file=sys.stderr, dynamic_ncols=True)

    def update(self, logs):
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            self.bar.update(1)

    def close(self, logs):
        text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
            self.bar.close()
        elif self.verbose:
            print(f"{self.label} - {time.perf_counter() - self.start:.1f}s - {text}", flush=True)


class Sequential:
    """A linear stack of pieces from fusedrnn.nn (Dense, Dropout, Embedding, Recurrent)."""

    def __init__(self, layers=None, seed=None, name="sequential"):
        self.name = str(name)
        self.layers: list = []
        self.seed = None if seed is None else int(seed)
        self._seeds = np.random.SeedSequence(seed)
        self.rng = np.random.default_rng(self._seeds.spawn(1)[0])
        self.optimizer = None
        self.loss = None
        self.metrics: list = []
        self._metric_names: list = []
        self._fused_loss = None
        self.stop_training = False
        self.epoch = 0  # epochs completed (what initial_epoch should be to resume)
        self.metadata: dict = {}  # JSON-able extras saved with the model (e.g. a vocabulary)
        self._shapes: list = []
        for layer in layers or []:
            self.add(layer)

    # --- building ---------------------------------------------------------------------------

    def add(self, layer) -> None:
        """Append a piece; with a seed, its weights are (re)initialised from the model's."""
        if isinstance(layer, _RNNBase):
            raise TypeError(f"wrap the {type(layer).__name__} in fusedrnn.Recurrent to put it in "
                            f"a model: Recurrent({type(layer).__name__}(...)) for the last valid "
                            "step, Recurrent(..., return_sequences=True) for every step")
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes fusedrnn.nn pieces (Dense, Dropout, Embedding, "
                            f"Recurrent), got {type(layer).__name__}")
        if self.layers and isinstance(layer, Embedding):
            raise ValueError("an Embedding takes token ids, so it can only be the first layer")
        dtypes = {l.dtype for l in self.layers + [layer] if l.dtype is not None}
        if len(dtypes) > 1:
            raise TypeError(f"every layer of a model must have one dtype, got {sorted(map(str, dtypes))}")
        layer.rng = np.random.default_rng(self._seeds.spawn(1)[0])
        if self.seed is not None:
            layer.reset_parameters(layer.rng)
        self.layers.append(layer)
        self._shapes.append(None)

    @property
    def dtype(self) -> np.dtype:
        for layer in self.layers:
            if layer.dtype is not None:
                return layer.dtype
        return np.dtype(np.float32)

    def _check_built(self):
        if not self.layers:
            raise ValueError("the model has no layers; add some first")

    def compile(self, optimizer="adam", loss=None, metrics=None) -> None:
        """optimizer: a name ('adam', 'sgd', 'rmsprop', 'adamw') or an optimizer instance;
        loss: a name ('mse', 'mae', 'binary_crossentropy', 'categorical_crossentropy',
        'sparse_categorical_crossentropy') or a Loss; metrics: names ('accuracy', 'mae')."""
        self._check_built()
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='mse'")
        self.optimizer = _optimizers.get(optimizer)
        self.loss = _losses.get(loss)
        if isinstance(metrics, str):
            metrics = [metrics]
        self.metrics = [_metrics.get(m, self.loss) for m in (metrics or [])]
        self._metric_names = [m if isinstance(m, str) else m.name for m in (metrics or [])]
        self._fused_loss = self._fusion()

    def _fusion(self):
        last = self.layers[-1]
        if not isinstance(last, Dense) or self.loss.from_logits:
            return None
        if last.activation == "softmax" and isinstance(self.loss, _losses.CategoricalCrossentropy):
            return type(self.loss)(from_logits=True)
        if last.activation == "sigmoid" and isinstance(self.loss, _losses.BinaryCrossentropy):
            return _losses.BinaryCrossentropy(from_logits=True)
        return None

    def _check_compiled(self):
        if self.loss is None:
            raise RuntimeError("compile the model first: model.compile(optimizer, loss, metrics)")

    # --- forward / backward -----------------------------------------------------------------

    def __call__(self, x, training=False, lengths=None):
        return self.forward(x, training, lengths)

    def forward(self, x, training=False, lengths=None):
        self._check_built()
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, training=training, lengths=lengths)
            self._shapes[i] = (None,) + tuple(x.shape[1:])
        return x

    def _backward(self, dy, from_logits: bool):
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if i == len(self.layers) - 1 and from_logits:
                dy = layer.backward_logits(dy)
            else:
                dy = layer.backward(dy)
            if dy is None:
                break

    def _weights_of(self, pred, lengths):
        if lengths is not None and pred.ndim == 3:
            return _lengths_mask(lengths, pred.shape[1])
        return None

    def _step(self, xb, yb, lb, train: bool):
        """Forward (and backward) on one batch: (loss, predictions, weights)."""
        pred = self.forward(xb, training=train, lengths=lb)
        weights = self._weights_of(pred, lb)
        if self._fused_loss is not None:
            z = self.layers[-1].logits()
            value, dz = self._fused_loss.value_and_grad(yb, z, weights)
        else:
            value, dz = self.loss.value_and_grad(yb, pred, weights)
        for m in self.metrics:  # a target that does not fit fails here, before any update
            m.check(yb, pred, weights)
        if train:
            self._backward(dz, self._fused_loss is not None)
        return value, pred, weights

    def _trainable(self):
        for i, layer in enumerate(self.layers):
            for name, p in layer.params.items():
                yield f"{i}.{name}", p, layer.grads[name]

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def loss_and_gradients(self, x, y, lengths=None):
        """Loss on (x, y) in training mode and the gradient of every parameter, keyed
        '<layer index>.<name>', without updating anything (gradient checks, custom loops)."""
        self._check_compiled()
        x, y, lengths = self._inputs(x, y, lengths)
        self.zero_grad()
        value, _, _ = self._step(x, y, lengths, train=True)
        return value, {k: g.copy() for k, _, g in self._trainable()}

    def train_on_batch(self, x, y, lengths=None) -> float:
        """One optimiser step on one batch; returns its loss."""
        self._check_compiled()
        x, y, lengths = self._inputs(x, y, lengths)
        return self._train_batch(x, y, lengths)[0]

    def _train_batch(self, xb, yb, lb):
        self.zero_grad()
        out = self._step(xb, yb, lb, train=True)
        self.optimizer.apply(self._trainable())
        return out

    # --- data -------------------------------------------------------------------------------

    def _inputs(self, x, y=None, lengths=None, what=""):
        x = np.asarray(x)
        if not self.layers:
            self._check_built()
        if isinstance(self.layers[0], Embedding):
            if x.dtype.kind not in "iu":
                raise TypeError(f"x{what} feeds an Embedding, so it must hold integer token ids, "
                                f"got dtype {x.dtype}")
        elif x.dtype.kind not in "fiub":
            raise TypeError(f"x{what} must be numeric, got dtype {x.dtype}")
        else:
            x = x.astype(self.dtype, copy=False)
        if x.ndim < 2:
            raise ValueError(f"x{what} must have a batch axis first, (N, ...), got shape {_fmt(x.shape)}")
        N = x.shape[0]
        if N == 0:
            raise ValueError(f"x{what} holds no samples")
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 0 or y.shape[0] != N:
                raise ValueError(f"y{what} must have one row per sample of x ({N}), got shape "
                                 f"{_fmt(y.shape)}")
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu":
                raise TypeError(f"lengths{what} must be integers, got dtype {lengths.dtype}")
            if lengths.shape != (N,):
                raise ValueError(f"lengths{what} must have shape (N,) = ({N},), got {_fmt(lengths.shape)}")
            if x.ndim < 2 or lengths.min() < 1 or lengths.max() > x.shape[1]:
                raise ValueError(f"lengths{what} must lie in 1..T = 1..{x.shape[1]}, got values "
                                 f"from {lengths.min()} to {lengths.max()}")
            lengths = lengths.astype(np.int64)
        return x, y, lengths

    def _batches(self, n, batch_size, shuffle):
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]

    @staticmethod
    def _take(x, y, lengths, idx):
        xb = x[idx]
        yb = None if y is None else y[idx]
        lb = None if lengths is None else lengths[idx]
        if lb is not None:
            # Trim to the batch's longest sequence: the steps after it are padding for all.
            xb = xb[:, :int(lb.max())]
        return xb, yb, lb

    # --- fit / evaluate / predict -----------------------------------------------------------

    def _check_batch_size(self, batch_size):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return int(batch_size)

    def reset_states(self) -> None:
        """Forget the state carried by stateful recurrent layers."""
        for layer in self.layers:
            if isinstance(layer, Recurrent):
                layer.reset_states()

    @property
    def stateful(self) -> bool:
        return any(isinstance(l, Recurrent) and l.stateful for l in self.layers)

    def fit(self, x, y, batch_size=32, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, lengths=None):
        """Train for epochs initial_epoch .. epochs-1 (Keras' meaning); returns a History.

        validation_data: (x, y) or (x, y, lengths); validation_split: the last fraction of
        the data (before shuffling) is held out instead.  verbose: 0 quiet, 1 a progress bar
        (tqdm when installed), 2 one line per epoch."""
        with _numpy_blas_one_thread():
            return self._fit(x, y, batch_size, epochs, verbose, callbacks, validation_split,
                             validation_data, shuffle, initial_epoch, lengths)

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
             validation_data, shuffle, initial_epoch, lengths):
        self._check_compiled()
        batch_size = self._check_batch_size(batch_size)
        x, y, lengths = self._inputs(x, y, lengths)
        if self.stateful and shuffle:
            raise ValueError("a stateful layer carries its state from one batch to the next, which "
                             "needs the batches in order: pass shuffle=False")
        if validation_data is not None and validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        val = None
        if validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            n_val = int(round(len(x) * validation_split))
            if n_val < 1 or n_val >= len(x):
                raise ValueError(f"validation_split={validation_split} leaves {n_val} of {len(x)} "
                                 "samples for validation; it must leave at least one on each side")
            cut = len(x) - n_val
            val = (x[cut:], y[cut:], None if lengths is None else lengths[cut:])
            x, y = x[:cut], y[:cut]
            lengths = None if lengths is None else lengths[:cut]
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (x, y) or (x, y, lengths)")
            val = self._inputs(*validation_data, what=" of validation_data")

        history = _callbacks.History()
        cbs = [history] + _callback_list(callbacks)
        for cb in cbs:
            cb.set_model(self)
        self.stop_training = False
        for cb in cbs:
            cb.on_train_begin()
        T_full = x.shape[1] if x.ndim >= 2 else None
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            self.reset_states()
            batches = self._batches(len(x), batch_size, shuffle)
            progress = _Progress(verbose, epoch, epochs, len(batches))
            for m in self.metrics:
                m.reset()
            total, count = 0.0, 0
            logs = {}
            for b, idx in enumerate(batches):
                xb, yb, lb = self._take(x, y, lengths, idx)
                if lb is not None:
                    yb = self._align_before(yb, xb, T_full)
                value, pred, weights = self._train_batch(xb, yb, lb)
                if not math.isfinite(value):
                    warnings.warn(f"loss became {value} at epoch {epoch + 1}, batch {b + 1}",
                                  RuntimeWarning, stacklevel=2)
                total += value * len(idx)
                count += len(idx)
                for m in self.metrics:
                    m.update(yb, pred, weights)
                logs = {"loss": total / count}
                logs.update({n: m.result() for n, m in zip(self._metric_names, self.metrics)})
                progress.update(logs)
                for cb in cbs:
                    cb.on_batch_end(b, logs)
            if val is not None:
                self.reset_states()
                for k, v in self._evaluate(*val, batch_size).items():
                    logs["val_" + k] = v
            progress.close(logs)
            self.epoch = epoch + 1
            for cb in cbs:
                cb.on_epoch_end(epoch, dict(logs))
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()
        return history

    def _align_before(self, yb, xb, T_full):
        # A target with one entry per step (sequence output) is trimmed with the batch.
        if yb is not None and yb.ndim >= 2 and yb.shape[1] == T_full and xb.shape[1] < T_full \
                and self._sequence_output():
            return yb[:, :xb.shape[1]]
        return yb

    def _sequence_output(self) -> bool:
        """Whether the model's output keeps the time axis (its last Recurrent returns it)."""
        for layer in reversed(self.layers):
            if isinstance(layer, Recurrent):
                return layer.return_sequences
        return isinstance(self.layers[0], Embedding)

    def _evaluate(self, x, y, lengths, batch_size):
        for m in self.metrics:
            m.reset()
        total, weight = 0.0, 0.0
        T_full = x.shape[1]
        for idx in self._batches(len(x), batch_size, False):
            xb, yb, lb = self._take(x, y, lengths, idx)
            if lb is not None:
                yb = self._align_before(yb, xb, T_full)
            value, pred, weights = self._step(xb, yb, lb, train=False)
            w = len(idx) if weights is None else float(weights.sum())
            total += value * w
            weight += w
            for m in self.metrics:
                m.update(yb, pred, weights)
        logs = {"loss": total / weight}
        logs.update({n: m.result() for n, m in zip(self._metric_names, self.metrics)})
        return logs

    def evaluate(self, x, y, batch_size=32, verbose=0, lengths=None, return_dict=False):
        """Loss (and metrics) on (x, y) in inference mode: the loss alone, or [loss, *metrics]
        as Keras returns them, or a dict with return_dict=True."""
        self._check_compiled()
        batch_size = self._check_batch_size(batch_size)
        x, y, lengths = self._inputs(x, y, lengths)
        with _numpy_blas_one_thread():
            logs = self._evaluate(x, y, lengths, batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=32, verbose=0, lengths=None):
        """Outputs for x in inference mode, stacked over batches (sequence outputs padded
        with zeros back to x's T when lengths trimmed a batch)."""
        batch_size = self._check_batch_size(batch_size)
        x, _, lengths = self._inputs(x, None, lengths)
        with _numpy_blas_one_thread():
            outs = self._predict(x, lengths, batch_size)
        if verbose:
            print(f"predicted {len(x)} samples")
        return np.concatenate(outs, axis=0)

    def _predict(self, x, lengths, batch_size):
        outs = []
        T_full = x.shape[1]
        for idx in self._batches(len(x), batch_size, False):
            xb, _, lb = self._take(x, None, lengths, idx)
            pred = self.forward(xb, training=False, lengths=lb)
            if lb is not None and pred.ndim == 3 and pred.shape[1] < T_full and self._sequence_output():
                pad = np.zeros((pred.shape[0], T_full - pred.shape[1]) + pred.shape[2:], pred.dtype)
                pred = np.concatenate([pred, pad], axis=1)
            outs.append(pred)
        return outs

    # --- weights ----------------------------------------------------------------------------

    def get_weights(self) -> list:
        """Copies of every parameter, layer by layer in each layer's order."""
        return [p.copy() for _, p, _ in self._trainable()]

    def set_weights(self, weights) -> None:
        weights = list(weights)
        params = [(k, p) for k, p, _ in self._trainable()]
        if len(weights) != len(params):
            raise ValueError(f"expected {len(params)} arrays, got {len(weights)}")
        for (k, p), w in zip(params, weights):
            w = np.asarray(w)
            if w.dtype.kind != "f":
                # a cast would drop an imaginary part or read ids as weights without a word
                raise TypeError(f"weight {k} must be a float array, got dtype {w.dtype}")
            if w.shape != p.shape:
                raise ValueError(f"weight {k} must have shape {_fmt(p.shape)}, got {_fmt(w.shape)}")
        for (_, p), w in zip(params, weights):
            np.copyto(p, w, casting="unsafe")

    def count_params(self) -> int:
        return sum(p.size for _, p, _ in self._trainable())

    def summary(self, print_fn=print) -> None:
        """A table of the layers, their output shapes (once the model has run) and parameter
        counts."""
        rows = []
        for i, layer in enumerate(self.layers):
            kind = type(layer).__name__
            if isinstance(layer, Recurrent):
                inner = layer.layer
                kind = f"{type(inner).__name__}({inner.input_size}, {inner.hidden_size}"
                kind += (f", layers={inner.num_layers}" if inner.num_layers > 1 else "")
                kind += (", bidirectional" if inner.bidirectional else "") + ")"
                kind += " seq" if layer.return_sequences else " last"
            elif isinstance(layer, Dense):
                kind = f"Dense({layer.in_features}, {layer.out_features}" + \
                    (f", {layer.activation})" if layer.activation else ")")
            shape = self._shapes[i]
            rows.append((f"{i}: {kind}", "?" if shape is None else _fmt(shape),
                         f"{sum(p.size for p in layer.params.values()):,}"))
        w0 = max(len("Layer"), *(len(r[0]) for r in rows)) + 2
        w1 = max(len("Output shape"), *(len(r[1]) for r in rows)) + 2
        line = "-" * (w0 + w1 + 12)
        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        print_fn(f"{'Layer':<{w0}}{'Output shape':<{w1}}{'Params':>12}")
        print_fn("=" * len(line))
        for r in rows:
            print_fn(f"{r[0]:<{w0}}{r[1]:<{w1}}{r[2]:>12}")
        print_fn("=" * len(line))
        print_fn(f"Total params: {self.count_params():,}")
        if self.optimizer is not None:
            print_fn(f"Optimizer: {self.optimizer!r}; loss: {self.loss.name}"
                     + (" (fused with the output activation, from logits)" if self._fused_loss else ""))

    # --- saving -----------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {"name": self.name, "seed": self.seed,
                "layers": [{"class": type(l).__name__, "config": l.get_config()} for l in self.layers]}

    def _generators(self):
        return [self.rng] + [l.rng for l in self.layers]

    def save(self, path) -> None:
        """Write layers, weights, optimiser state, random state and epoch count to one .npz
        file, atomically (an interrupted save leaves the previous file intact)."""
        header = {"format": _FILE_FORMAT, "class": "Sequential", "config": self.get_config(),
                  "epoch": self.epoch, "metadata": self.metadata,
                  "rng": [g.bit_generator.state for g in self._generators()]}
        arrays = {f"param.{k}": p for k, p, _ in self._trainable()}
        if self.loss is not None:
            iterations, state = self.optimizer.get_state()
            header["compile"] = {"optimizer": _optimizers.to_config(self.optimizer),
                                 "loss": _losses.to_config(self.loss),
                                 "metrics": list(self._metric_names),
                                 "iterations": iterations}
            for slot, table in state.items():
                for k, a in table.items():
                    arrays[f"opt.{slot}.{k}"] = a
        _npz.save(path, header, arrays)

    @classmethod
    def from_config(cls, config):
        layers = [LAYER_CLASSES[l["class"]].from_config(l["config"]) for l in config["layers"]]
        # seed=None: the stored weights are loaded next, no reinitialisation wanted
        model = cls(layers, seed=None, name=config.get("name", "sequential"))
        model.seed = config.get("seed")
        return model

    @classmethod
    def load(cls, path):
        """A model rebuilt from save(): weights, compiled state and random state restored.
        A file that is not one is a ValueError naming it; nothing is allocated before the
        header and the stored arrays are found to agree."""
        path = os.fspath(path)
        with _npz.reading(path):
            header, arrays = _npz.load(path, lambda h, specs: _check_file(path, h, specs))
            return cls._from_file(path, header, arrays)

    @classmethod
    def _from_file(cls, path, header, arrays):
        model = cls.from_config(header["config"])
        for key, p, _ in model._trainable():
            np.copyto(p, arrays[f"param.{key}"])
        generators = model._generators()
        if not isinstance(header["rng"], list) or len(header["rng"]) != len(generators):
            raise ValueError(f"{path}: the header holds {len(header['rng'])} random states, the model "
                             f"has {len(generators)} generators")
        for g, state in zip(generators, header["rng"]):
            g.bit_generator.state = state
        model.epoch = int(header.get("epoch", 0))
        model.metadata = dict(header.get("metadata") or {})
        comp = header.get("compile")
        if comp:
            model.compile(_optimizers.from_config(comp["optimizer"]),
                          _losses.from_config(comp["loss"]), comp["metrics"])
            model.optimizer.set_state(*_optimizer_state(path, model, comp, arrays))
        return model


def _check_file(path, header, specs) -> None:
    """The header's layers against the stored arrays' shapes, before anything is built."""
    if header.get("class") != "Sequential" or header.get("format") != _FILE_FORMAT:
        raise ValueError(f"{path} does not hold a fusedrnn Sequential model (class "
                         f"{header.get('class')!r}, format {header.get('format')!r})")
    config = header.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError(f"{path}: the model's config must be a JSON object with a list of layers")

    def pairs():
        for i, layer in enumerate(config["layers"]):
            if not isinstance(layer, dict) or layer.get("class") not in LAYER_CLASSES \
                    or not isinstance(layer.get("config"), dict):
                raise ValueError(f"{path}: layer {i} of the config is not a known layer: {str(layer)[:80]}")
            for name, shape in LAYER_CLASSES[layer["class"]].param_shapes(layer["config"]):
                yield f"param.{i}.{name}", shape

    params = {k: v for k, v in specs.items() if k.startswith("param.")}
    expected = _npz.check_shapes(path, params, pairs(), "model config")
    for name, spec in specs.items():
        if name.startswith("param."):
            continue
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "opt" or f"param.{parts[2]}" not in expected:
            raise ValueError(f"{path}: unexpected array {name!r}")
        if spec.shape != tuple(expected[f"param.{parts[2]}"]):
            raise ValueError(f"{path}: optimizer state {name!r} has shape {_fmt(spec.shape)}; its "
                             f"parameter has shape {_fmt(expected[f'param.{parts[2]}'])}")


def _optimizer_state(path, model, comp, arrays):
    """(iterations, state) of a saved optimiser, each array checked against its parameter: a
    moment of another shape or dtype would otherwise scramble the update silently."""
    iterations = comp["iterations"]
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"{path}: optimizer iterations must be an int >= 0, got {iterations!r}")
    params = {k: p for k, p, _ in model._trainable()}
    slots = model.optimizer._slots
    state = {}
    for name, a in arrays.items():
        if not name.startswith("opt."):
            continue
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[1] not in slots or parts[2] not in params:
            raise ValueError(f"{path}: unexpected optimizer state {name!r} ({type(model.optimizer).__name__} "
                             f"keeps {list(slots) or 'nothing'} per parameter)")
        p = params[parts[2]]
        if a.shape != p.shape or a.dtype != p.dtype:
            raise ValueError(f"{path}: optimizer state {name!r} has shape {_fmt(a.shape)} and dtype "
                             f"{a.dtype}; its parameter has shape {_fmt(p.shape)} and dtype {p.dtype}")
        state.setdefault(parts[1], {})[parts[2]] = a
    return iterations, state

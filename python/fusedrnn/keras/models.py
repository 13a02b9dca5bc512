"""Models: Sequential, and Model to subclass, as in Keras.

    model = Sequential([LSTM(128, input_shape=(T, F)), Dense(64, activation="relu"),
                        Dropout(0.5), Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=20, batch_size=32, validation_split=0.1)
    model.evaluate(xt, yt);  model.predict(xt);  model.summary()
    model.save("m.keras");  model = load_model("m.keras")   # compiled, ready to resume

    class Classifier(Model):
        def __init__(self):
            super().__init__()
            self.lstm = LSTM(32)
            self.out = Dense(1, activation="sigmoid")
        def call(self, x, training=False):
            return self.out(self.lstm(x, training=training))

The torch-ordered pieces (fusedrnn.Dense(in, out), Recurrent(fusedrnn.LSTM(...))) go in the
same Sequential.  A subclassed Model tracks the layers assigned to its attributes (in that
order, which is get_weights' order) and trains through what ``call`` does with them: each
layer call is recorded (tape.py) and the backward pass replays the record.

Randomness (weight init when ``seed`` is given, shuffling, dropout masks) comes from generators
the model owns, spawned from ``seed``; save() stores their states with the weights and the
optimiser's, so fit after load_model() continues exactly as uninterrupted training would (pass
``initial_epoch=model.epoch`` to keep the epoch numbering).  Training: training.py; the data
path (masks, weights, NaN checks): data.py; files: saving.py.
"""

from __future__ import annotations

import inspect

import numpy as np

from .. import _dask, _device
from ..layers import _RNNBase
from . import pieces, saving, tape, utils
from .._checks import shape_str
from .pieces import Embedding, Layer, Recurrent
from .training import Trainer

__all__ = ["Model", "Sequential", "load_model"]


class Model(Trainer):
    """Subclass it: assign layers to attributes in ``__init__`` and define ``call(x,
    training=False)``; then compile/fit/evaluate/predict as in Keras."""

    def __init__(self, *args, name=None, seed=None, **kwargs):
        if args or kwargs:
            raise TypeError("Model(inputs, outputs) (the functional API) is not supported; subclass "
                            "Model, or use Sequential")
        object.__setattr__(self, "_tracked", [])
        self.name = tape.unique_name(type(self).__name__) if name is None else str(name)
        seed = utils.next_model_seed() if seed is None else seed
        self.seed = None if seed is None else int(seed)
        self._seeds = np.random.SeedSequence(seed)
        self.rng = np.random.default_rng(self._seeds.spawn(1)[0])
        self.metadata: dict = {}  # JSON-able extras saved with the model (e.g. a vocabulary)
        self._shapes: dict = {}
        self._tape = None
        self._init_training()

    def __setattr__(self, key, value):
        layers = [value] if isinstance(value, Layer) else \
            [v for v in value if isinstance(v, Layer)] if isinstance(value, (list, tuple)) else []
        if layers and "_tracked" not in self.__dict__:
            raise RuntimeError("call super().__init__() before assigning layers to a Model")
        for layer in layers:
            if not any(layer is t for t in self._tracked):
                self._adopt(layer)
                self._tracked.append(layer)
        object.__setattr__(self, key, value)

    def _adopt(self, layer):
        """Give the layer its generator from the model's seed (and its weights, with one)."""
        if isinstance(layer, _RNNBase):
            raise TypeError(f"wrap the {type(layer).__name__} in fusedrnn.Recurrent to put it in "
                            f"a model, or use fusedrnn.keras.layers.{type(layer).__name__}")
        layer.rng = np.random.default_rng(self._seeds.spawn(1)[0])
        if self.seed is not None and layer.built:
            layer.reset_parameters(layer.rng)

    @property
    def layers(self) -> list:
        return self._tracked

    def to(self, device):
        """Run the recurrent layers' kernels on ``device`` ('cpu' or 'cuda'), including those
        built later; returns self.  (The other layers and the optimiser run on the host.)"""
        device = _device.check_device(device)
        for layer in self.layers:
            while isinstance(getattr(layer, "inner", None), Layer):  # Bidirectional, TimeDistributed
                layer = layer.inner
            if isinstance(layer, Recurrent):
                if getattr(layer, "layer", None) is not None:
                    layer.layer.to(device)
                else:  # a Keras recurrent layer not built yet: its build() reads this
                    layer.device = device
        return self

    @property
    def dtype(self) -> np.dtype:
        for layer in self.layers:
            if layer.dtype is not None:
                return layer.dtype
        return np.dtype(np.float32)

    def _check_has_layers(self):
        if not self.layers:
            raise ValueError("the model has no layers; add some first")

    # --- forward / backward -----------------------------------------------------------------

    def call(self, x, training=False):
        raise NotImplementedError("subclass Model and define call(self, x, training=False)")

    def build(self, input_shape) -> None:
        """Build the layers by running call() once on zeros of this shape (None sizes as 1)."""
        shape = tuple(1 if s is None else int(s) for s in input_shape)
        self.forward(np.zeros(shape, self.dtype))

    def __call__(self, x, training=False, lengths=None):
        return self.forward(x, training, lengths)

    def forward(self, x, training=False, lengths=None):
        _dask.refuse("calling a model (use model.predict for dask input)", x=x)
        x = np.asarray(x)
        self._tape = tape.Tape(x, training, lengths)
        with self._tape:
            if "training" in inspect.signature(self.call).parameters:
                out = self.call(x, training=training)
            else:
                out = self.call(x)
        for layer, _, outs in self._tape.records:
            self._shapes[id(layer)] = (None,) + tuple(outs[0].shape[1:])
        if training:
            self._last_output = out
        else:
            self._tape = None
        return out

    _forward = forward

    def _backward(self, dy, from_logits):
        if self._tape is None:
            raise RuntimeError("backward needs a training forward first")
        recorded, self._tape = self._tape, None
        recorded.backward(self._last_output, dy)

    def _output_layer(self):
        return None

    def _takes_ids(self) -> bool:
        return bool(self.layers) and isinstance(self.layers[0], Embedding)

    def _mask_layer(self):
        for layer in self.layers:
            if hasattr(layer, "mask_of") and (not isinstance(layer, Embedding) or layer.mask_zero):
                return layer
        return None

    def _sequence_output(self) -> bool:
        """Whether the model's output keeps the time axis (its last recurrent layer returns it)."""
        for layer in reversed(self.layers):
            if isinstance(layer, Recurrent) or isinstance(getattr(layer, "inner", None), Recurrent):
                return layer.return_sequences
        return isinstance(self.layers[0], Embedding) if self.layers else False

    def _trainable(self, device: bool = False):
        """(key, parameter, gradient) triples of every layer, NumPy arrays; with device=True,
        the device arrays of the recurrent layers that run on CUDA (for an optimiser step that
        keeps them there)."""
        for i, layer in enumerate(self.layers):
            on_device = getattr(layer, "device_trainable", None) if device else None
            triples = on_device(f"{i}.") if on_device is not None else None
            if triples is not None:
                yield from triples
                continue
            for name, p in layer.params.items():
                yield f"{i}.{name}", p, layer.grads[name]

    def reset_states(self) -> None:
        """Forget the state carried by stateful recurrent layers."""
        for layer in self.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    @property
    def stateful(self) -> bool:
        return any(getattr(layer, "stateful", False) for layer in self.layers)

    # --- weights ----------------------------------------------------------------------------

    def get_weights(self) -> list:
        """Copies of every weight, layer by layer, each layer in Keras' layout and order."""
        saving.check_built(self, "reading its weights")
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights) -> None:
        """The inverse of get_weights (a Keras model's list works for the layers supported);
        everything is checked before anything changes."""
        saving.check_built(self, "setting its weights")
        weights = list(weights)
        counts = [len(layer.get_weights()) for layer in self.layers]
        if len(weights) != sum(counts):
            raise ValueError(f"expected {sum(counts)} arrays, got {len(weights)}")
        pairs, start = [], 0
        for i, (layer, n) in enumerate(zip(self.layers, counts)):
            pairs += layer.weight_assignments(weights[start:start + n], prefix=f"{i}.")
            start += n
        for target, value in pairs:
            np.copyto(target, value, casting="unsafe")
        pieces.weights_changed(self.layers)

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def summary(self, line_length=65, print_fn=print) -> None:
        """Keras 2's table: layer name (type), output shape (once known), parameter count."""
        cols = [int(line_length * p) for p in (0.45, 0.85, 1.0)]

        def rows(fields):
            # Keras' print_row: a leading space, each column cut to leave two spaces before
            # the next and padded out to its position; what was cut goes on the next line.
            left = [str(f) for f in fields]
            while any(left):
                line, start = " ", 0
                for i, end in enumerate(cols):
                    space = 2 if i < len(cols) - 1 else 0
                    cut = end - start - space
                    line += left[i][:cut] + " " * space
                    left[i] = left[i][cut:]
                    line += " " * (end - len(line))
                    start = end
                print_fn(line)

        print_fn(f'Model: "{self.name}"')
        print_fn("_" * line_length)
        rows(["Layer (type)", "Output Shape", "Param #"])
        print_fn("=" * line_length)
        for layer in self.layers:
            shape = self._shape_of(layer)
            rows([f"{layer.name} ({type(layer).__name__})",
                  "?" if shape is None else shape_str(shape), layer.count_params()])
            print_fn(" " * line_length)
        total = self.count_params()
        print_fn("=" * line_length)
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {total:,}")
        print_fn("Non-trainable params: 0")
        print_fn("_" * line_length)

    def _shape_of(self, layer):
        return self._shapes.get(id(layer))

    # --- files ------------------------------------------------------------------------------

    def save(self, filepath, overwrite=True, save_format=None) -> None:
        """Layers, weights, optimiser state, random state and epoch count in one file, written
        atomically; '.keras' and '.npz' names are used as given, '.h5' is refused."""
        saving.save_model(self, filepath, overwrite)

    def save_weights(self, filepath, overwrite=True) -> None:
        saving.save_weights(self, filepath, overwrite)

    def load_weights(self, filepath) -> None:
        saving.load_weights(self, filepath)


class Sequential(Model):
    """A linear stack of layers: the Keras layers (fusedrnn.keras.layers) and the torch-ordered
    pieces (fusedrnn.Dense(in, out), Dropout, Embedding, Recurrent)."""

    def __init__(self, layers=None, seed=None, name="sequential"):
        super().__init__(name=name, seed=seed)
        self._input_shape = None
        for layer in layers or []:
            self.add(layer)

    # --- building ---------------------------------------------------------------------------

    def add(self, layer) -> None:
        """Append a layer; with a seed, its weights are (re)initialised from the model's."""
        if isinstance(layer, _RNNBase):
            raise TypeError(f"wrap the {type(layer).__name__} in fusedrnn.Recurrent to put it in "
                            f"a model: Recurrent({type(layer).__name__}(...)) for the last valid "
                            "step, Recurrent(..., return_sequences=True) for every step; or use "
                            f"fusedrnn.keras.layers.{type(layer).__name__}")
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes fusedrnn.keras layers or fusedrnn.nn pieces, got "
                            f"{type(layer).__name__}")
        if self.layers and isinstance(layer, Embedding):
            raise ValueError("an Embedding takes token ids, so it can only be the first layer")
        if self.layers and hasattr(layer, "mask_of"):
            raise ValueError(f"{type(layer).__name__} must be the model's first layer (its mask "
                             "becomes the sequences' lengths)")
        if getattr(layer, "return_state", False):
            raise ValueError(f"{layer.name}: return_state gives several outputs, which a "
                             "Sequential cannot pass on; use it in a subclassed Model")
        dtypes = {l.dtype for l in self.layers + [layer] if l.dtype is not None}
        if len(dtypes) > 1:
            raise TypeError(f"every layer of a model must have one dtype, got {sorted(map(str, dtypes))}")
        if not self.layers and getattr(layer, "input_shape", None) is not None:
            self._input_shape = (None,) + tuple(layer.input_shape)
        self._adopt(layer)
        self._tracked.append(layer)
        if self._input_shape is not None:
            self.build(self._input_shape)

    def build(self, input_shape) -> None:
        """Build every layer for inputs of this shape ((None, T, F) with the batch axis)."""
        shape = tuple(input_shape)
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
                if self.seed is not None:
                    layer.reset_parameters(layer.rng)
            shape = layer.compute_output_shape(shape)
            self._shapes[id(layer)] = shape

    # --- forward / backward -----------------------------------------------------------------

    def forward(self, x, training=False, lengths=None):
        _dask.refuse("calling a model (use model.predict for dask input)", x=x)
        self._check_has_layers()
        if not all(layer.built for layer in self.layers):
            self.build((None,) + tuple(np.shape(x)[1:]))
        for layer in self.layers:
            x = layer.forward(x, training=training, lengths=lengths)
            self._shapes[id(layer)] = (None,) + tuple(x.shape[1:])
        return x

    _forward = forward

    def _backward(self, dy, from_logits: bool):
        # The gradient of the model's input is never used: backward stops at the first layer
        # with parameters, which computes no input gradient where it can.
        first = next((i for i, layer in enumerate(self.layers) if tape.has_params(layer)), 0)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if i == len(self.layers) - 1 and from_logits:
                dy = layer.backward_logits(dy)
            elif i == first:
                dy = layer.backward(dy, **tape.no_input_grad(layer))
            else:
                dy = layer.backward(dy)
            if dy is None or i <= first:
                break

    def _output_layer(self):
        last = self.layers[-1] if self.layers else None
        return last if hasattr(last, "logits") and hasattr(last, "activation") else None

    def _takes_ids(self) -> bool:
        first = self._first_layer()
        return isinstance(first, Embedding)

    def _first_layer(self):
        from .layers import InputLayer
        return next((l for l in self.layers if not isinstance(l, InputLayer)), None)

    def _mask_layer(self):
        first = self._first_layer()
        if first is None or not hasattr(first, "mask_of"):
            return None
        return None if isinstance(first, Embedding) and not first.mask_zero else first

    # --- files ------------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {"name": self.name, "seed": self.seed,
                "layers": [{"class": saving.file_class(l), "config": l.get_config()} for l in self.layers]}

    @classmethod
    def from_config(cls, config):
        layers = [saving.layer_class(l["class"]).from_config(l["config"]) for l in config["layers"]]
        # seed=None: the stored weights are loaded next, no reinitialisation wanted
        model = cls(layers, seed=None, name=config.get("name", "sequential"))
        model.seed = config.get("seed")
        return model

    @classmethod
    def load(cls, path):
        """A model rebuilt from save(): weights, compiled state and random state restored.
        A file that is not one is a ValueError naming it; nothing is allocated before the
        header and the stored arrays are found to agree."""
        return saving.load_model(path)


def load_model(filepath, custom_objects=None, compile=True):  # noqa: A002 (Keras' name)
    """A Sequential saved by save() ('.keras' or '.npz'); with compile=False, uncompiled."""
    if custom_objects:
        raise ValueError("custom_objects is not supported: only Sequential models are saved whole; "
                         "for a subclassed Model, rebuild it and call load_weights")
    model = saving.load_model(filepath)
    if not compile:
        model._init_training()
    return model

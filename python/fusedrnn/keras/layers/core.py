"""Keras' Input, Dense, Dropout, Embedding and Masking over the torch-ordered pieces."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..._checks import check_bool, check_int, float_dtype
from .. import pieces
from ..pieces import Layer, check_weight
from .base import Lazy, activation_of, as_dtype, keras_defaults_only

__all__ = ["Input", "InputLayer", "Dense", "Dropout", "Embedding", "Masking"]


class InputLayer(Layer):
    """Declares the model's input shape (without the batch axis); passes data through."""

    file_class = "keras.InputLayer"

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, *, input_shape=None):
        super().__init__()
        shape = input_shape if shape is None else shape
        if shape is None:
            raise ValueError("Input needs shape=, the shape of one sample, e.g. shape=(T, F)")
        self.input_shape = tuple(None if s is None else check_int(s, "shape") for s in shape)
        self.name = name

    def get_config(self) -> dict:
        return {"shape": list(self.input_shape), "name": self.name}

    def forward(self, x, training=False, lengths=None):
        return x

    def backward(self, dy):
        return dy


def Input(shape=None, batch_size=None, dtype=None, name=None):  # noqa: N802 (Keras' name)
    """Keras' Input, for Sequential([Input(shape=(T, F)), ...]); the functional API
    (Model(inputs, outputs)) is not supported: subclass Model instead."""
    return InputLayer(shape, batch_size, dtype, name)


class Dense(Lazy, pieces.Dense):
    """Keras' Dense(units, activation=None, use_bias=True); ``params['weight']`` is kept as
    torch's (units, in) and shown to Keras as kernel (in, units)."""

    file_class = "keras.Dense"

    def __init__(self, units, activation=None, use_bias=True, *, input_shape=None, input_dim=None,
                 name=None, dtype="float32", **keras_args):
        Layer.__init__(self)
        keras_defaults_only("Dense", keras_args)
        self.units = check_int(units, "units")
        self.activation = activation_of(activation, pieces.ACTIVATIONS, "Dense")
        self.use_bias = check_bool(use_bias, "use_bias")
        self.dtype = float_dtype(dtype)
        self.name = name
        self.rng = np.random.default_rng()
        self.built = False
        self._build_from_arg(input_shape, input_dim)

    def build(self, input_shape) -> None:
        rng, name = self.rng, self._name
        pieces.Dense.__init__(self, input_shape[-1], self.units, self.activation, self.use_bias,
                              dtype=self.dtype)
        self.rng, self._name, self.built = rng, name, True
        self.reset_parameters()

    def forward(self, x, training=False, lengths=None):
        self._ensure_built(x)
        return pieces.Dense.forward(self, as_dtype(x, self.dtype), training, lengths)

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)[:-1] + (self.units,)

    def get_weights(self) -> list:
        return [p.T.copy() if k == "weight" else p.copy() for k, p in self.params.items()]

    def weight_assignments(self, weights, prefix="") -> list:
        if len(weights) != len(self.params):
            raise ValueError(f"{self.name} takes {len(self.params)} arrays, got {len(weights)}")
        kernel = check_weight(weights[0], (self.in_features, self.units), prefix + "kernel")
        return pieces.Layer.weight_assignments(self, [kernel.T] + list(weights[1:]), prefix)

    def get_config(self) -> dict:
        cfg = {"units": self.units, "activation": self.activation, "use_bias": self.use_bias,
               "name": self.name, "dtype": self.dtype.name}
        if self.built:
            cfg["input_dim"] = self.in_features
        return cfg

    @classmethod
    def param_shapes(cls, config):
        n_in = check_int(config["input_dim"], "input_dim")
        n_out = check_int(config["units"], "units")
        yield "weight", (n_out, n_in)
        if config.get("use_bias", True):
            yield "bias", (n_out,)


class Dropout(pieces.Dropout):
    """Keras' Dropout(rate): inverted dropout, identity at inference."""

    file_class = "keras.Dropout"

    def __init__(self, rate, noise_shape=None, seed=None, *, name=None):
        if noise_shape is not None:
            raise ValueError("Dropout: noise_shape is not supported")
        super().__init__(rate)
        self.rng = np.random.default_rng(seed)
        self.name = name

    def get_config(self) -> dict:
        return {"rate": self.rate, "name": self.name}


class Embedding(Lazy, pieces.Embedding):
    """Keras' Embedding(input_dim, output_dim, mask_zero=False): ids (N, T) -> (N, T, output_dim).
    With mask_zero, id 0 is padding: the model turns it into sequence lengths."""

    file_class = "keras.Embedding"

    def __init__(self, input_dim, output_dim, mask_zero=False, input_length=None, *,
                 input_shape=None, name=None, dtype="float32", **keras_args):
        keras_defaults_only("Embedding", keras_args)
        super().__init__(input_dim, output_dim, dtype=dtype)
        self.mask_zero = check_bool(mask_zero, "mask_zero")
        self.input_shape = (input_length,) if input_length is not None else \
            (None if input_shape is None else tuple(input_shape))
        self.name = name

    def mask_of(self, x):
        """(N, T) bool: the steps that hold data, or None when this layer masks nothing."""
        return np.asarray(x) != 0 if self.mask_zero else None

    def get_config(self) -> dict:
        return {"input_dim": self.num_embeddings, "output_dim": self.embedding_dim,
                "mask_zero": self.mask_zero, "name": self.name, "dtype": self.dtype.name}

    @classmethod
    def param_shapes(cls, config):
        yield "weight", (check_int(config["input_dim"], "input_dim"),
                         check_int(config["output_dim"], "output_dim"))


class Masking(Layer):
    """Keras' Masking(mask_value=0.0): a step whose features all equal mask_value is padding;
    the model turns the mask into sequence lengths (so this layer must come first)."""

    file_class = "keras.Masking"

    def __init__(self, mask_value=0.0, *, input_shape=None, name=None):
        super().__init__()
        if isinstance(mask_value, bool) or not isinstance(mask_value, numbers.Real) \
                or math.isnan(mask_value):
            raise ValueError(f"mask_value must be a number (not NaN), got {mask_value!r}")
        self.mask_value = float(mask_value)
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.name = name

    def mask_of(self, x):
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"Masking needs input of shape (N, T, F), got {x.shape}")
        return np.any(x != self.mask_value, axis=-1)

    def get_config(self) -> dict:
        return {"mask_value": self.mask_value, "name": self.name}

    def forward(self, x, training=False, lengths=None):
        return x

    def backward(self, dy):
        return dy

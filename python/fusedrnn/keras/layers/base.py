"""What every Keras-argument layer shares: Keras' default arguments (anything else is refused by
name), input_shape handling, activation names, and building on first use."""

from __future__ import annotations

import numbers

import numpy as np

from ..._checks import check_int

__all__ = ["keras_defaults_only", "input_shape_of", "activation_of", "as_dtype", "Lazy"]

# Keras arguments accepted at their default value only (anything else is refused by name).
_DEFAULTS = {
    "kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal",
    "bias_initializer": "zeros", "embeddings_initializer": "uniform",
    "kernel_regularizer": None, "recurrent_regularizer": None, "bias_regularizer": None,
    "activity_regularizer": None, "embeddings_regularizer": None, "kernel_constraint": None,
    "recurrent_constraint": None, "bias_constraint": None, "embeddings_constraint": None,
    "unroll": False, "time_major": False, "trainable": True, "batch_input_shape": None,
}


def keras_defaults_only(layer: str, kwargs: dict) -> None:
    for key, value in kwargs.items():
        if key not in _DEFAULTS:
            raise TypeError(f"{layer}() got an unexpected keyword argument {key!r}")
        if value != _DEFAULTS[key]:
            raise ValueError(f"{layer}: {key}={value!r} is not supported (only Keras' default, "
                             f"{_DEFAULTS[key]!r})")


def input_shape_of(input_shape, input_dim):
    """Keras' input_shape (without the batch axis) as a tuple, or None."""
    if input_dim is not None:
        input_shape = (check_int(input_dim, "input_dim"),)
    if input_shape is None:
        return None
    if isinstance(input_shape, numbers.Integral):
        input_shape = (input_shape,)
    shape = tuple(None if s is None else check_int(s, "input_shape") for s in input_shape)
    if not shape or shape[-1] is None:
        raise ValueError(f"input_shape needs a known last (feature) axis, got {input_shape!r}")
    return shape


def activation_of(value, allowed, layer):
    if value is None or value == "linear":
        value = None if "linear" not in allowed else "linear"
    if value not in allowed:
        raise ValueError(f"{layer}: activation {value!r} is not supported; choose from "
                         f"{[a for a in allowed if a is not None]}")
    return value


def as_dtype(x, dtype):
    """Numbers in the layer's dtype, as Keras casts inputs to a layer's compute dtype (ids and
    other kinds are left for the layer to refuse)."""
    x = np.asarray(x)
    return x.astype(dtype) if x.dtype != dtype and x.dtype.kind in "fiub" else x


class Lazy:
    """Mixin: build from input_shape now, or from the first batch's shape."""

    input_shape = None

    def _build_from_arg(self, input_shape, input_dim):
        self.input_shape = input_shape_of(input_shape, input_dim)
        if self.input_shape is not None:
            self.build((None,) + self.input_shape)

    def _ensure_built(self, x):
        if not self.built:
            self.build((None,) + tuple(np.shape(x)[1:]))

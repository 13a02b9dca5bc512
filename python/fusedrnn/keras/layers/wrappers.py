"""Keras' Bidirectional and TimeDistributed: thin wrappers that hand everything to the layer
they hold."""

from __future__ import annotations

from .. import pieces
from ..pieces import Layer
from .recurrent import _KerasRNN

__all__ = ["Bidirectional", "TimeDistributed"]


class _Wrapper(Layer):
    """Delegates everything to ``self.inner``."""

    def __getattr__(self, name):
        if name in ("inner", "__setstate__", "__getstate__") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    params = property(lambda self: self.inner.params)
    grads = property(lambda self: self.inner.grads)
    dtype = property(lambda self: self.inner.dtype)
    built = property(lambda self: self.inner.built)

    @property
    def rng(self):
        return self.inner.rng

    @rng.setter
    def rng(self, generator):
        self.inner.rng = generator

    def __init__(self, inner, name):
        self.inner = inner
        self.name = name

    def build(self, input_shape):
        self.inner.build(input_shape)

    def forward(self, x, training=False, lengths=None):
        return self.inner.forward(x, training, lengths)

    def backward(self, dy):
        return self.inner.backward(dy)

    def zero_grad(self):
        self.inner.zero_grad()

    def has_params(self):
        return self.inner.has_params()

    def reset_parameters(self, rng=None):
        self.inner.reset_parameters(rng)

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)

    def get_weights(self):
        return self.inner.get_weights()

    def weight_assignments(self, weights, prefix=""):
        return self.inner.weight_assignments(weights, prefix)

    def count_params(self):
        return self.inner.count_params()

    def get_config(self):
        return {"layer": {"class": self.inner.file_class, "config": self.inner.get_config()},
                "name": self.name}

    @classmethod
    def param_shapes(cls, config):
        return pieces.LAYER_CLASSES[config["layer"]["class"]].param_shapes(config["layer"]["config"])


class Bidirectional(_Wrapper):
    """Keras' Bidirectional(LSTM/GRU/SimpleRNN(...), merge_mode='concat'): forward and backward
    outputs side by side; get_weights lists the forward layer's weights, then the backward's."""

    file_class = "keras.Bidirectional"

    def __init__(self, layer, merge_mode="concat", backward_layer=None, *, input_shape=None,
                 name=None):
        if not isinstance(layer, _KerasRNN):
            raise TypeError(f"Bidirectional wraps a fusedrnn.keras LSTM, GRU or SimpleRNN, got "
                            f"{type(layer).__name__}")
        if merge_mode != "concat":
            raise ValueError(f"Bidirectional: merge_mode={merge_mode!r} is not supported, only 'concat'")
        if backward_layer is not None:
            raise ValueError("Bidirectional: backward_layer is not supported (the backward "
                             "direction is a copy of the layer)")
        if layer.go_backwards or layer.stateful or layer.return_state:
            raise ValueError("Bidirectional: a wrapped layer with go_backwards, stateful or "
                             "return_state is not supported")
        cfg = layer.get_config()
        cfg.pop("name")
        if input_shape is not None:
            cfg["input_shape"] = input_shape
        elif layer.input_shape is not None:
            cfg["input_shape"] = layer.input_shape
        inner = type(layer).__new__(type(layer))
        inner._bidirectional = True
        type(layer).__init__(inner, **cfg)
        super().__init__(inner, name)
        self.input_shape = cfg.get("input_shape")

    skips_input_grad = True  # as the layer it wraps (pieces.Recurrent)

    def backward(self, dy, need_dx=True):
        return self.inner.backward(dy, need_dx)

    @classmethod
    def from_config(cls, config):
        inner = pieces.LAYER_CLASSES[config["layer"]["class"]]
        cfg = dict(config["layer"]["config"])
        dim = cfg.pop("input_dim", None)
        return cls(inner(**cfg), input_shape=None if dim is None else (None, dim),
                   name=config.get("name"))

    @classmethod
    def param_shapes(cls, config):
        inner = config["layer"]
        return pieces.LAYER_CLASSES[inner["class"]]._shapes(inner["config"], 2)


class TimeDistributed(_Wrapper):
    """Keras' TimeDistributed(Dense(...)) (or Dropout): the layer applied at every step.  The
    pieces here already act on the last axis, so this only names the intent."""

    file_class = "keras.TimeDistributed"

    def __init__(self, layer, *, input_shape=None, name=None):
        if not isinstance(layer, (pieces.Dense, pieces.Dropout)):
            raise TypeError(f"TimeDistributed wraps a Dense or Dropout, got {type(layer).__name__}")
        super().__init__(layer, name)
        self.input_shape = None if input_shape is None else tuple(input_shape)

    @classmethod
    def from_config(cls, config):
        inner = config["layer"]
        return cls(pieces.LAYER_CLASSES[inner["class"]].from_config(inner["config"]),
                   name=config.get("name"))

    def backward_logits(self, dz):
        return self.inner.backward_logits(dz)

    def logits(self):
        return self.inner.logits()

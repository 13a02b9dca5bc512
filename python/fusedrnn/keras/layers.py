"""Keras' layers, with Keras' arguments, over the same pieces and kernels as the rest of the
trainer.

    LSTM(128, input_shape=(T, F)), LSTM(units=64, return_sequences=True), GRU(32),
    SimpleRNN(16, activation='relu'), Bidirectional(LSTM(32)), Dense(10, activation='softmax'),
    Dropout(0.5), Embedding(vocab, 64, mask_zero=True), Masking(0.0),
    TimeDistributed(Dense(1)), Input(shape=(T, F))

Sizes are inferred when the layer first sees data (or from ``input_shape``), as in Keras.
``get_weights`` returns Keras' layout (Dense kernel (in, out); recurrent kernel (I, G*H),
recurrent_kernel (H, G*H), bias as Keras keeps it), so ``set_weights`` takes the list a Keras
layer's ``get_weights()`` gave; internally the weights are torch's (docs/conventions.md) and
keras_import converts.  An LSTM or SimpleRNN has one bias, as in Keras (the kernels' second
bias stays zero and is not trained), so parameter counts equal Keras'.

Masks: Masking and Embedding(mask_zero=True) must be the model's first layer; the model turns
their mask into per-sequence lengths for the kernels (right- or left-padded sequences; a mask
with holes inside a sequence is refused).  Past a sequence's end, sequence outputs are zero.

What the kernels cannot do is refused when the layer is built: recurrent_activation other
than 'sigmoid', recurrent_dropout > 0, GRU(reset_after=False), activations other than
tanh/relu for LSTM/SimpleRNN and tanh for GRU, go_backwards with a mask, merge modes other
than 'concat', and initializers/regularizers/constraints other than Keras' defaults.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._checks import GATES, check_bool, check_int, float_dtype
from ..keras_import import from_keras_weights, to_keras_weights
from ..layers import GRU as _TorchGRU
from ..layers import LSTM as _TorchLSTM
from ..layers import RNN as _TorchRNN
from ..layers import _shapes as _torch_shapes
from . import pieces
from .pieces import Layer, check_weight

__all__ = ["Input", "InputLayer", "Dense", "Dropout", "Embedding", "Masking", "LSTM", "GRU",
           "SimpleRNN", "Bidirectional", "TimeDistributed"]

# Keras arguments accepted at their default value only (anything else is refused by name).
_DEFAULTS = {
    "kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal",
    "bias_initializer": "zeros", "embeddings_initializer": "uniform",
    "kernel_regularizer": None, "recurrent_regularizer": None, "bias_regularizer": None,
    "activity_regularizer": None, "embeddings_regularizer": None, "kernel_constraint": None,
    "recurrent_constraint": None, "bias_constraint": None, "embeddings_constraint": None,
    "unroll": False, "time_major": False, "trainable": True, "batch_input_shape": None,
}


def _keras_defaults_only(layer: str, kwargs: dict) -> None:
    for key, value in kwargs.items():
        if key not in _DEFAULTS:
            raise TypeError(f"{layer}() got an unexpected keyword argument {key!r}")
        if value != _DEFAULTS[key]:
            raise ValueError(f"{layer}: {key}={value!r} is not supported (only Keras' default, "
                             f"{_DEFAULTS[key]!r})")


def _input_shape(input_shape, input_dim):
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


def _activation(value, allowed, layer):
    if value is None or value == "linear":
        value = None if "linear" not in allowed else "linear"
    if value not in allowed:
        raise ValueError(f"{layer}: activation {value!r} is not supported; choose from "
                         f"{[a for a in allowed if a is not None]}")
    return value


def _as_dtype(x, dtype):
    """Numbers in the layer's dtype, as Keras casts inputs to a layer's compute dtype (ids and
    other kinds are left for the layer to refuse)."""
    x = np.asarray(x)
    return x.astype(dtype) if x.dtype != dtype and x.dtype.kind in "fiub" else x


class _Lazy:
    """Mixin: build from input_shape now, or from the first batch's shape."""

    input_shape = None

    def _build_from_arg(self, input_shape, input_dim):
        self.input_shape = _input_shape(input_shape, input_dim)
        if self.input_shape is not None:
            self.build((None,) + self.input_shape)

    def _ensure_built(self, x):
        if not self.built:
            self.build((None,) + tuple(np.shape(x)[1:]))


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


class Dense(_Lazy, pieces.Dense):
    """Keras' Dense(units, activation=None, use_bias=True); ``params['weight']`` is kept as
    torch's (units, in) and shown to Keras as kernel (in, units)."""

    file_class = "keras.Dense"

    def __init__(self, units, activation=None, use_bias=True, *, input_shape=None, input_dim=None,
                 name=None, dtype="float32", **keras_args):
        Layer.__init__(self)
        _keras_defaults_only("Dense", keras_args)
        self.units = check_int(units, "units")
        self.activation = _activation(activation, pieces.ACTIVATIONS, "Dense")
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
        return pieces.Dense.forward(self, _as_dtype(x, self.dtype), training, lengths)

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


class Embedding(_Lazy, pieces.Embedding):
    """Keras' Embedding(input_dim, output_dim, mask_zero=False): ids (N, T) -> (N, T, output_dim).
    With mask_zero, id 0 is padding: the model turns it into sequence lengths."""

    file_class = "keras.Embedding"

    def __init__(self, input_dim, output_dim, mask_zero=False, input_length=None, *,
                 input_shape=None, name=None, dtype="float32", **keras_args):
        _keras_defaults_only("Embedding", keras_args)
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


# --- recurrent layers -------------------------------------------------------------------------

def _orthogonal(rng, rows, cols):
    """Keras' Orthogonal initializer for a (rows, cols) matrix."""
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # a unique, uniformly distributed Q
    return q if rows >= cols else q.T


class _KerasRNN(_Lazy, pieces.Recurrent):
    """Shared by LSTM, GRU and SimpleRNN; the built torch-shaped layer is ``self.layer``."""

    _cell = ""
    _torch = None
    _activations = ("tanh", "relu")
    _bidirectional = False  # Bidirectional builds a copy with it set

    def __init__(self, units, activation="tanh", use_bias=True, return_sequences=False,
                 return_state=False, go_backwards=False, stateful=False, dropout=0.0,
                 recurrent_dropout=0.0, *, input_shape=None, input_dim=None, name=None,
                 dtype="float32", **keras_args):
        Layer.__init__(self)
        kind = type(self).__name__
        self._options = self._cell_options(keras_args)
        _keras_defaults_only(kind, keras_args)
        self.units = check_int(units, "units")
        self.activation = _activation(activation, self._activations, kind)
        self.use_bias = check_bool(use_bias, "use_bias")
        self.return_sequences = check_bool(return_sequences, "return_sequences")
        self.return_state = check_bool(return_state, "return_state")
        self.go_backwards = check_bool(go_backwards, "go_backwards")
        self.stateful = check_bool(stateful, "stateful")
        self.input_dropout = _rate(dropout, "dropout")
        if _rate(recurrent_dropout, "recurrent_dropout"):
            raise ValueError(f"{kind}: recurrent_dropout is not supported (the fused kernels apply "
                             "no mask inside the time loop); use dropout= on the inputs, or "
                             "Dropout layers")
        self.dtype = float_dtype(dtype)
        self.name = name
        self._pending_rng = np.random.default_rng()
        self.built = False
        self._state = None
        self._trace = None
        self._drop_mask = None
        if input_dim is not None:  # a recurrent layer's input_dim is its feature count
            input_shape, input_dim = (None, check_int(input_dim, "input_dim")), None
        self._build_from_arg(input_shape, input_dim)

    def _cell_options(self, kwargs) -> dict:
        return {}

    @property
    def rng(self):
        return self.layer.rng if self.built else self._pending_rng

    @rng.setter
    def rng(self, generator):
        if self.built:
            self.layer.rng = generator
        else:
            self._pending_rng = generator

    def _torch_layer(self, input_size):
        act = {"activation": self.activation} if self._cell == "lstm" else \
            {"nonlinearity": self.activation} if self._cell == "rnn" else {}
        return self._torch(input_size, self.units, bias=self.use_bias, batch_first=True,
                           bidirectional=self._bidirectional, dtype=self.dtype, **act)

    def build(self, input_shape) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} needs input of shape (N, T, features), got "
                             f"{tuple(input_shape)}")
        rng = self.rng
        inner = self._torch_layer(int(input_shape[-1]))
        inner.rng = rng
        pieces.Recurrent.__init__(self, inner, self.return_sequences, self.stateful)
        # One bias per layer, as Keras: the kernels' recurrent bias stays zero, untrained.
        self.params = {k: v for k, v in inner.params.items() if self._trained(k)}
        self.grads = {k: inner.grads[k] for k in self.params}
        self.built = True
        self.reset_parameters()

    def reset_parameters(self, rng=None) -> None:
        """Keras' initialisation: glorot-uniform kernel, orthogonal recurrent kernel, zero
        bias (a forget-gate bias of 1 for an LSTM with unit_forget_bias)."""
        if rng is not None:
            self.rng = rng
        if not self.built:
            return
        rng = self.rng
        G, H, inner = GATES[self._cell], self.units, self.layer
        weights = []
        for _ in range(inner.num_directions):
            I = inner.input_size
            limit = math.sqrt(6.0 / (I + G * H))
            weights.append(rng.uniform(-limit, limit, (I, G * H)))
            weights.append(_orthogonal(rng, H, G * H))
            if self.use_bias:
                weights.append(self._initial_bias(H))
        self.set_weights(weights)

    def _initial_bias(self, H):
        return np.zeros(H)

    # Keras' view of the weights, one direction after the other.

    def _direction_keys(self):
        for d in range(self.layer.num_directions):
            sfx = "_l0" + ("_reverse" if d else "")
            keys = ["weight_ih" + sfx, "weight_hh" + sfx]
            if self.use_bias:
                keys += ["bias_ih" + sfx, "bias_hh" + sfx]
            yield keys

    def _keras_shapes(self):
        H, G, I = self.units, GATES[self._cell], self.layer.input_size
        shapes = [(I, G * H), (H, G * H)]
        if self.use_bias:
            shapes.append((2, G * H) if self._cell == "gru" else (G * H,))
        return shapes

    def get_weights(self) -> list:
        out = []
        for keys in self._direction_keys():
            out += to_keras_weights(self._cell, *(self.layer.params[k] for k in keys))
        return [w.astype(self.dtype) for w in out]

    def weight_assignments(self, weights, prefix="") -> list:
        shapes = self._keras_shapes()
        n = len(shapes)
        if len(weights) != n * self.layer.num_directions:
            raise ValueError(f"{self.name} takes {n * self.layer.num_directions} arrays (Keras' "
                             f"layout), got {len(weights)}")
        pairs = []
        for d, keys in enumerate(self._direction_keys()):
            part = [check_weight(w, s, f"{prefix}{d * n + j}") for j, (w, s) in
                    enumerate(zip(weights[d * n:(d + 1) * n], shapes))]
            torch = from_keras_weights(self._cell, *part)
            pairs += [(self.layer.params[k], torch[k.split("_l0")[0]]) for k in keys]
        return pairs

    def count_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def get_config(self) -> dict:
        cfg = {"units": self.units, "activation": self.activation, "use_bias": self.use_bias,
               "return_sequences": self.return_sequences, "return_state": self.return_state,
               "go_backwards": self.go_backwards, "stateful": self.stateful,
               "dropout": self.input_dropout, "name": self.name, "dtype": self.dtype.name}
        cfg.update(self._options)
        if self.built:
            cfg["input_dim"] = self.layer.input_size
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def param_shapes(cls, config):
        cfg = dict(config)
        return cls._shapes(cfg, 2 if cls._bidirectional else 1)

    @classmethod
    def _shapes(cls, config, directions):
        """(name, shape) of the parameters, computed without building anything."""
        I = check_int(config["input_dim"], "input_dim")
        H = check_int(config["units"], "units")
        return ((k, s) for k, s in _torch_shapes(cls._cell, I, H, 1, config.get("use_bias", True),
                                                 directions, 0) if cls._trained(k))

    @classmethod
    def _trained(cls, name) -> bool:
        """Whether a parameter of the torch-shaped layer is one of Keras' weights: all but the
        recurrent bias of an LSTM or SimpleRNN, which Keras does not have (it stays zero)."""
        return cls._cell == "gru" or not name.startswith("bias_hh")

    def __repr__(self) -> str:
        return Layer.__repr__(self)

    def compute_output_shape(self, input_shape) -> tuple:
        D = 2 if self._bidirectional else 1
        shape = tuple(input_shape)
        return shape[:2] + (D * self.units,) if self.return_sequences else (shape[0], D * self.units)

    # forward / backward: Keras' input dropout and go_backwards around the wrapped kernels.

    def forward(self, x, training=False, lengths=None):
        self._ensure_built(x)
        x = _as_dtype(x, self.dtype)
        if self.go_backwards:
            if lengths is not None:
                raise ValueError(f"{self.name}: go_backwards with a mask or lengths is not supported; "
                                 "use Bidirectional, or reverse the sequences yourself")
            x = x[:, ::-1]
        self._drop_mask = None
        if training and self.input_dropout > 0 and x.ndim == 3:
            # Keras drops the same input features at every step of a sequence.
            keep = self.rng.random((x.shape[0], 1, x.shape[2])) >= self.input_dropout
            self._drop_mask = keep.astype(x.dtype) / x.dtype.type(1 - self.input_dropout)
            x = x * self._drop_mask
        out = pieces.Recurrent.forward(self, np.ascontiguousarray(x), training, lengths)
        if not self.return_state:
            return out
        h_n = self._state_after
        states = [np.ascontiguousarray(s[d]) for d in range(self.layer.num_directions) for s in h_n]
        return [out] + states

    def _carry(self, h_n, c_n):
        self._state_after = (h_n,) if c_n is None else (h_n, c_n)
        super()._carry(h_n, c_n)

    def backward(self, dy):
        return self.backward_outputs([dy])

    def backward_outputs(self, grads):
        """Backward from the gradients of [output, *states] (None for an unused one)."""
        n_states = len(self._state_after)
        dstate = [None] * n_states
        for i, g in enumerate(grads[1:]):
            if g is not None:
                d, s = divmod(i, n_states)
                if dstate[s] is None:
                    dstate[s] = np.zeros(self._state_after[s].shape, self.dtype)
                dstate[s][d] += g
        dx = self._backward(grads[0], *dstate)
        if self._drop_mask is not None:
            dx = dx * self._drop_mask
        if self.go_backwards:
            dx = dx[:, ::-1]
        return dx


def _rate(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


class LSTM(_KerasRNN):
    """Keras' LSTM(units, activation='tanh', recurrent_activation='sigmoid', use_bias=True,
    unit_forget_bias=True, return_sequences, return_state, go_backwards, stateful, dropout)."""

    file_class = "keras.LSTM"
    _cell, _torch = "lstm", _TorchLSTM

    def _cell_options(self, kwargs):
        if kwargs.pop("recurrent_activation", "sigmoid") != "sigmoid":
            raise ValueError("LSTM: only recurrent_activation='sigmoid' is supported")
        return {"unit_forget_bias": check_bool(kwargs.pop("unit_forget_bias", True),
                                                     "unit_forget_bias")}

    def _initial_bias(self, H):
        b = np.zeros(4 * H)
        if self._options["unit_forget_bias"]:
            b[H:2 * H] = 1.0  # gates i, f, c, o: the forget gate starts open
        return b


class GRU(_KerasRNN):
    """Keras' GRU(units, activation='tanh', recurrent_activation='sigmoid', reset_after=True,
    ...): the reset gate applied after the recurrent matmul, as torch's GRU (the default since
    TF 2); reset_after=False is refused."""

    file_class = "keras.GRU"
    _cell, _torch = "gru", _TorchGRU
    _activations = ("tanh",)

    def _cell_options(self, kwargs):
        if kwargs.pop("recurrent_activation", "sigmoid") != "sigmoid":
            raise ValueError("GRU: only recurrent_activation='sigmoid' is supported")
        if not kwargs.pop("reset_after", True):
            raise ValueError("GRU: reset_after=False (the reset gate before the recurrent matmul) "
                             "is not supported; the kernels implement reset_after=True, Keras' "
                             "default")
        return {}

    def _initial_bias(self, H):
        return np.zeros((2, 3 * H))


class SimpleRNN(_KerasRNN):
    """Keras' SimpleRNN(units, activation='tanh' or 'relu', ...)."""

    file_class = "keras.SimpleRNN"
    _cell, _torch = "rnn", _TorchRNN


# --- wrappers ---------------------------------------------------------------------------------

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


for _cls in (InputLayer, Dense, Dropout, Embedding, Masking, LSTM, GRU, SimpleRNN, Bidirectional,
             TimeDistributed):
    pieces.LAYER_CLASSES[_cls.file_class] = _cls

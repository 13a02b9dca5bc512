"""The torch-ordered model pieces (fusedrnn.Dense(in, out), Dropout, Embedding, and Recurrent,
which puts an LSTM/GRU/RNN layer of fusedrnn.layers inside a model), and the Layer base that the
Keras-argument layers (layers.py) build on: they reuse these pieces' forward and backward.

Inside a model, data is batch-first, as in Keras: sequences are (B, T, F), token ids (B, T).

Every piece speaks the same small protocol, the one fusedrnn.layers already uses:

    params, grads     dicts of arrays under the same keys; backward adds (+=) into grads
    forward(x, training=False, lengths=None) -> y
    backward(dy) -> dx          after a training forward (dx is None below an Embedding)
    zero_grad(), get_config() / from_config(), reset_parameters(rng)
    get_weights() / set_weights()   Keras' layout (here: ``params`` in order)
    name, build(input_shape), built, compute_output_shape(shape), count_params()
    rng               the np.random.Generator the piece draws from (dropout masks, init);
                      Sequential hands each piece its own, spawned from the model's seed

``lengths`` (B,) marks each sequence's valid steps in a right-padded batch; only Recurrent
uses it.  Derivatives are noted where they are used.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..layers import GRU, LSTM, RNN, _RNNBase
from .._checks import check_bool, check_int, float_dtype, shape_str
from ..ops import _native
from . import tape

__all__ = ["Dense", "Dropout", "Embedding", "Recurrent", "ACTIVATIONS"]

ACTIVATIONS = (None, "linear", "relu", "tanh", "sigmoid", "softmax")


def check_weight(w, shape, name):
    """A weight array given to set_weights: floating point (a cast would drop an imaginary
    part or read ids as weights without a word) and of the parameter's shape."""
    w = np.asarray(w)
    if w.dtype.kind != "f":
        raise TypeError(f"weight {name} must be a float array, got dtype {w.dtype}")
    if w.shape != tuple(shape):
        raise ValueError(f"weight {name} must have shape {shape_str(shape)}, got {shape_str(w.shape)}")
    return w


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Layer:
    """Base of the model pieces: no parameters, identity config."""

    dtype = None  # float pieces set it; Sequential checks they agree
    built = True  # pieces sized at construction; the Keras layers build on first use
    _name = None

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}

    @property
    def name(self) -> str:
        """Keras' naming: the class in snake case, numbered from the second one on."""
        if self._name is None:
            self._name = tape.unique_name(type(self).__name__)
        return self._name

    @name.setter
    def name(self, value) -> None:
        self._name = None if value is None else str(value)

    def build(self, input_shape) -> None:
        pass

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)

    def count_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def has_params(self) -> bool:
        """Whether the layer has parameters (asked each step: a layer whose arrays live on a
        device answers without reading them back)."""
        return bool(self.params)

    def get_weights(self) -> list:
        """Copies of the parameters, in the layout Keras' layer of the same kind uses (the
        torch-named pieces: their ``params`` in order)."""
        return [p.copy() for p in self.params.values()]

    def weight_assignments(self, weights, prefix="") -> list:
        """(parameter array, value) pairs that set_weights(weights) would copy, every value
        checked first; ``weights`` is this layer's slice of a model's list."""
        keys = list(self.params)
        if len(weights) != len(keys):
            raise ValueError(f"{self.name} takes {len(keys)} arrays, got {len(weights)}")
        return [(self.params[k], check_weight(w, self.params[k].shape, prefix + k))
                for k, w in zip(keys, weights)]

    def set_weights(self, weights) -> None:
        for target, value in self.weight_assignments(list(weights)):
            np.copyto(target, value, casting="unsafe")
        weights_changed([self])

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def reset_parameters(self, rng=None) -> None:
        pass

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def param_shapes(cls, config):
        """(parameter name, shape) pairs of ``cls.from_config(config)``, without building it."""
        return iter(())

    def __call__(self, x, training=None, lengths=None, **kwargs):
        # Inside Model.call the tape supplies training/lengths and records the call.
        return tape.call(self, x, training, lengths, **kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def _need_trace(self, value):
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a training forward first "
                               "(forward(x, training=True))")
        return value


class Dense(Layer):
    """``y = act(x @ weight.T + bias)`` over the last axis (so a (B, T, in) sequence maps step by
    step to (B, T, out)).  ``weight`` is (out, in) as torch's Linear; initialised Glorot-uniform
    with a zero bias, as Keras' Dense.  activation: None/'linear', 'relu', 'tanh', 'sigmoid',
    'softmax' (over the last axis)."""

    def __init__(self, in_features, out_features, activation=None, bias=True, *,
                 dtype="float32", seed=None):
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = None if activation == "linear" else activation
        self.bias = check_bool(bias, "bias")
        self.dtype = float_dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.params = {"weight": np.empty((self.out_features, self.in_features), self.dtype)}
        if self.bias:
            self.params["bias"] = np.zeros(self.out_features, self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._trace = None
        self._z = None
        self.reset_parameters()

    def reset_parameters(self, rng=None) -> None:
        rng = self.rng if rng is None else rng
        limit = math.sqrt(6.0 / (self.in_features + self.out_features))
        self.params["weight"][...] = rng.uniform(-limit, limit, self.params["weight"].shape)
        if self.bias:
            self.params["bias"].fill(0)

    @classmethod
    def param_shapes(cls, config):
        n_in = check_int(config["in_features"], "in_features")
        n_out = check_int(config["out_features"], "out_features")
        shapes = {"weight": (n_out, n_in)}
        if check_bool(config.get("bias", True), "bias"):
            shapes["bias"] = (n_out,)
        return iter(shapes.items())

    def get_config(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    activation=self.activation, bias=self.bias, dtype=self.dtype.name)

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x)
        if not x.dtype.isnative:
            x = _native(x)
        if x.dtype != self.dtype:
            raise TypeError(f"Dense input must have dtype {self.dtype} (the layer's), got {x.dtype}")
        if x.ndim < 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"Dense({self.in_features}, {self.out_features}) needs input of shape "
                             f"(..., {self.in_features}), got {shape_str(x.shape)}")
        z = x @ self.params["weight"].T
        if self.bias:
            z += self.params["bias"]
        y = self._activate(z)
        self._z = z
        self._trace = (x, z, y) if training else None
        return y

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape)[:-1] + (self.out_features,)

    def logits(self):
        """The pre-activation of the last forward, training or not (a loss fused with the
        activation reads it)."""
        if self._z is None:
            raise RuntimeError("Dense.logits needs a forward first")
        return self._z

    def _activate(self, z):
        a = self.activation
        if a is None:
            return z
        if a == "relu":
            return np.maximum(z, 0)
        if a == "tanh":
            return np.tanh(z)
        if a == "sigmoid":
            return sigmoid(z)
        return softmax(z)

    def backward(self, dy):
        x, z, y = self._need_trace(self._trace)
        a = self.activation
        if a is None:
            dz = dy
        elif a == "relu":
            dz = dy * (z > 0)
        elif a == "tanh":
            dz = dy * (1 - y * y)  # d tanh = 1 - tanh^2
        elif a == "sigmoid":
            dz = dy * y * (1 - y)  # d sigmoid = s (1 - s)
        else:
            # softmax Jacobian-vector product: dz = y * (dy - <dy, y>)
            dz = y * (dy - np.sum(dy * y, axis=-1, keepdims=True))
        return self.backward_logits(dz)

    def backward_logits(self, dz):
        """Backward from the gradient of the pre-activation (a loss fused with the activation)."""
        x, _, _ = self._need_trace(self._trace)
        self._trace = None
        dz = np.asarray(dz, self.dtype)
        x2 = x.reshape(-1, self.in_features)
        dz2 = dz.reshape(-1, self.out_features)
        self.grads["weight"] += dz2.T @ x2
        if self.bias:
            self.grads["bias"] += dz2.sum(axis=0)
        return (dz2 @ self.params["weight"]).reshape(x.shape)


class Dropout(Layer):
    """Inverted dropout: in training each element is zeroed with probability ``rate`` and the
    survivors scaled by 1/(1 - rate); identity at inference."""

    def __init__(self, rate):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise ValueError(f"rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.rng = np.random.default_rng()
        self._mask = None

    def get_config(self) -> dict:
        return {"rate": self.rate}

    def forward(self, x, training=False, lengths=None):
        x = np.asarray(x)
        if not training or self.rate == 0:
            self._mask = 1.0 if training else None
            return x
        keep = self.rng.random(x.shape) >= self.rate
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self._mask

    def backward(self, dy):
        mask = self._need_trace(self._mask)
        self._mask = None
        return dy * mask


class Embedding(Layer):
    """Token ids (B, T) -> vectors (B, T, dim): row ``ids`` of ``weight`` (vocab, dim), initialised
    uniform(-0.05, 0.05) as Keras' Embedding.  Ids must lie in 0..vocab-1."""

    def __init__(self, num_embeddings, embedding_dim, *, dtype="float32", seed=None):
        super().__init__()
        self.num_embeddings = check_int(num_embeddings, "num_embeddings")
        self.embedding_dim = check_int(embedding_dim, "embedding_dim")
        self.dtype = float_dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.params = {"weight": np.empty((self.num_embeddings, self.embedding_dim), self.dtype)}
        self.grads = {"weight": np.zeros_like(self.params["weight"])}
        self._ids = None
        self.reset_parameters()

    def reset_parameters(self, rng=None) -> None:
        rng = self.rng if rng is None else rng
        self.params["weight"][...] = rng.uniform(-0.05, 0.05, self.params["weight"].shape)

    @classmethod
    def param_shapes(cls, config) -> dict:
        return iter([("weight", (check_int(config["num_embeddings"], "num_embeddings"),
                                 check_int(config["embedding_dim"], "embedding_dim")))])

    def get_config(self) -> dict:
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                    dtype=self.dtype.name)

    def forward(self, x, training=False, lengths=None):
        ids = np.asarray(x)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding input must be integer token ids, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise ValueError(f"Embedding ids must lie in 0..{self.num_embeddings - 1}, got values "
                             f"from {ids.min()} to {ids.max()}")
        self._ids = ids if training else None
        return self.params["weight"][ids]

    def compute_output_shape(self, input_shape) -> tuple:
        return tuple(input_shape) + (self.embedding_dim,)

    def backward(self, dy):
        ids = self._need_trace(self._ids)
        self._ids = None
        # Repeated ids accumulate: add.at, not fancy-index assignment.
        np.add.at(self.grads["weight"], ids.ravel(), np.asarray(dy).reshape(-1, self.embedding_dim))
        return None


_RECURRENT_CLASSES = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}


class Recurrent(Layer):
    """An LSTM/GRU/RNN layer (any number of layers, uni- or bidirectional) inside a model.

    Recurrent(LSTM(8, 128))                          -> (B, D*P), the last valid step
    Recurrent(GRU(12, 64), return_sequences=True)    -> (B, T, D*P), zeros past each length

    The last valid step of sequence b is its state after step lengths[b]-1 for the forward
    direction and after step 0 for the reverse one (torch's h_n of the top layer), so padding
    never reaches the output.  ``stateful=True`` carries the final state of each batch into the
    next (truncated backpropagation through time: gradients stop at the batch boundary); the
    model resets it at the start of every epoch, evaluate and predict, and when the batch size
    changes.  Model inputs are batch-first; the wrapped layer may be built either way.
    ``params`` and ``grads`` are the wrapped layer's own dicts (torch names)."""

    def __init__(self, layer, return_sequences=False, stateful=False):
        super().__init__()
        if not isinstance(layer, _RNNBase):
            raise TypeError(f"Recurrent wraps a fusedrnn LSTM, GRU or RNN, got {type(layer).__name__}")
        self.layer = layer
        self.return_sequences = check_bool(return_sequences, "return_sequences")
        self.stateful = check_bool(stateful, "stateful")
        self.dtype = layer.dtype
        self._keys = None  # every parameter of the layer (a Keras layer trains a subset)
        self._state = None
        self._trace = None

    # params and grads are read through the wrapped layer each time (on CUDA that brings the
    # device's values back to the host arrays); assigning a dict picks the keys to expose.
    _keys = None

    @property
    def params(self) -> dict:
        if "layer" not in self.__dict__:  # a Keras layer not built yet
            return {}
        p = self.layer.params
        return p if self._keys is None else {k: p[k] for k in self._keys}

    @params.setter
    def params(self, value) -> None:
        layer = self.__dict__.get("layer")
        self._keys = None if layer is None or value is layer.params else list(value)

    @property
    def grads(self) -> dict:
        if "layer" not in self.__dict__:
            return {}
        g = self.layer.grads
        return g if self._keys is None else {k: g[k] for k in self._keys}

    @grads.setter
    def grads(self, value) -> None:
        pass  # the keys of params

    def device_trainable(self, prefix: str):
        """(key, parameter, gradient) triples of device arrays when the layer runs on CUDA (an
        optimiser step on them stays on the device), else None."""
        if "layer" not in self.__dict__ or self.layer.device != "cuda":
            return None
        triples = self.layer.trainable()
        keep = None if self._keys is None else set(self._keys)
        return [(prefix + k, p, g) for k, p, g in triples if keep is None or k in keep]

    def zero_grad(self) -> None:
        if "layer" in self.__dict__:  # built
            self.layer.zero_grad()

    def has_params(self) -> bool:
        return "layer" in self.__dict__

    @property
    def rng(self):
        return self.layer.rng

    @rng.setter
    def rng(self, generator):
        self.layer.rng = generator

    @property
    def output_size(self) -> int:
        return self.layer.num_directions * (self.layer.proj_size or self.layer.hidden_size)

    def reset_parameters(self, rng=None) -> None:
        if rng is not None:
            self.rng = rng
        self.layer.reset_parameters()

    def reset_states(self) -> None:
        self._state = None

    def compute_output_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape)
        return shape[:2] + (self.output_size,) if self.return_sequences else (shape[0], self.output_size)

    def get_config(self) -> dict:
        return {"layer": {"class": type(self.layer).__name__, "config": self.layer.get_config()},
                "return_sequences": self.return_sequences, "stateful": self.stateful}

    @classmethod
    def from_config(cls, config):
        inner = config["layer"]
        layer = _RECURRENT_CLASSES[inner["class"]].from_config(inner["config"])
        return cls(layer, config.get("return_sequences", False), config.get("stateful", False))

    @classmethod
    def param_shapes(cls, config):
        inner = config["layer"]
        return _RECURRENT_CLASSES[inner["class"]].param_shapes(inner["config"])

    def __repr__(self) -> str:
        return (f"Recurrent({self.layer!r}, return_sequences={self.return_sequences}"
                + (", stateful=True)" if self.stateful else ")"))

    def forward(self, x, training=False, lengths=None):
        layer = self.layer
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"Recurrent input must be batch-first (B, T, features), "
                             f"got shape {shape_str(x.shape)}")
        B = x.shape[0]
        if not layer.batch_first:
            x = x.transpose(1, 0, 2)
        state = self._state if self.stateful and self._state is not None \
            and self._state[0].shape[1] == B else None
        layer.train(training)
        if isinstance(layer, LSTM):
            out, (h_n, c_n) = layer(x, state, lengths)
        else:
            out, h_n = layer(x, None if state is None else state[0], lengths)
            c_n = None
        self._carry(h_n, c_n)
        self._trace = (h_n.shape,) if training else None
        if self.return_sequences:
            return out if layer.batch_first else np.ascontiguousarray(out.transpose(1, 0, 2))
        D = layer.num_directions
        return np.ascontiguousarray(h_n[-D:].transpose(1, 0, 2)).reshape(B, -1)

    def _carry(self, h_n, c_n) -> None:
        """Keep the final state for the next batch (stateful layers)."""
        if self.stateful:
            self._state = (h_n, c_n) if c_n is not None else (h_n,)

    # backward(dy, need_dx=False) computes no input gradient and returns None (Sequential asks
    # for that where nothing before the layer has parameters).
    skips_input_grad = True

    def backward(self, dy, need_dx=True):
        return self._backward(dy, need_dx=need_dx)

    def _backward(self, dy, dh_top=None, dc_top=None, need_dx=True):
        """dy: gradient of the output; dh_top, dc_top: (D, B, P) gradients of the top layer's
        final states (a Keras layer's return_state outputs), or None.  need_dx=False: None."""
        (hshape,) = self._need_trace(self._trace)
        self._trace = None
        layer = self.layer
        D = layer.num_directions
        LD, B, P = hshape
        dh_n = dc_n = dout = None
        if dh_top is not None or (dy is not None and not self.return_sequences):
            dh_n = np.zeros(hshape, layer.dtype)
        if dy is not None and self.return_sequences:
            dout = dy if layer.batch_first else dy.transpose(1, 0, 2)
        elif dy is not None:
            dh_n[LD - D:] = np.asarray(dy, layer.dtype).reshape(B, D, P).transpose(1, 0, 2)
        if dh_top is not None:
            dh_n[LD - D:] += dh_top
        if dc_top is not None:
            dc_n = np.zeros((LD, B, layer.hidden_size), layer.dtype)
            dc_n[LD - D:] = dc_top
        if isinstance(layer, LSTM):
            dx, _ = layer.backward(dout, (dh_n, dc_n), need_dx=need_dx)
        else:
            dx, _ = layer.backward(dout, dh_n, need_dx=need_dx)
        if dx is None:
            return None
        return dx if layer.batch_first else dx.transpose(1, 0, 2)


LAYER_CLASSES = {c.__name__: c for c in (Dense, Dropout, Embedding, Recurrent)}


def weights_changed(layers) -> None:
    """Tell the wrapped recurrent layers that their arrays were written in place, so the copies
    they keep (packed for step(), or on the CUDA device) are made again."""
    for layer in layers:
        inner = getattr(layer, "layer", None)  # through wrappers (Bidirectional) to the layer
        while inner is not None and not hasattr(inner, "weights_changed"):
            inner = getattr(inner, "layer", None)
        if inner is not None:
            inner.weights_changed()

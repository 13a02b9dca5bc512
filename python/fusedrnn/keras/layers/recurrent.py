"""Keras' LSTM, GRU and SimpleRNN over the torch-shaped layers (``self.layer``), with Keras'
initialisation, weight layout (keras_import converts), input dropout, go_backwards and
return_state."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..._checks import GATES, check_bool, check_int, float_dtype
from ...keras_import import from_keras_weights, to_keras_weights
from ...layers import GRU as _TorchGRU
from ...layers import LSTM as _TorchLSTM
from ...layers import RNN as _TorchRNN
from ...layers import _shapes as _torch_shapes
from .. import pieces
from ..pieces import Layer, check_weight
from .base import Lazy, activation_of, as_dtype, keras_defaults_only

__all__ = ["LSTM", "GRU", "SimpleRNN"]


def _orthogonal(rng, rows, cols):
    """Keras' Orthogonal initializer for a (rows, cols) matrix."""
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # a unique, uniformly distributed Q
    return q if rows >= cols else q.T


class _KerasRNN(Lazy, pieces.Recurrent):
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
        keras_defaults_only(kind, keras_args)
        self.units = check_int(units, "units")
        self.activation = activation_of(activation, self._activations, kind)
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
        inner.to(getattr(self, "device", "cpu"))  # set by Model.to() before the build
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

    def _check_built(self, doing: str) -> None:
        if not self.built:
            raise ValueError(f"{self.name or type(self).__name__} is not built yet: give it "
                             f"input_shape=, or run it on data, before {doing}")

    def get_weights(self) -> list:
        self._check_built("reading its weights")
        out = []
        for keys in self._direction_keys():
            out += to_keras_weights(self._cell, *(self.layer.params[k] for k in keys))
        return [w.astype(self.dtype) for w in out]

    def weight_assignments(self, weights, prefix="") -> list:
        self._check_built("setting its weights")
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
        x = as_dtype(x, self.dtype)
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

    def backward(self, dy, need_dx=True):
        return self.backward_outputs([dy], need_dx)

    def backward_outputs(self, grads, need_dx=True):
        """Backward from the gradients of [output, *states] (None for an unused one); None
        with need_dx=False (no input gradient computed)."""
        n_states = len(self._state_after)
        dstate = [None] * n_states
        for i, g in enumerate(grads[1:]):
            if g is not None:
                d, s = divmod(i, n_states)
                if dstate[s] is None:
                    dstate[s] = np.zeros(self._state_after[s].shape, self.dtype)
                dstate[s][d] += g
        dx = self._backward(grads[0], *dstate, need_dx=need_dx)
        if dx is None:
            return None
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

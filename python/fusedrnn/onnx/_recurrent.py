"""ONNX LSTM, GRU and RNN nodes run on fusedrnn's kernels (fusedrnn.ops).

At load, ``RecurrentNode`` checks the node's attributes and constant inputs and converts W, R, B
once per direction into fusedrnn's (torch's) layout with ``_gates.from_onnx_direction``.  A call
then runs one fused forward per direction.

What maps onto the kernels: direction forward/reverse/bidirectional; activations Sigmoid/Tanh/Tanh
(LSTM; Sigmoid/Relu/Relu too), Sigmoid/Tanh (GRU), Tanh or Relu (RNN); GRU with
linear_before_reset=1; sequence_lens, initial_h, initial_c; layout 0 and 1 (by transposes).
Anything else (clip, input_forget=1, non-zero peepholes P, activation_alpha/beta, other
activations) is refused at load naming the node and the attribute.

sequence_lens follows ONNX Runtime: steps at and past a sequence's length give zero outputs; a
sequence of length 0 gives zero outputs and zero final states.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from .._checks import GATES, shape_str
from ._gates import from_onnx_direction

__all__ = ["RecurrentNode"]

# Default activations per direction, and the kernels' name for each accepted list.
_DEFAULT = {"lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh"), "rnn": ("tanh",)}
_ACCEPTED = {
    "lstm": {("sigmoid", "tanh", "tanh"): "tanh", ("sigmoid", "relu", "relu"): "relu"},
    "gru": {("sigmoid", "tanh"): "tanh"},
    "rnn": {("tanh",): "tanh", ("relu",): "relu"},
}
_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


class RecurrentNode:
    """One LSTM/GRU/RNN node, weights converted; called with the node's input values
    (X, W, R, B, sequence_lens, initial_h[, initial_c, P]) and returns (Y, Y_h[, Y_c])."""

    def __init__(self, op: str, attrs: dict, inputs: list, consts: dict, label: str):
        self.cell = cell = op.lower()
        self.label = label

        def fail(msg):
            raise ValueError(f"{label}: {msg}")

        direction = attrs.get("direction", "forward")
        if direction not in _DIRECTIONS:
            fail(f"direction must be forward, reverse or bidirectional, got {direction!r}")
        self.reverse = _DIRECTIONS[direction]
        nd = len(self.reverse)
        if attrs.get("clip") is not None:
            fail(f"attribute clip={attrs['clip']} is not supported (fusedrnn's cells do not clip)")
        if attrs.get("input_forget", 0):
            fail("attribute input_forget=1 (coupled input and forget gates) is not supported")
        for name in ("activation_alpha", "activation_beta"):
            if attrs.get(name):
                fail(f"attribute {name} is not supported (only Sigmoid, Tanh and Relu activations)")
        if cell == "gru" and attrs.get("linear_before_reset", 0) != 1:
            fail("attribute linear_before_reset=0 is not supported: fusedrnn's GRU (as torch's) "
                 "applies the reset gate after the recurrent matmul, which is "
                 "linear_before_reset=1")
        self.layout = attrs.get("layout", 0)
        if self.layout not in (0, 1):
            fail(f"attribute layout must be 0 or 1, got {self.layout}")
        self.activation = self._activations(attrs.get("activations"), nd, fail)

        def const(k, name):
            if len(inputs) <= k or not inputs[k]:
                return None
            if inputs[k] not in consts:
                fail(f"input {name} ({inputs[k]!r}) must be a constant (an initializer), "
                     "computed at load")
            return np.asarray(consts[inputs[k]])

        W, R, B = const(1, "W"), const(2, "R"), const(3, "B")
        if W is None or R is None:
            fail("inputs W and R are required")
        if W.dtype not in (np.float32, np.float64):
            fail(f"W has dtype {W.dtype}; fusedrnn runs float32 and float64")
        G = GATES[cell]
        if R.ndim != 3 or R.shape[0] != nd or R.shape[1] % G or R.shape[1] != G * R.shape[2]:
            fail(f"R must have shape (num_directions, {G}*H, H) with num_directions = {nd}, "
                 f"got {shape_str(R.shape)}")
        H = R.shape[2]
        if attrs.get("hidden_size", H) != H:
            fail(f"attribute hidden_size={attrs['hidden_size']} does not match R's shape "
                 f"{shape_str(R.shape)} (H = {H})")
        if W.ndim != 3 or W.shape[:2] != (nd, G * H):
            fail(f"W must have shape ({nd}, {G * H}, input_size), got {shape_str(W.shape)}")
        if B is not None and B.shape != (nd, 2 * G * H):
            fail(f"B must have shape ({nd}, {2 * G * H}), got {shape_str(B.shape)}")
        for arr, name in ((R, "R"), (B, "B")):
            if arr is not None and arr.dtype != W.dtype:
                fail(f"{name} has dtype {arr.dtype} but W has {W.dtype}")
        if cell == "lstm":
            P = const(7, "P")
            if P is not None and np.any(P != 0):
                fail("input P (peephole weights) holds non-zero values; peepholes are not supported")
        self.H, self.I, self.dtype = H, W.shape[2], W.dtype
        self.weights = []
        for d in range(nd):
            w = from_onnx_direction(cell, W[d], R[d], None if B is None else B[d])
            self.weights.append({k: np.ascontiguousarray(v) for k, v in w.items()})

    def _activations(self, acts, nd, fail):
        cell = self.cell
        n = len(_DEFAULT[cell])
        if acts is None:
            return [_ACCEPTED[cell][_DEFAULT[cell]]] * nd
        acts = [a.decode() if isinstance(a, bytes) else str(a) for a in acts]
        if len(acts) != n * nd:
            fail(f"attribute activations must list {n * nd} functions ({n} per direction), got {acts}")
        out = []
        for d in range(nd):
            key = tuple(a.lower() for a in acts[d * n:(d + 1) * n])
            if key not in _ACCEPTED[cell]:
                ok = " or ".join(str([a.capitalize() for a in k]) for k in _ACCEPTED[cell])
                fail(f"attribute activations={acts} is not supported; fusedrnn runs {ok} "
                     "per direction")
            out.append(_ACCEPTED[cell][key])
        return out

    def _state(self, value, name, T, B):
        if value is None:
            return None
        nd, H = len(self.reverse), self.H
        want = (nd, B, H) if self.layout == 0 else (B, nd, H)
        if value.shape != want:
            what = "(num_directions, batch, H)" if self.layout == 0 else "(batch, num_directions, H)"
            raise ValueError(f"{name} must have shape {what} = {shape_str(want)}, "
                             f"got {shape_str(value.shape)}")
        if value.dtype != self.dtype:
            raise ValueError(f"{name} has dtype {value.dtype} but the weights are {self.dtype}")
        return value if self.layout == 0 else value.transpose(1, 0, 2)

    def _lengths(self, value, T, B):
        if value is None:
            return None, None
        sl = np.asarray(value)
        if sl.dtype.kind not in "iu" or sl.shape != (B,):
            raise ValueError(f"sequence_lens must be integers of shape (batch,) = ({B},), "
                             f"got dtype {sl.dtype} shape {shape_str(sl.shape)}")
        if B and (sl.min() < 0 or sl.max() > T):
            raise ValueError(f"sequence_lens must lie in 0..T = 0..{T}, got values from "
                             f"{sl.min()} to {sl.max()}")
        empty = sl == 0
        if not empty.any():
            return (None if np.all(sl == T) else sl), None
        # the kernels take lengths >= 1: run empty sequences one step, then zero them
        return np.maximum(sl, 1), empty

    def __call__(self, X, W=None, R=None, B=None, seq_lens=None, h0=None, c0=None, P=None):
        if X.ndim != 3 or X.shape[2] != self.I:
            what = "(seq_length, batch, input_size)" if self.layout == 0 else \
                "(batch, seq_length, input_size)"
            raise ValueError(f"X must have shape {what} with input_size = {self.I}, "
                             f"got {shape_str(X.shape)}")
        if X.dtype != self.dtype:
            raise ValueError(f"X has dtype {X.dtype} but the weights are {self.dtype}")
        x = X if self.layout == 0 else X.transpose(1, 0, 2)
        T, Bn = x.shape[:2]
        h0 = self._state(h0, "initial_h", T, Bn)
        c0 = self._state(c0, "initial_c", T, Bn) if self.cell == "lstm" else None
        lengths, empty = self._lengths(seq_lens, T, Bn)
        nd, H = len(self.reverse), self.H
        Y = np.zeros((T, nd, Bn, H), self.dtype)
        Yh = np.zeros((nd, Bn, H), self.dtype)
        Yc = np.zeros((nd, Bn, H), self.dtype)
        if T and Bn:
            for d, (reverse, w) in enumerate(zip(self.reverse, self.weights)):
                args = (x, w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"],
                        None if h0 is None else h0[d])
                if self.cell == "lstm":
                    Y[:, d], Yh[d], Yc[d], _ = ops.lstm_forward(
                        *args, None if c0 is None else c0[d], lengths=lengths, reverse=reverse,
                        activation=self.activation[d])
                elif self.cell == "gru":
                    Y[:, d], Yh[d], _ = ops.gru_forward(*args, lengths=lengths, reverse=reverse)
                else:
                    Y[:, d], Yh[d], _ = ops.rnn_forward(*args, lengths=lengths, reverse=reverse,
                                                        nonlinearity=self.activation[d])
            if empty is not None:
                Y[:, :, empty] = 0
                Yh[:, empty] = 0
                Yc[:, empty] = 0
        elif T == 0 and Bn and h0 is not None:  # no step: the final states are the initial ones
            Yh[...] = h0
            if c0 is not None:
                Yc[...] = c0
        if self.layout == 1:
            Y, Yh, Yc = Y.transpose(2, 0, 1, 3), Yh.transpose(1, 0, 2), Yc.transpose(1, 0, 2)
        return (Y, Yh, Yc) if self.cell == "lstm" else (Y, Yh)

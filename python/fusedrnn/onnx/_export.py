"""fusedrnn models -> ONNX files.

    fusedrnn.onnx.export(lstm, "lstm.onnx")                        # fusedrnn.LSTM / GRU / RNN
    fusedrnn.onnx.export(lstm, "lstm.onnx", lengths=True, initial_state=True)
    fusedrnn.onnx.export(model, "model.onnx")                      # a fusedrnn.keras Sequential

A torch-shaped layer becomes one ONNX LSTM/GRU/RNN node per layer (both directions in one node),
with Transposes for batch_first and a Transpose + Reshape that turns ONNX's Y (T, D, B, H) into
torch's out (T, B, D*H).  The graph's inputs:

    input      (time, batch, I), or (batch, time, I) with batch_first
    h0, c0     (layers*D, batch, H)  with initial_state=True (c0 for an LSTM only)
    lengths    (batch,) int64        with lengths=True: ONNX's sequence_lens; outputs past each
                                     length are zeros and h_n/c_n are taken at each sequence's
                                     end, as fusedrnn's (and torch's packed sequences')

and its outputs ``output``, ``h_n`` and (LSTM) ``c_n`` in torch's shapes.  "batch" and
"time" are named dynamic axes.  Weights keep the layer's dtype (float32 or float64).

What ONNX's recurrent operators cannot express raises a ValueError naming it: an LSTM
projection (proj_size: the projected state feeds the recurrence inside the cell, which no
single ONNX LSTM node does).  Keras models: _export_keras.py.
"""

from __future__ import annotations

import os

import numpy as np

from .._files import write_atomic
from ..layers import _RNNBase
from ._gates import to_onnx_direction
from ._graph import ELEM_TYPE, Graph

__all__ = ["export", "DEFAULT_OPSET", "MIN_OPSET"]

DEFAULT_OPSET = 17
MIN_OPSET = 14  # LSTM/GRU/RNN-14: the version whose attributes the export writes

_OP = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
_ACT = {"tanh": "Tanh", "relu": "Relu"}


def _activations(layer: _RNNBase):
    """The node's activations attribute per direction, or None for ONNX's defaults."""
    act = layer._act
    if layer._cell == "lstm":
        # f (the gates), g (the candidate), h (the output): torch's LSTM is Sigmoid, Tanh, Tanh;
        # fusedrnn's activation='relu' replaces both tanh's.
        return None if act == "tanh" else ["Sigmoid", _ACT[act], _ACT[act]]
    if layer._cell == "rnn":
        return None if act == "tanh" else [_ACT[act]]
    return None  # GRU: Sigmoid, Tanh, ONNX's default and torch's


def check_expressible(layer: _RNNBase, what: str) -> None:
    """Raise a ValueError naming what of the layer ONNX cannot express."""
    if layer.proj_size:
        raise ValueError(f"{what}: proj_size={layer.proj_size} cannot be exported: an ONNX LSTM node "
                         "has no projection of the hidden state (the projected state feeds the "
                         "recurrence, so a MatMul after the node cannot stand in for it); export "
                         "an LSTM with proj_size=0")


def emit_stack(g: Graph, layer: _RNNBase, x: str, lengths: str | None = None,
               h0: str | None = None, c0: str | None = None, stem: str = "rnn"):
    """Nodes running every layer of `layer` on the time-major tensor x (T, B, I).

    lengths: int32 (B,) tensor name or None; h0/c0: (L*D, B, H) tensors or None.  Returns
    (out (T, B, D*H), h_n (L*D, B, H), c_n or None, top_h (D, B, H): the last layer's h_n)."""
    check_expressible(layer, type(layer).__name__)
    cell, D, H = layer._cell, layer.num_directions, layer.hidden_size
    p = layer.params
    hs, cs = [], []
    for lay in range(layer.num_layers):
        Ws, Rs, Bs = [], [], []
        for d in range(D):
            sfx = f"_l{lay}" + ("_reverse" if d else "")
            W, R, B = to_onnx_direction(cell, p["weight_ih" + sfx], p["weight_hh" + sfx],
                                        p.get("bias_ih" + sfx), p.get("bias_hh" + sfx))
            Ws.append(W)
            Rs.append(R)
            Bs.append(B)
        ins = [x, g.const(f"{stem}_W_l{lay}", np.stack(Ws)), g.const(f"{stem}_R_l{lay}", np.stack(Rs)),
               g.const(f"{stem}_B_l{lay}", np.stack(Bs)) if layer.bias else "",
               lengths or ""]
        rows = (lay * D, (lay + 1) * D)
        if h0 is not None:
            ins.append(g.slice(h0, *rows, axis=0, stem=f"{stem}_h0_l{lay}"))
        if c0 is not None:
            ins += [""] * (6 - len(ins)) + [g.slice(c0, *rows, axis=0, stem=f"{stem}_c0_l{lay}")]
        while ins and ins[-1] == "":
            ins.pop()
        attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
        acts = _activations(layer)
        if acts is not None:
            attrs["activations"] = acts * D
        if cell == "gru":
            attrs["linear_before_reset"] = 1  # torch's GRU: the reset gate after the matmul
        n_out = 3 if cell == "lstm" else 2
        outs = g.node(_OP[cell], ins, f"{stem}_l{lay}", n_out=n_out, **attrs)
        Y, Y_h = outs[0], outs[1]
        hs.append(Y_h)
        if cell == "lstm":
            cs.append(outs[2])
        # Y (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H)
        x = g.reshape(g.transpose(Y, (0, 2, 1, 3), f"{stem}_Yt_l{lay}"), (0, 0, -1), f"{stem}_out_l{lay}")
    h_n = hs[0] if len(hs) == 1 else g.node("Concat", hs, f"{stem}_h_n", axis=0)
    c_n = None
    if cs:
        c_n = cs[0] if len(cs) == 1 else g.node("Concat", cs, f"{stem}_c_n", axis=0)
    return x, h_n, c_n, hs[-1]


def _layer_graph(layer: _RNNBase, lengths: bool, initial_state: bool) -> Graph:
    check_expressible(layer, type(layer).__name__)
    g = Graph(layer.dtype)
    LD, H, I = layer.num_layers * layer.num_directions, layer.hidden_size, layer.input_size
    in_shape = ["batch", "time", I] if layer.batch_first else ["time", "batch", I]
    x = g.input("input", in_shape)
    h0 = g.input("h0", [LD, "batch", H]) if initial_state else None
    c0 = g.input("c0", [LD, "batch", H]) if initial_state and layer._cell == "lstm" else None
    seq = None
    if lengths:
        seq = g.node("Cast", [g.input("lengths", ["batch"], np.int64)], "sequence_lens",
                     to=int(ELEM_TYPE[np.dtype(np.int32)]))  # ONNX's sequence_lens is int32
    if layer.batch_first:
        x = g.transpose(x, (1, 0, 2), "time_major")
    out, h_n, c_n, _ = emit_stack(g, layer, x, seq, h0, c0)
    if layer.batch_first:
        out = g.transpose(out, (1, 0, 2), "batch_major")
    D = layer.num_directions
    g.output(out, "output", in_shape[:2] + [D * H])
    g.output(h_n, "h_n", [LD, "batch", H])
    if c_n is not None:
        g.output(c_n, "c_n", [LD, "batch", H])
    return g


def _check_opset(opset) -> int:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int, got {type(opset).__name__}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be between {MIN_OPSET} and {newest} (the newest this onnx "
                         f"package knows), got {opset}")
    return int(opset)


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def export(model, path, *, opset: int = DEFAULT_OPSET, lengths: bool = False,
           initial_state: bool = False, check: bool = True):
    """Write `model` to `path` as an ONNX file (atomically) and return the onnx.ModelProto.

    model: a fusedrnn.LSTM, GRU or RNN, or a fusedrnn.keras Sequential (built: called once or
    given its input shape).  opset: the ONNX opset (14 or later; default 17).  For the
    torch-shaped layers, lengths=True adds the graph input ``lengths`` (batch,) int64 and
    initial_state=True the inputs ``h0`` (and ``c0``); a Keras model takes its lengths from its
    Masking/Embedding(mask_zero=True) layer instead.  check: run onnx.checker on the result.
    Anything ONNX cannot express raises a ValueError naming the layer and the option.
    """
    import onnx

    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    folder = os.path.dirname(os.path.abspath(os.fsdecode(path)))
    if not os.path.isdir(folder):
        raise ValueError(f"path: the folder {folder!r} does not exist")
    opset = _check_opset(opset)
    lengths = _check_flag(lengths, "lengths")
    initial_state = _check_flag(initial_state, "initial_state")
    check = _check_flag(check, "check")
    if isinstance(model, _RNNBase):
        g = _layer_graph(model, lengths, initial_state)
        name = type(model).__name__
    else:
        from ..keras.models import Model
        if not isinstance(model, Model):
            raise TypeError(f"model must be a fusedrnn.LSTM, GRU or RNN, or a fusedrnn.keras "
                            f"Sequential, got {type(model).__name__}")
        if lengths or initial_state:
            raise ValueError("lengths= and initial_state= apply to the LSTM/GRU/RNN layers; a Keras "
                             "model takes its lengths from its Masking or Embedding(mask_zero=True) "
                             "layer and starts from zero states")
        from ._export_keras import keras_graph
        g = keras_graph(model)
        name = model.name
    proto = g.model(opset, name, f"fusedrnn {name} exported to ONNX")
    if check:
        onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    write_atomic(path, lambda f: f.write(data))
    return proto

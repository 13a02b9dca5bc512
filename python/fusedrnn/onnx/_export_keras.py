"""A fusedrnn.keras Sequential -> an ONNX graph (fusedrnn.onnx.export calls it).

Input ``input``: (batch, time, F) floats, or (batch, time) int64 token ids when the first layer
is an Embedding; output ``output``: what ``model.predict`` gives.  Layer by layer:

    InputLayer, Dropout, Keras' input dropout   identity (inference)
    Dense, TimeDistributed(Dense)              MatMul, Add, then Relu/Tanh/Sigmoid/Softmax
    Embedding                                  Gather
    LSTM/GRU/SimpleRNN, Bidirectional(...),    one ONNX LSTM/GRU/RNN node per layer (GRU with
    Recurrent(fusedrnn.LSTM(...))              linear_before_reset=1), go_backwards as a reversed
                                               input; return_sequences=False gives the last
                                               valid step (the top layer's Y_h)
    Masking, Embedding(mask_zero=True)         sequence_lens = the number of unmasked steps of
                                               each sequence

A mask works as in model.predict for sequences padded at either end: the graph counts each
sequence's unmasked steps (its length) and finds its first one; a left-padded sequence (Keras'
pad_sequences default) is rolled so that its data comes first, and sequence outputs are rolled
back.  A mask with padding between valid steps, which predict refuses, cannot be refused by a
graph: its steps from the first valid one on are read as one sequence of that many steps.
Refused with a ValueError naming the layer: stateful layers (their state carried between
calls), go_backwards together with a mask, LSTM projections, and layers the export does not
know.
"""

from __future__ import annotations

import numpy as np

from ..keras import pieces
from ..keras.layers import Bidirectional, InputLayer, Masking, TimeDistributed
from ..keras.layers.recurrent import _KerasRNN
from ._graph import ELEM_TYPE, Graph
from ._export import check_expressible, emit_stack

__all__ = ["keras_graph"]

_INT64_MIN = np.iinfo(np.int64).min


def _unwrap(layer):
    while isinstance(layer, (Bidirectional, TimeDistributed)):
        layer = layer.inner
    return layer


def _label(i, layer) -> str:
    return f"layer {i} ({getattr(layer, 'name', None) or type(layer).__name__})"


def _input_signature(model, first):
    """(shape, dtype) of the graph input."""
    if isinstance(first, pieces.Embedding):
        return ["batch", "time"], np.int64
    feats = None
    for layer in model.layers:
        inner = _unwrap(layer)
        if isinstance(inner, _KerasRNN) or isinstance(inner, pieces.Recurrent):
            feats = inner.layer.input_size
            break
        if isinstance(inner, pieces.Dense):
            feats = inner.in_features
            break
        shape = getattr(layer, "input_shape", None)
        if shape and shape[-1] is not None:
            feats = int(shape[-1])
            break
    if feats is None:
        raise ValueError("the model's input width is unknown: build it first (call it on data, "
                         "or give the first layer input_shape=)")
    declared = getattr(model, "_input_shape", None)  # (None, ...) from the first layer's input_shape
    if declared is not None:
        seq = len(declared) == 3
    else:
        seq = any(isinstance(_unwrap(l), (pieces.Recurrent, Masking)) for l in model.layers)
    return (["batch", "time", feats] if seq else ["batch", feats]), model.dtype


def _lengths_from_mask(g: Graph, x: str, first):
    """(int32 (B,) sequence_lens: the unmasked steps of each sequence, int64 (B, 1) index of
    each sequence's first unmasked step)."""
    if isinstance(first, pieces.Embedding):
        valid = g.node("Not", [g.node("Equal", [x, g.const("pad_id", 0, np.int64)], "is_pad")], "valid")
    else:
        differs = g.node("Not", [g.node("Equal", [x, g.const("mask_value", first.mask_value)],
                                        "is_mask_value")], "differs")
        # A step holds data when any feature differs from mask_value.
        count = g.node("ReduceSum", [g.node("Cast", [differs], "differs_n", to=_elem(np.int64)),
                                     g.ints("axes", [2])], "differing", keepdims=0)
        valid = g.node("Greater", [count, g.const("zero", 0, np.int64)], "valid")
    valid_n = g.node("Cast", [valid], "valid_n", to=_elem(np.int64))
    n = g.node("ReduceSum", [valid_n, g.ints("axes", [1])], "steps", keepdims=0)
    first_step = g.node("ArgMax", [valid_n], "first_step", axis=1, keepdims=1)
    return g.node("Cast", [n], "sequence_lens", to=_elem(np.int32)), first_step


def _roll(g: Graph, a: str, shift: str, back: bool, rank: int, stem: str) -> str:
    """Row b of a (B, T, ...) moved left along axis 1 by shift[b] (right with back=True), as
    fusedrnn.keras.data.roll: step t of the result is step (t +- shift[b]) mod T of a."""
    T = g.node("Gather", [g.node("Shape", [a], f"{stem}_shape"), g.ints(f"{stem}_axis", [1])],
               f"{stem}_T")  # (1,)
    steps = g.node("Range", [g.const(f"{stem}_0", 0, np.int64),
                             g.node("Squeeze", [T], f"{stem}_T0"),
                             g.const(f"{stem}_1", 1, np.int64)], f"{stem}_steps")
    steps = g.node("Unsqueeze", [steps, g.ints(f"{stem}_axis0", [0])], f"{stem}_steps_row")  # (1, T)
    if back:
        idx = g.node("Add", [g.node("Sub", [steps, shift], f"{stem}_minus"), T], f"{stem}_plus_T")
    else:
        idx = g.node("Add", [steps, shift], f"{stem}_plus")
    idx = g.node("Mod", [idx, T], f"{stem}_index")  # (B, T)
    if rank == 2:
        return g.node("GatherElements", [a, idx], f"{stem}_rolled", axis=1)
    idx = g.node("Expand", [g.node("Unsqueeze", [idx, g.ints(f"{stem}_axis2", [2])], f"{stem}_idx3"),
                            g.node("Shape", [a], f"{stem}_full_shape")], f"{stem}_idx_full")
    return g.node("GatherElements", [a, idx], f"{stem}_rolled", axis=1)


def _elem(dtype) -> int:
    return int(ELEM_TYPE[np.dtype(dtype)])


def _dense(g: Graph, x: str, layer: pieces.Dense, stem: str) -> str:
    y = g.node("MatMul", [x, g.const(f"{stem}_kernel", layer.params["weight"].T)], f"{stem}_matmul")
    if layer.bias:
        y = g.node("Add", [y, g.const(f"{stem}_bias", layer.params["bias"])], f"{stem}_add")
    act = layer.activation
    if act == "softmax":
        return g.node("Softmax", [y], f"{stem}_softmax", axis=-1)
    if act in ("relu", "tanh", "sigmoid"):
        return g.node(act.capitalize(), [y], f"{stem}_{act}")
    return y


def _recurrent(g: Graph, x: str, layer, lengths, stem: str, label: str):
    """x (B, T, F) batch-first -> (B, T, D*H) or (B, D*H)."""
    torch_layer = layer.layer
    check_expressible(torch_layer, label)
    if layer.stateful:
        raise ValueError(f"{label}: stateful=True carries each batch's final state into the next "
                         "call, which an exported graph cannot keep; export a copy built with "
                         "stateful=False")
    xt = g.transpose(x, (1, 0, 2), f"{stem}_time_major")
    if getattr(layer, "go_backwards", False):
        if lengths is not None:
            raise ValueError(f"{label}: go_backwards with a mask cannot be exported (nor run: the "
                             "layer refuses it); use Bidirectional or reverse the sequences")
        xt = g.slice(xt, -1, _INT64_MIN, axis=0, step=-1, stem=f"{stem}_reversed")
    out, _, _, top_h = emit_stack(g, torch_layer, xt, lengths, stem=stem)
    if layer.return_sequences:
        return g.transpose(out, (1, 0, 2), f"{stem}_batch_major")
    # the last valid step of each direction: (D, B, H) -> (B, D*H)
    return g.reshape(g.transpose(top_h, (1, 0, 2), f"{stem}_last_t"), (0, -1), f"{stem}_last")


def keras_graph(model) -> Graph:
    from ..keras.models import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"only a Sequential model can be exported (a subclassed Model's call() is "
                        f"Python code), got {type(model).__name__}")
    if not model.layers:
        raise ValueError("the model has no layers")
    unbuilt = [_label(i, l) for i, l in enumerate(model.layers) if not l.built]
    if unbuilt:
        raise ValueError(f"the model is not built ({unbuilt[0]} has no weights yet): call it on "
                         "data once, or give the first layer input_shape=")
    g = Graph(model.dtype)
    first = model._first_layer()
    shape, dtype = _input_signature(model, first)
    x = g.input("input", shape, dtype)
    lengths = shift = None
    if model._mask_layer() is not None:
        lengths, shift = _lengths_from_mask(g, x, first)
        x = _roll(g, x, shift, False, len(shape), "pad_first")
    seq = len(shape) == 3 or isinstance(first, pieces.Embedding)
    width = shape[-1]
    for i, layer in enumerate(model.layers):
        label, stem = _label(i, layer), f"layer{i}"
        inner = layer.inner if isinstance(layer, TimeDistributed) else layer
        if isinstance(inner, (InputLayer, pieces.Dropout, Masking)):
            continue
        if isinstance(inner, pieces.Embedding):
            x = g.node("Gather", [g.const(f"{stem}_embeddings", inner.params["weight"]), x],
                       f"{stem}_embedding", axis=0)
            width = inner.embedding_dim
        elif isinstance(inner, pieces.Dense):
            x = _dense(g, x, inner, stem)
            width = inner.out_features
        elif isinstance(_unwrap(layer), pieces.Recurrent):
            rec = _unwrap(layer)
            if not seq:
                raise ValueError(f"{label}: a recurrent layer needs sequences (N, T, F), but its "
                                 "input has no time axis")
            x = _recurrent(g, x, rec, lengths, stem, label)
            width = rec.layer.num_directions * rec.layer.hidden_size
            seq = rec.return_sequences
        else:
            raise ValueError(f"{label}: {type(layer).__name__} layers cannot be exported to ONNX")
    if shift is not None and seq:
        x = _roll(g, x, shift, True, 3, "pad_back")
    g.output(x, "output", (["batch", "time"] if seq else ["batch"]) + [width])
    return g

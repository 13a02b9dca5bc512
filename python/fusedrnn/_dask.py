"""Inference over Dask arrays chunked along the batch axis (data larger than memory).

    out, (h_n, c_n) = lstm.eval()(x)          # x a dask array: every result is a dask array
    y = model.predict(x, lengths=lengths)     # a Keras model: the same

Each block of sequences runs through the ordinary in-memory forward on whatever Dask
scheduler computes the result (threads, processes, a dask.distributed cluster), so a block's
rows get exactly the numbers an in-memory call on those rows gives.  The batch axis (axis 1
of a time-major layer's x, axis 0 with batch_first and for Keras models) may be chunked any
way; the other axes are rechunked to one chunk each, since a sequence must be whole on one
worker.  ``lengths`` is a dask array (rechunked to x's batch chunks) or an array that is split
to match; initial states likewise, along their batch axis 1.  The results' batch chunks are
x's.

The model enters the graph once, as a single task that the blocks depend on, so a
distributed scheduler serialises it once rather than once per block.  The graph holds the
model itself: weights changed before the result is computed are the weights it uses.
A layer's output and final states are slices of one packed array per block (row-major
(b, T*D*P + L*D*P [+ L*D*H])): compute them together (``dask.compute(out, h_n)``) so that each
block runs once.

Only inference: a layer in training mode, backward, fit/evaluate, and stateful Keras models
(whose state runs from one batch to the next in order) refuse dask input.

Dask itself is imported only when a dask array arrives: ``is_dask_array`` asks whether
dask.array is loaded at all before any isinstance check, so ``import fusedrnn`` never needs it.
"""

from __future__ import annotations

import sys
import threading
import uuid

import numpy as np

from ._checks import shape_str

__all__ = ["is_dask_array", "refuse", "layer_forward", "model_predict"]


def is_dask_array(value) -> bool:
    """Whether value is a dask.array.Array; False without importing dask when it is not loaded
    (no dask array can exist then)."""
    mod = sys.modules.get("dask.array")
    return mod is not None and isinstance(value, mod.Array)


def refuse(what: str, **arrays) -> None:
    """A TypeError when any of ``arrays`` (name=value) is a dask array: ``what`` needs them in
    memory."""
    for name, value in arrays.items():
        if is_dask_array(value):
            raise TypeError(f"{name} is a dask array, and {what} takes in-memory arrays only: "
                            "dask arrays are for inference (a layer's forward in eval mode, "
                            f"model.predict); compute it first ({name}.compute())")


# --- shared pieces ------------------------------------------------------------------------

def _new_key(kind: str) -> str:
    return f"fusedrnn-{kind}-{uuid.uuid4().hex}"


def _shipped(obj, kind: str):
    """obj as one task of the graph (a Delayed), so that it travels to each worker once."""
    import dask
    return dask.delayed(obj, name=_new_key(kind), pure=False, traverse=False)


def _whole(x, batch_axis: int):
    """x with every axis but the batch axis in one chunk."""
    want = {a: -1 for a in range(x.ndim) if a != batch_axis}
    if any(len(x.chunks[a]) > 1 for a in want):
        x = x.rechunk(want)
    for a in want:
        if np.isnan(x.shape[a]):
            raise ValueError(f"x has an unknown size along axis {a} (shape {x.shape}); only the "
                             "batch axis may have unknown chunk sizes (x.compute_chunk_sizes())")
    return x


def _batch_split(value, name: str, axis: int, shape: tuple, bchunks: tuple):
    """value (dask or in-memory) of ``shape`` as a dask array whose chunks along ``axis`` are
    bchunks and single elsewhere."""
    import dask.array as da
    if any(np.isnan(c) for c in bchunks) and not is_dask_array(value):
        raise ValueError(f"{name} cannot be split to match x's batch chunks: their sizes are "
                         "unknown (call x.compute_chunk_sizes() first, or pass a dask array)")
    known = lambda n: not np.isnan(n)  # noqa: E731  (unknown sizes are checked per block)
    if len(value.shape) != len(shape) or any(known(a) and known(b) and a != b
                                             for a, b in zip(value.shape, shape)):
        raise ValueError(f"{name} must have shape {shape_str(shape)}, got {shape_str(value.shape)}")
    chunks = tuple(bchunks if a == axis else (n,) for a, n in enumerate(shape))
    if is_dask_array(value):
        return value.rechunk(chunks) if value.chunks != chunks else value
    return da.from_array(value, chunks=chunks, name=_new_key(name))


def _split_lengths(lengths, T: int, B, bchunks: tuple, batch: str):
    """lengths as a dask array chunked as x's batch axis; in memory ones are checked whole
    here, dask ones block by block where they are computed."""
    if is_dask_array(lengths):
        if lengths.ndim != 1:
            raise ValueError(f"lengths must have shape ({batch},) = ({B},), got {lengths.shape}")
    elif not np.isnan(B):
        from . import ops
        lengths = ops._lengths(lengths, T, B, name="lengths", batch=batch)
    return _batch_split(lengths, "lengths", 0, (B,), bchunks)


def _call(runner, *blocks):
    """A block's task: the shipped runner (a graph dependency, so not a callable of the
    task itself) applied to the blocks."""
    return runner(*blocks)


def _letters(n: int, batch_axis: int, pool: str = "tuvwxyz") -> str:
    """Blockwise indices: 'b' for the batch axis, letters of pool for the rest."""
    other = iter(pool)
    return "".join("b" if a == batch_axis else next(other) for a in range(n))


# --- torch-shaped layers ------------------------------------------------------------------

class _LayerBlocks:
    """The per-block forward of a layer, called by the workers."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x, lengths, h0, c0):
        layer = self.layer
        if layer.training:
            raise TypeError("the layer was switched to training mode before its dask result was "
                            "computed; dask input runs inference only (layer.eval())")
        bax = 0 if layer.batch_first else 1
        b = x.shape[bax]
        if b == 0:
            return np.empty((0, _packed_width(layer, x.shape[1 - bax])), layer.dtype)
        out, h_n, c_n = layer._forward(x, h0, c0, lengths)
        # Each result copied once, straight into its columns of the packed rows (splitting a
        # unit-stride last axis is always a view, so the reshape writes into packed).
        packed = np.empty((b, _packed_width(layer, x.shape[1 - bax])), layer.dtype)
        start = 0
        for a, axis in ((out, bax), (h_n, 1), (c_n, 1)):
            if a is not None:
                rows = np.moveaxis(a, axis, 0)
                stop = start + rows[0].size
                packed[:, start:stop].reshape(rows.shape)[...] = rows
                start = stop
        return packed


def _packed_width(layer, T: int) -> int:
    LD = layer.num_layers * layer.num_directions
    P = layer._P
    width = T * layer.num_directions * P + LD * P
    return width + (LD * layer.hidden_size if layer._cell == "lstm" else 0)


def _unpack(packed, start, stop, row_shape, batch_axis):
    """One block's slice [start:stop) of the packed rows, shaped (b,) + row_shape, with its
    batch axis moved to batch_axis."""
    a = packed[:, start:stop].reshape((packed.shape[0],) + row_shape)
    return np.ascontiguousarray(np.moveaxis(a, 0, batch_axis))


def _unpacked(packed, start, stop, row_shape, batch_axis, dtype):
    import dask.array as da
    ndim = len(row_shape) + 1
    ind = _letters(ndim, batch_axis)
    sizes = dict(zip(ind.replace("b", ""), row_shape))
    return da.blockwise(_unpack, ind, packed, "bk", start, None, stop, None, row_shape, None,
                        batch_axis, None, new_axes=sizes, concatenate=True, dtype=dtype,
                        meta=np.empty((0,) * ndim, dtype))


def layer_forward(layer, x, h0, c0, lengths):
    """The dask twin of _RNNBase._forward: (out, h_n, c_n or None), all dask arrays."""
    import dask.array as da
    if layer.training:
        raise TypeError(f"x is a dask array, which {type(layer).__name__} takes for inference "
                        "only, and the layer is in training mode (the default, as in torch): "
                        "call layer.eval() first")
    layer._array(np.empty(0, x.dtype), "x")  # the layer's dtype check and message
    order = "(B, T, I)" if layer.batch_first else "(T, B, I)"
    if x.ndim != 3:
        raise ValueError(f"a dask x must be 3-D {order}, chunked along B, got shape {x.shape} "
                         "(an unbatched sequence is computed in memory)")
    if x.shape[-1] != layer.input_size:
        raise ValueError(f"x must have input_size = {layer.input_size} features in its last axis, "
                         f"got shape {x.shape}")
    bax = 0 if layer.batch_first else 1
    x = _whole(x, bax)
    T, B, bchunks = x.shape[1 - bax], x.shape[bax], x.chunks[bax]
    if T < 1:
        raise ValueError(f"x must hold at least one step, got shape {x.shape}")
    LD, P, H = layer.num_layers * layer.num_directions, layer._P, layer.hidden_size
    args = [_shipped(_LayerBlocks(layer), "layer"), None, x, _letters(3, bax)]
    if lengths is None:
        args += [None, None]
    else:
        args += [_split_lengths(lengths, T, B, bchunks, "B"), "b"]
    # Distinct indices for h0 and c0: their widths differ with a projection (P < H).
    for value, name, width, ind in ((h0, "h0", P, "lbp"), (c0, "c0", H, "mbh")):
        if value is None:
            args += [None, None]
            continue
        if not is_dask_array(value):
            value = layer._array(value, name)
        else:
            layer._array(np.empty(0, value.dtype), name)
        args += [_batch_split(value, name, 1, (LD, B, width), bchunks), ind]
    width = _packed_width(layer, T)
    packed = da.blockwise(_call, "bk", *args, new_axes={"k": width}, concatenate=True,
                          dtype=layer.dtype, meta=np.empty((0, 0), layer.dtype),
                          name=_new_key("packed"))
    DP = layer.num_directions * P
    stop_out = T * DP
    out = _unpacked(packed, 0, stop_out, (T, DP), bax, layer.dtype)
    h_n = _unpacked(packed, stop_out, stop_out + LD * P, (LD, P), 1, layer.dtype)
    c_n = None
    if layer._cell == "lstm":
        c_n = _unpacked(packed, stop_out + LD * P, width, (LD, H), 1, layer.dtype)
    return out, h_n, c_n


# --- Keras models -------------------------------------------------------------------------

class _Predictor:
    """The per-block predict of a Keras model, called by the workers.  Calls on one model are
    serialised by a lock: a model's forward keeps per-call state on the model (a subclassed
    Model's record of the call), so two threads must not run it at once.  The lock is made
    again where the predictor is unpickled."""

    def __init__(self, model, batch_size, tail, dtype):
        self.model, self.batch_size, self.tail, self.dtype = model, batch_size, tail, dtype
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, x, lengths):
        if len(x) == 0:
            return np.empty((0,) + self.tail, self.dtype)
        with self._lock:
            return self.model.predict(x, batch_size=self.batch_size, verbose=0, lengths=lengths)


def _probe(model, x):
    """(output shape past the batch axis, output dtype), from the model run on one sample of
    zeros; this also builds an unbuilt model here, before it is shipped, so that every worker
    gets the same weights."""
    dtype = x.dtype if model._takes_ids() else model.dtype
    out = model._forward(np.zeros((1,) + tuple(x.shape[1:]), dtype), training=False, lengths=None)
    if isinstance(out, list):
        raise ValueError(f"predict takes a model with one output; this one returns {len(out)} "
                         "(return_state=True)")
    return tuple(out.shape[1:]), out.dtype


def model_predict(model, x, batch_size, lengths):
    """The dask twin of Trainer.predict: a dask array chunked as x along the batch axis."""
    import dask.array as da
    from .keras import data as _data
    batch_size = _data.check_batch_size(batch_size)
    if model.stateful:
        raise ValueError("a stateful model carries its state from one batch to the next in order, "
                         "which blocks computed independently cannot do; predict on a NumPy "
                         "array (or a non-stateful copy of the model)")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis first, (N, ...), got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"x must be numeric, got dtype {x.dtype}")
    mask_layer = model._mask_layer()
    if mask_layer is not None and lengths is not None:
        raise ValueError(f"give lengths or a mask (the model's {type(mask_layer).__name__}), "
                         "not both")
    x = _whole(x, 0)
    chunks = x.chunks[0]
    x = _on_batches(x, chunks, batch_size)
    N, bchunks = x.shape[0], x.chunks[0]
    tail, dtype = _probe(model, x)
    if lengths is not None:
        lengths = _split_lengths(lengths, x.shape[1], N, bchunks, "N")
    runner = _shipped(_Predictor(model, batch_size, tail, dtype), "model")
    ind = _letters(1 + len(tail), 0)  # the output's; x's other axes use other letters
    out = da.blockwise(_call, ind, runner, None, x, _letters(x.ndim, 0, "mnopqrs"),
                       lengths, None if lengths is None else "b",
                       new_axes=dict(zip(ind[1:], tail)), concatenate=True, dtype=dtype,
                       meta=np.empty((0,) * len(ind), dtype), name=_new_key("predict"))
    return out if bchunks == chunks else out.rechunk({0: chunks})


def _on_batches(x, chunks: tuple, batch_size: int):
    """x rechunked along the batch axis so that every block starts where an in-memory
    predict's batch starts (a multiple of batch_size): each block then runs the very batches
    the in-memory call runs, and the results are bitwise the same whatever the BLAS does with
    products of different row counts (which may round a row differently).  Each boundary
    moves down to the multiple below it; unknown chunk sizes are left alone."""
    if any(np.isnan(c) for c in chunks) or all(c % batch_size == 0 for c in chunks[:-1]):
        return x
    bounds, at = [], 0
    for c in chunks[:-1]:
        at += c
        b = at - at % batch_size
        if b > (bounds[-1] if bounds else 0):
            bounds.append(b)
    total = at + chunks[-1]
    edges = [0] + bounds + [total]
    return x.rechunk({0: tuple(b - a for a, b in zip(edges, edges[1:]) if b > a)})

"""NumPy kernels for the non-recurrent ONNX operators the loader runs.

Each entry of ``OPS`` is a builder ``build(attrs, inputs, opset) -> fn``: it reads the node's
attributes once, at load, and returns ``fn(*values) -> tuple of outputs``, where a missing
optional input arrives as None.  ``inputs`` are the node's input names (a builder only looks at
how many there are).  Errors raised here carry no node name; the interpreter prefixes it.

Opset differences handled: Squeeze/Unsqueeze axes (attribute before 13, input from 13), Slice
bounds (attributes before 10, inputs from 10), Softmax/LogSoftmax (2-D coercion around ``axis``,
default 1, before 13; one axis, default -1, from 13), Reshape's ``allowzero`` (14), Shape's
``start``/``end`` (15), Dropout's ``training_mode`` input (12).
"""

from __future__ import annotations

import numpy as np

__all__ = ["OPS", "tensor_value", "np_dtype"]


def np_dtype(onnx_type: int) -> np.dtype:
    """NumPy dtype of an ONNX TensorProto data type (ValueError for strings and the like)."""
    from onnx import helper

    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
    except Exception as exc:
        raise ValueError(f"ONNX data type {onnx_type} has no NumPy equivalent") from exc
    if dt.kind not in "biuf":
        raise ValueError(f"ONNX data type {onnx_type} ({dt}) is not a numeric tensor type")
    return dt


def tensor_value(tensor) -> np.ndarray:
    """A TensorProto as a read-only NumPy array (external data must already be loaded)."""
    from onnx import numpy_helper

    arr = np.array(numpy_helper.to_array(tensor))
    arr.setflags(write=False)
    return arr


def _ints(value, what: str) -> list:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        raise ValueError(f"{what} must be a 1-D integer tensor, got dtype {arr.dtype} shape {arr.shape}")
    return [int(v) for v in arr.reshape(-1)]


def _axes(attrs, values, opset: int, since: int):
    """Axes from the attribute (opset < since) or the second input (opset >= since); None if
    absent."""
    if opset < since:
        return attrs.get("axes")
    return None if len(values) < 2 or values[1] is None else _ints(values[1], "axes")


def _norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def _unary(f):
    def build(attrs, inputs, opset):
        return lambda x: (f(x),)
    return build


def _binary(f):
    def build(attrs, inputs, opset):
        return lambda a, b: (f(a, b),)
    return build


def _div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        if np.any(b == 0):
            raise ValueError("integer division by zero")
        q = np.abs(a) // np.abs(b)  # ONNX integer division truncates toward zero
        return (np.sign(a) * np.sign(b) * q).astype(np.result_type(a, b))
    return a / b


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _softmax(log: bool):
    def build(attrs, inputs, opset):
        legacy = opset < 13
        axis = attrs.get("axis", 1 if legacy else -1)

        def run(x):
            ax = _norm_axis(axis, x.ndim)
            # before opset 13 the input is flattened to 2-D at `axis` and normalised per row
            y = x.reshape(int(np.prod(x.shape[:ax])), -1) if legacy else x
            red = 1 if legacy else ax
            shifted = y - np.max(y, axis=red, keepdims=True)
            lse = np.log(np.sum(np.exp(shifted), axis=red, keepdims=True))
            out = shifted - lse if log else np.exp(shifted - lse)
            return (out.reshape(x.shape),)
        return run
    return build


def _constant(attrs, inputs, opset):
    kinds = [k for k in ("value", "value_float", "value_floats", "value_int", "value_ints")
             if k in attrs]
    if len(kinds) != 1:
        other = sorted(set(attrs) - set(kinds))
        raise ValueError(f"a Constant must hold one numeric value, got attributes {sorted(attrs)}"
                         + (f" ({', '.join(other)} not supported)" if other else ""))
    k = kinds[0]
    v = attrs[k]
    if k == "value":
        arr = v
    else:
        arr = np.array(v, np.float32 if "float" in k else np.int64)
        arr.setflags(write=False)
    return lambda: (arr,)


def _constant_of_shape(attrs, inputs, opset):
    value = attrs.get("value")
    fill = np.zeros((), np.float32) if value is None else np.asarray(value)
    if fill.size != 1:
        raise ValueError(f"ConstantOfShape's value must hold one element, got shape {fill.shape}")
    fill = fill.reshape(())

    def run(shape):
        dims = _ints(shape, "shape")
        if any(d < 0 for d in dims):
            raise ValueError(f"shape must not be negative, got {dims}")
        return (np.full(dims, fill, fill.dtype),)
    return run


def _shape(attrs, inputs, opset):
    start, end = attrs.get("start", 0), attrs.get("end")
    return lambda x: (np.array(x.shape[start:end], np.int64),)


def _gather(attrs, inputs, opset):
    axis = attrs.get("axis", 0)

    def run(x, idx):
        ax = _norm_axis(axis, x.ndim)
        if idx.dtype.kind not in "iu":
            raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
        n = x.shape[ax]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ValueError(f"indices must lie in [{-n}, {n - 1}] for axis {axis} of size {n}, "
                             f"got values from {idx.min()} to {idx.max()}")
        return (np.take(x, idx, axis=ax),)
    return run


def _unsqueeze(attrs, inputs, opset):
    def run(x, *rest):
        axes = _axes(attrs, (x, *rest), opset, 13)
        if axes is None:
            raise ValueError("Unsqueeze needs axes")
        rank = x.ndim + len(axes)
        norm = sorted(_norm_axis(a, rank, "axes entry") for a in axes)
        if len(set(norm)) != len(norm):
            raise ValueError(f"axes must not repeat, got {axes}")
        for a in norm:
            x = np.expand_dims(x, a)
        return (x,)
    return run


def _squeeze(attrs, inputs, opset):
    def run(x, *rest):
        axes = _axes(attrs, (x, *rest), opset, 13)
        if axes is None:
            return (np.squeeze(x),)
        norm = tuple(_norm_axis(a, x.ndim, "axes entry") for a in axes)
        bad = [a for a in norm if x.shape[a] != 1]
        if bad:
            raise ValueError(f"cannot squeeze axes {bad} of shape {x.shape}: their size is not 1")
        return (np.squeeze(x, axis=norm),)
    return run


def _concat(attrs, inputs, opset):
    axis = attrs["axis"]
    return lambda *xs: (np.concatenate([x for x in xs if x is not None], axis=axis),)


def _expand(attrs, inputs, opset):
    def run(x, shape):
        target = np.broadcast_shapes(x.shape, tuple(_ints(shape, "shape")))
        return (np.broadcast_to(x, target),)
    return run


def _transpose(attrs, inputs, opset):
    perm = attrs.get("perm")
    return lambda x: (np.transpose(x, perm),)


def _slice_bounds(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX's clamping of one axis' bounds, as a Python slice."""
    if step == 0:
        raise ValueError("Slice steps must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)  # -1 here means "past the first element"
    return slice(start, None if end < 0 else end, step)


def _slice(attrs, inputs, opset):
    def run(x, *rest):
        if opset < 10:
            starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
        else:
            starts, ends = _ints(rest[0], "starts"), _ints(rest[1], "ends")
            axes = _ints(rest[2], "axes") if len(rest) > 2 and rest[2] is not None else None
            steps = _ints(rest[3], "steps") if len(rest) > 3 and rest[3] is not None else None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise ValueError(f"starts, ends, axes and steps must have one length, got {len(starts)}, "
                             f"{len(ends)}, {len(axes)}, {len(steps)}")
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            a = _norm_axis(a, x.ndim, "axes entry")
            index[a] = _slice_bounds(s, e, st, x.shape[a])
        return (x[tuple(index)],)
    return run


def _reshape(attrs, inputs, opset):
    allowzero = attrs.get("allowzero", 0)

    def run(x, shape=None):
        dims = _ints(attrs["shape"] if opset < 5 else shape, "shape")
        if not allowzero:  # 0 copies the input's size on that axis
            dims = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(dims)]
        return (np.reshape(x, dims),)
    return run


def _cast(attrs, inputs, opset):
    dt = np_dtype(attrs["to"])
    return lambda x: (x.astype(dt, copy=False),)


def _gemm(attrs, inputs, opset):
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    ta, tb = attrs.get("transA", 0), attrs.get("transB", 0)

    def run(a, b, c=None):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"Gemm takes 2-D A and B, got shapes {a.shape} and {b.shape}")
        y = (a.T if ta else a) @ (b.T if tb else b)
        if alpha != 1.0:
            y = y * y.dtype.type(alpha)
        if c is not None:
            y = y + (c if beta == 1.0 else c * c.dtype.type(beta))
        return (y,)
    return run


def _dropout(attrs, inputs, opset):
    def run(x, ratio=None, training_mode=None):
        if training_mode is not None and bool(np.asarray(training_mode)):
            raise ValueError("training_mode is true; only inference (no dropout) is supported")
        return x, np.ones(x.shape, bool)
    return run


OPS = {
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply),
    "Div": _binary(_div), "MatMul": _binary(np.matmul), "Gemm": _gemm,
    "Relu": _unary(lambda x: np.maximum(x, x.dtype.type(0))), "Tanh": _unary(np.tanh),
    "Sigmoid": _unary(_sigmoid), "Softmax": _softmax(False), "LogSoftmax": _softmax(True),
    "Identity": _unary(lambda x: x), "Dropout": _dropout,
    "Constant": _constant, "ConstantOfShape": _constant_of_shape, "Shape": _shape,
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat,
    "Expand": _expand, "Transpose": _transpose, "Slice": _slice, "Reshape": _reshape,
    "Cast": _cast,
}

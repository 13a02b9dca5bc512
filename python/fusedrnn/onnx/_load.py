"""Run an ONNX graph of recurrent nodes on fusedrnn's kernels: ``fusedrnn.onnx.load``.

    model = fusedrnn.onnx.load("model.onnx")        # a path, bytes, or an onnx.ModelProto
    y, h_n, c_n = model(x, h0, c0)                  # positional, in model.input_names order
    outs = model.run({"x": x})                      # dict {output name: array}

The graph is checked (onnx.checker), sorted topologically and interpreted node by node:
LSTM/GRU/RNN nodes run on fusedrnn's fused kernels (``_recurrent``), the other supported
operators in NumPy (``_interp``).  Everything computable from constants alone (initializers,
Constant nodes and the shape arithmetic on them) is computed once, at load, as are the
recurrent weights in fusedrnn's layout; a call runs only what depends on the inputs.

Any operator outside ``SUPPORTED_OPS`` is refused at load with a ValueError listing every such
operator in the graph.  At run time each input is checked against the graph's declaration
(name, dtype, rank, fixed sizes, and symbolic sizes such as 'batch' agreeing between inputs).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping

import numpy as np

from .._checks import shape_str
from ._interp import OPS, np_dtype, tensor_value
from ._recurrent import RecurrentNode

__all__ = ["load", "OnnxModel", "SUPPORTED_OPS"]

_RECURRENT = ("LSTM", "GRU", "RNN")
SUPPORTED_OPS = tuple(sorted((*OPS, *_RECURRENT)))
_MIN_OPSET = 7  # before 7, elementwise ops broadcast by attribute and Dropout has is_test


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError('fusedrnn.onnx.load needs the onnx package: pip install "fusedrnn[onnx]"') \
            from exc
    return onnx


def load(model) -> "OnnxModel":
    """Load an ONNX model (a file path, its bytes, or an ``onnx.ModelProto``) as a runnable
    :class:`OnnxModel`.  Raises ValueError for an invalid graph or unsupported operators."""
    onnx = _onnx()
    if isinstance(model, (str, os.PathLike)):
        proto = onnx.load(os.fspath(model))  # also reads external data next to the file
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = onnx.load_from_string(bytes(model))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"model is not a valid ONNX model: {exc}") from None
    return OnnxModel(proto)


def _label(node, index: int) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node #{index}"


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        elif hasattr(v, "dims") and hasattr(v, "data_type"):  # a TensorProto
            v = tensor_value(v)
        out[a.name] = v
    return out


def _toposort(nodes, available: set) -> list:
    """(index, node) in an order where every node follows the producers of its inputs."""
    producers = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                producers[o] = i
    waiting = [sum(1 for x in set(n.input) if x and x not in available) for n in nodes]
    users = {}
    for i, n in enumerate(nodes):
        for x in set(n.input):
            if x and x not in available:
                if x not in producers:
                    raise ValueError(f"{_label(n, i)} reads {x!r}, which no node, initializer or "
                                     "graph input defines")
                users.setdefault(x, []).append(i)
    ready = deque(i for i, w in enumerate(waiting) if w == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append((i, nodes[i]))
        for o in nodes[i].output:
            for j in users.pop(o, ()):
                waiting[j] -= 1
                if waiting[j] == 0:
                    ready.append(j)
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle: nodes "
                         + ", ".join(_label(nodes[i], i) for i, w in enumerate(waiting) if w)
                         + " wait on each other")
    return order


def _call(fn, label: str, values: list, names) -> dict:
    try:
        outs = fn(*values)
    except MemoryError:
        raise
    except Exception as exc:
        raise ValueError(f"{label}: {exc}") from exc
    result = {}
    for name, value in zip(names, outs):
        if name:
            result[name] = value
    return result


def _spec(value_info):
    """(dtype, dims) of a graph input; dims is None without a declared shape, its entries an
    int (fixed), a str (symbolic) or None (unknown)."""
    t = value_info.type
    if t.WhichOneof("value") != "tensor_type":
        raise ValueError(f"graph input {value_info.name!r} is not a tensor "
                         f"({t.WhichOneof('value')}); only tensor inputs are supported")
    dtype = np_dtype(t.tensor_type.elem_type)
    if not t.tensor_type.HasField("shape"):
        return dtype, None
    dims = []
    for d in t.tensor_type.shape.dim:
        kind = d.WhichOneof("value")
        dims.append(d.dim_value if kind == "dim_value" else d.dim_param if kind == "dim_param" else None)
    return dtype, tuple(dims)


class OnnxModel:
    """An ONNX graph ready to run on fusedrnn (made by :func:`load`).

    ``model(*inputs, **named)`` returns a tuple of outputs in ``output_names`` order;
    ``model.run({name: array})`` returns a dict {output name: array}.  Inputs are NumPy arrays
    (or nested lists) of the declared dtypes; outputs are new NumPy arrays."""

    def __init__(self, proto):
        graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        if self.opset < _MIN_OPSET:
            raise ValueError(f"the model's ONNX opset is {self.opset}; fusedrnn.onnx.load reads "
                             f"opset {_MIN_OPSET} and later")
        unsupported = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
                              for n in graph.node} - set(SUPPORTED_OPS))
        if unsupported or graph.sparse_initializer:
            found = unsupported + (["sparse initializers"] if graph.sparse_initializer else [])
            raise ValueError("the ONNX graph uses operators fusedrnn.onnx.load does not support: "
                             f"{', '.join(found)} (supported: {', '.join(SUPPORTED_OPS)})")
        consts = {init.name: tensor_value(init) for init in graph.initializer}
        inputs = [vi for vi in graph.input if vi.name not in consts]
        self._specs = {vi.name: _spec(vi) for vi in inputs}
        self.input_names = tuple(vi.name for vi in inputs)
        self.output_names = tuple(vi.name for vi in graph.output)
        self._steps = []
        for index, node in _toposort(list(graph.node), set(consts) | set(self.input_names)):
            label = _label(node, index)
            attrs = _attrs(node)
            if node.op_type in _RECURRENT:
                self._steps.append((label, RecurrentNode(node.op_type, attrs, list(node.input),
                                                         consts, label),
                                    tuple(node.input), tuple(node.output)))
                continue
            try:
                fn = OPS[node.op_type](attrs, list(node.input), self.opset)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{label}: {exc}") from None
            if all(not x or x in consts for x in node.input):  # fold it now, once
                for name, value in _call(fn, label, [consts.get(x) for x in node.input],
                                         node.output).items():
                    value = np.asarray(value)
                    value.setflags(write=False)  # shared by every call: never handed out writable
                    consts[name] = value
            else:
                self._steps.append((label, fn, tuple(node.input), tuple(node.output)))
        missing = [n for n in self.output_names if n not in consts and n not in self.input_names
                   and not any(n in s[3] for s in self._steps)]
        if missing:
            raise ValueError(f"graph outputs {missing} are not produced by any node")
        self._consts = consts

    def __repr__(self):
        return (f"OnnxModel(inputs={list(self.input_names)}, outputs={list(self.output_names)}, "
                f"opset={self.opset}, nodes run per call={len(self._steps)})")

    def _check_inputs(self, feeds: Mapping) -> dict:
        unknown = [k for k in feeds if k not in self._specs]
        missing = [k for k in self.input_names if k not in feeds]
        if unknown or missing:
            raise ValueError(f"the model takes inputs {list(self.input_names)}; "
                             + (f"missing {missing}" if missing else "")
                             + ("; " if missing and unknown else "")
                             + (f"unknown {unknown}" if unknown else ""))
        symbols = {}
        checked = {}
        for name in self.input_names:
            dtype, dims = self._specs[name]
            value = feeds[name]
            if not isinstance(value, np.ndarray):
                try:
                    value = np.asarray(value, dtype=dtype)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"input {name!r} must be an array of {dtype}, got "
                                    f"{type(value).__name__} ({exc})") from None
            if value.dtype != dtype and value.dtype.newbyteorder("=") == dtype:
                value = value.astype(dtype)  # same numbers, other byte order
            if value.dtype != dtype:
                raise TypeError(f"input {name!r} must have dtype {dtype}, got {value.dtype}")
            if dims is not None:
                want = "(" + ", ".join("?" if d is None else str(d) for d in dims) \
                    + ("," if len(dims) == 1 else "") + ")"
                if value.ndim != len(dims):
                    raise ValueError(f"input {name!r} must have rank {len(dims)}, shape {want}, "
                                     f"got shape {shape_str(value.shape)}")
                for axis, (d, got) in enumerate(zip(dims, value.shape)):
                    if isinstance(d, int) and d != got:  # dim_value 0 is "unset" too
                        if d:
                            raise ValueError(f"input {name!r} must have shape {want}, got "
                                             f"{shape_str(value.shape)} (axis {axis} must be {d})")
                    elif isinstance(d, str) and d:
                        first = symbols.setdefault(d, (got, name, axis))
                        if first[0] != got:
                            raise ValueError(
                                f"input {name!r} has size {got} on axis {axis}, but that axis is "
                                f"'{d}', which input {first[1]!r} sets to {first[0]} (axis {first[2]})")
            checked[name] = value
        return checked

    def run(self, feeds: Mapping) -> dict:
        """Run the graph on {input name: array}; returns {output name: array}."""
        if not isinstance(feeds, Mapping):
            raise TypeError(f"feeds must be a dict {{input name: array}}, got {type(feeds).__name__}")
        env = dict(self._consts)
        env.update(self._check_inputs(feeds))
        for label, fn, ins, outs in self._steps:
            env.update(_call(fn, label, [env[x] if x else None for x in ins], outs))
        result = {}
        for name in self.output_names:
            value = np.asarray(env[name])
            # constants and broadcast views are read-only, inputs belong to the caller
            if not value.flags.writeable or name in feeds or value.base is not None:
                value = np.array(value)
            result[name] = value
        return result

    def __call__(self, *inputs, **named):
        """Positional inputs in ``input_names`` order (and/or by name); returns a tuple of the
        outputs in ``output_names`` order."""
        if len(inputs) > len(self.input_names):
            raise TypeError(f"the model takes {len(self.input_names)} inputs "
                            f"{list(self.input_names)}, got {len(inputs)} positional")
        feeds = dict(zip(self.input_names, inputs))
        twice = sorted(set(feeds) & set(named))
        if twice:
            raise TypeError(f"inputs {twice} given both by position and by name")
        feeds.update(named)
        out = self.run(feeds)
        return tuple(out[n] for n in self.output_names)

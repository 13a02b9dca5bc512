"""A small builder of ONNX graphs: nodes, initializers, inputs and outputs with unique names.

Only the export uses it.  Shapes of inputs and outputs name their dynamic axes ("batch",
"time") as dim_params, so one exported file serves any batch size and sequence length.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Graph", "ELEM_TYPE"]

ELEM_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
             np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32}


class Graph:
    """Collects the pieces of one graph; ``model()`` assembles them."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []
        self._used: set = set()

    def name(self, stem: str) -> str:
        """A fresh name starting with stem."""
        name, k = stem, 1
        while name in self._used:
            k += 1
            name = f"{stem}_{k}"
        self._used.add(name)
        return name

    def input(self, name: str, shape, dtype=None) -> str:
        """A graph input; shape entries are ints or dim_param names."""
        elem = ELEM_TYPE[np.dtype(dtype or self.dtype)]
        self._claim(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def output(self, tensor: str, name: str, shape, dtype=None) -> None:
        """Expose tensor as the graph output `name` (an Identity renames it)."""
        elem = ELEM_TYPE[np.dtype(dtype or self.dtype)]
        self._claim(name)
        self.nodes.append(helper.make_node("Identity", [tensor], [name], name=self.name(f"{name}_out")))
        self.outputs.append(helper.make_tensor_value_info(name, elem, list(shape)))

    def _claim(self, name: str) -> None:
        if name in self._used:
            raise ValueError(f"the graph already has a tensor named {name!r}")
        self._used.add(name)

    def const(self, stem: str, value, dtype=None) -> str:
        """An initializer holding value (in the graph's float dtype unless dtype is given)."""
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype or self.dtype))
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, stem: str, values) -> str:
        """An int64 1-D initializer (axes, shapes, slice bounds)."""
        return self.const(stem, np.asarray(values, dtype=np.int64).reshape(-1), np.int64)

    def node(self, op: str, inputs, stem: str | None = None, n_out: int = 1, **attrs):
        """Add a node; returns its output name (or the list of them when n_out > 1)."""
        stem = stem or op.lower()
        outs = [self.name(f"{stem}_y{k}" if n_out > 1 else stem) for k in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=self.name(f"{stem}_node"),
                                           **attrs))
        return outs if n_out > 1 else outs[0]

    # --- shorthands for the layout changes the export needs ----------------------------------

    def transpose(self, x: str, perm, stem: str = "transpose") -> str:
        return self.node("Transpose", [x], stem, perm=list(perm))

    def reshape(self, x: str, shape, stem: str = "reshape") -> str:
        """Reshape to shape, where 0 keeps that axis' size and -1 takes the rest."""
        return self.node("Reshape", [x, self.ints("shape", shape)], stem)

    def slice(self, x: str, start: int, end: int, axis: int, step: int = 1, stem: str = "slice") -> str:
        return self.node("Slice", [x, self.ints("starts", [start]), self.ints("ends", [end]),
                                   self.ints("axes", [axis]), self.ints("steps", [step])], stem)

    def model(self, opset: int, graph_name: str, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs,
                                  initializer=self.initializers, doc_string=doc)
        # The IR version that goes with the opset (not the newest the onnx package knows), so
        # runtimes that read this opset read the file.
        return helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", opset)],
                                             producer_name="fusedrnn")

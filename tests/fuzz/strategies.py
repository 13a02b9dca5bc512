"""Hypothesis strategies shared by the fuzz properties: valid ops cases, special values,
array provenance variants (same values, other memory), and bad values for any argument."""

import pickle

import numpy as np
from hypothesis import strategies as st

from .oracle import GATES

CELLS = ("lstm", "gru", "rnn")
FLOATS = (np.float32, np.float64)
# Small dimensions: 1, odd and even sizes; with_big adds sizes past the kernels' blocking.
DIM = st.sampled_from([1, 1, 2, 3, 4, 5, 7, 8])
BIG_DIM = st.sampled_from([1, 2, 3, 5, 8, 17, 33, 65])


@st.composite
def ops_cases(draw, big=False, special=False):
    """A valid call of ops.<cell>_forward as (cell, kwargs), values drawn with a seed.

    special=True puts NaN/+inf/-inf at a few positions of the forward's inputs (x only at
    valid steps: padded steps are never read, which a separate property checks)."""
    dim = BIG_DIM if big else DIM
    cell = draw(st.sampled_from(CELLS))
    dtype = draw(st.sampled_from(FLOATS))
    T, B, I, H = draw(dim), draw(dim), draw(dim), draw(dim)
    G = GATES[cell]
    proj = draw(st.sampled_from([0, 0, 1, 2])) if cell == "lstm" and H > 1 else 0
    P = min(proj, H - 1) if proj else H
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # Weights ~ scale / sqrt(fan_in) as torch's init: larger ones make the recurrence chaotic,
    # and then float32 rounding differences grow past any fixed tolerance.
    scale = draw(st.sampled_from([0.1, 1.0, 2.0]))

    def arr(*shape, fan_in=1):
        return (rng.standard_normal(shape) * scale / np.sqrt(fan_in)).astype(dtype)

    kw = dict(x=arr(T, B, I), w_ih=arr(G * H, I, fan_in=I), w_hh=arr(G * H, P, fan_in=P))
    kw["b_ih"] = arr(G * H) if draw(st.booleans()) else None
    kw["b_hh"] = arr(G * H) if draw(st.booleans()) else None
    kw["h0"] = arr(B, P) if draw(st.booleans()) else None
    if cell == "lstm":
        kw["c0"] = arr(B, H) if draw(st.booleans()) else None
        kw["w_hr"] = arr(P, H, fan_in=H) if proj else None
        kw["activation"] = draw(st.sampled_from(["tanh", "relu"]))
    elif cell == "rnn":
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    if draw(st.booleans()):
        lengths = rng.integers(1, T + 1, size=B)
        kw["lengths"] = lengths.astype(draw(st.sampled_from([np.int64, np.int32, np.uint8])))
    kw["reverse"] = draw(st.booleans())
    if special:
        lengths = kw.get("lengths")
        valid = np.ones((T, B), bool) if lengths is None else np.arange(T)[:, None] < lengths[None, :]
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from([k for k in ("x", "w_ih", "w_hh", "b_ih", "h0", "c0")
                                         if kw.get(k) is not None]))
            a = kw[name]
            value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            if name == "x":
                t, b = np.argwhere(valid)[draw(st.integers(0, int(valid.sum()) - 1))]
                a[t, b, draw(st.integers(0, I - 1))] = value
            else:
                a.flat[draw(st.integers(0, a.size - 1))] = value
    return cell, kw


def misaligned(a):
    """A C-contiguous copy of `a` whose data pointer is off by one byte."""
    raw = np.empty(a.nbytes + a.itemsize + 1, np.uint8)
    start = 1 if raw.ctypes.data % a.itemsize == 0 else 2
    view = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def _strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else a.copy()
    if not a.ndim:
        return big
    big[..., ::2] = a
    return big[..., ::2]


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# Same values and dtype, other memory or metadata: every entry point must accept these and
# give exactly what the plain array gives.
PROVENANCE = {
    "fortran": np.asfortranarray,
    "non-contiguous": _strided,
    "negative-strides": lambda a: a[::-1].copy()[::-1] if a.ndim else a,
    "misaligned": misaligned,
    "read-only": _readonly,
    "pickled": lambda a: pickle.loads(pickle.dumps(a)),
    "byte-swapped": lambda a: a.astype(a.dtype.newbyteorder()),
    "metadata": lambda a: a.astype(np.dtype(a.dtype, metadata={"unit": "V"})),
}

class Variant:
    """A provenance variant made where it is used: pickling an array to the worker process
    would normalise its memory (byte order, alignment, strides) on the way."""

    def __init__(self, name, base):
        self.name, self.base = name, base

    def __repr__(self):
        return f"{self.name} array {self.base.shape}"


def materialize(value):
    """value, or the array a Variant stands for (lists are walked)."""
    if isinstance(value, Variant):
        return PROVENANCE[value.name](value.base)
    if isinstance(value, list):
        return [materialize(v) for v in value]
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    return value


OTHER_DTYPES = [np.float16, np.int8, np.int32, np.int64, np.uint16, np.bool_, np.complex64,
                np.complex128, np.longdouble, object, "U2", "S2", "M8[s]", "V4"]


class _Weird:
    def __repr__(self):
        return "<weird object>"


@st.composite
def bad_values(draw, like):
    """A value that is not a valid stand-in for the array `like` (or for a flag/string),
    labelled for the failure message."""
    kind = draw(st.sampled_from(["dtype", "shape", "python", "ragged", "scalar", "empty"]))
    if like is None or not isinstance(like, np.ndarray):
        kind = "python"
    if kind == "dtype":
        dt = draw(st.sampled_from(OTHER_DTYPES))
        try:
            return f"astype({dt})", like.astype(dt)
        except (TypeError, ValueError):
            return f"zeros({dt})", np.zeros(like.shape, dt)
    if kind == "shape":
        shape = list(like.shape)
        op = draw(st.sampled_from(["grow", "shrink", "add-axis", "drop-axis", "zero"]))
        if op == "grow" and shape:
            shape[draw(st.integers(0, len(shape) - 1))] += draw(st.integers(1, 3))
        elif op == "shrink" and shape:
            i = draw(st.integers(0, len(shape) - 1))
            shape[i] = max(0, shape[i] - 1) if shape[i] > 1 else shape[i] + 1
        elif op == "add-axis":
            shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(1, 2)))
        elif op == "drop-axis" and shape:
            shape.pop(draw(st.integers(0, len(shape) - 1)))
        else:
            shape[draw(st.integers(0, len(shape) - 1))] = 0 if shape else 0
        return f"shape {tuple(shape)}", np.zeros(shape, like.dtype)
    if kind == "ragged":
        return "ragged list", [[1.0, 2.0], [3.0]]
    if kind == "scalar":
        return "scalar", draw(st.sampled_from([1.5, 0, np.float32(1), np.float64(2.0)]))
    if kind == "empty":
        return "empty list", []
    value = draw(st.sampled_from(["tanh", "", b"x", 3, -1, 2.5, True, None, {"a": 1}, (1, 2),
                                  _Weird(), np.array("relu"), np.array([True]), float("nan")]))
    return f"{type(value).__name__} {value!r}", value

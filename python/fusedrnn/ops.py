"""Functional API over the fused kernels: NumPy in, NumPy out.

Each cell has a forward over the whole sequence and a backward that consumes the forward's
cache.  Shapes and equations are those of ``docs/conventions.md`` (time-major ``x`` of shape
(T, B, I); torch.nn gate order and weight layout).  The signatures match
``fusedrnn.reference``, plus ``training``:

    out, h_n, c_n, cache = lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, *, w_hr=None,
                                        lengths=None, reverse=False, activation='tanh',
                                        training=False)
    grads = lstm_backward(cache, dout=None, dh_n=None, dc_n=None)
    out, h_n, cache = gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, *, lengths=None,
                                  reverse=False, training=False)
    out, h_n, cache = rnn_forward(..., nonlinearity='tanh', training=False)

``cache`` is None unless ``training=True``.  It holds references to ``x`` and the weights
(no copies): modifying them in place between forward and backward changes the gradients.  ``grads`` is a dict with 'dx', 'dh0', 'dw_ih',
'dw_hh', 'db_ih', 'db_hh', and for the LSTM 'dc0' (and 'dw_hr' with a projection).

Device: ``device='cuda'`` runs the CUDA kernels (fusedrnn.cuda_ops): NumPy in and out as here,
or device arrays (``__cuda_array_interface__``) used in place; the cache, and its backward,
stay on the device.  A build without CUDA raises a RuntimeError for it.

Dtypes: float32 or float64, taken from ``x``; every other array must have the same dtype
(TypeError otherwise).  Integer, boolean, complex and float16 arrays are rejected with a
TypeError (convert float16 with ``.astype(np.float32)``).  Arrays of any layout and provenance
are accepted: non-contiguous, Fortran-order, negative strides, read-only, misaligned (e.g. a view
into a byte buffer), byte-swapped ('>f4' on a little-endian machine) or with dtype metadata; they
are copied into native, aligned, C-contiguous memory when the kernels need it (no copy otherwise).
``None`` for a bias or a state means zeros.  Every shape and value error is a ValueError
naming the argument, the shape expected and the shape received.

Repeated calls with the same weights: ``packed=PackedWeights()`` (one per layer and direction)
keeps the packed copy of the weights that the CPU's packed loop builds, so later calls skip
packing, which dominates short calls (a few steps, small batches).  It is filled by the first
call and never compared with the weights again: make a new one whenever they change (the
layers do this by their weight version).  Ignored on the device and where the build has no
packed loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core, _device
from ._checks import GATES, check_bool, shape_str

__all__ = [
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
    "rnn_forward",
    "rnn_backward",
    "ForwardCache",
    "PackedWeights",
]

# Packed weights kept between forward calls: see the module docstring.
PackedWeights = _core.PackedWeights

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _native(arr: np.ndarray) -> np.ndarray:
    """arr in native byte order, aligned and C-contiguous, as the kernels take it; the same
    array when it already is.  (np.ascontiguousarray alone keeps misaligned memory.)"""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    flags = arr.flags
    if flags.c_contiguous and flags.aligned:  # the common case, without np.require's overhead
        return arr
    return np.require(arr, requirements="CA")


def _array(value, name: str, dtype=None) -> np.ndarray:
    """value as a C-contiguous float array; dtype None means 'float32 or float64'."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # ragged lists and other non-arrays
            raise TypeError(f"{name} must be an array of floats, got {type(value).__name__}") from exc
    if arr.dtype.byteorder not in "=|" and arr.dtype.newbyteorder("=") in _FLOATS:
        arr = _native(arr)  # '>f4' and '<f4' hold the same numbers; only the layout differs
    if arr.dtype not in _FLOATS:
        hint = " (convert it with .astype(np.float32))" if arr.dtype == np.float16 else ""
        if dtype is None:
            raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}{hint}")
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)} (the dtype of x), got {arr.dtype}{hint}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but x has dtype {np.dtype(dtype)}; "
                        "pass every array in one dtype")
    return _native(arr)


def _shaped(value, name: str, shape: tuple, dtype, what: str, take=_array):
    """take(value, name, dtype) (``_array``; the CUDA path passes its device twin), checked to
    have `shape`."""
    arr = take(value, name, dtype)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {what} = {shape_str(shape)}, got {shape_str(arr.shape)}")
    return arr


def _lengths(lengths, T: int, B: int, name: str = "lengths", batch: str = "B"):
    """lengths as native C-contiguous int64 of shape (B,) in 1..T: the one lengths check (the
    layers and the trainer use it too).  `name` is the argument in messages ('lengths of
    validation_data'), `batch` the letter of the batch axis ('N' in the trainer)."""
    if lengths is None:
        return None
    try:
        arr = np.asarray(lengths)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise TypeError(f"{name} must be a 1-D array of integers, got {type(lengths).__name__} "
                        f"that is not one ({exc})") from None
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"{name} must have shape ({batch},) = ({B},), one per sequence, "
                         f"got {shape_str(arr.shape)}")
    if arr.size and (arr.min() < 1 or arr.max() > T):
        raise ValueError(f"{name} must lie in 1..T = 1..{T}, got values from {arr.min()} to {arr.max()}")
    return _native(arr.astype(np.int64, copy=False))


def _choice(value, name: str) -> str:
    if value not in ("tanh", "relu"):
        raise ValueError(f"{name} must be 'tanh' or 'relu', got {value!r}")
    return value


@dataclass
class ForwardCache:
    """What a training forward keeps for its backward (opaque to users)."""

    cell: str
    x: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    w_hr: np.ndarray | None
    lengths: np.ndarray | None
    reverse: bool
    activation: str
    workspace: np.ndarray
    B: int
    H: int
    P: int

    @property
    def nbytes(self) -> int:
        """Bytes kept for backward beyond the inputs (the workspace)."""
        return int(self.workspace.nbytes)


def _forward_args(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, reverse, activation, training,
                  take=_array, zeros=np.zeros):
    """Every forward argument checked (the messages of the module docstring) and converted with
    take(value, name, dtype) (None: float32 or float64); zeros(shape, dtype) stands for a bias or
    state given as None.  The CPU and CUDA paths differ only in those two.  Returns the arguments
    in the kernels' order, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, activation,
    training, then (B, H, P)."""
    G = GATES[cell]
    x = take(x, "x", None)
    if len(x.shape) != 3:
        raise ValueError(f"x must be 3-D (T, B, I), got shape {shape_str(x.shape)}")
    T, B, I = x.shape
    if min(T, B, I) < 1:
        raise ValueError(f"x must have T, B, I >= 1, got shape {shape_str(x.shape)}")
    dt = x.dtype
    w_ih = take(w_ih, "w_ih", dt)
    if len(w_ih.shape) != 2 or w_ih.shape[0] < G or w_ih.shape[0] % G or w_ih.shape[1] != I:
        raise ValueError(f"w_ih must have shape (G*H, I) with G = {G} ({cell}) and I = {I} from x, "
                         f"got {shape_str(w_ih.shape)}")
    H = w_ih.shape[0] // G
    P = H
    if w_hr is not None:
        if cell != "lstm":
            raise ValueError("w_hr (projection) exists only for the LSTM")
        w_hr = take(w_hr, "w_hr", dt)
        if len(w_hr.shape) != 2 or w_hr.shape[1] != H or w_hr.shape[0] < 1:
            raise ValueError(f"w_hr must have shape (P, H) with H = {H}, got {shape_str(w_hr.shape)}")
        P = w_hr.shape[0]

    def shaped(value, name, shape, what):
        return zeros(shape, dt) if value is None else _shaped(value, name, shape, dt, what, take)

    w_hh = _shaped(w_hh, "w_hh", (G * H, P), dt, "(G*H, P)", take)
    b_ih = shaped(b_ih, "b_ih", (G * H,), "(G*H,)")
    b_hh = shaped(b_hh, "b_hh", (G * H,), "(G*H,)")
    h0 = shaped(h0, "h0", (B, P), "(B, P)")
    if cell == "lstm":
        c0 = shaped(c0, "c0", (B, H), "(B, H)")
    lengths = _lengths(lengths, T, B)
    reverse = check_bool(reverse, "reverse")
    training = check_bool(training, "training")
    activation = _choice(activation, "nonlinearity" if cell == "rnn" else "activation")
    return x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, activation, training, (B, H, P)


def _forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, reverse, activation, training,
             device="cpu", packed=None):
    if _device.check_device(device) == "cuda":  # --- CUDA hook: fusedrnn/cuda_ops.py ---
        from . import cuda_ops

        return cuda_ops.forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, reverse,
                                activation, training)
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, activation, training, (B, H, P) = \
        _forward_args(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, reverse, activation, training)
    fn = getattr(_core, f"{cell}_forward")
    if packed is not None and not isinstance(packed, PackedWeights):
        raise TypeError(f"packed must be a fusedrnn.ops.PackedWeights or None, got {type(packed).__name__}")
    out, h_n, c_n, ws = fn(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, activation, training,
                           packed)
    cache = None
    if training:
        cache = ForwardCache(cell, x, w_ih, w_hh, w_hr, lengths, reverse, activation, ws, B, H, P)
    return out, h_n, c_n, cache


def _backward_args(cell, cache, dout, dh_n, dc_n, take=_array, zeros=np.zeros):
    """dout, dh_n, dc_n checked against the cache's shapes and converted with take (zeros for
    None), as _forward_args does for the forward."""
    dt = cache.x.dtype
    T, B = cache.x.shape[:2]
    P, H = cache.P, cache.H

    def shaped(value, name, shape, what):
        return zeros(shape, dt) if value is None else _shaped(value, name, shape, dt, what, take)

    dout = shaped(dout, "dout", (T, B, P), "(T, B, P)")
    dh_n = shaped(dh_n, "dh_n", (B, P), "(B, P)")
    if cell == "lstm":
        dc_n = shaped(dc_n, "dc_n", (B, H), "(B, H)")
    return dout, dh_n, dc_n


def _grads(cell, cache, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr) -> dict:
    """The kernels' gradients as the dict backward returns (dc0 and dw_hr where they exist)."""
    grads = {"dx": dx, "dh0": dh0, "dw_ih": dw_ih, "dw_hh": dw_hh, "db_ih": db_ih, "db_hh": db_hh}
    if cell == "lstm":
        grads["dc0"] = dc0
        if cache.w_hr is not None:
            grads["dw_hr"] = dw_hr
    return grads


def _backward(cell, cache, dout, dh_n, dc_n, need_dx=True):
    if cache is None:
        raise RuntimeError("backward needs the cache of a forward run with training=True; "
                           "this forward ran with training=False")
    if not isinstance(cache, ForwardCache):
        raise TypeError(f"cache must be the ForwardCache returned by {cell}_forward, got {type(cache).__name__}")
    if cache.cell != cell:
        raise TypeError(f"cache comes from {cache.cell}_forward, not {cell}_forward")
    if _core.cuda_compiled:  # --- CUDA hook: a cache from the device is differentiated there ---
        from . import cuda_ops

        if cuda_ops.on_device(cache):
            return cuda_ops.backward(cell, cache, dout, dh_n, dc_n, need_dx=need_dx)
    dout, dh_n, dc_n = _backward_args(cell, cache, dout, dh_n, dc_n)
    fn = getattr(_core, f"{cell}_backward")
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = fn(
        cache.x, cache.w_ih, cache.w_hh, cache.w_hr, cache.lengths, cache.reverse,
        cache.activation, cache.workspace, dout, dh_n, dc_n, need_dx=bool(need_dx))
    return _grads(cell, cache, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)


def lstm_forward(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, *, w_hr=None,
                 lengths=None, reverse=False, activation="tanh", training=False, device="cpu",
                 packed=None):
    """LSTM over the whole sequence.  Returns (out, h_n, c_n, cache); cache is None unless
    training.  ``activation='relu'`` replaces both tanh's; ``w_hr`` (P, H) is torch's
    projection (proj_size = P)."""
    return _forward("lstm", x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, reverse, activation, training,
                    device, packed)


def lstm_backward(cache, dout=None, dh_n=None, dc_n=None, *, need_dx=True):
    """Gradients of an LSTM training forward: dict with dx, dh0, dc0, dw_ih, dw_hh, db_ih,
    db_hh (and dw_hr).  None for dout/dh_n/dc_n means zero.  need_dx=False skips the product
    for dx (the gradient of the model's input, which training does not use); dx is then None."""
    return _backward("lstm", cache, dout, dh_n, dc_n, need_dx)


def gru_forward(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, lengths=None, reverse=False,
                training=False, device="cpu", packed=None):
    """GRU over the whole sequence.  Returns (out, h_n, cache); cache is None unless training."""
    out, h_n, _, cache = _forward("gru", x, w_ih, w_hh, b_ih, b_hh, h0, None, None, lengths, reverse,
                                  "tanh", training, device, packed)
    return out, h_n, cache


def gru_backward(cache, dout=None, dh_n=None, *, need_dx=True):
    """Gradients of a GRU training forward: dict with dx, dh0, dw_ih, dw_hh, db_ih, db_hh
    (dx None with need_dx=False, as lstm_backward)."""
    return _backward("gru", cache, dout, dh_n, None, need_dx)


def rnn_forward(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, lengths=None, reverse=False,
                nonlinearity="tanh", training=False, device="cpu", packed=None):
    """Elman RNN (tanh or relu) over the whole sequence.  Returns (out, h_n, cache)."""
    out, h_n, _, cache = _forward("rnn", x, w_ih, w_hh, b_ih, b_hh, h0, None, None, lengths, reverse,
                                  nonlinearity, training, device, packed)
    return out, h_n, cache


def rnn_backward(cache, dout=None, dh_n=None, *, need_dx=True):
    """Gradients of an RNN training forward: dict with dx, dh0, dw_ih, dw_hh, db_ih, db_hh
    (dx None with need_dx=False, as lstm_backward)."""
    return _backward("rnn", cache, dout, dh_n, None, need_dx)

"""The functional API on the CUDA device (``fusedrnn.ops`` with ``device='cuda'`` lands here).

Arguments may be NumPy arrays (copied to the device), fusedrnn DeviceArrays, or objects with
``__cuda_array_interface__`` (used in place, no copy).  Results come back as NumPy arrays
unless ``keep=True`` (then as DeviceArrays, for callers that chain device work).  The cache of
a training forward holds DeviceArrays: the workspace stays on the device until backward.
Every check is the CPU path's (same messages); the kernels are csrc/cuda.
"""

from __future__ import annotations

import numpy as np

from . import _core, _device
from ._checks import GATES, check_bool, shape_str
from .ops import _FLOATS, ForwardCache, _array, _choice, _lengths


def _dev(value, name: str, dtype=None):
    """value on the device with the dtype checks of ops._array."""
    if _device.is_device_array(value):
        try:
            arr = _device.to_device(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from exc
        if arr.dtype not in _FLOATS:
            raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
        if dtype is not None and arr.dtype != dtype:
            raise TypeError(f"{name} has dtype {arr.dtype} but x has dtype {np.dtype(dtype)}; "
                            "pass every array in one dtype")
        return arr
    return _device.to_device(_array(value, name, dtype))


def _shaped(value, name: str, shape: tuple, dtype, what: str):
    arr = _dev(value, name, dtype)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {what} = {shape_str(shape)}, got {shape_str(arr.shape)}")
    return arr


def _zeros(shape, dtype):
    return _core.DeviceArray.from_numpy(np.zeros(shape, dtype))


def _out(arr, keep: bool):
    return arr if keep or arr is None else arr.numpy()


def forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, reverse, activation, training,
            *, keep=False):
    """(out, h_n, c_n, cache) as ops._forward, computed on the CUDA device."""
    _device.check_device("cuda")
    G = GATES[cell]
    x = _dev(x, "x")
    if len(x.shape) != 3:
        raise ValueError(f"x must be 3-D (T, B, I), got shape {shape_str(x.shape)}")
    T, B, I = x.shape
    if min(T, B, I) < 1:
        raise ValueError(f"x must have T, B, I >= 1, got shape {shape_str(x.shape)}")
    dt = x.dtype
    w_ih = _dev(w_ih, "w_ih", dt)
    if len(w_ih.shape) != 2 or w_ih.shape[0] < G or w_ih.shape[0] % G or w_ih.shape[1] != I:
        raise ValueError(f"w_ih must have shape (G*H, I) with G = {G} ({cell}) and I = {I} from x, "
                         f"got {shape_str(w_ih.shape)}")
    H = w_ih.shape[0] // G
    P = H
    if w_hr is not None:
        if cell != "lstm":
            raise ValueError("w_hr (projection) exists only for the LSTM")
        w_hr = _dev(w_hr, "w_hr", dt)
        if len(w_hr.shape) != 2 or w_hr.shape[1] != H or w_hr.shape[0] < 1:
            raise ValueError(f"w_hr must have shape (P, H) with H = {H}, got {shape_str(w_hr.shape)}")
        P = w_hr.shape[0]
    w_hh = _shaped(w_hh, "w_hh", (G * H, P), dt, "(G*H, P)")
    b_ih = _zeros(G * H, dt) if b_ih is None else _shaped(b_ih, "b_ih", (G * H,), dt, "(G*H,)")
    b_hh = _zeros(G * H, dt) if b_hh is None else _shaped(b_hh, "b_hh", (G * H,), dt, "(G*H,)")
    h0 = _zeros((B, P), dt) if h0 is None else _shaped(h0, "h0", (B, P), dt, "(B, P)")
    if cell == "lstm":
        c0 = _zeros((B, H), dt) if c0 is None else _shaped(c0, "c0", (B, H), dt, "(B, H)")
    lengths = _lengths(lengths, T, B)
    reverse = check_bool(reverse, "reverse")
    training = check_bool(training, "training")
    activation = _choice(activation, "nonlinearity" if cell == "rnn" else "activation")

    out, h_n, c_n, ws = _core.cuda_forward(cell, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths,
                                           reverse, activation, training)
    cache = None
    if training:
        cache = ForwardCache(cell, x, w_ih, w_hh, w_hr, lengths, reverse, activation, ws, B, H, P)
    return _out(out, keep), _out(h_n, keep), _out(c_n, keep), cache


def on_device(cache) -> bool:
    """True when a ForwardCache comes from a forward on the CUDA device."""
    return _core.cuda_compiled and isinstance(cache.workspace, _core.DeviceArray)


def backward(cell, cache, dout, dh_n, dc_n, *, keep=False):
    """The gradients dict of ops._backward for a cache from forward() above."""
    dt = cache.x.dtype
    T, B = cache.x.shape[:2]
    P, H = cache.P, cache.H
    dout = _zeros((T, B, P), dt) if dout is None else _shaped(dout, "dout", (T, B, P), dt, "(T, B, P)")
    dh_n = _zeros((B, P), dt) if dh_n is None else _shaped(dh_n, "dh_n", (B, P), dt, "(B, P)")
    if cell == "lstm":
        dc_n = _zeros((B, H), dt) if dc_n is None else _shaped(dc_n, "dc_n", (B, H), dt, "(B, H)")
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = _core.cuda_backward(
        cell, cache.x, cache.w_ih, cache.w_hh, cache.w_hr, cache.lengths, cache.reverse,
        cache.activation, cache.workspace, dout, dh_n, dc_n)
    grads = {"dx": dx, "dh0": dh0, "dw_ih": dw_ih, "dw_hh": dw_hh, "db_ih": db_ih, "db_hh": db_hh}
    if cell == "lstm":
        grads["dc0"] = dc0
        if cache.w_hr is not None:
            grads["dw_hr"] = dw_hr
    return {k: _out(v, keep) for k, v in grads.items()}

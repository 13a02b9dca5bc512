"""The functional API on the CUDA device (``fusedrnn.ops`` with ``device='cuda'`` lands here).

Arguments may be NumPy arrays and other host data (copied to the device), fusedrnn
DeviceArrays, objects with ``__cuda_array_interface__``, or DLPack producers of CUDA memory
(``__dlpack__`` and ``__dlpack_device__`` reporting device type 2 or 13, device 0; taken on the
legacy default stream): the last three are used in place, no copy.  A DLPack producer on the
CPU (a torch CPU tensor) is host data.  Results come back as NumPy arrays
unless ``keep=True`` (then as DeviceArrays, for callers that chain device work).  The cache of
a training forward holds DeviceArrays: the workspace stays on the device until backward.
Every check is the CPU path's (same messages); the kernels are csrc/cuda.
"""

from __future__ import annotations

import numpy as np

from . import _core, _device, ops
from .ops import _FLOATS, ForwardCache, _array


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


def _zeros(shape, dtype):
    """Zeros made on the device (nothing crosses from the host)."""
    arr = _core.DeviceArray.empty([int(n) for n in shape], np.dtype(dtype))
    _core.cuda_zero(arr)
    return arr


def _out(arr, keep: bool):
    return arr if keep or arr is None else arr.numpy()


def forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, reverse, activation, training,
            *, keep=False):
    """(out, h_n, c_n, cache) as ops._forward, computed on the CUDA device."""
    _device.check_device("cuda")
    x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse, activation, training, (B, H, P) = \
        ops._forward_args(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, reverse, activation,
                          training, take=_dev, zeros=_zeros)
    out, h_n, c_n, ws = _core.cuda_forward(cell, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths,
                                           reverse, activation, training)
    cache = None
    if training:
        cache = ForwardCache(cell, x, w_ih, w_hh, w_hr, lengths, reverse, activation, ws, B, H, P)
    return _out(out, keep), _out(h_n, keep), _out(c_n, keep), cache


def on_device(cache) -> bool:
    """True when a ForwardCache comes from a forward on the CUDA device."""
    return _core.cuda_compiled and isinstance(cache.workspace, _core.DeviceArray)


def backward(cell, cache, dout, dh_n, dc_n, *, keep=False, need_dx=True):
    """The gradients dict of ops._backward for a cache from forward() above."""
    dout, dh_n, dc_n = ops._backward_args(cell, cache, dout, dh_n, dc_n, take=_dev, zeros=_zeros)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = _core.cuda_backward(
        cell, cache.x, cache.w_ih, cache.w_hh, cache.w_hr, cache.lengths, cache.reverse,
        cache.activation, cache.workspace, dout, dh_n, dc_n, need_dx=bool(need_dx))
    grads = ops._grads(cell, cache, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)
    return {k: _out(v, keep) for k, v in grads.items()}

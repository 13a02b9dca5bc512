"""Conversion between Keras recurrent weights and fusedrnn's (torch's) layout.

One Keras LSTM / GRU / SimpleRNN layer holds, as ``layer.get_weights()`` returns them:

    kernel            (I, G*H)   x @ kernel, gates side by side in columns
    recurrent_kernel  (H, G*H)   h @ recurrent_kernel
    bias              LSTM (4H,), SimpleRNN (H,), GRU (2, 3H) = [input bias; recurrent bias]

fusedrnn (docs/conventions.md) keeps ``w_ih`` (G*H, I) and ``w_hh`` (G*H, H), applied as
``W @ x``, so every matrix is transposed.  Gate blocks:

    LSTM   Keras i, f, c, o   = torch i, f, g, o   (same order)
    GRU    Keras z, r, h      ->  torch r, z, n    (first two blocks swap)

Keras' single LSTM/SimpleRNN bias becomes ``bias_ih``, with ``bias_hh`` zero; exported the
other way, the two torch biases are summed (the layer computes the same function).

Only the Keras GRU with ``reset_after=True`` (its default) matches torch's GRU: it applies the
reset gate after the recurrent matmul, ``r * (h R_h + b_rh)``.  ``reset_after=False`` computes
``(r * h) R_h`` instead, which no torch/fusedrnn GRU can represent, so it is refused.  Its
bias has shape (3H,), which is how it is recognised; without a bias the two variants cannot
be told apart, so the caller must know the Keras layer used reset_after=True.
"""

from __future__ import annotations

import numpy as np

from ._checks import GATES as _GATES
from ._checks import shape_str as _fmt

__all__ = ["from_keras_weights", "to_keras_weights"]


def _cell(cell: str) -> str:
    if cell not in _GATES:
        raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn', got {cell!r}")
    return cell


def _real(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of real numbers, got {type(value).__name__}") from exc
    if arr.dtype == np.bool_ or arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _swap_gru_blocks(a: np.ndarray, H: int) -> np.ndarray:
    """Swap the first two H-sized blocks of the last axis: Keras z,r,h <-> torch r,z,n.

    The swap is its own inverse, so it serves both directions."""
    return np.concatenate([a[..., H:2 * H], a[..., :H], a[..., 2 * H:]], axis=-1)


def from_keras_weights(cell: str, kernel, recurrent_kernel, bias=None) -> dict:
    """Keras weights of one layer (one direction) -> dict with 'weight_ih', 'weight_hh' and,
    when a bias is given, 'bias_ih', 'bias_hh' in torch's layout (float64 arrays)."""
    cell = _cell(cell)
    G = _GATES[cell]
    kernel = _real(kernel, "kernel")
    recurrent_kernel = _real(recurrent_kernel, "recurrent_kernel")
    if recurrent_kernel.ndim != 2 or recurrent_kernel.shape[0] < 1 or \
            recurrent_kernel.shape[1] != G * recurrent_kernel.shape[0]:
        raise ValueError(f"recurrent_kernel of a Keras {cell.upper()} must have shape (H, {G}*H), "
                         f"got {_fmt(recurrent_kernel.shape)}")
    H = recurrent_kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != G * H or kernel.shape[0] < 1:
        raise ValueError(f"kernel must have shape (I, {G * H}) to match recurrent_kernel (H = {H}), "
                         f"got {_fmt(kernel.shape)}")
    kernel = kernel.astype(np.float64)
    recurrent_kernel = recurrent_kernel.astype(np.float64)
    if cell == "gru":
        kernel = _swap_gru_blocks(kernel, H)
        recurrent_kernel = _swap_gru_blocks(recurrent_kernel, H)
    out = {"weight_ih": np.ascontiguousarray(kernel.T),
           "weight_hh": np.ascontiguousarray(recurrent_kernel.T)}
    if bias is None:
        return out
    bias = _real(bias, "bias").astype(np.float64)
    if cell == "gru":
        if bias.shape == (3 * H,):
            raise ValueError(
                f"a Keras GRU bias of shape ({3 * H},) comes from reset_after=False, which applies the "
                "reset gate before the recurrent matmul; torch's and fusedrnn's GRU apply it after "
                "(Keras reset_after=True, bias shape (2, 3H)), so these weights cannot be converted")
        if bias.shape != (2, 3 * H):
            raise ValueError(f"bias of a Keras GRU (reset_after=True) must have shape (2, {3 * H}), "
                             f"got {_fmt(bias.shape)}")
        out["bias_ih"] = _swap_gru_blocks(bias[0], H)
        out["bias_hh"] = _swap_gru_blocks(bias[1], H)
    else:
        if bias.shape != (G * H,):
            raise ValueError(f"bias of a Keras {cell.upper()} must have shape ({G * H},), "
                             f"got {_fmt(bias.shape)}")
        out["bias_ih"] = bias.copy()
        out["bias_hh"] = np.zeros_like(bias)
    return out


def to_keras_weights(cell: str, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> list:
    """torch-layout weights of one layer (one direction) -> [kernel, recurrent_kernel] plus
    [bias] when biases are given, ready for a Keras layer's ``set_weights`` (float64 arrays;
    a GRU bias is (2, 3H), i.e. Keras' reset_after=True)."""
    cell = _cell(cell)
    G = _GATES[cell]
    w_ih = _real(weight_ih, "weight_ih").astype(np.float64)
    w_hh = _real(weight_hh, "weight_hh").astype(np.float64)
    if w_hh.ndim != 2 or w_hh.shape[0] != G * w_hh.shape[1] or w_hh.shape[1] < 1:
        raise ValueError(f"weight_hh must have shape ({G}*H, H) (a projected LSTM has no Keras "
                         f"equivalent), got {_fmt(w_hh.shape)}")
    H = w_hh.shape[1]
    if w_ih.ndim != 2 or w_ih.shape[0] != G * H:
        raise ValueError(f"weight_ih must have shape ({G * H}, I), got {_fmt(w_ih.shape)}")
    kernel, recurrent = w_ih.T, w_hh.T
    if cell == "gru":
        kernel, recurrent = _swap_gru_blocks(kernel, H), _swap_gru_blocks(recurrent, H)
    weights = [np.ascontiguousarray(kernel), np.ascontiguousarray(recurrent)]
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError("give both bias_ih and bias_hh, or neither")
    if bias_ih is None:
        return weights
    b_ih = _real(bias_ih, "bias_ih").astype(np.float64)
    b_hh = _real(bias_hh, "bias_hh").astype(np.float64)
    for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b.shape != (G * H,):
            raise ValueError(f"{name} must have shape ({G * H},), got {_fmt(b.shape)}")
    if cell == "gru":
        weights.append(np.stack([_swap_gru_blocks(b_ih, H), _swap_gru_blocks(b_hh, H)]))
    else:
        # Both biases are added to the same pre-activation, so their sum is Keras' one bias.
        weights.append(b_ih + b_hh)
    return weights

"""Weight layout between fusedrnn (torch's layout) and the ONNX recurrent operators.

fusedrnn keeps, per layer and direction, ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H) and the
two biases (G*H,), with the gate blocks in torch's order.  An ONNX LSTM/GRU/RNN node takes all
directions at once:

    W  (num_directions, G*H, I)     input weights
    R  (num_directions, G*H, H)     recurrent weights
    B  (num_directions, 2*G*H)      [input bias ; recurrent bias]

with its own gate order:

    LSTM   torch i, f, g, o    ONNX i, o, f, c
    GRU    torch r, z, n       ONNX z, r, h     (linear_before_reset=1 is torch's GRU)
    RNN    one block

``ONNX_ORDER[cell][k]`` is the torch block that ONNX block k holds.
"""

from __future__ import annotations

import numpy as np

from .._checks import GATES

__all__ = ["ONNX_ORDER", "to_onnx_blocks", "from_onnx_blocks", "to_onnx_direction",
           "from_onnx_direction"]

ONNX_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}


def _permute(cell: str, a: np.ndarray, order, axis: int) -> np.ndarray:
    a = np.asarray(a)
    G = GATES[cell]
    if a.shape[axis] % G:
        raise ValueError(f"axis {axis} of a {cell.upper()} weight must hold {G} equal gate "
                         f"blocks, got length {a.shape[axis]}")
    blocks = np.split(a, G, axis=axis)
    return np.concatenate([blocks[k] for k in order], axis=axis)


def to_onnx_blocks(cell: str, a, axis: int = 0) -> np.ndarray:
    """Reorder the gate blocks along ``axis`` from torch's order to ONNX's."""
    return _permute(cell, a, ONNX_ORDER[cell], axis)


def from_onnx_blocks(cell: str, a, axis: int = 0) -> np.ndarray:
    """Reorder the gate blocks along ``axis`` from ONNX's order to torch's."""
    return _permute(cell, a, tuple(int(k) for k in np.argsort(ONNX_ORDER[cell])), axis)


def to_onnx_direction(cell: str, w_ih, w_hh, b_ih=None, b_hh=None):
    """One direction's torch-layout weights -> (W, R, B) of shapes (G*H, I), (G*H, H), (2*G*H,).

    A missing bias is zero (ONNX's default too)."""
    W = to_onnx_blocks(cell, w_ih)
    R = to_onnx_blocks(cell, w_hh)
    rows = W.shape[0]
    b_ih = np.zeros(rows, W.dtype) if b_ih is None else to_onnx_blocks(cell, b_ih)
    b_hh = np.zeros(rows, W.dtype) if b_hh is None else to_onnx_blocks(cell, b_hh)
    return W, R, np.concatenate([b_ih, b_hh])


def from_onnx_direction(cell: str, W, R, B=None) -> dict:
    """One direction's ONNX (W, R, B) -> dict with torch's 'weight_ih', 'weight_hh',
    'bias_ih', 'bias_hh' (the biases zero when B is None)."""
    w_ih = from_onnx_blocks(cell, W)
    w_hh = from_onnx_blocks(cell, R)
    rows = w_ih.shape[0]
    if B is None:
        b_ih = b_hh = np.zeros(rows, w_ih.dtype)
    else:
        B = np.asarray(B)
        if B.shape != (2 * rows,):
            raise ValueError(f"B of one direction must have shape ({2 * rows},), got {B.shape}")
        b_ih, b_hh = from_onnx_blocks(cell, B[:rows]), from_onnx_blocks(cell, B[rows:])
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}

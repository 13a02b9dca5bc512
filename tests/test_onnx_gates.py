"""The gate-order tables against the operator definitions, block by block."""
import numpy as np
import pytest

from fusedrnn.onnx._gates import (from_onnx_blocks, from_onnx_direction, to_onnx_blocks,
                                  to_onnx_direction)

H = 3


def labelled(names):
    """One H-row block per gate, every entry of block k equal to k's label index."""
    return np.concatenate([np.full((H, 2), i, float) for i, _ in enumerate(names)])


@pytest.mark.parametrize("cell, torch_order, onnx_order", [
    ("lstm", "ifgo", "iofg"),  # ONNX calls torch's g gate c
    ("gru", "rzn", "zrn"),     # ONNX calls torch's n gate h
    ("rnn", "h", "h"),
])
def test_blocks_follow_the_operator_definitions(cell, torch_order, onnx_order):
    a = labelled(torch_order)
    got = to_onnx_blocks(cell, a)
    want = [torch_order.index(g) for g in onnx_order]
    assert [int(got[k * H, 0]) for k in range(len(onnx_order))] == want
    np.testing.assert_array_equal(from_onnx_blocks(cell, got), a)


@pytest.mark.parametrize("cell, G", [("lstm", 4), ("gru", 3), ("rnn", 1)])
def test_direction_round_trip(cell, G):
    rng = np.random.default_rng(0)
    w_ih, w_hh = rng.standard_normal((G * H, 5)), rng.standard_normal((G * H, H))
    b_ih, b_hh = rng.standard_normal(G * H), rng.standard_normal(G * H)
    W, R, B = to_onnx_direction(cell, w_ih, w_hh, b_ih, b_hh)
    assert W.shape == (G * H, 5) and R.shape == (G * H, H) and B.shape == (2 * G * H,)
    back = from_onnx_direction(cell, W, R, B)
    for name, want in dict(weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh).items():
        np.testing.assert_array_equal(back[name], want)
    np.testing.assert_array_equal(to_onnx_direction(cell, w_ih, w_hh)[2], np.zeros(2 * G * H))
    with pytest.raises(ValueError, match="B of one direction"):
        from_onnx_direction(cell, W, R, B[:-1])

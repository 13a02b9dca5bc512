"""The packed time loop (csrc/cpu/fused_loop.h over simd.h) on every instruction set that has
one here, float32 and float64, against the NumPy oracle -- with a check that the packed loop
really ran (_core.packed_loop_calls) and that the baseline build keeps the generic loop.

Shapes aim at the loop's edges: row counts that are not a multiple of the tile's MR (B = 1,
7, 13), H not a multiple of any panel width, steps big enough that 2 threads split the units,
a reduction longer than one K slice (the backward of an LSTM with G*H > 1024, and an input
product of I = 4200: more than one slice of the time loops' products, which are sized from
the L2 cache, on every machine), lengths,
reverse, relu, the LSTM projection (P < H, P > H, P below one vector), and whole-sequence
products (dx, dW, dW_hr) deeper than one chunk of 1024 rows.  The products' widths (I, H, P)
take each of their column-panel choices: narrower than 16 or 32 columns alone (I = 3..20),
whole 64-column panels followed by a narrow rest (I = 70, H = 270, P = 150, 170), and a
48-column rest (H = 33, 37, 170); so do the time loops' last panels (forward: LSTM H = 33, 37,
75 in 16, 32 and 48 columns, RNN H = 70, 170; backward: the dh columns past the last whole
panel).
"""

import numpy as np
import pytest

from conftest import (CELL_CONFIGS, make_case, make_cotangents, make_lengths, run_backward,
                      run_forward, use_isa)
from test_kernels import DTYPE_IDS, DTYPES, check_against_reference
import fusedrnn
from fusedrnn import _core, ops

PACKED_ISAS = ["avx2", "avx512"]

# (config, T, B, I, H, lengths, reverse, projection size or 0)
CASES = [
    ("lstm-tanh", 6, 13, 20, 90, True, False, 0),   # 2 threads; B % MR != 0
    ("lstm-relu", 5, 7, 9, 37, True, True, 0),
    ("lstm-tanh", 4, 1, 5, 33, False, False, 0),    # B = 1
    ("lstm-tanh", 3, 3, 4, 260, False, True, 0),    # backward K = 4 * 260 > one K slice
    ("lstm-tanh", 6, 13, 20, 90, True, False, 70),  # projection, 2 threads, 2 column panels
    ("lstm-relu", 5, 7, 9, 37, True, True, 130),    # P > H: 3 projection panels
    ("lstm-tanh", 4, 1, 5, 33, False, False, 5),    # B = 1, P < one vector on AVX2 f32
    ("gru", 6, 13, 20, 90, True, True, 0),
    ("gru", 4, 1, 3, 50, False, False, 0),
    ("rnn-tanh", 6, 13, 20, 150, True, False, 0),   # 3 panels of 64 units, the last partial
    ("rnn-relu", 5, 2, 6, 70, False, True, 0),
    ("lstm-tanh", 4, 6, 11, 75, True, False, 0),    # last forward panel: 11 units in 48 columns
    ("rnn-tanh", 5, 9, 7, 170, False, False, 0),    # 42 columns past 128: 48-column panels
    ("gru", 3, 7, 4200, 20, False, False, 0),       # input product deeper than one K slice
]
CASE_IDS = [f"{c[0]}-B{c[2]}-H{c[4]}" + ("-len" if c[5] else "") + ("-rev" if c[6] else "")
            + (f"-P{c[7]}" if c[7] else "") for c in CASES]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """This many kernel threads, with the contention guard off so they are really used."""
    before = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(request.param)
    _core.set_contention_guard(False)

    def restore():
        fusedrnn.set_num_threads(before)
        _core.set_contention_guard(True)
    request.addfinalizer(restore)
    return request.param


@pytest.fixture(params=PACKED_ISAS)
def packed_isa(request):
    return use_isa(request, request.param)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config,T,B,I,H,lengths,reverse,proj", CASES, ids=CASE_IDS)
def test_packed_loop_matches_reference(rng, packed_isa, threads, config, T, B, I, H, lengths,
                                       reverse, proj, dtype):
    cell, act = CELL_CONFIGS[config]
    case = make_case(rng, cell, T, B, I, H, dtype, proj=proj)
    if lengths:
        case["lengths"] = make_lengths(rng, T, B)
    before = _core.packed_loop_calls()
    what = f"{config}/isa={packed_isa}/threads={threads}"
    check_against_reference(rng, cell, act, case, dtype, what, reverse=reverse)
    # the training forward and the backward (the oracle is NumPy and calls nothing)
    assert _core.packed_loop_calls() - before == 2, f"{what}: the packed loop did not run"
    inf = run_forward(ops, cell, act, case, reverse=reverse)
    trn = run_forward(ops, cell, act, case, reverse=reverse, training=True)
    for a, b in zip(inf[:3], trn[:3]):
        if b is not None:
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: inference vs training")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config,proj", [("lstm-tanh", 0), ("lstm-tanh", 150), ("gru", 0), ("rnn-relu", 0)],
                         ids=["lstm-tanh", "lstm-tanh-P150", "gru", "rnn-relu"])
def test_whole_sequence_products_in_chunks(packed_isa, config, proj, dtype):
    """dx and the weight gradients after the packed backward run on the packed kernel, summed
    over chunks of 1024 rows of the depth: T*B = 2240 rows (two whole chunks and a partial one)
    for dW (and dW_hr with a projection), G*H = 1080 for the LSTM's dx, and I = 70, H = 270,
    P = 150 not whole 64-column panels.  Against the reference, and bit-identical at one and
    two threads (the projected backward splits its units and its columns of h differently)."""
    cell, act = CELL_CONFIGS[config]
    T, B, I, H = 35, 64, 70, 270
    case = make_case(np.random.default_rng(4), cell, T, B, I, H, dtype, proj=proj)
    case["lengths"] = make_lengths(np.random.default_rng(5), T, B)
    check_at_one_and_two_threads(cell, act, case, dtype, f"{config}/isa={packed_isa}", seed=6)


def check_at_one_and_two_threads(cell, act, case, dtype, what, seed):
    """check_against_reference at 1 and at 2 threads (the packed loop must run both times), and
    every gradient bit-identical between the two."""
    before = fusedrnn.get_num_threads()
    _core.set_contention_guard(False)
    try:
        grads = []
        for threads in (1, 2):
            fusedrnn.set_num_threads(threads)
            calls = _core.packed_loop_calls()
            at = f"{what}/threads={threads}"
            rng = np.random.default_rng(seed)
            grads.append(check_against_reference(rng, cell, act, case, dtype, at)[1])
            assert _core.packed_loop_calls() - calls == 2, f"{at}: the packed loop did not run"
    finally:
        fusedrnn.set_num_threads(before)
        _core.set_contention_guard(True)
    for key in grads[0]:
        np.testing.assert_array_equal(grads[0][key], grads[1][key],
                                      err_msg=f"{what}: {key}: 1 vs 2 threads")


# (config, T, B, I, H): models on few features, whose dW_ih (and dx) are products of I <= 15
# columns (12 with AVX2), computed without column panels (packed_products.h: thin_at,
# thin_dot).  G*H = 4 and 3 are below one vector (one element at a time), 84 and 90 end in
# single vectors, the last overlapping the one before; T*B = 21 leaves a partial tile of rows;
# the last case is big enough for both threads to share its products.
THIN_CASES = [
    ("lstm-tanh", 3, 7, 1, 1),
    ("rnn-tanh", 3, 7, 2, 3),
    ("lstm-tanh", 3, 7, 3, 21),
    ("gru", 3, 7, 8, 30),
    ("lstm-relu", 5, 4, 5, 21),
    ("rnn-relu", 4, 5, 12, 13),
    ("gru", 3, 9, 15, 21),
    ("lstm-tanh", 35, 64, 8, 100),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config,T,B,I,H", THIN_CASES,
                         ids=[f"{c[0]}-I{c[3]}-H{c[4]}" for c in THIN_CASES])
def test_thin_products(packed_isa, config, T, B, I, H, dtype):
    """dx and dW_ih of a model on 1 to 15 features against the reference, bit-identical at one
    and two threads."""
    cell, act = CELL_CONFIGS[config]
    case = make_case(np.random.default_rng(7), cell, T, B, I, H, dtype)
    check_at_one_and_two_threads(cell, act, case, dtype, f"{config}/I={I}/isa={packed_isa}", seed=8)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("I", [1, 3, 8, 12, 15])
def test_thin_weight_gradient_is_the_panels(packed_isa, I, dtype):
    """dW_ih of I <= 15 features without panels sums exactly as the panels do: the same model
    with its input widened to 16 features by zero columns (x and W_ih) takes the panels, and
    its first I columns of dW_ih match the thin product to the bit.  (The zero columns add
    exact zeros to the forward's sums, so the gate gradients are the same too.)"""
    T, B, H = 9, 11, 21
    case = make_case(np.random.default_rng(9), "lstm", T, B, I, H, dtype)
    wide = dict(case)
    wide["x"] = np.concatenate([case["x"], np.zeros((T, B, 16 - I), dtype)], axis=2)
    wide["w_ih"] = np.concatenate([case["w_ih"], np.zeros((4 * H, 16 - I), dtype)], axis=1)
    grads = []
    for c in (case, wide):
        out, h_n, c_n, cache = run_forward(ops, "lstm", "tanh", c, training=True)
        dout, dh_n, dc_n = make_cotangents(np.random.default_rng(10), out, h_n, c_n, dtype)
        grads.append(run_backward(ops, "lstm", cache, dout, dh_n, dc_n))
    thin, panels = grads
    np.testing.assert_array_equal(thin["dw_hh"], panels["dw_hh"],
                                  err_msg="the gate gradients differ")
    np.testing.assert_array_equal(thin["dw_ih"], panels["dw_ih"][:, :I])


def test_baseline_keeps_the_generic_loop(rng):
    original = _core.isa()
    try:
        _core.set_isa("baseline")
        case = make_case(rng, "gru", 3, 2, 4, 10, np.float32)
        before = _core.packed_loop_calls()
        check_against_reference(rng, "gru", None, case, np.float32, "gru/baseline")
        assert _core.packed_loop_calls() == before
    finally:
        _core.set_isa(original)


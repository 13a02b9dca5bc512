"""The emulated CUDA runtime and cuBLAS (csrc/cuda/emulation) against cuBLAS's documented
semantics, with NumPy as the oracle, independently of the kernels.

cublas<t>gemm: C = alpha op(A) op(B) + beta C, column-major; A is lda x ka with op(A) m x k,
lda >= max(1, rows of A); B likewise; C is ldc x n, ldc >= max(1, m); beta == 0 means C is not
read; k == 0 or alpha == 0 gives beta C.  cublas<t>gemv: y = alpha op(A) x + beta y.
Only in a FUSEDRNN_CUDA_EMULATION build (the hooks exist there alone).
"""

import itertools

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _core

pytestmark = pytest.mark.skipif(not getattr(_core, "cuda_emulated", False),
                                reason="needs the emulated CUDA build (FUSEDRNN_CUDA_EMULATION=ON)")

TOL = {np.float32: 2e-5, np.float64: 1e-12}


def colmajor(rng, rows, cols, ld, dtype):
    """(flat storage of a column-major rows x cols matrix with leading dimension ld, the matrix).
    Padding rows hold NaN: reading them would show."""
    flat = np.full(ld * cols, np.nan, dtype)
    mat = rng.standard_normal((rows, cols)).astype(dtype)
    view = flat.reshape(cols, ld)
    view[:, :rows] = mat.T
    return flat, mat


def read_colmajor(flat, rows, cols, ld):
    return flat.reshape(cols, ld)[:, :rows].T


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["S", "D"])
@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)),
                         ids=["NN", "NT", "TN", "TT"])
@pytest.mark.parametrize("pad", [0, 3], ids=["ld-tight", "ld-padded"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_gemm_every_transpose_and_leading_dimension(ta, tb, pad, beta, dtype):
    rng = np.random.default_rng(7)
    m, n, k = 5, 4, 3
    a_rows, a_cols = (k, m) if ta else (m, k)
    b_rows, b_cols = (n, k) if tb else (k, n)
    lda, ldb, ldc = a_rows + pad, b_rows + pad, m + pad
    A, a = colmajor(rng, a_rows, a_cols, lda, dtype)
    B, b = colmajor(rng, b_rows, b_cols, ldb, dtype)
    C, c = colmajor(rng, m, n, ldc, dtype)
    if beta == 0.0:
        C[:] = np.nan  # beta == 0: C is written, never read
    alpha = 1.5
    got = _core._emu_gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
    opa = a.T if ta else a
    opb = b.T if tb else b
    want = alpha * (opa.astype(np.float64) @ opb.astype(np.float64))
    if beta:
        want += beta * c
    np.testing.assert_allclose(read_colmajor(got, m, n, ldc), want, rtol=TOL[dtype], atol=TOL[dtype])
    # C's padding rows are left alone
    pad_rows = got.reshape(n, ldc)[:, m:]
    np.testing.assert_array_equal(pad_rows, C.reshape(n, ldc)[:, m:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["S", "D"])
def test_gemm_quick_returns(dtype):
    rng = np.random.default_rng(8)
    C, c = colmajor(rng, 3, 2, 3, dtype)
    A = np.full(6, np.nan, dtype)
    # k == 0: C = beta C, A and B not read
    got = _core._emu_gemm(False, False, 3, 2, 0, 1.0, A, 3, A, 1, 2.0, C, 3)
    np.testing.assert_allclose(read_colmajor(got, 3, 2, 3), 2 * c, rtol=TOL[dtype])
    # alpha == 0: the same
    got = _core._emu_gemm(False, False, 3, 2, 2, 0.0, A, 3, A, 2, 2.0, C, 3)
    np.testing.assert_allclose(read_colmajor(got, 3, 2, 3), 2 * c, rtol=TOL[dtype])


@pytest.mark.parametrize("args,what", [
    ((False, False, 4, 2, 3, 3, 3, 4), "lda < m"),
    ((True, False, 4, 2, 3, 2, 3, 4), "lda < k with op(A) = A^T"),
    ((False, False, 4, 2, 3, 4, 2, 4), "ldb < k"),
    ((False, True, 4, 2, 3, 4, 1, 4), "ldb < n with op(B) = B^T"),
    ((False, False, 4, 2, 3, 4, 3, 3), "ldc < m"),
    ((False, False, -1, 2, 3, 4, 3, 4), "m < 0"),
])
def test_gemm_refuses_what_cublas_refuses(args, what):
    ta, tb, m, n, k, lda, ldb, ldc = args
    buf = np.zeros(64, np.float32)
    with pytest.raises(RuntimeError, match="status 7: an invalid numeric value"):
        _core._emu_gemm(ta, tb, m, n, k, 1.0, buf, lda, buf, ldb, 0.0, buf, ldc)


def test_gemm_operand_outside_its_allocation_is_a_mapping_error():
    # A 4 x 3 with lda 4 needs 12 elements: 11 is one short.
    a = np.zeros(11, np.float64)
    b = np.zeros(6, np.float64)
    c = np.zeros(8, np.float64)
    with pytest.raises(RuntimeError, match="status 11: an access to GPU memory space failed"):
        _core._emu_gemm(False, False, 4, 2, 3, 1.0, a, 4, b, 3, 0.0, c, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["S", "D"])
@pytest.mark.parametrize("trans", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("pad", [0, 2], ids=["ld-tight", "ld-padded"])
def test_gemv(trans, pad, dtype):
    rng = np.random.default_rng(9)
    m, n = 5, 3
    A, a = colmajor(rng, m, n, m + pad, dtype)
    xlen, ylen = (m, n) if trans else (n, m)
    x = rng.standard_normal(xlen).astype(dtype)
    y = rng.standard_normal(ylen).astype(dtype)
    got = _core._emu_gemv(trans, m, n, 2.0, A, m + pad, x, 0.25, y)
    want = 2.0 * ((a.T if trans else a).astype(np.float64) @ x) + 0.25 * y
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("kind", ["h2d", "d2h"])
def test_copy_in_the_wrong_direction_raises_with_the_call_and_error(kind):
    # Both pointers are host memory: a host<->device copy between them fails as on a GPU.
    with pytest.raises(RuntimeError, match=r"CUDA error in cudaMemcpy\(.*\): cudaErrorInvalidValue: invalid argument"):
        _core._emu_memcpy_check(kind)


def test_device_memory_is_returned(rng):
    x = rng.standard_normal((6, 3, 4))
    w = [rng.standard_normal(s) * 0.3 for s in ((8, 4), (8, 2), (8,), (8,))]
    before = _core._emu_bytes_in_use()
    for _ in range(3):
        out, h, c, cache = fusedrnn.ops.lstm_forward(x, *w, training=True, device="cuda",
                                                    lengths=[6, 2, 5], reverse=True)
        fusedrnn.ops.lstm_backward(cache, np.ones_like(out))
    del cache
    assert _core._emu_bytes_in_use() == before


def test_a_failed_call_is_not_reported_again_by_the_next_launch(rng):
    # A failed runtime call leaves its error as CUDA's "last error"; the next kernel launch
    # must report its own status, not that one.
    with pytest.raises(RuntimeError, match="cudaMemcpy"):
        _core._emu_memcpy_check("h2d")
    x = rng.standard_normal((3, 2, 2))
    out, h, _ = fusedrnn.ops.rnn_forward(x, np.eye(2), np.eye(2), device="cuda")
    r_out, _, _ = fusedrnn.reference.rnn_forward(x, np.eye(2), np.eye(2))
    np.testing.assert_allclose(out, r_out, rtol=1e-12)

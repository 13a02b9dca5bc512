"""The gate activations of the compiled kernels, read back from a training forward's workspace
(an LSTM whose gate pre-activations are the inputs themselves), against NumPy's exp and tanh:
float64 within a few ulp over the whole range (the vectorised polynomial exp and expm1-based
tanh), float32 within its tolerance, and the edges (overflow, subnormal results, +-inf, NaN)
exactly."""

import numpy as np
import pytest
from conftest import use_isa

from fusedrnn import _core

ISAS = ["baseline", "avx2", "avx512"]

H = 16  # one vector or more of units per row: the vectorised row loop runs, not only its tail


def gates(x, dtype):
    """sigmoid(x) and tanh(x) as the LSTM kernel computes them, for x of shape (T, B, H), or
    (T, B, 1) for one value on all H units (no product with zero weights: inf and NaN arrive
    as they are)."""
    T, B, n = x.shape
    if n == 1:
        w_ih = np.ones((4 * H, 1), dtype)
    else:  # gate k of unit j sees x[..., j]
        w_ih = np.tile(np.eye(H, dtype=dtype), (4, 1))
    w_hh = np.zeros((4 * H, H), dtype)
    b = np.zeros(4 * H, dtype)
    h0 = np.zeros((B, H), dtype)
    with np.errstate(all="ignore"):
        *_, ws = _core.lstm_forward(x.astype(dtype), w_ih, w_hh, b, b, None, h0, h0, None, False,
                                    "tanh", True)
    # workspace row: [i f g o | c_prev | h_prev]
    return ws[..., 0:H], ws[..., 2 * H:3 * H]


def reference(x):
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(x))
        sig = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return sig, np.tanh(x)


def sample(rng, n):
    """Values spread over every scale the activations treat differently."""
    parts = [rng.uniform(-750, 750, n), rng.uniform(-40, 40, n), rng.uniform(-1, 1, n),
             rng.uniform(-1e-3, 1e-3, n), rng.uniform(-1e-9, 1e-9, n),
             rng.uniform(-745.2, -700, n)]  # sigmoid's subnormal results
    return np.concatenate(parts)


@pytest.mark.parametrize("isa", ISAS)
def test_float64_activations_within_a_few_ulp(request, isa):
    use_isa(request, isa)
    rng = np.random.default_rng(0)
    x = sample(rng, 4096).reshape(-1, 8, H)
    sig, tanh = gates(x, np.float64)
    r_sig, r_tanh = reference(x)
    np.testing.assert_array_max_ulp(sig, r_sig, maxulp=4)
    np.testing.assert_array_max_ulp(tanh, r_tanh, maxulp=4)


@pytest.mark.parametrize("isa", ISAS)
def test_float32_activations_within_tolerance(request, isa):
    use_isa(request, isa)
    rng = np.random.default_rng(1)
    x = sample(rng, 2048).astype(np.float32).reshape(-1, 8, H)
    sig, tanh = gates(x, np.float32)
    r_sig, r_tanh = reference(x)
    np.testing.assert_allclose(sig, r_sig, rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(tanh, r_tanh, rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_edges(request, dtype, isa):
    use_isa(request, isa)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 100.0, -100.0,
                      709.78, 709.79, -745.2, -746.0, 88.7, 88.8, -103.9, -104.5,
                      np.finfo(dtype).tiny, -np.finfo(dtype).tiny], np.float64)
    with np.errstate(over="ignore"):
        x = edges.astype(dtype).reshape(1, -1, 1)
    sig, tanh = gates(x, dtype)
    x = np.broadcast_to(x, sig.shape)
    r_sig, r_tanh = reference(x)
    # Saturation is exact, NaN stays NaN, tanh keeps the sign (zeros arrive as +0 after the
    # bias is added, so only nonzero inputs are compared).
    np.testing.assert_array_equal(np.isnan(sig), np.isnan(x))
    np.testing.assert_array_equal(np.isnan(tanh), np.isnan(x))
    fin = ~np.isnan(x)
    nz = fin & (x != 0)
    np.testing.assert_array_equal(np.signbit(tanh[nz]), np.signbit(x[nz]))
    assert np.all(sig[x == np.inf] == 1) and np.all(sig[x == -np.inf] == 0)
    assert np.all(tanh[x == np.inf] == 1) and np.all(tanh[x == -np.inf] == -1)
    assert np.all((sig[fin] >= 0) & (sig[fin] <= 1)) and np.all(np.abs(tanh[fin]) <= 1)
    if dtype == np.float64:
        np.testing.assert_array_max_ulp(sig[fin], r_sig[fin], maxulp=4)
        np.testing.assert_array_max_ulp(tanh[fin], r_tanh[fin], maxulp=4)
    else:
        np.testing.assert_allclose(sig[fin], r_sig[fin], rtol=2e-6, atol=2e-7)
        np.testing.assert_allclose(tanh[fin], r_tanh[fin], rtol=2e-6, atol=2e-7)
        # A tiny sigmoid is not flushed to zero (exp down to the subnormal range).
        assert sig[x == -100.0].min() > 0


@pytest.mark.parametrize("isa", ISAS)
def test_float32_sigmoid_subnormal_results(request, isa):
    """Down where sigmoid(x) ~ e^x is a subnormal float (x in -103.9..-87.4), the kernels' exp
    scales its polynomial by 2^n and rounds once: within one subnormal step of NumPy's float64
    value rounded to float32, and never flushed to zero."""
    use_isa(request, isa)
    rng = np.random.default_rng(2)
    x = rng.uniform(-103.9, -87.4, 64 * 8 * H).astype(np.float32).reshape(-1, 8, H)
    sig, _ = gates(x, np.float32)
    r_sig = reference(x)[0].astype(np.float32)
    assert np.all(r_sig < np.finfo(np.float32).tiny)  # the range is the subnormal one
    assert np.all(sig > 0)
    np.testing.assert_array_max_ulp(sig, r_sig, maxulp=1)

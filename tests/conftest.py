"""Shared test helpers: the rng fixture, the one tolerance table, case builders.

Import the plain helpers in a test module with
    from conftest import TOL, assert_close, make_case, GATES
(pytest puts this directory on sys.path when it loads this conftest).
"""

import numpy as np
import pytest

from fusedrnn._checks import GATES  # noqa: F401  (re-exported: number of stacked gates per cell)
from fusedrnn.testing import TOLERANCE
from fusedrnn.testing import max_error as _max_error

# The package's tolerance table (fusedrnn.testing), keyed by dtype type, for comparisons with an
# oracle run in the same dtype.  The error measured is
#     max|actual - expected| / max(1, max|expected|)
# and must be <= rtol (atol is kept for callers that want np.allclose-style checks).
TOL = {dt.type: dict(rtol=t["same_dtype"], atol=t["same_dtype"]) for dt, t in TOLERANCE.items()}


def tol(dtype):
    """Tolerance entry for a dtype given as np.float32, np.dtype('float32'), 'float32', ..."""
    return TOL[np.dtype(dtype).type]


def max_error(actual, expected):
    """fusedrnn.testing.max_error, with a shape mismatch as a test failure."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs {e.shape}")
    return _max_error(a, e)


def assert_close(actual, expected, dtype, what, rtol=None):
    """Assert actual ~= expected under the dtype's tolerance, scaled by max(1, max|expected|).

    rtol overrides the table (for checks whose error budget is not the dtype's
    rounding, e.g. finite differences); prints the max error and `what` on failure.
    """
    if rtol is None:
        rtol = tol(dtype)["rtol"]
    a = np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    assert np.all(np.isfinite(a)), f"{what}: non-finite values in actual"
    err = max_error(a, e)
    if not err <= rtol:
        diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
        worst = np.unravel_index(np.argmax(diff), diff.shape) if diff.ndim else ()
        pytest.fail(f"{what}: max scaled error {err:.3e} > rtol {rtol:.1e} "
                    f"(worst at index {worst}: actual {a[worst]!r}, expected {e[worst]!r})")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def make_lengths(rng, T, B):
    """(B,) int64 lengths in 1..T with at least one equal to T."""
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    return lengths.astype(np.int64)


def make_case(rng, cell, T, B, I, H, dtype, *, proj=0, bias=True, with_state=True,
              lengths=False):
    """Random inputs for one layer, as a dict ready to splat into the forward functions.

    Keys: x, w_ih, w_hh, b_ih, b_hh, h0, lengths, and for 'lstm' also c0 and w_hr.
    Absent things are None: biases when bias=False, h0/c0 when with_state=False,
    w_hr when proj=0 (LSTM only), lengths when lengths=False.  Weights are
    uniform(-k, k) with k = 1/sqrt(H) like torch; x and the states are standard normal.
    """
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}")
    if proj and cell != "lstm":
        raise ValueError("proj is for the LSTM only")
    G = GATES[cell]
    P = proj if proj else H
    k = 1.0 / np.sqrt(H)

    def uni(*shape):
        return rng.uniform(-k, k, size=shape).astype(dtype)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    case = dict(
        x=normal(T, B, I),
        w_ih=uni(G * H, I),
        w_hh=uni(G * H, P),
        b_ih=uni(G * H) if bias else None,
        b_hh=uni(G * H) if bias else None,
        h0=normal(B, P) if with_state else None,
    )
    if cell == "lstm":
        case["c0"] = normal(B, H) if with_state else None
        case["w_hr"] = uni(P, H) if proj else None
    case["lengths"] = make_lengths(rng, T, B) if lengths else None
    return case


# ----------------------------------------------------------------------------
# helpers shared by test_kernels.py, test_errors.py and test_torch_parity.py
# ----------------------------------------------------------------------------

# (cell, activation) for every cell variant; activation is None for the GRU.
# The kernel-test options, shared by tests/test_kernels.py and tests/cuda/test_cuda_ops.py.
# name: (make_case options, forward options, projection size P; LSTM only when P > 0)
OPTIONS = {
    "plain": (dict(with_state=False, lengths=False), dict(reverse=False), 0),
    "state": (dict(with_state=True, lengths=False), dict(reverse=False), 0),
    "lengths": (dict(with_state=True, lengths=True), dict(reverse=False), 0),
    "reverse": (dict(with_state=True, lengths=False), dict(reverse=True), 0),
    "reverse_lengths": (dict(with_state=True, lengths=True), dict(reverse=True), 0),
    # P < H, P < H with lengths, and P > H with ragged reverse
    "proj": (dict(with_state=True, lengths=False), dict(reverse=False), 7),
    "proj_lengths": (dict(with_state=True, lengths=True), dict(reverse=False), 3),
    "proj_reverse_lengths": (dict(with_state=True, lengths=True), dict(reverse=True), 20),
}

CELL_CONFIGS = {
    "lstm-tanh": ("lstm", "tanh"),
    "lstm-relu": ("lstm", "relu"),
    "gru": ("gru", None),
    "rnn-tanh": ("rnn", "tanh"),
    "rnn-relu": ("rnn", "relu"),
}


def use_isa(request, name):
    """Switch the CPU kernels to the compiled variant `name` for one test (skip when this CPU or
    build lacks it) and restore the one in use afterwards."""
    from fusedrnn import _core

    original = _core.isa()
    try:
        _core.set_isa(name)
    except ValueError as exc:
        pytest.skip(f"isa {name!r} unavailable here: {exc}")
    request.addfinalizer(lambda: _core.set_isa(original))
    return name


def act_kwargs(cell, act):
    """The activation keyword of a cell's forward: activation= (LSTM), nonlinearity= (RNN)."""
    if cell == "lstm":
        return {"activation": act}
    if cell == "rnn":
        return {"nonlinearity": act}
    return {}


def run_forward(mod, cell, act, case, **opts):
    """Forward of `mod` (fusedrnn.ops or fusedrnn.reference) on a make_case dict.

    Returns (out, h_n, c_n or None, cache) for every cell.  opts go to the forward
    (lengths, reverse, training, ...); case keys that are None for the cell are dropped.
    """
    kw = dict(case)
    if cell != "lstm":
        kw.pop("c0", None)
        kw.pop("w_hr", None)
    kw.update(act_kwargs(cell, act))
    kw.update(opts)
    if cell == "lstm":
        return mod.lstm_forward(**kw)
    fwd = mod.gru_forward if cell == "gru" else mod.rnn_forward
    out, h_n, cache = fwd(**kw)
    return out, h_n, None, cache


def run_backward(mod, cell, cache, dout=None, dh_n=None, dc_n=None):
    """Backward of `mod` for any cell (dc_n only reaches the LSTM)."""
    if cell == "lstm":
        return mod.lstm_backward(cache, dout, dh_n, dc_n)
    bwd = mod.gru_backward if cell == "gru" else mod.rnn_backward
    return bwd(cache, dout, dh_n)


def make_cotangents(rng, out, h_n, c_n, dtype):
    """Nonzero random dout, dh_n (and dc_n when c_n is not None) in dtype."""
    dout = rng.standard_normal(out.shape).astype(dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(dtype)
    dc_n = None if c_n is None else rng.standard_normal(c_n.shape).astype(dtype)
    return dout, dh_n, dc_n


@pytest.fixture
def no_tqdm(monkeypatch):
    """Imports of tqdm fail, as on a core install."""
    import builtins

    real_import = builtins.__import__

    def refuse_tqdm(name, *a, **k):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", refuse_tqdm)

"""How a fast path is compared with the reference: the error measure and the tolerance table.

One copy, used by `fusedrnn bench` and `fusedrnn check` (their validation) and by the test
suite (tests/conftest.py).  The error of an output or gradient is

    max|actual - expected| / max(1, max|expected|)        (computed in float64)

and it must not exceed the tolerance of the actual values' dtype.  Two columns, because the two
comparisons carry different rounding:

* ``same_dtype``: the oracle runs in the dtype under test (the tests: one layer, small shapes);
  both sides round alike, so only the order of the sums differs.
* ``float64_oracle``: the oracle runs in float64 on the same values (the bench: stacked layers,
  sizes up to the validation limit), so a float32 contender carries all of its own rounding
  (sums over I+H terms in the products, over T*B terms in the weight gradients).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TOLERANCE", "tolerance", "max_error"]

TOLERANCE = {
    np.dtype(np.float32): {"same_dtype": 1e-5, "float64_oracle": 1e-4},
    np.dtype(np.float64): {"same_dtype": 1e-10, "float64_oracle": 1e-9},
}


def tolerance(dtype, against: str = "same_dtype") -> float:
    """The tolerance for values of `dtype` (np.float32, 'float32', ...) compared with an oracle
    run in the same dtype ('same_dtype') or in float64 ('float64_oracle')."""
    return TOLERANCE[np.dtype(dtype)][against]


def max_error(actual, expected) -> float:
    """max|actual - expected| / max(1, max|expected|) in float64; inf when the shapes differ or
    `actual` holds a non-finite value (no tolerance accepts either); 0.0 for empty arrays."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)):
        return math.inf
    return float(np.max(np.abs(a - e))) / max(1.0, float(np.max(np.abs(e))))

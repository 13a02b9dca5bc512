"""Validate first: before a case is timed, every contender's outputs and gradients are compared
with the NumPy reference run in float64 on the same values (at a reduced size when the case is
large, see ``Case.validation_case``).  A case where any contender disagrees is not timed.

The error measure and the tolerances are fusedrnn.testing's, the ones the test suite uses.
"""

from __future__ import annotations

import math

import numpy as np

from .. import testing
from ..testing import max_error
from . import contenders as _contenders
from .cases import DTYPES, Case, make_inputs

__all__ = ["TOLERANCE", "max_error", "validate", "validation_summary"]

# Per dtype name (as the JSON header shows it): the float64-oracle column of fusedrnn.testing.
TOLERANCE = {dtype: testing.tolerance(dtype, "float64_oracle") for dtype in DTYPES}


def validate(case: Case, contenders, seed: int = 0) -> dict:
    """Compare each contender with the float64 reference on case.validation_case().

    Returns {"status": "ok" | "FAILED", "T", "B", "tolerance", "contenders": {name: {"max_error",
    "worst"} or {"error"}}}; "worst" names the output or gradient with the largest error.
    """
    vcase = case.validation_case()
    inputs = make_inputs(vcase, seed)
    oracle = _contenders.make("numpy", vcase, inputs.astype(np.float64))
    expected = oracle.results(oracle.run())
    tol = TOLERANCE[case.dtype]
    report = {"status": "ok", "T": vcase.T, "B": vcase.B, "tolerance": tol, "contenders": {}}
    for name in contenders:
        try:
            contender = _contenders.make(name, vcase, inputs)
            got = contender.results(contender.run())
        except Exception as exc:  # a contender that raises is as wrong as one that miscomputes
            report["contenders"][name] = {"error": f"raised {type(exc).__name__}: {exc}"}
            report["status"] = "FAILED"
            continue
        missing = sorted(set(expected) - set(got))
        if missing:
            report["contenders"][name] = {"error": f"missing results: {', '.join(missing)}"}
            report["status"] = "FAILED"
            continue
        errors = {key: max_error(got[key], expected[key]) for key in expected}
        worst = max(errors, key=errors.get)
        if math.isinf(errors[worst]):
            report["contenders"][name] = {"error": f"{worst}: non-finite values or a wrong shape", "worst": worst}
        else:
            report["contenders"][name] = {"max_error": errors[worst], "worst": worst}
        if not errors[worst] <= tol:
            report["status"] = "FAILED"
    return report


def validation_summary(report: dict) -> str:
    """One line: 'ok (max error 3.1e-07, at T=8 B=4)', or 'FAILED at T=8 B=4: ' and what failed."""
    size = f"T={report['T']} B={report['B']}"
    if report["status"] == "ok":
        worst = max((r["max_error"] for r in report["contenders"].values()), default=0.0)
        return f"ok (max error {worst:.1e}, at {size})"
    parts = []
    for name, r in report["contenders"].items():
        if "error" in r:
            parts.append(f"{name}: {r['error']}")
        elif not r["max_error"] <= report["tolerance"]:
            parts.append(f"{name}: {r['worst']} max error {r['max_error']:.2e} > {report['tolerance']:.0e}")
    return f"FAILED at {size}: " + "; ".join(parts)

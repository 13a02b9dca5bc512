"""Validators and formatting shared by the layers and the trainer (one copy of each).

Each raises TypeError for a value of the wrong kind and ValueError for one out of range,
naming the argument and what it got."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["GATES", "shape_str", "check_int", "check_bool", "float_dtype"]

# Gate blocks stacked in the weight matrices (docs/conventions.md).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def shape_str(shape) -> str:
    """(2, None, 3) -> '(2, None, 3)'; (4,) -> '(4,)', as Python prints tuples."""
    return "(" + ", ".join("None" if s is None else str(int(s)) for s in shape) \
        + ("," if len(shape) == 1 else "") + ")"


def check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def float_dtype(value) -> np.dtype:
    try:
        dt = np.dtype(value)
    except TypeError as exc:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {value!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dt}")
    return dt

"""Argument checks shared across jvid."""

from __future__ import annotations

import math
from typing import Any


def finite_real(name: str, value: Any) -> float:
    """`value` as a float; ValueError naming `name` unless it is a finite int or float (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def int_at_least(name: str, value: Any, minimum: int) -> int:
    """`value`; ValueError naming `name` unless it is an int (bools refused) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value

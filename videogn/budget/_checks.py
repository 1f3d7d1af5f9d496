"""Argument checks shared by the budget package: one place, one message format ("<name> must be ...,
got <value>")."""

from __future__ import annotations

from typing import Any


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` if it is an int (not a bool) >= ``low``; else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_factor(name: str, value: Any) -> float:
    """``value`` as a float if it is a number in (0, 1]; else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 1):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)

"""Argument checks shared by the whole package: one place, one message format
(``"<name> must be ..., got <value!r>"``).

A leaf module (standard library only), so the config schema, the budget package and the data code
can all use it without importing one another.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_factor", "check_int"]


def check_int(name: str, value: Any, low: int = 1, *, error: type[Exception] = ValueError) -> int:
    """``value`` if it is an int (not a bool) >= ``low``.

    Raises:
        ``error`` (ValueError by default; the config schema passes its ``ConfigError``):
        ``"<name> must be an integer >= <low>, got <value!r>"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise error(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_factor(name: str, value: Any, *, error: type[Exception] = ValueError) -> float:
    """``value`` as a float if it is a number in (0, 1]; else ``error`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 1):
        raise error(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)

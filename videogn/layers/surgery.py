"""Swapping submodules in place: the one tree walk behind norm conversion, weight standardisation
and the model zoo's pool and activation swaps."""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

__all__ = ["replace_children"]


def replace_children(model: nn.Module, replace: Callable[[nn.Module, str], Optional[nn.Module]]) -> int:
    """Walk ``model``'s submodules depth-first (not ``model`` itself); wherever
    ``replace(child, qualified_name)`` returns a module, put it in the child's place and do not
    descend into it. Returns how many were replaced."""
    replaced = 0

    def walk(module: nn.Module, prefix: str) -> None:
        nonlocal replaced
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            new = replace(child, path)
            if new is None:
                walk(child, path)
            else:
                setattr(module, name, new)
                replaced += 1

    walk(model, "")
    return replaced

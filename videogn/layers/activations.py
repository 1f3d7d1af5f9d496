"""One activation vocabulary: names -> ``nn.Module`` factories, and norm + activation pairs.

``ACTS`` holds "relu", "silu", "gelu" and "none"; a class or ``functools.partial`` passes through.
Norms that can apply an activation themselves (GroupNorm3d fuses "relu"/"silu", the names in
:data:`videogn.functional.ACTIVATIONS`) say so by an ``activation`` attribute that is ``None``;
:func:`create_norm_act` hands them the activation, every other norm gets a separate module.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Union

from torch import nn

from videogn.functional import ACTIVATIONS
from videogn.registry import Registry

__all__ = ["ACTS", "ActSpec", "resolve_act", "fused_act_name", "create_norm_act"]

ActSpec = Union[str, Callable[..., nn.Module]]

ACTS: Registry[Callable[[], nn.Module]] = Registry("activation", lowercase=True)
ACTS.register("relu", functools.partial(nn.ReLU, inplace=True))
ACTS.register("silu", functools.partial(nn.SiLU, inplace=True))
ACTS.register("gelu", nn.GELU)
ACTS.register("none", nn.Identity)

_FUSED = {nn.ReLU: "relu", nn.SiLU: "silu"}


def resolve_act(act: ActSpec, field: str = "act_layer") -> Callable[[], nn.Module]:
    """A zero-argument activation factory from a name in :data:`ACTS`, a class or a partial.

    Args:
        act: the spec.
        field: the argument name used in error messages.
    """
    if isinstance(act, str):
        if act not in ACTS:
            raise ValueError(f"unknown {field} {act!r}; valid names: {', '.join(ACTS.names())}")
        return ACTS.get(act)
    if callable(act):
        return act
    raise TypeError(f"{field} must be a name ({', '.join(ACTS.names())}) or a callable, got {type(act).__name__}")


def fused_act_name(act: ActSpec) -> Optional[str]:
    """The name a fusing norm understands ("relu"/"silu") for ``act``, or None if it cannot be fused."""
    factory = resolve_act(act)
    base = factory.func if isinstance(factory, functools.partial) else factory
    name = _FUSED.get(base) if isinstance(base, type) else None  # type: ignore[call-overload]
    return name if name in ACTIVATIONS else None


def create_norm_act(
    norm_layer: Callable[[int], nn.Module], channels: int, act: Optional[ActSpec], *, fuse: bool = True
) -> tuple[nn.Module, nn.Module]:
    """Build ``norm_layer(channels)`` and the activation after it, as ``(norm, act_module)``.

    With ``fuse`` and a fusable activation, a norm exposing ``activation = None`` applies it itself
    and ``act_module`` is ``nn.Identity``. ``act=None`` builds the norm alone (e.g. before a
    residual add); a norm that already carries an activation is refused there and everywhere,
    because it would also act where the block wants none.
    """
    norm = norm_layer(channels)
    if getattr(norm, "activation", None) is not None:
        raise ValueError(
            f"norm_layer builds {type(norm).__name__} with activation={norm.activation!r}; give the "
            "activation as act_layer instead (it is fused into the norm where it is safe)"
        )
    if act is None:
        return norm, nn.Identity()
    name = fused_act_name(act) if fuse else None
    if name is not None and hasattr(norm, "activation"):
        norm.activation = name  # one kernel for norm + activation on GroupNorm3d's Triton path
        return norm, nn.Identity()
    return norm, resolve_act(act)()

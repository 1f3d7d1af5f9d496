"""GroupNorm3d: Group Normalization for (N, C, T, H, W) video tensors, a drop-in for BatchNorm3d."""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import Tensor, nn

from videogn.checks import check_int
from videogn.functional import BACKENDS, check_activation, cpu_group_norm, group_norm
from videogn.ops.group_norm import check_param_devices

__all__ = ["DEFAULT_NUM_GROUPS", "MIN_GROUP_SIZE", "GroupNorm3d", "resolve_num_groups"]

logger = logging.getLogger(__name__)
_ADJUSTED_SEEN: set[tuple[int, int]] = set()


DEFAULT_NUM_GROUPS = 32  # the paper's G
MIN_GROUP_SIZE = 2  # channels per group the adjusted and default G keep where C allows (1 is InstanceNorm)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def resolve_num_groups(
    num_channels: int,
    num_groups: Optional[int] = None,
    group_size: Optional[int] = None,
    *,
    strict: bool = False,
) -> int:
    """The number of groups GroupNorm3d uses for ``num_channels`` channels: the one rule, for the
    bare layer, the norm registry, :func:`convert_norm` and the model zoo alike.

    * An explicit request that divides C is used as given: ``num_groups=G`` with ``C % G == 0``
      (even ``G = C``, InstanceNorm), or ``group_size=s`` with ``C % s == 0``.
    * Otherwise G is the largest divisor of C that is at most the request and leaves at least
      :data:`MIN_GROUP_SIZE` (2) channels per group where C allows, so a layer never silently
      becomes InstanceNorm: ``C=24`` -> 12 groups of 2, ``C=45`` -> 15 of 3, ``C=921`` -> 3,
      ``C=1`` -> 1. The request is ``num_groups``, or ``max(1, C // group_size)``.
    * The default (``num_groups`` and ``group_size`` both None) requests
      :data:`DEFAULT_NUM_GROUPS` (32) and always follows the rule above, also when 32 divides C:
      ``C=32`` -> 16 groups of 2, ``C=64`` -> 32.
    * ``strict=True`` uses the request (default 32) exactly, and raises ValueError if it does not
      divide C.

    Real nets have such channel counts: torchvision's R(2+1)D has 45, 144, 230, 460 and 921.

    Args:
        num_channels: C, a positive integer.
        num_groups: requested G; None for the default.
        group_size: requested channels per group, the alternative to ``num_groups``.
        strict: raise instead of adjusting.
    """
    check_int("num_channels", num_channels)
    for name, value in (("num_groups", num_groups), ("group_size", group_size)):
        if value is not None:
            check_int(name, value)
    if num_groups is not None and group_size is not None:
        raise ValueError(f"give num_groups or group_size, not both (got {num_groups} and {group_size})")
    explicit = num_groups is not None or group_size is not None
    if group_size is not None:
        if num_channels % group_size == 0:
            return num_channels // group_size
        if strict:
            raise ValueError(
                f"group_size={group_size} does not divide num_channels={num_channels} (strict=True); "
                f"divisors of {num_channels} are {_divisors(num_channels)}"
            )
        requested = max(1, num_channels // group_size)
    else:
        requested = DEFAULT_NUM_GROUPS if num_groups is None else num_groups
        if num_channels % requested == 0 and (explicit or strict):
            return requested
        if strict:
            raise ValueError(
                f"num_groups={requested} does not divide num_channels={num_channels} (strict=True); "
                f"divisors of {num_channels} are {_divisors(num_channels)}"
            )
    bound = min(requested, max(1, num_channels // MIN_GROUP_SIZE))
    groups = max(d for d in _divisors(num_channels) if d <= bound)
    if groups != requested and (num_channels, requested) not in _ADJUSTED_SEEN:
        _ADJUSTED_SEEN.add((num_channels, requested))
        logger.warning(
            "GroupNorm3d: %d groups requested for %d channels (%s); using %d groups of %d",
            requested, num_channels, "not a divisor" if num_channels % requested else "1 channel each",
            groups, num_channels // groups,
        )
    return groups


class GroupNorm3d(nn.GroupNorm):
    """Group Normalization over (C/G, T, H, W) per sample and group, with an optional fused activation.

    A subclass of :class:`torch.nn.GroupNorm` (same ``weight``/``bias`` parameters and state-dict
    keys), with a channel-first constructor so it can be passed wherever a norm is built as
    ``norm_layer(num_channels)``. It accepts every common calling convention:

    * ``GroupNorm3d(256)``, ``GroupNorm3d(256, num_groups=16)``, ``GroupNorm3d(256, group_size=16)``
    * BatchNorm's spelling, e.g. pytorchvideo's ``norm(num_features=256, eps=1e-5, momentum=0.1)``
      (``momentum`` and ``track_running_stats`` are accepted and ignored: GN keeps no running stats)
    * ``nn.GroupNorm``'s order by position, ``GroupNorm3d(32, 256)``: a second positional number
      larger than the first and a multiple of it is read as (num_groups, num_channels). Keywords
      are never reordered: ``GroupNorm3d(16, num_groups=32)`` is 16 channels with 32 groups
      requested (8 used, 2 channels each: see :func:`resolve_num_groups`), and ``num_channels=`` / ``num_groups=``
      as keywords work in either order.

    Inputs are ``(N, C, *)`` (5-D video first). The output keeps the input's dtype and memory format
    (channels_last_3d in, channels_last_3d out), also under autocast; statistics are fp32.

    Args:
        num_channels: C (``num_features`` is accepted as BatchNorm's name for it).
        num_groups: G; default 32 with at least 2 channels per group. A G that does not divide C
            is adjusted by :func:`resolve_num_groups`, which says exactly how.
        group_size: channels per group, the alternative to ``num_groups``.
        eps: added to the variance.
        affine: learn per-channel γ (init 1) and β (init 0).
        activation: None, "relu" or "silu", fused after the affine.
        strict: raise instead of adjusting a G that does not divide C.
        backend: "auto", "native" or "triton" (see :mod:`videogn.functional`).
    """

    def __init__(
        self,
        first: Optional[int] = None,
        second: Optional[int] = None,
        /,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        num_channels: Optional[int] = None,
        num_groups: Optional[int] = None,
        group_size: Optional[int] = None,
        activation: Optional[str] = None,
        strict: bool = False,
        backend: str = "auto",
        num_features: Optional[int] = None,
        momentum: Optional[float] = None,
        track_running_stats: Optional[bool] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        del momentum, track_running_stats  # BatchNorm-only settings: GN keeps no running stats
        if second is not None:  # two numbers by position: (C, G), or nn.GroupNorm's (G, C)
            if num_groups is not None or num_channels is not None or num_features is not None:
                raise TypeError("GroupNorm3d: give the channels and groups by position or by keyword, not both")
            c, g = first, second
            if isinstance(c, int) and isinstance(g, int) and 0 < c < g and g % c == 0:
                c, g = g, c  # nn.GroupNorm(num_groups, num_channels): (C, G) would have more groups than channels
            first, num_groups = c, g
        for name, value in (("num_channels", num_channels), ("num_features", num_features)):
            if value is not None:
                if first is not None and first != value:
                    raise ValueError(f"GroupNorm3d: {first} channels by position and {name}={value} disagree; give one")
                first = value
        if first is None:
            raise TypeError("GroupNorm3d needs num_channels (or num_features)")
        num_channels = first
        resolved = resolve_num_groups(num_channels, num_groups, group_size, strict=strict)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        super().__init__(resolved, num_channels, eps=eps, affine=affine, device=device, dtype=dtype)
        # what was asked for (the default counts as 32), for convert_norm's report
        self.requested_num_groups = None if group_size is not None else num_groups or DEFAULT_NUM_GROUPS
        self.group_size = num_channels // resolved
        self.activation = check_activation(activation)
        self.backend = backend

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() < 2 or input.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm3d expected input of shape (N, {self.num_channels}, *), "
                f"got {tuple(input.shape)}"
            )
        if input.is_cpu and self.backend != "triton" and not torch.is_autocast_enabled("cpu"):
            # group_norm's CPU path without re-checking this layer's own settings on every call;
            # the kernel checks the parameters' device itself, and its error is explained here
            try:
                return cpu_group_norm(input, self.num_groups, self.weight, self.bias, self.eps, self.activation)
            except RuntimeError:
                check_param_devices(input, self.weight, self.bias)
                raise
        return group_norm(
            input, self.num_groups, self.weight, self.bias, self.eps,
            activation=self.activation, backend=self.backend,
        )

    def extra_repr(self) -> str:
        text = f"{self.num_channels}, num_groups={self.num_groups}, eps={self.eps}, affine={self.affine}"
        if self.activation is not None:
            text += f", activation={self.activation!r}"
        if self.backend != "auto":
            text += f", backend={self.backend!r}"
        return text

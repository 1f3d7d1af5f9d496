"""Weight Standardization (Qiao et al. 2019): convs that standardise their own weights, for GN+WS."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WSConv3d", "standardize_weight"]


def standardize_weight(weight: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per output channel over (C_in/groups, kT, kH, kW)."""
    flat = weight.flatten(1)  # (C_out, C_in/groups * kT * kH * kW)
    var, mean = torch.var_mean(flat, dim=1, unbiased=False, keepdim=True)
    return ((flat - mean) * torch.rsqrt(var + eps)).view_as(weight)


class WSConv3d(nn.Conv3d):
    """``nn.Conv3d`` whose weight is standardised per output channel at every forward.

    Same constructor and state-dict keys as ``nn.Conv3d`` plus ``ws_eps``; pair it with GroupNorm3d
    (GN+WS matches or beats BN at large batch).
    """

    def __init__(self, *args: Any, ws_eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not ws_eps > 0:
            raise ValueError(f"ws_eps must be > 0, got {ws_eps!r}")
        self.ws_eps = ws_eps

    def forward(self, input: Tensor) -> Tensor:
        weight = standardize_weight(self.weight, self.ws_eps)
        if self.padding_mode != "zeros":
            return F.conv3d(
                F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                weight, self.bias, self.stride, 0, self.dilation, self.groups,
            )
        return F.conv3d(input, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

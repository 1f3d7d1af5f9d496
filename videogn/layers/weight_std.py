"""Weight Standardization (Qiao et al. 2019): convs that standardise their own weights, for GN+WS."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videogn.layers.surgery import replace_children

__all__ = ["WSConv3d", "standardize_convs", "standardize_weight"]


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


def standardize_convs(model: nn.Module, ws_eps: float = 1e-5) -> nn.Module:
    """Turn every ``nn.Conv3d`` of ``model`` into a :class:`WSConv3d` in place (GN+WS for any
    architecture); weights, biases and devices are kept. Returns ``model``. A model without any
    3-D conv is an error (nothing to convert is most likely a mistake, e.g. a 2-D model)."""
    def to_ws(child: nn.Module, _: str) -> Optional[WSConv3d]:
        if type(child) is not nn.Conv3d:  # subclasses (WSConv3d itself, quantised convs) are left alone
            return None
        ws = WSConv3d(
            child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
            padding=child.padding, dilation=child.dilation, groups=child.groups,
            bias=child.bias is not None, padding_mode=child.padding_mode, ws_eps=ws_eps,
            device=child.weight.device, dtype=child.weight.dtype,
        )
        ws.load_state_dict(child.state_dict())
        return ws

    converted = replace_children(model, to_ws)
    if converted == 0 and not any(isinstance(m, WSConv3d) for m in model.modules()):
        raise ValueError(f"standardize_convs: {type(model).__name__} has no nn.Conv3d to standardise")
    return model

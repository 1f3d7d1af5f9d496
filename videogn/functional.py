"""Functional Group Normalization for video (and any ``(N, C, *)``) tensors.

``group_norm`` has the semantics of :func:`torch.nn.functional.group_norm` and adds what video
networks need: a fused activation, output in the input's memory format and dtype (also under
autocast), numerically stable statistics in every layout, and a choice of backend.

Backends:
    ``"native"``  PyTorch ops; on CPU channels-last inputs use a stable two-pass path, because
                  PyTorch's channels-last CPU kernel computes the variance as E[x^2] - E[x]^2.
    ``"triton"``  the Triton kernels of :mod:`videogn.ops.group_norm` (CUDA tensors, or CPU
                  tensors when ``TRITON_INTERPRET=1`` was set before videogn was imported).
    ``"auto"``    Triton for CUDA tensors it supports, native everywhere else.
"""

from __future__ import annotations

import ctypes
import logging
import math
import operator
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from videogn.checks import check_int
from videogn.ops.group_norm import check_param_devices

__all__ = ["group_norm", "ACTIVATIONS", "BACKENDS", "check_activation", "cpu_group_norm"]

logger = logging.getLogger(__name__)

ACTIVATIONS = ("relu", "silu")
BACKENDS = ("auto", "native", "triton")

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def check_activation(activation: Optional[str]) -> Optional[str]:
    """Return the canonical activation name (None, "relu" or "silu"); raise ValueError otherwise."""
    if activation is None or activation == "none" or activation == "identity":
        return None
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        return activation.lower()
    raise ValueError(
        f"activation must be None or one of {list(ACTIVATIONS)}, got {activation!r}"
    )


def _check_args(
    input: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() < 2:
        raise ValueError(
            f"input must have at least 2 dimensions (N, C, *), got shape {tuple(input.shape)}"
        )
    check_int("num_groups", num_groups)
    channels = input.shape[1]
    if channels % num_groups != 0:
        raise ValueError(
            f"num_groups ({num_groups}) must divide the number of channels "
            f"(input.shape[1] = {channels})"
        )
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is None:
            continue
        if not isinstance(param, Tensor):
            raise TypeError(f"{name} must be a Tensor or None, got {type(param).__name__}")
        if param.dim() != 1 or param.shape[0] != channels:
            raise ValueError(
                f"{name} must have shape ({channels},) to match input.shape[1], "
                f"got {tuple(param.shape)}"
            )
    check_param_devices(input, weight, bias)


def _channels_last_format(x: Tensor) -> Optional[torch.memory_format]:
    """The channels-last format ``x`` is laid out in, or None (contiguous or other strides)."""
    fmt = _CHANNELS_LAST.get(x.dim())
    if fmt is None or x.is_contiguous():
        return None
    return fmt if x.is_contiguous(memory_format=fmt) else None


def _apply_activation(y: Tensor, activation: Optional[str]) -> Tensor:
    if activation == "relu":
        return F.relu(y)
    if activation == "silu":
        return F.silu(y)
    return y


# Above this |mean| * rstd of a group, E[x^2] - E[x]^2 in fp32 may have lost the variance's digits.
# Real activations sit far below it (post-conv |mean|/std is O(1)); a wrong variance only makes the
# estimate rise, never fall below it (rstd <= 1/sqrt(c * eps32) * 1/|mean| in the bad case).
_CANCELLATION_RISK = 8.0


def _stable_channels_last(
    x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> Tensor:
    """GN on a CPU channels-last tensor, keeping its layout, with statistics that do not cancel.

    PyTorch's channels-last CPU kernel (one pass, fast) computes the variance as E[x^2] - E[x]^2.
    Its mean is accurate, so when a group's |mean|/std is large we normalise its (affine-free)
    output again: GN(GN(x)) = GN(x) exactly, and the second pass sees mean ~0 and std ~1. Both the
    forward and the chain-ruled gradient stay exact; the common case costs one native call.
    Under torch.compile/export (no data-dependent branch allowed) it uses two-pass statistics.
    """
    if torch.compiler.is_compiling():
        return _two_pass_channels_last(x, num_groups, weight, bias, eps)
    n, c = x.shape[:2]
    hxw = x.numel() // (n * c)  # the caller sends no empty tensor
    y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, hxw, num_groups, eps)
    if _max_abs_product(mean, rstd) <= _CANCELLATION_RISK:
        return y
    z, _, _ = torch.native_group_norm(x, None, None, n, c, hxw, num_groups, eps)
    y, _, _ = torch.native_group_norm(z, weight, bias, n, c, hxw, num_groups, eps)
    return y


_C_TYPES = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}


def _max_abs_product(mean: Tensor, rstd: Tensor) -> float:
    """max |mean * rstd| over the (N, G) statistics of a CPU kernel's call, read in place through
    ctypes. This runs on every channels-last call right after a kernel that streamed megabytes
    through the caches, where every torch op (detach, mul, abs, max, item: six dispatcher calls)
    and every other C function costs several times its warm time; this way has the fewest
    (docs/benchmarks/groupnorm.md)."""
    ctype = _C_TYPES.get(mean.dtype)
    if ctype is None or rstd.dtype != mean.dtype or not (mean.is_contiguous() and rstd.is_contiguous()):
        return torch.mul(mean.detach(), rstd.detach()).abs_().max().item()
    k = mean.numel()
    m = (ctype * k).from_address(mean.data_ptr())  # views of the tensors' memory, alive until return
    r = (ctype * k).from_address(rstd.data_ptr())
    return max(map(abs, map(operator.mul, m, r)), default=0.0)


def _two_pass_channels_last(
    x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> Tensor:
    """Channels-last GN from per-channel two-pass moments merged per group (exact, traceable)."""
    n, c = x.shape[:2]
    d = c // num_groups
    xs = x.movedim(1, -1).reshape(n, -1, c)  # (N, L, C): a view of channels-last memory
    length = xs.shape[1]
    acc = torch.promote_types(x.dtype, torch.float32)  # fp32 statistics, fp64 kept for fp64
    mean_c = xs.sum(1, dtype=acc) / length  # (N, C)
    m2_c = (xs.to(acc) - mean_c.unsqueeze(1)).square().sum(1)  # (N, C)
    mean_cg = mean_c.view(n, num_groups, d)  # (N, G, D)
    mean_g = mean_cg.mean(-1, keepdim=True)  # (N, G, 1)
    var_g = (m2_c.view(n, num_groups, d).sum(-1, keepdim=True)
             + length * (mean_cg - mean_g).square().sum(-1, keepdim=True)) / (length * d)
    rstd = torch.rsqrt(var_g + eps)  # (N, G, 1)
    scale = rstd.expand(n, num_groups, d).reshape(n, c)  # (N, C)
    if weight is not None:
        scale = scale * weight.to(acc)
    shift = -mean_g.expand(n, num_groups, d).reshape(n, c) * scale
    if bias is not None:
        shift = shift + bias.to(acc)
    bshape = (n, c) + (1,) * (x.dim() - 2)
    y = torch.addcmul(shift.view(bshape), x, scale.view(bshape))  # keeps x's layout
    return y.to(x.dtype)


def _native_group_norm(
    x: Tensor,
    num_groups: int,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    activation: Optional[str],
) -> Tensor:
    fmt = _channels_last_format(x)
    if x.device.type != "cpu" and weight is not None and weight.dtype != x.dtype:
        # CUDA's kernel wants one dtype; autograd casts the gradient back to the fp32 parameter.
        weight = weight.to(x.dtype)
        bias = bias.to(x.dtype) if bias is not None else None
    if fmt is not None and x.device.type == "cpu" and x.numel() > 0:
        y = _stable_channels_last(x, num_groups, weight, bias, eps)
    else:
        y = F.group_norm(x, num_groups, weight, bias, eps)
        if fmt is not None and not y.is_contiguous(memory_format=fmt):
            y = y.contiguous(memory_format=fmt)
    return _apply_activation(y, activation)


def cpu_group_norm(
    x: Tensor,
    num_groups: int,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    activation: Optional[str],
) -> Tensor:
    """What :func:`group_norm` runs for a CPU tensor outside autocast, in the fewest steps around
    the kernel and without its argument checks.

    For callers that made them once (:class:`~videogn.layers.GroupNorm3d` at construction; it
    explains a kernel's error after the fact): every Python step and small op here runs right after
    the previous layer's kernel, with cold caches, where it costs several times its warm time
    (docs/benchmarks.md, "GroupNorm3d CPU parity"). ``activation`` must be canonical
    (:func:`check_activation`). On contiguous input it is nn.GroupNorm's kernel call, less
    F.group_norm's Python: its one check (a group of a single value) is kept.
    """
    if x.is_contiguous():
        if x.numel() == num_groups:  # one value per group: F.group_norm raises its error
            return _apply_activation(F.group_norm(x, num_groups, weight, bias, eps), activation)
        return _apply_activation(torch.group_norm(x, num_groups, weight, bias, eps), activation)
    return _native_group_norm(x, num_groups, weight, bias, eps, activation)  # channels-last and other strides


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
    *,
    activation: Optional[str] = None,
    backend: str = "auto",
) -> Tensor:
    """Group Normalization over ``(C/G, *)`` for each sample and group, then affine and activation.

    Args:
        input: ``(N, C, *)`` tensor (``(N, C, T, H, W)`` for video), any float dtype, contiguous
            or channels-last. Output has the same shape, dtype and memory format.
        num_groups: number of groups G; must divide C.
        weight, bias: optional per-channel affine parameters of shape ``(C,)``.
        eps: added to the variance; must be >= 0.
        activation: None, ``"relu"`` or ``"silu"``, applied after the affine.
        backend: ``"auto"``, ``"native"`` or ``"triton"`` (see the module docstring).

    Returns:
        The normalised tensor. Statistics are computed in fp32 whatever the input dtype.
    """
    _check_args(input, num_groups, weight, bias, eps)
    activation = check_activation(activation)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")

    if backend == "triton" or (backend == "auto" and input.is_cuda):
        from videogn.ops import group_norm as ops

        reason = ops.triton_unsupported_reason(input)
        if reason is None:
            return ops.triton_group_norm(input, num_groups, weight, bias, float(eps), activation)
        if backend == "triton":
            raise RuntimeError(f'backend="triton" cannot run this input: {reason}')
        ops.log_fallback_once(reason)

    device_type = input.device.type
    if torch.is_autocast_enabled(device_type):
        # Autocast would run group_norm in fp32 and return fp32; keep the input's dtype instead
        # (statistics are fp32 inside the kernel either way).
        with torch.autocast(device_type=device_type, enabled=False):
            return _native_group_norm(input, num_groups, weight, bias, eps, activation)
    return _native_group_norm(input, num_groups, weight, bias, eps, activation)

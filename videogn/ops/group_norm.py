"""The Triton Group Normalization as a PyTorch custom op: dispatch checks, autograd, fake kernels.

``videogn::group_norm_fwd`` and ``videogn::group_norm_bwd`` are registered with
:func:`torch.library.custom_op`, with fake (meta) implementations so ``torch.compile`` and
``torch.export`` trace through them, and the backward op wired in with ``register_autograd``.
The ops carry no autocast rule, so autocast leaves their input dtype alone (fp16/bf16 in, same
dtype out; statistics are fp32 inside the kernels).

The kernels (:mod:`videogn.ops.group_norm_triton`) are imported on first use, so importing videogn
never imports Triton. They run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was
set before that first use (Triton then interprets them with NumPy: for tests, never for speed;
CUDA tensors are then refused rather than silently copied through the interpreter). Weight and
bias must live on the input's device (the kernels take raw pointers).
"""

from __future__ import annotations

import contextlib
import logging
import math
from types import ModuleType
from typing import Any, ContextManager, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "check_param_devices", "triton_unsupported_reason", "log_fallback_once", "triton_group_norm",
]

logger = logging.getLogger("videogn.ops")

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ACTIVATIONS = ("none", "relu", "silu")  # the ops' spelling: "none" instead of None

_kernels: Optional[ModuleType] = None
_import_error: Optional[str] = None
_logged_reasons: set[str] = set()


def _load_kernels() -> Optional[ModuleType]:
    """Import the kernel module once; remember why it failed if it did."""
    global _kernels, _import_error
    if _kernels is None and _import_error is None:
        try:
            from videogn.ops import group_norm_triton
        except (ImportError, RuntimeError, OSError) as exc:  # triton missing or broken
            _import_error = f"triton is not installed or does not import ({exc})"
        else:
            _kernels = group_norm_triton
    return _kernels


def triton_unsupported_reason(input: Tensor) -> Optional[str]:
    """None when the Triton kernels can run on ``input``, else a short reason why not."""
    if input.dtype not in SUPPORTED_DTYPES:
        return f"dtype {input.dtype} is not supported (float32, float16 and bfloat16 are)"
    device = input.device.type
    if device not in ("cuda", "cpu"):
        return f"device type {device!r} is not supported (CUDA, or CPU under TRITON_INTERPRET=1)"
    kernels = _load_kernels()
    if kernels is None:
        return _import_error
    if device == "cpu" and not kernels.INTERPRETED:
        return (
            "CPU tensor and TRITON_INTERPRET is not set (set TRITON_INTERPRET=1 before the first "
            "Triton group norm to run the kernels in Triton's interpreter)"
        )
    if device == "cuda" and kernels.INTERPRETED:
        # the interpreter would copy every CUDA tensor to the host and run NumPy: refuse
        return (
            "TRITON_INTERPRET=1 is set, so the Triton kernels would run CUDA tensors through "
            "Triton's NumPy interpreter (unset TRITON_INTERPRET before importing videogn to run "
            "them on the GPU)"
        )
    return None


def log_fallback_once(reason: str) -> None:
    """Warn once per distinct ``reason`` that backend="auto" fell back to the native path."""
    if reason not in _logged_reasons:
        _logged_reasons.add(reason)
        logger.warning("videogn group_norm: using the native path instead of Triton: %s", reason)


def _ncl_strides(t: Tensor) -> Optional[Tuple[int, int, int]]:
    """Element strides ``(n, c, l)`` of ``t`` seen as ``(N, C, L)``, or None if its spatial dims
    do not collapse into one strided dimension (contiguous and channels-last both do)."""
    dims = [(size, stride) for size, stride in zip(t.shape[2:], t.stride()[2:]) if size != 1]
    for (_, outer), (size, inner) in zip(dims, dims[1:]):
        if outer != inner * size:
            return None
    return t.stride(0), t.stride(1), dims[-1][1] if dims else 1


def _with_strides(t: Tensor) -> Tuple[Tensor, Tuple[int, int, int]]:
    """``t`` (or a contiguous copy if its layout cannot be walked as (N, C, L)) and its strides."""
    strides = _ncl_strides(t)
    if strides is None:
        t = t.contiguous()
        strides = _ncl_strides(t)
        assert strides is not None  # a contiguous tensor always collapses
    return t, strides


def _shape_ncl(t: Tensor) -> Tuple[int, int, int]:
    return t.shape[0], t.shape[1], math.prod(t.shape[2:])


def _param(p: Optional[Tensor]) -> Optional[Tensor]:
    return None if p is None else p.contiguous()


def check_param_devices(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> None:
    """Raise ValueError unless ``weight``/``bias`` live on ``input``'s device: the kernels take raw
    pointers, so a CPU or other-GPU parameter would fault or read another device's memory."""
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.device != input.device:
            raise ValueError(
                f"{name} is on {param.device} but input is on {input.device}; "
                "move the parameters to the input's device"
            )


def _check_op_args(
    input: Tensor,
    num_groups: int,
    activation: str,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
) -> None:
    """The ops may be called directly (torch.ops.videogn...): reject what the kernels cannot do."""
    if input.dim() < 2:
        raise ValueError(f"input must be (N, C, *), got shape {tuple(input.shape)}")
    if num_groups <= 0 or input.shape[1] % num_groups != 0:
        raise ValueError(
            f"num_groups ({num_groups}) must be positive and divide input.shape[1] "
            f"({input.shape[1]})"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    check_param_devices(input, weight, bias)
    if input.is_cuda:
        kernels = _load_kernels()
        if kernels is not None and kernels.INTERPRETED:
            raise RuntimeError(triton_unsupported_reason(input))


def _kernels_for(
    op: str, input: Tensor, num_groups: int, activation: str, weight: Optional[Tensor], bias: Optional[Tensor]
) -> Tuple[Any, Tuple[int, int, int]]:
    """The kernel module and ``input``'s (N, C, L), once the op's arguments are checked."""
    kernels = _load_kernels()
    if kernels is None:
        raise RuntimeError(f"videogn::{op} needs Triton: {_import_error}")
    _check_op_args(input, num_groups, activation, weight, bias)
    return kernels, _shape_ncl(input)


def _device_of(t: Tensor) -> ContextManager[object]:
    """Make ``t``'s CUDA device current for the launch (Triton launches on the current one)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


@torch.library.custom_op("videogn::group_norm_fwd", mutates_args=())
def group_norm_fwd(
    input: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    num_groups: int,
    eps: float,
    activation: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns ``(output, mean, rstd)``; output in input's layout/dtype, mean/rstd fp32 (N, G)."""
    kernels, (n, c, l) = _kernels_for("group_norm_fwd", input, num_groups, activation, weight, bias)
    output = torch.empty_like(input)
    mean = input.new_empty((n, num_groups), dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if output.numel() == 0:
        mean.fill_(float("nan"))
        rstd.fill_(float("nan"))
        return output, mean, rstd
    x, x_strides = _with_strides(input)
    out, out_strides = _with_strides(output)
    with _device_of(input):
        kernels.forward(
            x, out, x_strides, out_strides, (n, c, l), num_groups, _param(weight), _param(bias),
            eps, activation, mean, rstd,
        )
    if out is not output:  # an output layout the kernels cannot walk: written contiguous, copied
        output.copy_(out)
    return output, mean, rstd


@group_norm_fwd.register_fake
def _group_norm_fwd_fake(
    input: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    num_groups: int,
    eps: float,
    activation: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    mean = input.new_empty((input.shape[0], num_groups), dtype=torch.float32)
    return torch.empty_like(input), mean, torch.empty_like(mean)


@torch.library.custom_op("videogn::group_norm_bwd", mutates_args=())
def group_norm_bwd(
    grad_output: Tensor,
    input: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    mean: Tensor,
    rstd: Tensor,
    num_groups: int,
    activation: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns ``(grad_input, grad_weight, grad_bias)``; the last two fp32 of shape (C,)."""
    kernels, (n, c, l) = _kernels_for("group_norm_bwd", input, num_groups, activation, weight, bias)
    grad_input = torch.empty_like(input)
    if grad_input.numel() == 0:
        zeros = input.new_zeros((c,), dtype=torch.float32)
        return grad_input, zeros, zeros.clone()
    dy, dy_strides = _with_strides(grad_output)
    x, x_strides = _with_strides(input)
    dx, dx_strides = _with_strides(grad_input)
    with _device_of(input):
        grad_weight, grad_bias = kernels.backward(
            dy, x, dx, dy_strides, x_strides, dx_strides, (n, c, l), num_groups,
            _param(weight), _param(bias), activation, mean.contiguous(), rstd.contiguous(),
        )
    if dx is not grad_input:
        grad_input.copy_(dx)
    return grad_input, grad_weight, grad_bias


@group_norm_bwd.register_fake
def _group_norm_bwd_fake(
    grad_output: Tensor,
    input: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    mean: Tensor,
    rstd: Tensor,
    num_groups: int,
    activation: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    c = input.shape[1]
    grad_weight = input.new_empty((c,), dtype=torch.float32)
    return torch.empty_like(input), grad_weight, torch.empty_like(grad_weight)


def _setup_context(
    ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, Tensor, Tensor]
) -> None:
    input, weight, bias, num_groups, _eps, activation = inputs
    _, mean, rstd = output
    ctx.save_for_backward(input, weight, bias, mean, rstd)
    ctx.num_groups = num_groups
    ctx.activation = activation
    ctx.mark_non_differentiable(mean, rstd)


def _backward(
    ctx: Any, grad_output: Tensor, _grad_mean: Optional[Tensor], _grad_rstd: Optional[Tensor]
) -> Tuple[Optional[Tensor], ...]:
    """Gradients of (input, weight, bias) through ``videogn::group_norm_bwd``; the statistics
    outputs are not differentiable."""
    input, weight, bias, mean, rstd = ctx.saved_tensors
    grad_input, grad_weight, grad_bias = torch.ops.videogn.group_norm_bwd(
        grad_output, input, weight, bias, mean, rstd, ctx.num_groups, ctx.activation
    )
    needs = ctx.needs_input_grad
    return (
        grad_input if needs[0] else None,
        grad_weight.to(weight.dtype) if weight is not None and needs[1] else None,
        grad_bias.to(bias.dtype) if bias is not None and needs[2] else None,
        None,
        None,
        None,
    )


group_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


def triton_group_norm(
    input: Tensor,
    num_groups: int,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    activation: Optional[str],
) -> Tensor:
    """Group norm (+ optional fused "relu"/"silu") through the Triton custom op; autograd-capable.

    Arguments are assumed validated (see :func:`videogn.functional.group_norm`). The output has
    the input's shape, dtype and memory format.
    """
    output, _, _ = torch.ops.videogn.group_norm_fwd(
        input, weight, bias, num_groups, float(eps), activation or "none"
    )
    return output

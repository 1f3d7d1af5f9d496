"""How one training step runs, shared by the trainer, the evaluator, the memory planner and the
benchmarks: precision and autocast, device choice, seeding, and the step itself.

A leaf module (torch only), so every layer can use it and the GPU check runs on a bare machine.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Optional, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "PRECISIONS",
    "autocast_context",
    "check_training_precision",
    "env_rank",
    "forward_backward",
    "grads_finite",
    "optimizer_step",
    "resolve_device",
    "seed_everything",
    "unwrap",
]

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_training_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot train in; the message names ``trainer.precision`` and why."""
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"trainer.precision must be 'fp32' or 'bf16' on the CPU, got {precision!r}")
    if precision == "bf16" and device.type == "cpu":
        # Seen on an AVX-512 Xeon: Conv3d weight gradients under CPU bf16 autocast came out NaN
        # (oneDNN's bf16 kernels) while the loss stayed finite. Not safe on every CPU: refused.
        raise ValueError(
            "trainer.precision='bf16' is refused on the CPU: CPU bf16 autocast gave NaN Conv3d weight "
            "gradients on some CPUs; use trainer.precision=fp32 on the CPU (bf16 is for CUDA)"
        )


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for bf16/fp16, a no-op for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA device is available")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    import numpy as np  # not a torch dependency: a bare GPU machine may lack it

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def forward_backward(
    model: nn.Module,
    clips: Tensor,
    labels: Tensor,
    *,
    precision: str = "fp32",
    loss_weight: float = 1.0,
    scaler: Optional[Any] = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Forward under autocast, fp32 cross-entropy, backward of ``loss * loss_weight``.

    Args:
        clips: (N, C, T, H, W) on the model's device; labels: (N,) class indices.
        loss_weight: scales what is backpropagated (the trainer passes N, then divides the summed
            gradients by the clips of the whole accumulation window).
        scaler: a ``torch.amp.GradScaler`` (fp16) or None.
        label_smoothing: of the cross-entropy (``optim.label_smoothing``; ``F.cross_entropy``'s).

    Returns:
        the mean loss of this batch, detached.
    """
    with autocast_context(clips.device, precision):
        logits = model(clips)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    scaled = loss * loss_weight
    (scaler.scale(scaled) if scaler is not None else scaled).backward()
    return loss.detach()


def grads_finite(model: nn.Module, local_ok: bool = True) -> bool:
    """Whether every gradient is finite (and ``local_ok``) on every rank (one all-reduce when distributed)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    device = grads[0].device if grads else next(model.parameters()).device
    bad = torch.tensor(0.0 if local_ok else 1.0, device=device)
    if grads and local_ok:
        # one fused reduction: sum of |g| is non-finite exactly when some element is
        norms = torch._foreach_norm(grads, 1)
        bad = (~torch.isfinite(torch.stack(norms).sum())).float()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(bad)
    return bool(bad.item() == 0)


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: Optional[Any] = None,
    divide_by: float = 1.0,
    grad_clip_norm: Optional[float] = None,
    finite: bool = True,
) -> bool:
    """Apply the accumulated gradients unless any is non-finite on any rank; zero them either way.

    Args:
        divide_by: gradients are divided by this first (the clips summed into them).
        grad_clip_norm: clip the global gradient norm to this value.
        finite: the caller's own verdict (e.g. on the loss), agreed across ranks with the gradients'.

    Returns:
        True when the update was applied, False when it was skipped as non-finite.
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    if divide_by != 1.0:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:
            torch._foreach_div_(grads, divide_by)
    applied = grads_finite(model, finite)
    if applied:
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        if scaler is not None:
            scaler.step(optimizer)
        else:
            optimizer.step()
    if scaler is not None:
        scaler.update()  # a skipped fp16 step lowers the loss scale, as GradScaler intends
    optimizer.zero_grad(set_to_none=True)
    return applied


def env_rank() -> int:
    """The global rank from torchrun's ``RANK`` environment variable (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))

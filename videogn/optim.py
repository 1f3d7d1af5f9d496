"""The optimizer of training (a leaf module: torch only, shared by the trainer, the memory planner
and the benchmarks): SGD with per-group weight decay (none on norm parameters and biases) and warmup + cosine/step
learning-rate schedules.

The schedule is a pure function of the optimizer step, so a resumed run gets exactly the rate the
uninterrupted run would have had; its state in a checkpoint is only the step and its settings.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = ["LR_SCHEDULES", "LRSchedule", "build_sgd", "norm_and_bias_parameters", "param_groups"]

LR_SCHEDULES = ("cosine", "step", "constant")  # the shapes LRSchedule.factor knows

# Module types whose parameters are normalization affines (GroupNorm3d subclasses nn.GroupNorm;
# FrozenBatchNorm holds buffers only, so it contributes nothing).
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.GroupNorm, _BatchNorm, _InstanceNorm, nn.LayerNorm, nn.LocalResponseNorm)


def norm_and_bias_parameters(model: nn.Module) -> set[int]:
    """``id()`` of every parameter of a norm layer (by module type) and of every bias."""
    ids: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_TYPES)
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name == "bias":
                ids.add(id(p))
    return ids


def param_groups(model: nn.Module, weight_decay: float, norm_weight_decay: Optional[float]) -> list[dict[str, Any]]:
    """Two parameter groups: decayed weights, and norm parameters + biases with
    ``norm_weight_decay`` (None: one group, everything decayed with ``weight_decay``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if norm_weight_decay is None:
        return [{"params": params, "weight_decay": weight_decay, "name": "all"}]
    special = norm_and_bias_parameters(model)
    decay = [p for p in params if id(p) not in special]
    no_decay = [p for p in params if id(p) in special]
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": norm_weight_decay, "name": "norm_and_bias"})
    return groups


def build_sgd(
    model: nn.Module,
    lr: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 1e-4,
    norm_weight_decay: Optional[float] = 0.0,
) -> torch.optim.SGD:
    """SGD over :func:`param_groups`; each group remembers its peak rate as ``initial_lr``."""
    groups = param_groups(model, weight_decay, norm_weight_decay)
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


class LRSchedule:
    """Learning-rate factor per optimizer step: linear warmup, then cosine, step or constant.

    Args:
        name: ``cosine`` | ``step`` | ``constant``.
        total_steps: optimizer steps of the whole run.
        warmup_fraction: fraction of ``total_steps`` spent ramping from ``warmup_start_factor`` to 1.
        milestones: ``step``: fractions of ``total_steps`` where the rate is multiplied by ``gamma``.
        min_lr_factor: ``cosine``: final factor.
    """

    def __init__(
        self,
        name: str,
        total_steps: int,
        *,
        warmup_fraction: float = 0.0,
        warmup_start_factor: float = 0.1,
        milestones: Sequence[float] = (),
        gamma: float = 0.1,
        min_lr_factor: float = 0.0,
    ) -> None:
        if name not in LR_SCHEDULES:
            raise ValueError(f"schedule name must be one of {LR_SCHEDULES}, got {name!r}")
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        self.name = name
        self.total_steps = total_steps
        self.warmup_steps = int(round(warmup_fraction * total_steps))
        self.warmup_start_factor = float(warmup_start_factor)
        self.milestones = [int(round(m * total_steps)) for m in milestones]
        self.gamma = float(gamma)
        self.min_lr_factor = float(min_lr_factor)

    def factor(self, step: int) -> float:
        """Multiplier of the peak rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * alpha
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int, batch_scale: float = 1.0) -> float:
        """Set every group's rate to ``initial_lr * factor(step) * batch_scale``; returns the first."""
        f = self.factor(step) * batch_scale
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_start_factor": self.warmup_start_factor,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "min_lr_factor": self.min_lr_factor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Adopt a checkpoint's schedule (a resumed run keeps the schedule it started with)."""
        self.name = state["name"]
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.warmup_start_factor = float(state["warmup_start_factor"])
        self.milestones = [int(m) for m in state["milestones"]]
        self.gamma = float(state["gamma"])
        self.min_lr_factor = float(state["min_lr_factor"])

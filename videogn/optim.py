"""The optimizer of training (torch and the norm declarations only; shared by the trainer, the memory
planner and the benchmarks): SGD or AdamW with per-group weight decay (none on biases, nor on the
parameters of norms that declare none), an optional learning-rate multiplier for the classifier
(fine-tuning), and warmup + cosine/step learning-rate schedules.

The schedule is a pure function of the optimizer step, so a resumed run gets exactly the rate the
uninterrupted run would have had; its state in a checkpoint is only the step and its settings.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, cast

import torch
from torch import nn

from videogn.layers.norms import norm_weight_decay

__all__ = [
    "LR_SCHEDULES", "OPTIMIZERS", "LRSchedule", "build_sgd", "create_optimizer", "norm_and_bias_parameters",
    "param_groups",
]

LR_SCHEDULES = ("cosine", "step", "constant")  # the shapes LRSchedule.factor knows
OPTIMIZERS = ("sgd", "adamw")  # the names create_optimizer builds


def norm_and_bias_parameters(model: nn.Module) -> set[int]:
    """``id()`` of every bias and of every parameter of a norm that declares no weight decay
    (:func:`videogn.layers.norm_weight_decay`: the norm registry's entries and torch's norms)."""
    ids: set[int] = set()
    for module in model.modules():
        no_decay = norm_weight_decay(module) is False
        for name, p in module.named_parameters(recurse=False):
            if no_decay or name == "bias":
                ids.add(id(p))
    return ids


def param_groups(
    model: nn.Module,
    weight_decay: float,
    norm_weight_decay: Optional[float],
    *,
    head: Optional[nn.Module] = None,
    head_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """The trainable parameters (``requires_grad``: frozen stages are left out) in groups: decayed
    weights, and norm parameters + biases with ``norm_weight_decay`` (None: one group, everything
    decayed with ``weight_decay``). With ``head`` and ``head_lr_mult != 1``, the head's parameters
    form their own group(s) of the same decay, whose ``lr_mult`` is ``head_lr_mult``.

    Every group has ``lr_mult`` (1.0 but for the head's); :func:`create_optimizer` sets each
    group's peak rate ``initial_lr = lr * lr_mult``, which :meth:`LRSchedule.apply` scales.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if norm_weight_decay is None:
        groups = [{"params": params, "weight_decay": weight_decay, "name": "all"}]
    else:
        special = norm_and_bias_parameters(model)
        decay = [p for p in params if id(p) not in special]
        groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
        no_decay = [p for p in params if id(p) in special]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": norm_weight_decay, "name": "norm_and_bias"})
    for g in groups:
        g["lr_mult"] = 1.0
    if head is None or head_lr_mult == 1.0:
        return groups
    in_head = {id(p) for p in head.parameters()}
    split = []
    for g in groups:
        body = [p for p in g["params"] if id(p) not in in_head]
        top = [p for p in g["params"] if id(p) in in_head]
        if body:
            split.append({**g, "params": body})
        if top:
            split.append({**g, "params": top, "name": f"head_{g['name']}", "lr_mult": float(head_lr_mult)})
    return split


def create_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = True,
    betas: Sequence[float] = (0.9, 0.999),
    weight_decay: float = 1e-4,
    norm_weight_decay: Optional[float] = 0.0,
    head: Optional[nn.Module] = None,
    head_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """``sgd`` (``momentum``, ``nesterov``) or ``adamw`` (``betas``; decoupled weight decay) over
    :func:`param_groups`; each group remembers its peak rate as ``initial_lr = lr * lr_mult``.

    Args:
        head: the classifier (:func:`videogn.models.classifier_name`), trained at ``lr * head_lr_mult``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    groups = param_groups(model, weight_decay, norm_weight_decay, head=head, head_lr_mult=head_lr_mult)
    opt: torch.optim.Optimizer
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    else:
        b1, b2 = betas
        opt = torch.optim.AdamW(groups, lr=lr, betas=(float(b1), float(b2)))
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"] = lr * g["lr_mult"]
    return opt


def build_sgd(
    model: nn.Module,
    lr: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 1e-4,
    norm_weight_decay: Optional[float] = 0.0,
) -> torch.optim.SGD:
    """:func:`create_optimizer` with ``name="sgd"`` (the memory planner's and benchmarks' optimizer)."""
    opt = create_optimizer(model, "sgd", lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                           norm_weight_decay=norm_weight_decay)
    return cast(torch.optim.SGD, opt)


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
        """Set every group's rate to ``initial_lr * factor(step) * batch_scale`` (a head group's
        ``initial_lr`` already carries its multiplier, so the ratio holds at every step); returns
        the first group's rate (the backbone's)."""
        f = self.factor(step) * batch_scale
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        """The settings, kept in checkpoints: a resumed run compares them with its own schedule (built
        from its config) and warns on a difference; it never adopts the checkpoint's."""
        return {
            "name": self.name,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_start_factor": self.warmup_start_factor,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "min_lr_factor": self.min_lr_factor,
        }

"""The ``budget`` axis: frames per clip against clips per batch, one home for the idea.

Names used throughout: a *shape* is (T frames, S crop side, B clips per batch per process), a
:class:`ClipShape`; its *voxels* are ``T * S * S * B`` (what activation memory grows with; a
schedule's ``voxel_budget`` caps them); *bytes* are memory (the planner's ``budget_bytes``).

- :mod:`~videogn.budget.schedules`: which shapes each epoch uses (``fixed``, ``constant_memory``,
  ``multigrid``; registered in :data:`SCHEDULES` with their options by :func:`register_schedule`)
  and the one learning-rate rule, :func:`batch_lr_scale`.
- :mod:`~videogn.budget.sampler`: :class:`ShapeBatchSampler`, the one training batch sampler, with
  the one resume path (``set_epoch(epoch, skip=k)``).
- :mod:`~videogn.budget.memory`: the measured peak memory of one training step (the trainer's).
- :mod:`~videogn.budget.planner`: the largest B per T that fits a byte budget.
"""

from videogn.budget.memory import METHODS, StepMemory, format_bytes, measure_step_memory, parse_bytes
from videogn.budget.planner import BudgetRow, format_plan, plan_budget, save_plan
from videogn.budget.sampler import BatchIndices, BudgetSpec, ShapeBatchSampler, build_batch_sampler
from videogn.budget import schedules as _schedules
from videogn.budget.schedules import *  # noqa: F401,F403  (the schedules' public names: their __all__)

__all__ = [
    *_schedules.__all__,
    "METHODS",
    "BatchIndices",
    "BudgetRow",
    "BudgetSpec",
    "ShapeBatchSampler",
    "StepMemory",
    "build_batch_sampler",
    "format_bytes",
    "format_plan",
    "measure_step_memory",
    "parse_bytes",
    "plan_budget",
    "save_plan",
]

"""Training and evaluation engine: trainer, multi-view evaluator, checkpoints, DDP helpers,
metrics and the optimizer/learning-rate schedule.

Names are imported on first use (PEP 562), so ``videogn.engine.optim`` and friends load without
the trainer's dependencies (Hydra, TensorBoard) and without import cycles through the budget package.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "find_latest_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "DistInfo": "distributed",
    "init_distributed": "distributed",
    "Predictions": "evaluator",
    "evaluate": "evaluator",
    "evaluate_split": "evaluator",
    "predict": "evaluator",
    "write_report": "evaluator",
    "classification_metrics": "metrics",
    "LRSchedule": "optim",
    "build_sgd": "optim",
    "param_groups": "optim",
    "NonFiniteLossError": "trainer",
    "Trainer": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'videogn.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"videogn.engine.{_EXPORTS[name]}"), name)

"""Training and evaluation engine: trainer, multi-view evaluator, checkpoints, DDP helpers,
preemption and metrics.

Names are imported on first use (PEP 562), so a submodule loads without the trainer's dependencies
(Hydra, TensorBoard).
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
    "NonFiniteLossError": "trainer",
    "Trainer": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'videogn.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"videogn.engine.{_EXPORTS[name]}"), name)

"""Training and evaluation engine: trainer, multi-view evaluator, DDP helpers, preemption and
metrics. Checkpoints (format, atomic save, version-checked load) live in :mod:`videogn.checkpoint`.

Names are imported on first use (PEP 562), so a submodule loads without the trainer's dependencies
(Hydra, TensorBoard).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DistInfo": "distributed",
    "init_distributed": "distributed",
    "EvalOptions": "evaluator",
    "EvalResult": "evaluator",
    "EvalTarget": "evaluator",
    "Predictions": "evaluator",
    "evaluate_dataset": "evaluator",
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

"""Structured configs (Hydra ConfigStore schemas, ``schema.py``) and their start-up validation
(``validation.py``)."""

from videogn.config.schema import (
    BudgetConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    NormConfig,
    OptimConfig,
    SchedConfig,
    SyntheticConfig,
    TrainConfig,
    TrainerConfig,
    register_configs,
)
from videogn.config.validation import validate

__all__ = [
    "BudgetConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "NormConfig",
    "OptimConfig",
    "SchedConfig",
    "SyntheticConfig",
    "TrainConfig",
    "TrainerConfig",
    "register_configs",
    "validate",
]

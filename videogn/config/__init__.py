"""Structured configs (Hydra ConfigStore schemas) and their start-up validation."""

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
    validate,
)

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

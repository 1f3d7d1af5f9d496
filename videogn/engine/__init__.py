"""Training and evaluation engine: trainer, multi-view evaluator, checkpoints, DDP helpers,
metrics, optimizer/schedule and batch samplers."""

from videogn.engine.checkpoint import find_latest_checkpoint, load_checkpoint, save_checkpoint
from videogn.engine.distributed import DistInfo, init_distributed
from videogn.engine.evaluator import Predictions, evaluate, evaluate_split, predict, write_report
from videogn.engine.metrics import classification_metrics
from videogn.engine.optim import LRSchedule, build_sgd, param_groups
from videogn.engine.samplers import FixedBatchSampler, register_batch_sampler
from videogn.engine.trainer import NonFiniteLossError, Trainer

__all__ = [
    "DistInfo",
    "FixedBatchSampler",
    "LRSchedule",
    "NonFiniteLossError",
    "Predictions",
    "Trainer",
    "build_sgd",
    "classification_metrics",
    "evaluate",
    "evaluate_split",
    "find_latest_checkpoint",
    "init_distributed",
    "load_checkpoint",
    "param_groups",
    "predict",
    "register_batch_sampler",
    "save_checkpoint",
    "write_report",
]

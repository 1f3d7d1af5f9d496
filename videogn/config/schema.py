"""Structured (dataclass) configs of ``videogn-train`` / ``videogn-eval`` and their validation.

The dataclasses are registered in Hydra's ConfigStore as ``train_schema`` and ``eval_schema``;
``configs/train.yaml`` and ``configs/eval.yaml`` list them first in their defaults, so every group
file (``model/``, ``norm/``, ``data/``, ...) is merged onto a typed node: a wrong type or an unknown
key fails at composition, naming the key; a key added with ``+`` is refused by :func:`validate`,
naming the closest valid key. Ranges and choices (registered model and norm names included) are
checked by each dataclass's ``__post_init__``, which runs in :func:`validate`
(``OmegaConf.to_object``); the error names the field and the value.

The YAML files under ``configs/`` state only what differs from these defaults.
"""

from __future__ import annotations

import difflib
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from videogn.optim import LR_SCHEDULES
from videogn.runtime import PRECISIONS, env_rank

if TYPE_CHECKING:
    from videogn.data.synthetic import SyntheticSpec

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
    "auto_num_workers",
    "closest",
    "register_configs",
]

DEVICES = ("auto", "cpu", "cuda")
DIST_BACKENDS = ("auto", "gloo", "nccl")
OPTIMIZERS = ("sgd",)
DATASETS = ("synthetic", "kinetics")  # the one home of dataset names (videogn.engine.build resolves them)
MAX_AUTO_WORKERS = 8  # data.num_workers=auto: the cores this process may use, at most this many


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range; the message names the field."""


def _fail(name: str, rule: str, value: Any) -> None:
    raise ConfigError(f"{name} must be {rule}, got {value!r}")


def _int_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(name, f"an integer >= {low}", value)


def _real_in(name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lb, rb = ("(" if low_open else "["), (")" if high_open else "]")
        _fail(name, f"a number in {lb}{low}, {high}{rb}", value)


def _choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        _fail(name, f"one of {choices}", value)


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The choice most like ``word`` (difflib), or None when none is close: for "did you mean"."""
    hits = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return hits[0] if hits else None


def auto_num_workers() -> int:
    """Data-loader workers for ``num_workers=auto``: the cores available to this process, capped."""
    from videogn.threads import available_cores

    return max(1, min(available_cores(), MAX_AUTO_WORKERS))


@dataclass
class ModelConfig:
    """``model/``: a registered architecture (see ``videogn.models.list_models()``)."""

    name: str = "i3d_tiny"
    num_classes: Optional[int] = None  # None: the dataset's number of classes
    dropout: float = 0.5
    zero_init_last: bool = True
    act_layer: str = "relu"
    weight_standardization: bool = False  # every Conv3d standardises its weights (GN+WS)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra architecture arguments
    weights: Optional[str] = None  # a video checkpoint loaded at build (videogn, pytorchvideo, state dict)
    weights_strict: bool = True  # with weights: missing or unexpected keys are an error
    weights_2d: Optional[str] = None  # a 2-D ResNet state dict (torchvision/timm) inflated at build

    def __post_init__(self) -> None:
        from videogn.models import list_models

        _choice("model.name", self.name, list_models())
        if self.num_classes is not None:
            _int_at_least("model.num_classes", self.num_classes, 2)
        _real_in("model.dropout", self.dropout, 0.0, 1.0, high_open=True)
        for key in ("weights", "weights_2d"):  # existence is checked at build (evaluation rebuilds without them)
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                _fail(f"model.{key}", "a checkpoint path or null", value)
        if self.weights is not None and self.weights_2d is not None:
            _fail("model.weights_2d", "null when model.weights is set (one checkpoint per build)", self.weights_2d)


@dataclass
class NormConfig:
    """``norm/``: the normalization layer spec passed to ``create_model(norm=...)``."""

    name: str = "gn"  # gn | bn | syncbn | frozen_bn | ln | in | none
    kwargs: Dict[str, Any] = field(default_factory=dict)  # e.g. num_groups=32 or group_size=16

    def __post_init__(self) -> None:
        _choice("norm.name", self.name, _norm_names())


@dataclass
class SyntheticConfig:
    """``data.synthetic``: size and difficulty of the built-in dataset (see ``SyntheticSpec``)."""

    num_classes: int = 6
    train_per_class: int = 100
    val_per_class: int = 25
    frames: int = 20
    size: int = 32
    fps: int = 25
    min_speed: float = 1.0
    max_speed: float = 2.5
    num_distractors: int = 0
    noise: float = 0.02
    seed: int = 0
    task: str = "motion"  # motion | tempo (classes by how often the motion reverses)
    cache_dir: Optional[str] = None  # None: $VIDEOGN_CACHE or ~/.cache/videogn

    def to_spec(self) -> "SyntheticSpec":
        """The dataset spec these settings describe (every field but ``cache_dir``)."""
        from videogn.data.synthetic import spec_from_mapping

        return spec_from_mapping({k: v for k, v in vars(self).items() if k != "cache_dir"})

    def __post_init__(self) -> None:
        try:
            self.to_spec()
        except ValueError as e:
            raise ConfigError(str(e).replace("synthetic dataset: ", "data.synthetic.")) from None


@dataclass
class DataConfig:
    """``data/``: where the videos are and how clips are sampled and augmented.

    For ``name=kinetics``, each split's videos are found under ``root/<split>_dir`` with file names
    from the split's annotation CSV. For ``name=synthetic``, ``root`` and the annotations are set
    by the generator.
    """

    name: str = "synthetic"
    root: Optional[str] = None
    train_dir: str = "train"
    val_dir: str = "val"
    train_annotation: Optional[str] = None
    val_annotation: Optional[str] = None
    train_split: Optional[str] = None  # value of the CSV's split column to keep (None: all rows)
    val_split: Optional[str] = None
    filename_pattern: str = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
    target_fps: Optional[float] = None
    train_scale: List[int] = field(default_factory=lambda: [256, 320])
    crop_size: int = 224
    test_scale: int = 256
    test_crop_size: Optional[int] = None  # None: test_scale (fully convolutional, the paper's protocol)
    num_clips: int = 10
    num_crops: int = 3
    flip: bool = True
    mean: List[float] = field(default_factory=lambda: [0.45, 0.45, 0.45])
    std: List[float] = field(default_factory=lambda: [0.225, 0.225, 0.225])
    num_workers: Any = "auto"  # an int, or auto: the cores available (at most MAX_AUTO_WORKERS)
    backend: str = "auto"  # auto | a decoder of videogn.data.available_backends()
    max_retries: int = 10
    synthetic: Optional[SyntheticConfig] = field(default_factory=SyntheticConfig)  # null for kinetics

    def __post_init__(self) -> None:
        _choice("data.name", self.name, DATASETS)
        if self.name == "kinetics":
            for key in ("root", "train_annotation", "val_annotation"):
                if not getattr(self, key):
                    _fail(f"data.{key}", f"given for the kinetics dataset (data.{key}=/path/...)", getattr(self, key))
        if self.name == "synthetic" and self.synthetic is None:
            _fail("data.synthetic", "set when data.name is 'synthetic'", self.synthetic)
        if len(self.train_scale) != 2 or not 1 <= self.train_scale[0] <= self.train_scale[1]:
            _fail("data.train_scale", "[min, max] short-side sizes with 1 <= min <= max", list(self.train_scale))
        _int_at_least("data.crop_size", self.crop_size, 1)
        _int_at_least("data.test_scale", self.test_scale, 1)
        if self.test_crop_size is not None:
            _int_at_least("data.test_crop_size", self.test_crop_size, 1)
            if self.test_crop_size > self.test_scale:
                _fail("data.test_crop_size", f"<= data.test_scale ({self.test_scale})", self.test_crop_size)
        _int_at_least("data.num_clips", self.num_clips, 1)
        if self.num_crops not in (1, 3):
            _fail("data.num_crops", "1 or 3", self.num_crops)
        if self.target_fps is not None:
            _real_in("data.target_fps", self.target_fps, 0.0, 1e4, low_open=True)
        for key in ("mean", "std"):
            if len(getattr(self, key)) != 3:
                _fail(f"data.{key}", "3 numbers (RGB)", list(getattr(self, key)))
        if any(s <= 0 for s in self.std):
            _fail("data.std", "positive", list(self.std))
        if self.num_workers == "auto":
            self.num_workers = auto_num_workers()
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            _fail("data.num_workers", "an integer >= 0 or 'auto'", self.num_workers)
        from videogn.data.decode import available_backends

        _choice("data.backend", self.backend, ["auto", *available_backends()])
        _int_at_least("data.max_retries", self.max_retries, 0)


@dataclass
class BudgetConfig:
    """``budget/``: clip length x clips per batch (per process), the memory trade of the GN paper.

    Each batch's shape (T, S, B) comes from a clip-shape schedule (:func:`videogn.budget.build_schedule`,
    sampled by :class:`videogn.budget.ShapeBatchSampler`): ``schedule=fixed`` (every batch at
    (``num_frames``, ``data.crop_size``, ``batch_size``)), ``constant_memory`` ((T, B) pairs at
    about equal ``T * S^2 * B``: from ``lengths`` with the base (``num_frames``, ``batch_size``), or
    from explicit ``pairs``, scaled to ``voxel_budget`` when given) or ``multigrid`` (Wu et al. 2020: a long cycle over (T, S, B) stages spread over
    ``trainer.epochs``, a short cycle over S inside each epoch). Every batch holds one shape, the same
    on every rank at every step; the learning rate follows each step's actual batch (see the
    trainer), so ``num_frames``/``batch_size`` are also the shape the model is evaluated at.
    """

    name: str = "fixed"
    num_frames: int = 8
    stride: int = 2  # temporal sampling stride (frames of the source video between clip frames)
    batch_size: int = 8  # clips per batch per process (before gradient accumulation)
    schedule: str = "fixed"  # fixed | constant_memory | multigrid (videogn.budget.SCHEDULES)
    lengths: List[int] = field(default_factory=lambda: [8, 16, 32, 64])  # constant_memory clip lengths
    pairs: Optional[List[List[int]]] = None  # constant_memory: explicit [[T, B], ...] instead of lengths
    voxel_budget: Optional[int] = None  # T * S^2 * B per process (None: the base shape's / largest pair's)
    order: str = "cycle"  # how the shapes of a stage alternate over batches: cycle | random
    drop_last: bool = True  # drop, rather than pad, an epoch's last step that cannot be filled
    long_cycle: List[List[float]] = field(
        default_factory=lambda: [[0.25, 0.5**0.5], [0.5, 0.5**0.5], [0.5, 1.0], [1.0, 1.0]]
    )  # multigrid: (temporal factor, spatial factor) per stage
    short_cycle: List[float] = field(default_factory=lambda: [0.5, 0.5**0.5])  # multigrid: spatial factors
    num_long_cycles: int = 1  # multigrid: long cycles over the run

    def __post_init__(self) -> None:
        from videogn.budget import SCHEDULE_KINDS, SHAPE_ORDERS

        _int_at_least("budget.num_frames", self.num_frames, 1)
        _int_at_least("budget.stride", self.stride, 1)
        _int_at_least("budget.batch_size", self.batch_size, 1)
        _choice("budget.schedule", self.schedule, SCHEDULE_KINDS)
        if not self.lengths:
            _fail("budget.lengths", "a non-empty list of clip lengths", list(self.lengths))
        for t in self.lengths:
            _int_at_least("budget.lengths item", t, 1)
        if self.pairs is not None:
            if not self.pairs:
                _fail("budget.pairs", "null or a non-empty list of [num_frames, batch_size]", list(self.pairs))
            for p in self.pairs:
                if len(p) != 2:
                    _fail("budget.pairs item", "[num_frames, batch_size]", list(p))
                _int_at_least("budget.pairs num_frames", p[0], 1)
                _int_at_least("budget.pairs batch_size", p[1], 1)
        if self.voxel_budget is not None:
            _int_at_least("budget.voxel_budget", self.voxel_budget, 1)
        _choice("budget.order", self.order, SHAPE_ORDERS)
        if not self.long_cycle:
            _fail("budget.long_cycle", "a non-empty list of [temporal factor, spatial factor]", list(self.long_cycle))
        for p in self.long_cycle:
            if len(p) != 2:
                _fail("budget.long_cycle item", "[temporal factor, spatial factor]", list(p))
            for f in p:
                _real_in("budget.long_cycle factor", f, 0.0, 1.0, low_open=True)
        for f in self.short_cycle:
            _real_in("budget.short_cycle factor", f, 0.0, 1.0, low_open=True)
        _int_at_least("budget.num_long_cycles", self.num_long_cycles, 1)


@dataclass
class OptimConfig:
    """``optim/``: SGD; ``lr`` is the rate at ``reference_batch_size`` clips (scaled linearly)."""

    name: str = "sgd"
    lr: float = 0.01
    reference_batch_size: Optional[int] = 64  # None: use lr as is, whatever the batch
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    norm_weight_decay: Optional[float] = 0.0  # norm weights and all biases; None: = weight_decay
    grad_clip_norm: Optional[float] = None

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, OPTIMIZERS)
        _real_in("optim.lr", self.lr, 0.0, 1e3, low_open=True)
        if self.reference_batch_size is not None:
            _int_at_least("optim.reference_batch_size", self.reference_batch_size, 1)
        _real_in("optim.momentum", self.momentum, 0.0, 1.0, high_open=True)
        if self.nesterov and self.momentum == 0:
            _fail("optim.momentum", "> 0 when optim.nesterov is true", self.momentum)
        _real_in("optim.weight_decay", self.weight_decay, 0.0, 1.0)
        if self.norm_weight_decay is not None:
            _real_in("optim.norm_weight_decay", self.norm_weight_decay, 0.0, 1.0)
        if self.grad_clip_norm is not None:
            _real_in("optim.grad_clip_norm", self.grad_clip_norm, 0.0, 1e9, low_open=True)


@dataclass
class SchedConfig:
    """``sched/``: learning-rate schedule over the run's optimizer steps, with linear warmup."""

    name: str = "cosine"
    warmup_fraction: float = 0.0  # of all steps
    warmup_start_factor: float = 0.1
    milestones: List[float] = field(default_factory=lambda: [0.375, 0.75])  # step: fractions of all steps
    gamma: float = 0.1
    min_lr_factor: float = 0.0  # cosine: final lr / peak lr

    def __post_init__(self) -> None:
        _choice("sched.name", self.name, LR_SCHEDULES)
        _real_in("sched.warmup_fraction", self.warmup_fraction, 0.0, 1.0, high_open=True)
        _real_in("sched.warmup_start_factor", self.warmup_start_factor, 0.0, 1.0)
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            _fail("sched.milestones", "increasing fractions in (0, 1)", list(self.milestones))
        _real_in("sched.gamma", self.gamma, 0.0, 1.0, low_open=True)
        _real_in("sched.min_lr_factor", self.min_lr_factor, 0.0, 1.0)


@dataclass
class TrainerConfig:
    """``trainer/``: length, precision, devices, logging and checkpointing of a run."""

    epochs: Optional[int] = 10
    max_steps: Optional[int] = None  # optimizer steps; overrides epochs when set
    accumulate: int = 1  # micro-batches per optimizer step
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: CUDA only, with GradScaler)
    device: str = "auto"
    dist_backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    dist_timeout_s: float = 300.0  # a collective waiting this long on a dead or stuck rank fails the job
    seed: int = 0
    num_threads: Optional[int] = None  # torch intra-op threads per process (None: torch default)
    checkpoint_every: int = 1000  # optimizer steps; a checkpoint is also written at the end
    keep_checkpoints: int = 3
    resume: str = "auto"  # auto (newest intact checkpoint in the run dir) | never | <path>
    max_nonfinite_steps: int = 5  # abort after this many consecutive skipped (non-finite) steps
    log_every: int = 10
    progress_bar: Optional[bool] = None  # None: only when stderr is a terminal
    tensorboard: bool = True
    eval_after_train: bool = True
    eval_batch_size: int = 4  # videos (each with num_clips x num_crops views) per eval batch

    def __post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None:
            _fail("trainer.epochs", "set (or trainer.max_steps)", self.epochs)
        if self.epochs is not None:
            _int_at_least("trainer.epochs", self.epochs, 1)
        if self.max_steps is not None:
            _int_at_least("trainer.max_steps", self.max_steps, 1)
        _int_at_least("trainer.accumulate", self.accumulate, 1)
        _choice("trainer.precision", self.precision, PRECISIONS)
        _choice("trainer.device", self.device, DEVICES)
        _choice("trainer.dist_backend", self.dist_backend, DIST_BACKENDS)
        _real_in("trainer.dist_timeout_s", self.dist_timeout_s, 0.0, math.inf, low_open=True)
        _int_at_least("trainer.seed", self.seed, 0)
        if self.num_threads is not None:
            _int_at_least("trainer.num_threads", self.num_threads, 1)
        _int_at_least("trainer.checkpoint_every", self.checkpoint_every, 1)
        _int_at_least("trainer.keep_checkpoints", self.keep_checkpoints, 1)
        if not self.resume:
            _fail("trainer.resume", "'auto', 'never' or a checkpoint path", self.resume)
        _int_at_least("trainer.max_nonfinite_steps", self.max_nonfinite_steps, 1)
        _int_at_least("trainer.log_every", self.log_every, 1)
        _int_at_least("trainer.eval_batch_size", self.eval_batch_size, 1)


@dataclass
class TrainConfig:
    """Everything ``videogn-train`` needs (``configs/train.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    data: DataConfig = field(default_factory=DataConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    name: str = "run"  # a label for logs and reports


@dataclass
class EvalConfig:
    """Everything ``videogn-eval`` needs (``configs/eval.yaml``); unset values come from the
    checkpoint's training config."""

    checkpoint: str = MISSING
    data: Optional[DataConfig] = None  # None: the data config the checkpoint was trained with
    split: str = "val"
    num_clips: Optional[int] = None
    num_crops: Optional[int] = None
    batch_size: int = 4
    num_workers: Optional[int] = None
    precision: str = "fp32"
    device: str = "auto"
    dist_backend: str = "auto"
    progress_bar: Optional[bool] = None
    output_dir: Optional[str] = None  # None: the Hydra run directory
    # a checkpoint without a videogn training config (pytorchvideo .pyth, torchvision state dict):
    model: Optional[ModelConfig] = None  # required then (e.g. model=x3d_s norm=bn); else must stay null
    norm: Optional[NormConfig] = None  # None: the checkpoint's norm, or gn
    num_frames: Optional[int] = None  # None: the checkpoint's budget.num_frames
    stride: Optional[int] = None  # None: the checkpoint's budget.stride

    def __post_init__(self) -> None:
        if not self.checkpoint:
            _fail("checkpoint", "a checkpoint path", self.checkpoint)
        for key in ("num_frames", "stride"):
            if getattr(self, key) is not None:
                _int_at_least(key, getattr(self, key), 1)
        _choice("split", self.split, ("train", "val"))
        if self.num_clips is not None:
            _int_at_least("num_clips", self.num_clips, 1)
        if self.num_crops is not None and self.num_crops not in (1, 3):
            _fail("num_crops", "1 or 3", self.num_crops)
        _int_at_least("batch_size", self.batch_size, 1)
        if self.num_workers is not None:
            _int_at_least("num_workers", self.num_workers, 0)
        _choice("precision", self.precision, PRECISIONS)
        _choice("device", self.device, DEVICES)
        _choice("dist_backend", self.dist_backend, DIST_BACKENDS)


def _norm_names() -> tuple[str, ...]:
    from videogn.layers import NORMS

    return NORMS.names()


def _rank0_dir(path: str) -> str:
    # Ranks > 0 of a torchrun job must not create run folders of their own (their clocks give
    # other ${now:} stamps); they get a scratch dir and use rank 0's run dir, broadcast later.
    if env_rank() == 0:
        return path
    return os.path.join(tempfile.gettempdir(), f"videogn-rank{env_rank()}-{os.getpid()}")


def _rank0_only(value: Any) -> Any:
    return value if env_rank() == 0 else None


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore and the config resolvers (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    OmegaConf.register_new_resolver("videogn_rank0_dir", _rank0_dir, replace=True)
    OmegaConf.register_new_resolver("videogn_rank0_only", _rank0_only, replace=True)

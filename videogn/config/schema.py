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

import dataclasses
import difflib
import math
import os
import tempfile
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from videogn.budget.schedules import SCHEDULES
from videogn.checks import check_int
from videogn.defaults import DEFAULT_FILENAME_PATTERN, KINETICS_MEAN, KINETICS_STD, SyntheticSpec
from videogn.optim import LR_SCHEDULES, OPTIMIZERS
from videogn.runtime import PRECISIONS, env_rank

__all__ = [
    "BudgetConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "EvalProtocolConfig",
    "ModelConfig",
    "NormConfig",
    "OptimConfig",
    "PredictConfig",
    "SchedConfig",
    "SyntheticConfig",
    "TrainConfig",
    "TrainerConfig",
    "auto_num_workers",
    "budget_config_class",
    "closest",
    "given_fields",
    "register_configs",
    "upgrade_train_config",
]

DEVICES = ("auto", "cpu", "cuda")
DIST_BACKENDS = ("auto", "gloo", "nccl")
VAL_UNITS = ("epoch", "step")  # trainer.val_unit
BEST_METRICS = {"val_top1": "max", "val_top5": "max", "val_loss": "min"}  # trainer.best_metric -> better is
DATASETS = ("synthetic", "kinetics")  # the one home of dataset names (videogn.engine.build resolves them)
MAX_AUTO_WORKERS = 8  # data.num_workers=auto: the cores this process may use, at most this many


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range; the message names the field."""


def _fail(name: str, rule: str, value: Any) -> None:
    raise ConfigError(f"{name} must be {rule}, got {value!r}")


def _int_at_least(name: str, value: Any, low: int) -> None:
    check_int(name, value, low, error=ConfigError)


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
    new_head: bool = False  # with weights: load all but the classifier, which starts fresh for this run's classes
    freeze_stages: int = 0  # frozen (no grad, eval mode) stages: 1 the stem, 2 stem + res2, ... (ModelSpec.stages)

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
        if self.new_head and self.weights is None:
            _fail("model.new_head", "false when model.weights is null (there is no checkpoint head to replace)",
                  self.new_head)
        _int_at_least("model.freeze_stages", self.freeze_stages, 0)  # the upper bound is the model's stages (at build)


@dataclass
class NormConfig:
    """``norm/``: the normalization layer spec passed to ``create_model(norm=...)``."""

    name: str = "gn"  # gn | bn | syncbn | frozen_bn | ln | in | none
    kwargs: Dict[str, Any] = field(default_factory=dict)  # e.g. num_groups=32 or group_size=16

    def __post_init__(self) -> None:
        _choice("norm.name", self.name, _norm_names())


def _fields_of(cls: type) -> list[tuple[str, Any, Any]]:
    """``cls``'s fields as ``make_dataclass`` takes them (name, resolved type, default): a config
    derived from a library dataclass has its keys, types and defaults, never copies of them."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            default = field(default_factory=f.default_factory)
        else:
            default = field(default=f.default)
        out.append((f.name, hints[f.name], default))
    return out


class _SyntheticConfigMethods:
    def to_spec(self) -> SyntheticSpec:
        """The dataset spec these settings describe (every field but ``cache_dir``)."""
        return SyntheticSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SyntheticSpec)})

    def __post_init__(self) -> None:
        try:
            self.to_spec()
        except ValueError as e:
            raise ConfigError(str(e).replace("synthetic dataset: ", "data.synthetic.")) from None


# ``data.synthetic``: every field of videogn.defaults.SyntheticSpec (its keys, types, defaults and,
# through to_spec, its checks), plus where the generated files are cached.
SyntheticConfig = dataclasses.make_dataclass(
    "SyntheticConfig",
    [*_fields_of(SyntheticSpec), ("cache_dir", Optional[str], field(default=None))],  # None: $VIDEOGN_CACHE or ~/.cache/videogn
    bases=(_SyntheticConfigMethods,),
    namespace={
        "__module__": __name__,
        "__doc__": "``data.synthetic``: size and difficulty of the built-in dataset (the fields of "
        ":class:`videogn.defaults.SyntheticSpec`) and ``cache_dir`` (None: $VIDEOGN_CACHE or ~/.cache/videogn).",
    },
)


@dataclass
class DataConfig:
    """``data/``: where the videos are and how clips are sampled and augmented.

    For ``name=kinetics``, each split's videos are found under ``root/<split>_dir`` with file names
    from the split's annotation CSV, or at the paths of its list file, which are relative to that
    folder (as ``datasets/kinetics/build_index.py`` writes them when given each split's folder). For ``name=synthetic``, ``root`` and the annotations are set
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
    # a classes.json ({"name": index}, as datasets/kinetics/build_index.py writes): the run's classes in
    # order; a label outside it stops the run naming file and row. None: classes.json beside the
    # training annotation if there is one, else the training annotation's sorted labels
    class_index: Optional[str] = None
    # videos left out of both splits: a path or a list of paths of datasets/kinetics/scan.py reports
    # (path<TAB>error lines; relative paths from the working directory). None: none left out
    exclude: Any = None
    filename_pattern: str = DEFAULT_FILENAME_PATTERN
    target_fps: Optional[float] = None
    train_scale: List[int] = field(default_factory=lambda: [256, 320])
    crop_size: int = 224
    flip: bool = True
    mean: List[float] = field(default_factory=lambda: list(KINETICS_MEAN))
    std: List[float] = field(default_factory=lambda: list(KINETICS_STD))
    num_workers: Any = "auto"  # an int, or auto: the cores available (at most MAX_AUTO_WORKERS)
    backend: str = "auto"  # auto | a decoder of videogn.data.available_backends()
    max_retries: int = 10
    # decode each video once into a memory-mapped uint8 file (videogn.data.clip_cache): small
    # datasets read many times (the built-in one, sweeps); needs T*H*W*3 bytes per video on disk
    cache_decoded: bool = False
    # K training clips from one decoded span (1.5 clip spans) of each video, each with its own crop,
    # scale, flip and offset; budget.batch_size counts clips (a multiple of K), an epoch is one pass
    # over the videos (K x the steps of K = 1): for decode-bound loaders (README, "Several clips per decode")
    clips_per_decode: int = 1
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
        from videogn.data.video_backends import unavailable_backends

        missing = unavailable_backends()  # installed but unusable here (e.g. torchcodec without FFmpeg)
        if self.backend in missing:
            _fail("data.backend", f"a usable decoder ({self.backend!r}: {missing[self.backend]})", self.backend)
        _choice("data.backend", self.backend, ["auto", *available_backends()])
        _int_at_least("data.max_retries", self.max_retries, 0)
        _int_at_least("data.clips_per_decode", self.clips_per_decode, 1)
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]
        if self.exclude is not None and (
            not isinstance(self.exclude, (list, tuple)) or not all(isinstance(p, str) and p for p in self.exclude)
        ):
            _fail("data.exclude", "null, a path or a list of paths (scan.py reports)", self.exclude)
        if self.exclude is not None:
            self.exclude = list(self.exclude)


@dataclass
class _BudgetBase:
    """``budget/``: clip length x clips per batch (per process), the memory trade of the GN paper.

    Each batch's shape (T, S, B) comes from the clip-shape schedule named by ``schedule`` (one of
    :data:`videogn.budget.SCHEDULES`, built by :func:`videogn.budget.build_schedule` for the base
    shape (``num_frames``, ``data.crop_size``, ``batch_size``) and sampled by
    :class:`videogn.budget.ShapeBatchSampler`): ``fixed`` (every batch at the base shape),
    ``constant_memory`` ((T, B) pairs at about equal ``T * S^2 * B``) or ``multigrid`` (Wu et al.
    2020: a long cycle over (T, S, B) stages spread over ``trainer.epochs``, a short cycle over S).
    Every batch holds one shape, the same on every rank at every step; the learning rate follows
    each step's actual batch (see the trainer), so ``num_frames``/``batch_size`` are also the shape
    the model is evaluated at.

    The schedules' own options are flat keys here too (``budget.lengths``, ``budget.pairs``,
    ``budget.voxel_budget``, ``budget.order``; ``budget.long_cycle``, ``budget.short_cycle``,
    ``budget.num_long_cycles``): each schedule declares them, with their types, defaults and checks,
    in ``videogn/budget/schedules.py`` (``register_schedule``), and :func:`budget_config_class`
    adds them. A value is checked whichever schedule is chosen; an option the chosen schedule does
    not declare, set to other than its default, is refused.
    """

    name: str = "fixed"  # a label of the budget (the YAML's name)
    num_frames: int = MISSING  # T of the base shape: every budget file states its shape (no default fits all)
    stride: int = 2  # temporal sampling stride (frames of the source video between clip frames)
    batch_size: int = MISSING  # B of the base shape: clips per batch per process (before gradient accumulation)
    schedule: str = "fixed"  # a name of videogn.budget.SCHEDULES: fixed | constant_memory | multigrid
    drop_last: bool = True  # drop, rather than pad, an epoch's last step that cannot be filled

    def schedule_options(self) -> dict[str, Any]:
        """The options ``schedule`` declares, by name: what :func:`videogn.budget.build_batch_sampler`
        passes to its builder."""
        names = SCHEDULES.get(self.schedule).option_names()
        return {k: getattr(self, k) for k in names if hasattr(self, k)}  # absent: registered after this class

    def __post_init__(self) -> None:
        for key in ("num_frames", "batch_size"):
            if getattr(self, key) != MISSING:  # '???' only in the schema's own instance: a composed config must give it
                _int_at_least(f"budget.{key}", getattr(self, key), 1)
        _int_at_least("budget.stride", self.stride, 1)
        _choice("budget.schedule", self.schedule, SCHEDULES.names())
        for kind in SCHEDULES.names():  # each value is checked by the schedule that declares it
            entry = SCHEDULES.get(kind)
            try:
                entry.options(**{k: getattr(self, k) for k in entry.option_names() if hasattr(self, k)})
            except ValueError as e:
                raise ConfigError(f"budget.{e}") from None
        own = SCHEDULES.get(self.schedule).option_names()
        for f in dataclasses.fields(self):
            if f.name in _BUDGET_BASE_KEYS or f.name in own:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if getattr(self, f.name) != default:
                listed = ", ".join(f"budget.{k}" for k in own) or "none"
                raise ConfigError(
                    f"budget.{f.name} is not an option of budget.schedule={self.schedule!r} (its options: {listed}); "
                    f"leave it at its default or choose a schedule that has it, got {getattr(self, f.name)!r}"
                )


_BUDGET_BASE_KEYS = frozenset(f.name for f in dataclasses.fields(_BudgetBase))


def budget_config_class() -> type:
    """The ``budget`` config dataclass for the schedules registered now: the base keys, then every
    schedule's options as flat keys with the types and defaults that schedule declares.

    :class:`BudgetConfig` is this for the built-in schedules; a schedule registered later (e.g. in a
    test) is known to the classes built after it.

    Raises:
        TypeError: two schedules declare one option name with different types or defaults (one key
            cannot have both), or an option shadows a base key.
    """
    declared: dict[str, tuple[str, Any, Any]] = {}
    spec: list[tuple[str, Any, Any]] = []
    for kind in SCHEDULES.names():
        for name, tp, default in _fields_of(SCHEDULES.get(kind).options):
            if name in _BUDGET_BASE_KEYS:
                raise TypeError(f"schedule {kind!r}: option {name!r} would shadow the key budget.{name}")
            factory = default.default_factory
            value = factory() if factory is not dataclasses.MISSING else default.default
            if name in declared:
                other, other_tp, other_value = declared[name]
                if (tp, value) != (other_tp, other_value):
                    raise TypeError(
                        f"schedules {other!r} and {kind!r} both declare option {name!r} with different types or "
                        f"defaults ({other_tp}={other_value!r} vs {tp}={value!r}); the key budget.{name} needs one"
                    )
                continue
            declared[name] = (kind, tp, value)
            spec.append((name, tp, default))
    return dataclasses.make_dataclass(
        "BudgetConfig", spec, bases=(_BudgetBase,), namespace={"__module__": __name__, "__doc__": _BudgetBase.__doc__}
    )


BudgetConfig = budget_config_class()


@dataclass
class OptimConfig:
    """``optim/``: SGD or AdamW; ``lr`` is the rate at ``reference_batch_size`` clips, scaled linearly
    with the actual global batch for either optimizer (None: ``lr`` as is)."""

    name: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    reference_batch_size: Optional[int] = 64  # None: use lr as is, whatever the batch
    momentum: float = 0.9  # sgd
    nesterov: bool = True  # sgd
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    weight_decay: float = 1e-4
    norm_weight_decay: Optional[float] = 0.0  # norm weights and all biases; None: = weight_decay
    grad_clip_norm: Optional[float] = None
    head_lr_mult: float = 1.0  # the classifier trains at lr x head_lr_mult (fine-tuning a new head)
    label_smoothing: float = 0.0  # of the training loss (F.cross_entropy's label_smoothing)

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, OPTIMIZERS)
        _real_in("optim.lr", self.lr, 0.0, 1e3, low_open=True)
        if self.reference_batch_size is not None:
            _int_at_least("optim.reference_batch_size", self.reference_batch_size, 1)
        _real_in("optim.momentum", self.momentum, 0.0, 1.0, high_open=True)
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            _fail("optim.momentum", "> 0 when optim.nesterov is true", self.momentum)
        if len(self.betas) != 2 or any(not isinstance(b, (int, float)) or not 0 <= b < 1 for b in self.betas):
            _fail("optim.betas", "two numbers in [0, 1)", list(self.betas))
        _real_in("optim.head_lr_mult", self.head_lr_mult, 0.0, 1e6, low_open=True)
        _real_in("optim.label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
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
    eval_after_train: bool = True  # evaluate on the val split with the ``eval`` protocol after training
    # validation during training (README "Validation during training"): every `val_every` epochs
    # or steps (`val_unit`), with the `eval` protocol; null: never
    val_every: Optional[int] = None
    val_unit: str = "epoch"  # epoch | step
    val_subset: Optional[int] = None  # validate on this many val videos (a seeded subset, the same each time); null: all
    val_num_clips: Optional[int] = None  # clips per video when validating; null: eval.num_clips
    best_metric: str = "val_top1"  # what checkpoints/best.pt is best at: val_top1 | val_top5 (max) | val_loss (min)
    # none | blocks | full: recompute every residual block (and the stem) in backward instead of
    # storing its activations (videogn.models.checkpointing): less memory, more step time
    activation_checkpointing: str = "none"
    channels_last: bool = False  # model and clips in torch.channels_last_3d (GroupNorm3d reads it in place)
    compile: bool = False  # torch.compile the model in place (state-dict keys stay plain); ~1x eager on CPU
    # shapes under trainer.compile: false = a graph specialised to each clip shape (a compile per
    # shape of the budget's schedule; the faster steps), true = one graph for every shape (2.65x
    # slower steps on CPU), null = torch's automatic (static, dynamic from the first new shape);
    # README "Memory and speed switches", docs/benchmarks.md "torch.compile (CPU)"
    compile_dynamic: Optional[bool] = False

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
        if self.val_every is not None:
            _int_at_least("trainer.val_every", self.val_every, 1)
        _choice("trainer.val_unit", self.val_unit, VAL_UNITS)
        if self.val_subset is not None:
            _int_at_least("trainer.val_subset", self.val_subset, 1)
        if self.val_num_clips is not None:
            _int_at_least("trainer.val_num_clips", self.val_num_clips, 1)
        _choice("trainer.best_metric", self.best_metric, BEST_METRICS)
        from videogn.models.checkpointing import CHECKPOINT_MODES

        _choice("trainer.activation_checkpointing", self.activation_checkpointing, CHECKPOINT_MODES)


def _dataset_default(name: str) -> Any:
    # the test-view defaults of the library's dataset, read when a config is made (not at import:
    # importing videogn.data here would pull every decoder into `import videogn.config`)
    import inspect

    from videogn.data import KineticsDataset

    return inspect.signature(KineticsDataset).parameters[name].default


@dataclass
class EvalProtocolConfig:
    """``eval``: the multi-view test protocol, the one owner of it: ``num_clips`` clips spread over
    each video x ``num_crops`` spatial crops, softmax averaged over the views. ``videogn-train``'s
    final evaluation uses its run's section; ``videogn-eval`` the checkpoint's, with the fields given
    on its command line (``eval.num_clips=3``) replacing the checkpoint's one by one."""

    num_frames: Optional[int] = None  # None: the training clip length (budget.num_frames)
    stride: Optional[int] = None  # None: the training stride (budget.stride)
    num_clips: int = field(default_factory=lambda: _dataset_default("num_clips"))
    num_crops: int = 3  # 1 (centre) or 3 (left/centre/right) crops per clip: 3 is the GN paper's protocol
    test_scale: int = field(default_factory=lambda: _dataset_default("test_scale"))  # short side before cropping
    test_crop_size: Optional[int] = None  # None: test_scale (fully convolutional, the paper's protocol)
    batch_size: int = 4  # videos (each with num_clips x num_crops views) per batch and process
    # also write each video's per-view logits ("view_logits": num_clips x num_crops rows of
    # num_classes floats, clip-major) into predictions.jsonl (videogn-predict: predictions.json);
    # ~10.5 bytes a float, e.g. 30 views x 400 classes = ~125 KB per video, 2.5 GB for 20k videos
    save_view_logits: bool = False

    def __post_init__(self) -> None:
        for key in ("num_frames", "stride", "test_crop_size"):
            if getattr(self, key) is not None:
                _int_at_least(f"eval.{key}", getattr(self, key), 1)
        _int_at_least("eval.num_clips", self.num_clips, 1)
        if self.num_crops not in (1, 3):
            _fail("eval.num_crops", "1 or 3", self.num_crops)
        _int_at_least("eval.test_scale", self.test_scale, 1)
        if self.test_crop_size is not None and self.test_crop_size > self.test_scale:
            _fail("eval.test_crop_size", f"<= eval.test_scale ({self.test_scale}) or null", self.test_crop_size)
        _int_at_least("eval.batch_size", self.batch_size, 1)


# Where the protocol lived before the ``eval`` section: a checkpoint's training config written then
# is read with these keys moved (upgrade_train_config).
_MOVED_TO_EVAL = {
    ("data", "num_clips"): "num_clips", ("data", "num_crops"): "num_crops", ("data", "test_scale"): "test_scale",
    ("data", "test_crop_size"): "test_crop_size", ("trainer", "eval_batch_size"): "batch_size",
}


def upgrade_train_config(config: dict[str, Any]) -> dict[str, Any]:
    """A training config (plain dict, e.g. a checkpoint's) with keys of older releases moved to
    where this release reads them (``data.num_clips`` -> ``eval.num_clips``, ...)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    moved = {}
    for (section, key), new in _MOVED_TO_EVAL.items():
        if isinstance(out.get(section), dict) and key in out[section]:
            moved[new] = out[section].pop(key)
    if moved:
        out["eval"] = {**moved, **(out.get("eval") or {})}
    return out


def _dataclass_in(tp: Any) -> Optional[type]:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    tp = args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp
    return tp if dataclasses.is_dataclass(tp) else None


def _override_of(cls: type) -> type:
    """A dataclass with ``cls``'s fields, each Optional and None ("not given") by default, nested
    configs likewise: a typed partial config laid over a whole one (see :func:`given_fields`).
    Derived from ``cls``, so it can never drift from it."""
    hints = typing.get_type_hints(cls)
    spec: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        sub = _dataclass_in(hints[f.name])
        if sub is not None:  # a nested config is a nested override, so data.synthetic.seed=1 works
            part = _override_of(sub)
            spec.append((f.name, Optional[part], field(default_factory=part)))
        else:
            spec.append((f.name, Optional[hints[f.name]], None))
    name = f"{cls.__name__}Override"
    doc = f"Fields of :class:`{cls.__name__}` to replace; None: keep the value it is laid over."
    return dataclasses.make_dataclass(name, spec, namespace={"__module__": __name__, "__doc__": doc})


DataConfigOverride = _override_of(DataConfig)
EvalProtocolOverride = _override_of(EvalProtocolConfig)


def given_fields(override: Any) -> dict[str, Any]:
    """The fields an override sets (not None), nested overrides as dicts: ready for ``OmegaConf.merge``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(override):
        value = getattr(override, f.name)
        if dataclasses.is_dataclass(value):
            value = given_fields(value) or None
        if value is not None:
            out[f.name] = value
    return out


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
    eval: EvalProtocolConfig = field(default_factory=EvalProtocolConfig)
    name: str = "run"  # a label for logs and reports


@dataclass
class _CheckpointJobConfig:
    """What ``videogn-eval`` and ``videogn-predict`` share: a checkpoint and the overrides laid over
    its training config. ``data`` and ``eval`` go field by field: ``data.root=/new/place`` or
    ``eval.num_clips=3`` change that one value (a field cannot be set back to null this way)."""

    checkpoint: str = MISSING
    data: DataConfigOverride = field(default_factory=DataConfigOverride)  # type: ignore[valid-type]
    eval: EvalProtocolOverride = field(default_factory=EvalProtocolOverride)  # type: ignore[valid-type]
    num_workers: Optional[int] = None  # None: data.num_workers
    precision: str = "fp32"
    device: str = "auto"
    dist_backend: str = "auto"
    progress_bar: Optional[bool] = None
    output_dir: Optional[str] = None  # None: the Hydra run directory
    # a checkpoint without a videogn training config (pytorchvideo .pyth, torchvision state dict):
    model: Optional[ModelConfig] = None  # required then (e.g. model=x3d_s norm=bn data=kinetics400); else must stay null
    norm: Optional[NormConfig] = None  # None: the checkpoint's norm, or gn

    def __post_init__(self) -> None:
        if not self.checkpoint:
            _fail("checkpoint", "a checkpoint path", self.checkpoint)
        if self.num_workers is not None:
            _int_at_least("num_workers", self.num_workers, 0)
        _choice("precision", self.precision, PRECISIONS)
        _choice("device", self.device, DEVICES)
        _choice("dist_backend", self.dist_backend, DIST_BACKENDS)


@dataclass
class EvalConfig(_CheckpointJobConfig):
    """Everything ``videogn-eval`` needs (``configs/eval.yaml``)."""

    split: str = "val"
    resume: bool = True  # a rerun into the same run dir reuses the videos already predicted there (same checkpoint and settings)
    # evaluate although the checkpoint's classifier has another number of outputs than the data has
    # classes (its classifier then starts random): refused by default, the numbers would be chance
    allow_class_mismatch: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("split", self.split, ("train", "val"))


@dataclass
class PredictConfig(_CheckpointJobConfig):
    """Everything ``videogn-predict`` needs (``configs/predict.yaml``): the classes of new videos
    under :class:`EvalConfig`'s checkpoint rules (model, clip and protocol from the checkpoint).
    For a checkpoint without a videogn training config, ``model``, ``eval.num_frames`` and
    ``class_names`` are required."""

    inputs: str = MISSING  # a video file, a folder (searched recursively) or a list file (one path per line)
    top_k: int = 5  # classes listed per video (at most the number of classes)
    class_names: Optional[str] = None  # JSON list or classes.json ({name: index}); None: the checkpoint's

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.inputs:
            _fail("inputs", "a path", self.inputs)
        _int_at_least("top_k", self.top_k, 1)


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
    cs.store(name="predict_schema", node=PredictConfig)
    OmegaConf.register_new_resolver("videogn_rank0_dir", _rank0_dir, replace=True)
    OmegaConf.register_new_resolver("videogn_rank0_only", _rank0_only, replace=True)

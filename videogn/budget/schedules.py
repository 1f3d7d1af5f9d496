"""Clip-shape schedules: which (T frames, S crop side, B clips) shape each epoch's batches use.

A *shape* is (T, S, B) per process; its *voxels* ``T * S * S * B`` are what a step's activation
memory grows with. With GroupNorm the batch size does not enter the normalisation, so memory can go
to longer clips or larger crops instead of more clips. Every shape argument list is in the order
(T, S, B) = (``num_frames``, ``crop_size``, ``batch_size``), as :class:`ClipShape`.

Schedules are registered by name in :data:`SCHEDULES` (``budget.schedule`` in the config):

- ``fixed``: one shape for the whole run.
- ``constant_memory``: (T, B) pairs such as (8, 32), (16, 16), (32, 8), (64, 4) at (at most) equal
  voxels; batches alternate between them.
- ``multigrid``: Wu et al., CVPR 2020: a long cycle over (T, S, B) stages spread over the epochs
  and a short cycle over S inside each epoch, at constant voxels.

A new schedule is one builder registered with :func:`register_schedule`, which declares its options
(a dataclass: fields, defaults, checks in ``__post_init__``) and whether it needs the run's epochs,
plus one YAML in ``configs/budget/``; the options become ``budget.<option>`` config keys, and
:func:`build_schedule` (so :func:`~videogn.budget.build_batch_sampler`) passes them on by name.

The learning rate follows each step's actual batch through one rule, :func:`batch_lr_scale`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Sequence

from videogn.checks import check_factor, check_int
from videogn.registry import Registry

__all__ = [
    "DEFAULT_LENGTHS",
    "DEFAULT_LONG_CYCLE",
    "DEFAULT_SHORT_CYCLE",
    "SCHEDULES",
    "SHAPE_ORDERS",
    "ClipShape",
    "ConstantMemoryOptions",
    "MultigridOptions",
    "NoOptions",
    "RegisteredSchedule",
    "ScheduleStage",
    "ShapeSchedule",
    "batch_lr_scale",
    "build_schedule",
    "constant_memory",
    "fixed",
    "multigrid",
    "register_schedule",
    "schedule_options",
]

SHAPE_ORDERS = ("cycle", "random")
DEFAULT_LENGTHS = (8, 16, 32, 64)
# (temporal factor, spatial factor) of each long-cycle stage; the last is the base shape (Wu et al.).
DEFAULT_LONG_CYCLE: tuple[tuple[float, float], ...] = ((0.25, 0.5**0.5), (0.5, 0.5**0.5), (0.5, 1.0), (1.0, 1.0))
# spatial factors of the short cycle; the stage's own crop closes each cycle (Wu et al.).
DEFAULT_SHORT_CYCLE: tuple[float, ...] = (0.5, 0.5**0.5)


def batch_lr_scale(clips_in_step: int, world_size: int, reference_batch_size: Optional[int]) -> float:
    """The linear scaling rule: the factor on the learning rate of a step that trained on
    ``clips_in_step`` clips per process (summed over its micro-batches) on ``world_size`` processes.

    Returns:
        ``clips_in_step * world_size / reference_batch_size``; 1.0 when ``reference_batch_size`` is None.
    """
    check_int("clips_in_step", clips_in_step, 1)
    check_int("world_size", world_size, 1)
    if reference_batch_size is None:
        return 1.0
    check_int("reference_batch_size", reference_batch_size, 1)
    return clips_in_step * world_size / reference_batch_size


@dataclass(frozen=True)
class ClipShape:
    """One batch shape: ``batch_size`` clips of ``num_frames`` frames cropped to ``crop_size``²."""

    num_frames: int
    crop_size: int
    batch_size: int

    def __post_init__(self) -> None:
        check_int("num_frames", self.num_frames)
        check_int("crop_size", self.crop_size, 1)
        check_int("batch_size", self.batch_size, 1)

    @property
    def voxels(self) -> int:
        """``T * S * S * B``: what the activation memory of a step is proportional to."""
        return self.num_frames * self.crop_size * self.crop_size * self.batch_size

    @property
    def frames(self) -> int:
        """``T * B``: frames in the batch."""
        return self.num_frames * self.batch_size

    def __str__(self) -> str:
        return f"{self.num_frames}x{self.crop_size}^2 x {self.batch_size}"


@dataclass(frozen=True)
class ScheduleStage:
    """Shapes used for ``epochs`` consecutive epochs, alternating from batch to batch.

    ``epochs=None`` means "until the end of training" and is only allowed for the last stage.
    """

    shapes: tuple[ClipShape, ...]
    epochs: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.shapes or not all(isinstance(s, ClipShape) for s in self.shapes):
            raise ValueError(f"a stage needs at least one ClipShape, got shapes={self.shapes!r}")
        if self.epochs is not None:
            check_int("stage epochs", self.epochs, 1)


@dataclass(frozen=True)
class ShapeSchedule:
    """Which clip shapes each epoch's batches use.

    Attributes:
        kind: the registered name that built it (informational).
        stages: consecutive epoch ranges; after the last stage's epochs the last stage continues.
        voxel_budget: voxels per process (``T * S^2 * B``) that every shape stays within.
        order: how a stage's shapes alternate over its batches: "cycle" (round robin from the
            first, every epoch) or "random" (drawn per batch from the sampler's seed and epoch).
    """

    kind: str
    stages: tuple[ScheduleStage, ...]
    voxel_budget: int
    order: str = "cycle"

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a schedule needs at least one stage, got stages=()")
        check_int("voxel_budget", self.voxel_budget, 1)
        if self.order not in SHAPE_ORDERS:
            raise ValueError(f"order must be one of {SHAPE_ORDERS}, got {self.order!r}")
        for i, stage in enumerate(self.stages[:-1]):
            if stage.epochs is None:
                raise ValueError(f"stages[{i}].epochs must be set (only the last stage may be open-ended)")
        for shape in self.shapes:
            if shape.voxels > self.voxel_budget:
                raise ValueError(
                    f"shape {shape} needs {shape.voxels} voxels (T*S^2*B), over voxel_budget={self.voxel_budget}"
                )

    @classmethod
    def single(cls, shape: ClipShape) -> "ShapeSchedule":
        """The ``fixed`` schedule of one shape."""
        return cls("fixed", (ScheduleStage((shape,)),), voxel_budget=shape.voxels)

    @property
    def shapes(self) -> tuple[ClipShape, ...]:
        """Every distinct shape, in order of first use."""
        return tuple(dict.fromkeys(s for stage in self.stages for s in stage.shapes))

    def stage_index(self, epoch: int) -> int:
        """The stage that ``epoch`` (0-based) trains in."""
        check_int("epoch", epoch, 0)
        start = 0
        for i, stage in enumerate(self.stages):
            if stage.epochs is None or epoch < start + stage.epochs:
                return i
            start += stage.epochs
        return len(self.stages) - 1

    def shapes_at(self, epoch: int) -> tuple[ClipShape, ...]:
        """The shapes the batches of ``epoch`` alternate over."""
        return self.stages[self.stage_index(epoch)].shapes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (for logs, run directories and checkpoints)."""
        return {
            "kind": self.kind,
            "voxel_budget": self.voxel_budget,
            "order": self.order,
            "stages": [{"epochs": st.epochs, "shapes": [asdict(s) for s in st.shapes]} for st in self.stages],
        }

    def describe(self) -> str:
        """A markdown table, one row per (stage, shape)."""
        lines = ["| stage | epochs | T | S | B | T*B | T*S^2*B |", "|---|---|---|---|---|---|---|"]
        for i, st in enumerate(self.stages):
            for s in st.shapes:
                epochs = "rest" if st.epochs is None else str(st.epochs)
                lines.append(
                    f"| {i} | {epochs} | {s.num_frames} | {s.crop_size} | {s.batch_size} | {s.frames} | {s.voxels} |"
                )
        return "\n".join(lines)


def fixed(num_frames: int, crop_size: int, batch_size: int) -> ShapeSchedule:
    """One shape, (T, S, B), for every batch of the run."""
    return ShapeSchedule.single(ClipShape(num_frames, crop_size, batch_size))


# -- options: each schedule's settings, their defaults and checks, in one dataclass ----------------


@dataclass(frozen=True)
class NoOptions:
    """The options of a schedule that has none (``fixed``)."""


@dataclass(frozen=True)
class ConstantMemoryOptions:
    """Options of ``constant_memory`` (see :func:`constant_memory`).

    Attributes:
        lengths: clip lengths T, each with ``B = floor(voxel_budget / (T * S^2))``.
        pairs: explicit ``[[T, B], ...]`` instead of ``lengths`` (their B scaled to ``voxel_budget``).
        voxel_budget: ``T * S^2 * B`` per process; None: the base shape's, or the largest pair's.
        order: how the shapes alternate over batches: "cycle" or "random" (see :class:`ShapeSchedule`).
    """

    lengths: List[int] = field(default_factory=lambda: list(DEFAULT_LENGTHS))
    pairs: Optional[List[List[int]]] = None
    voxel_budget: Optional[int] = None
    order: str = "cycle"

    def __post_init__(self) -> None:
        if not self.lengths:
            raise ValueError(f"lengths must name at least one clip length, got {self.lengths!r}")
        for t in self.lengths:
            check_int("lengths item", t)
        if self.pairs is not None:
            if not self.pairs:
                raise ValueError(f"pairs must be null or hold at least one [num_frames, batch_size], got {self.pairs!r}")
            for p in self.pairs:
                if len(p) != 2:
                    raise ValueError(f"pairs item must be [num_frames, batch_size], got {p!r}")
                check_int("pairs num_frames", p[0])
                check_int("pairs batch_size", p[1])
        if self.voxel_budget is not None:
            check_int("voxel_budget", self.voxel_budget)
        if self.order not in SHAPE_ORDERS:
            raise ValueError(f"order must be one of {list(SHAPE_ORDERS)}, got {self.order!r}")


@dataclass(frozen=True)
class MultigridOptions:
    """Options of ``multigrid`` (see :func:`multigrid`).

    Attributes:
        long_cycle: (temporal factor, spatial factor) of each stage, in (0, 1]; the last is usually (1, 1).
        short_cycle: spatial factors alternated batch by batch inside a stage (empty: none).
        num_long_cycles: long cycles over the run's epochs.
    """

    long_cycle: List[List[float]] = field(default_factory=lambda: [list(p) for p in DEFAULT_LONG_CYCLE])
    short_cycle: List[float] = field(default_factory=lambda: list(DEFAULT_SHORT_CYCLE))
    num_long_cycles: int = 1

    def __post_init__(self) -> None:
        if not self.long_cycle:
            raise ValueError(
                f"long_cycle must hold at least one [temporal factor, spatial factor], got {self.long_cycle!r}"
            )
        for pair in self.long_cycle:
            if len(pair) != 2:
                raise ValueError(f"long_cycle item must be [temporal factor, spatial factor], got {pair!r}")
            check_factor("long_cycle temporal factor", pair[0])
            check_factor("long_cycle spatial factor", pair[1])
        for f in self.short_cycle:
            check_factor("short_cycle factor", f)
        check_int("num_long_cycles", self.num_long_cycles)


def constant_memory(
    base: Optional[tuple[int, int]] = None,
    *,
    crop_size: int,
    pairs: Optional[Sequence[Sequence[int]]] = None,
    voxel_budget: Optional[int] = None,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    order: str = "cycle",
) -> ShapeSchedule:
    """(T, B) pairs at (at most) equal ``T * S^2 * B``, e.g. (8, 32), (16, 16), (32, 8), (64, 4).

    Give either ``base=(T0, B0)`` — then ``voxel_budget`` defaults to ``T0 * S^2 * B0`` and each T
    in ``lengths`` gets ``B = floor(voxel_budget / (T * S^2))`` — or explicit ``pairs`` — then their
    batch sizes are scaled by ``voxel_budget / max(T * S^2 * B)`` (rounded down; unchanged when
    ``voxel_budget`` is not given).

    Args:
        base: the reference (T0, B0).
        crop_size: S, the crop side of every shape.
        pairs: explicit (T, B) pairs instead of ``base`` + ``lengths``.
        voxel_budget: voxels per process.
        lengths: clip lengths used with ``base``.
        order: "cycle" or "random", see :class:`ShapeSchedule`.
    """
    check_int("crop_size", crop_size)
    area = crop_size * crop_size
    if (base is None) == (pairs is None):
        raise ValueError(f"give exactly one of base or pairs, got base={base!r}, pairs={pairs!r}")
    opts = ConstantMemoryOptions(  # checks every option, one place for the config and for callers
        lengths=list(lengths), pairs=None if pairs is None else [list(p) for p in pairs],
        voxel_budget=voxel_budget, order=order,
    )
    scaled = []
    if base is not None:
        if len(base) != 2:
            raise ValueError(f"base must be (num_frames, batch_size), got {base!r}")
        t0, b0 = check_int("base num_frames", base[0]), check_int("base batch_size", base[1])
        budget = voxel_budget if voxel_budget is not None else t0 * area * b0
        for t in opts.lengths:
            b = budget // (t * area)
            if b < 1:
                raise ValueError(
                    f"lengths item {t} does not fit voxel_budget={budget}: one clip of "
                    f"{t}x{crop_size}^2 is {t * area} voxels"
                )
            scaled.append((t, b))
    else:
        given = opts.pairs or []  # not None here: exactly one of base and pairs is given
        biggest = max(t * area * b for t, b in given)
        budget = voxel_budget if voxel_budget is not None else biggest
        for t, b in given:
            new_b = (b * budget) // biggest  # exact integer arithmetic: floor(b * budget / biggest)
            if new_b < 1:
                raise ValueError(
                    f"pair ({t}, {b}) scaled to voxel_budget={budget} leaves batch_size 0 "
                    f"(one clip of {t}x{crop_size}^2 is {t * area} voxels)"
                )
            scaled.append((t, new_b))
    shapes = tuple(ClipShape(t, crop_size, b) for t, b in dict.fromkeys(scaled))
    return ShapeSchedule("constant_memory", (ScheduleStage(shapes),), voxel_budget=budget, order=order)


def _split_epochs(total: int, parts: int) -> list[int]:
    # the remainder goes to the later (finer, closer to the test shape) stages
    base, extra = divmod(total, parts)
    return [base + (1 if i >= parts - extra else 0) for i in range(parts)]


def multigrid(
    num_frames: int,
    crop_size: int,
    batch_size: int,
    *,
    epochs: int,
    long_cycle: Sequence[Sequence[float]] = DEFAULT_LONG_CYCLE,
    short_cycle: Sequence[float] = DEFAULT_SHORT_CYCLE,
    num_long_cycles: int = 1,
) -> ShapeSchedule:
    """Multigrid training (Wu, Girshick, He, Feichtenhofer, Krähenbühl; CVPR 2020) at constant
    voxels ``T * S^2 * B`` of the base shape (T, S, B).

    The long cycle visits ``long_cycle`` stages (temporal factor, spatial factor) in order,
    ``num_long_cycles`` times over ``epochs``; each stage's T and S are the base ones times the
    factors (rounded, at least 1) and its B is ``floor(voxel_budget / (T * S^2))`` (rounded down, so
    no shape exceeds the base's voxels). The short cycle, if not empty, alternates batch by batch
    over the stage's T with crops ``round(base S * f)`` for each ``short_cycle`` factor (B grown to
    match) and then the stage's own shape. Every batch's learning rate follows its own B
    (:func:`batch_lr_scale`).

    With GroupNorm nothing in the model depends on B, so no sub-batch BN or SyncBN juggling and no
    rebuild between shapes is needed; the model must be fully convolutional in T and S (global
    pooling before the classifier), which the I3D models are.
    """
    base = ClipShape(num_frames, crop_size, batch_size)
    t0, s0 = base.num_frames, base.crop_size
    check_int("epochs", epochs)
    opts = MultigridOptions(  # checks every option, one place for the config and for callers
        long_cycle=[list(p) for p in long_cycle], short_cycle=list(short_cycle), num_long_cycles=num_long_cycles
    )
    voxel_budget = base.voxels
    n_stages = len(opts.long_cycle) * opts.num_long_cycles
    if epochs < n_stages:
        raise ValueError(
            f"epochs={epochs} is fewer than the {n_stages} long-cycle stages "
            f"({len(opts.long_cycle)} factors x num_long_cycles={opts.num_long_cycles})"
        )

    def shape_for(t: int, s: int) -> ClipShape:
        b = voxel_budget // (t * s * s)
        if b < 1:  # only reachable when a factor rounds T or S above the base
            raise ValueError(f"shape {t}x{s}^2 needs {t * s * s} voxels per clip, over voxel_budget={voxel_budget}")
        return ClipShape(t, s, b)

    cycle_stages = []
    for ft, fs in opts.long_cycle:
        t, s = max(1, round(t0 * ft)), max(1, round(s0 * fs))
        # short-cycle crops are fractions of the base crop, as in the paper's code: a stage whose
        # own crop is already S/sqrt(2) repeats that shape, keeping the cycle's rhythm
        shapes = [shape_for(t, max(1, round(s0 * f))) for f in opts.short_cycle]
        shapes.append(shape_for(t, s))
        cycle_stages.append(tuple(shapes))
    stage_shapes = cycle_stages * opts.num_long_cycles
    stages = tuple(ScheduleStage(sh, e) for sh, e in zip(stage_shapes, _split_epochs(epochs, n_stages)))
    return ShapeSchedule("multigrid", stages, voxel_budget=voxel_budget, order="cycle")


# -- the registry: one entry per schedule, its builder and its declared options -----------------


@dataclass(frozen=True)
class RegisteredSchedule:
    """A schedule of :data:`SCHEDULES`: ``build(base, options)`` (``build(base, options, epochs=n)``
    when ``needs_epochs``) returns the :class:`ShapeSchedule` for the base shape ``base``."""

    name: str
    build: Callable[..., ShapeSchedule]
    options: type  # a dataclass: the options' names, types, defaults and (in __post_init__) checks
    needs_epochs: bool = False  # the schedule spreads its stages over the run's epochs

    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))


SCHEDULES: Registry[RegisteredSchedule] = Registry("clip-shape schedule")

ScheduleBuilder = Callable[..., ShapeSchedule]


def register_schedule(
    name: str, options: type = NoOptions, *, needs_epochs: bool = False
) -> Callable[[ScheduleBuilder], ScheduleBuilder]:
    """Decorator: register ``build(base: ClipShape, options) -> ShapeSchedule`` as schedule ``name``.

    Args:
        options: a dataclass of the schedule's options (every field with a default; checks in its
            ``__post_init__``, raising ValueError that starts with the option's name). Each field
            becomes a ``budget.<field>`` config key; a key two schedules share must have the same
            type and default.
        needs_epochs: ``build`` also takes ``epochs=`` (the run's epochs; a run bounded only by
            steps cannot use the schedule).
    """
    if not isinstance(options, type) or not dataclasses.is_dataclass(options):
        raise TypeError(f"schedule {name!r}: options must be a dataclass type, got {options!r}")
    for f in dataclasses.fields(options):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"schedule {name!r}: option {f.name!r} of {options.__name__} needs a default")

    def add(build: ScheduleBuilder) -> ScheduleBuilder:
        SCHEDULES.register(name, RegisteredSchedule(name, build, options, needs_epochs))
        return build

    return add


def schedule_options(kind: str, values: Mapping[str, Any]) -> Any:
    """The options object of schedule ``kind`` from ``values`` (missing ones take their defaults).

    Raises:
        ValueError: for an unknown schedule (listing the registered ones), an option ``kind`` does
            not declare (listing the ones it does), or a bad value (naming the option).
    """
    entry = SCHEDULES.get(kind)
    valid = entry.option_names()
    unknown = sorted(set(values) - set(valid))
    if unknown:
        listed = ", ".join(valid) if valid else "none"
        raise ValueError(f"schedule {kind!r} has no option(s) {unknown}; its options: {listed}")
    return entry.options(**values)


def build_schedule(kind: str, base: ClipShape, *, epochs: Optional[int] = None, **options: Any) -> ShapeSchedule:
    """The schedule registered as ``kind`` for the base shape ``base`` (T, S, B).

    Args:
        epochs: the run's epochs; required by a schedule registered with ``needs_epochs``.
        options: the schedule's own options (see :func:`schedule_options`); others are refused.
    """
    if not isinstance(base, ClipShape):
        raise TypeError(f"base must be a ClipShape(num_frames, crop_size, batch_size), got {base!r}")
    entry = SCHEDULES.get(kind)
    opts = schedule_options(kind, options)
    if not entry.needs_epochs:
        return entry.build(base, opts)
    if epochs is None:
        raise ValueError(
            f"schedule {kind!r} spreads its stages over the run's epochs: set trainer.epochs "
            "(a run bounded only by trainer.max_steps cannot use it), got epochs=None"
        )
    return entry.build(base, opts, epochs=check_int("epochs", epochs))


@register_schedule("fixed")
def _build_fixed(base: ClipShape, options: NoOptions) -> ShapeSchedule:
    return ShapeSchedule.single(base)


@register_schedule("constant_memory", ConstantMemoryOptions)
def _build_constant_memory(base: ClipShape, o: ConstantMemoryOptions) -> ShapeSchedule:
    if o.pairs:
        return constant_memory(crop_size=base.crop_size, pairs=o.pairs, voxel_budget=o.voxel_budget, order=o.order)
    return constant_memory((base.num_frames, base.batch_size), crop_size=base.crop_size,
                           voxel_budget=o.voxel_budget, lengths=o.lengths, order=o.order)


@register_schedule("multigrid", MultigridOptions, needs_epochs=True)
def _build_multigrid(base: ClipShape, o: MultigridOptions, *, epochs: int) -> ShapeSchedule:
    return multigrid(base.num_frames, base.crop_size, base.batch_size, epochs=epochs, long_cycle=o.long_cycle,
                     short_cycle=o.short_cycle, num_long_cycles=o.num_long_cycles)

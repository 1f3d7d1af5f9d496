"""Clip-shape schedules: which (T frames, S crop side, B clips) shape each epoch's batches use.

A *shape* is (T, S, B) per process; its *voxels* ``T * S * S * B`` are what a step's activation
memory grows with. With GroupNorm the batch size does not enter the normalisation, so memory can go
to longer clips or larger crops instead of more clips. Schedules are registered by name in
:data:`SCHEDULES` (``budget.schedule`` in the config):

- ``fixed``: one shape for the whole run.
- ``constant_memory``: (T, B) pairs such as (8, 32), (16, 16), (32, 8), (64, 4) at (at most) equal
  voxels; batches alternate between them.
- ``multigrid``: Wu et al., CVPR 2020: a long cycle over (T, S, B) stages spread over the epochs
  and a short cycle over S inside each epoch, at constant voxels.

The learning rate follows each step's actual batch through one rule, :func:`batch_lr_scale`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

from videogn.budget._checks import check_factor, check_int
from videogn.registry import Registry

__all__ = [
    "DEFAULT_LENGTHS",
    "DEFAULT_LONG_CYCLE",
    "DEFAULT_SHORT_CYCLE",
    "SCHEDULES",
    "SCHEDULE_KINDS",
    "SHAPE_ORDERS",
    "ClipShape",
    "ScheduleStage",
    "ShapeSchedule",
    "batch_lr_scale",
    "build_schedule",
    "constant_memory",
    "fixed",
    "multigrid",
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
        check_int("num_frames", self.num_frames, 1)
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


def fixed(num_frames: int, batch_size: int, crop_size: int) -> ShapeSchedule:
    """One shape, (T, B, S), for every batch of the run."""
    return ShapeSchedule.single(ClipShape(num_frames, crop_size, batch_size))


def constant_memory(
    base: Optional[tuple[int, int]] = None,
    *,
    crop_size: int,
    pairs: Optional[Sequence[tuple[int, int]]] = None,
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
    check_int("crop_size", crop_size, 1)
    area = crop_size * crop_size
    if (base is None) == (pairs is None):
        raise ValueError(f"give exactly one of base or pairs, got base={base!r}, pairs={pairs!r}")
    if voxel_budget is not None:
        check_int("voxel_budget", voxel_budget, 1)
    scaled = []
    if base is not None:
        if len(base) != 2:
            raise ValueError(f"base must be (num_frames, batch_size), got {base!r}")
        t0, b0 = check_int("base num_frames", base[0], 1), check_int("base batch_size", base[1], 1)
        voxel_budget = voxel_budget if voxel_budget is not None else t0 * area * b0
        if not lengths:
            raise ValueError(f"lengths must name at least one clip length, got {lengths!r}")
        for t in lengths:
            check_int("lengths item", t, 1)
            b = voxel_budget // (t * area)
            if b < 1:
                raise ValueError(
                    f"lengths item {t} does not fit voxel_budget={voxel_budget}: one clip of "
                    f"{t}x{crop_size}^2 is {t * area} voxels"
                )
            scaled.append((t, b))
    else:
        if not pairs:
            raise ValueError(f"pairs must hold at least one (num_frames, batch_size), got {pairs!r}")
        for p in pairs:
            if len(p) != 2:
                raise ValueError(f"pairs items must be (num_frames, batch_size), got {p!r}")
            check_int("pairs num_frames", p[0], 1)
            check_int("pairs batch_size", p[1], 1)
        biggest = max(t * area * b for t, b in pairs)
        voxel_budget = voxel_budget if voxel_budget is not None else biggest
        for t, b in pairs:
            new_b = (b * voxel_budget) // biggest  # exact integer arithmetic: floor(b * budget / biggest)
            if new_b < 1:
                raise ValueError(
                    f"pair ({t}, {b}) scaled to voxel_budget={voxel_budget} leaves batch_size 0 "
                    f"(one clip of {t}x{crop_size}^2 is {t * area} voxels)"
                )
            scaled.append((t, new_b))
    shapes = tuple(ClipShape(t, crop_size, b) for t, b in dict.fromkeys(scaled))
    return ShapeSchedule("constant_memory", (ScheduleStage(shapes),), voxel_budget=voxel_budget, order=order)


def _split_epochs(total: int, parts: int) -> list[int]:
    # the remainder goes to the later (finer, closer to the test shape) stages
    base, extra = divmod(total, parts)
    return [base + (1 if i >= parts - extra else 0) for i in range(parts)]


def multigrid(
    num_frames: int,
    batch_size: int,
    crop_size: int,
    *,
    epochs: int,
    long_cycle: Sequence[tuple[float, float]] = DEFAULT_LONG_CYCLE,
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
    t0 = check_int("num_frames", num_frames, 1)
    b0 = check_int("batch_size", batch_size, 1)
    s0 = check_int("crop_size", crop_size, 1)
    check_int("epochs", epochs, 1)
    check_int("num_long_cycles", num_long_cycles, 1)
    if not long_cycle:
        raise ValueError(f"long_cycle must hold at least one (temporal, spatial) factor pair, got {long_cycle!r}")
    voxel_budget = t0 * s0 * s0 * b0
    n_stages = len(long_cycle) * num_long_cycles
    if epochs < n_stages:
        raise ValueError(
            f"epochs={epochs} is fewer than the {n_stages} long-cycle stages "
            f"({len(long_cycle)} factors x num_long_cycles={num_long_cycles})"
        )

    def shape_for(t: int, s: int) -> ClipShape:
        b = voxel_budget // (t * s * s)
        if b < 1:  # only reachable when a factor rounds T or S above the base
            raise ValueError(f"shape {t}x{s}^2 needs {t * s * s} voxels per clip, over voxel_budget={voxel_budget}")
        return ClipShape(t, s, b)

    cycle_stages = []
    for pair in long_cycle:
        if len(pair) != 2:
            raise ValueError(f"long_cycle items must be (temporal factor, spatial factor), got {pair!r}")
        ft = check_factor("long_cycle temporal factor", pair[0])
        fs = check_factor("long_cycle spatial factor", pair[1])
        t, s = max(1, round(t0 * ft)), max(1, round(s0 * fs))
        # short-cycle crops are fractions of the base crop, as in the paper's code: a stage whose
        # own crop is already S/sqrt(2) repeats that shape, keeping the cycle's rhythm
        shapes = [shape_for(t, max(1, round(s0 * check_factor("short_cycle factor", f)))) for f in short_cycle]
        shapes.append(shape_for(t, s))
        cycle_stages.append(tuple(shapes))
    stage_shapes = cycle_stages * num_long_cycles
    stages = tuple(ScheduleStage(sh, e) for sh, e in zip(stage_shapes, _split_epochs(epochs, n_stages)))
    return ShapeSchedule("multigrid", stages, voxel_budget=voxel_budget, order="cycle")


# -- the registry: every builder takes the same keywords (a BudgetConfig's), uses what it needs ---------

ScheduleBuilder = Callable[..., ShapeSchedule]
SCHEDULES: Registry[ScheduleBuilder] = Registry("clip-shape schedule")


@SCHEDULES.register("fixed")
def _build_fixed(*, num_frames: int, batch_size: int, crop_size: int, **_: Any) -> ShapeSchedule:
    return fixed(num_frames, batch_size, crop_size)


@SCHEDULES.register("constant_memory")
def _build_constant_memory(
    *, num_frames: int, batch_size: int, crop_size: int, voxel_budget: Optional[int] = None,
    lengths: Sequence[int] = DEFAULT_LENGTHS, pairs: Optional[Sequence[tuple[int, int]]] = None,
    order: str = "cycle", **_: Any,
) -> ShapeSchedule:
    if pairs:
        return constant_memory(crop_size=crop_size, pairs=[tuple(p) for p in pairs], voxel_budget=voxel_budget, order=order)
    return constant_memory((num_frames, batch_size), crop_size=crop_size, voxel_budget=voxel_budget,
                           lengths=lengths, order=order)


@SCHEDULES.register("multigrid")
def _build_multigrid(
    *, num_frames: int, batch_size: int, crop_size: int, epochs: Optional[int] = None,
    long_cycle: Sequence[tuple[float, float]] = DEFAULT_LONG_CYCLE, short_cycle: Sequence[float] = DEFAULT_SHORT_CYCLE,
    num_long_cycles: int = 1, **_: Any,
) -> ShapeSchedule:
    if epochs is None:
        raise ValueError("schedule 'multigrid' needs epochs (the long cycle is spread over them), got epochs=None")
    return multigrid(num_frames, batch_size, crop_size, epochs=epochs, long_cycle=[tuple(p) for p in long_cycle],
                     short_cycle=list(short_cycle), num_long_cycles=num_long_cycles)


SCHEDULE_KINDS = SCHEDULES.names()
_OPTIONS = {"epochs", "voxel_budget", "lengths", "pairs", "order", "long_cycle", "short_cycle", "num_long_cycles"}


def build_schedule(kind: str, *, num_frames: int, batch_size: int, crop_size: int, **options: Any) -> ShapeSchedule:
    """The schedule registered as ``kind`` for the base shape (``num_frames``, ``crop_size``,
    ``batch_size``). ``options``: ``epochs`` (multigrid), ``voxel_budget``, ``lengths``, ``pairs``,
    ``order`` (constant_memory), ``long_cycle``, ``short_cycle``, ``num_long_cycles`` (multigrid);
    a builder ignores the ones it does not use."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(f"unknown schedule option(s) {unknown}; valid: {sorted(_OPTIONS)}")
    return SCHEDULES.get(kind)(num_frames=num_frames, batch_size=batch_size, crop_size=crop_size, **options)

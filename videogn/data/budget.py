"""Frames per clip against clips per batch: clip-shape schedules and a batch sampler that keeps
every batch at one shape.

A *shape* is (T frames, S crop side, B clips per batch per process). The memory of a training step
grows about linearly with the voxels of the batch, ``T * S * S * B``; the GN paper's point is that
with GroupNorm the batch size does not enter the normalisation, so that memory can go to longer
clips (or larger crops) without hurting accuracy. Budgets here are counted in those voxels per
process; :func:`videogn.engine.memory.plan_budget` turns bytes on a device into measured (T, B).

Schedules (a :class:`ShapeSchedule`: which shapes each epoch's batches use):

- :func:`fixed` — one shape for the whole run.
- :func:`constant_memory` — pairs such as (8, 32), (16, 16), (32, 8), (64, 4) at equal
  ``T * S^2 * B``; the sampler alternates between them batch by batch, or each pair is run on its
  own (``[fixed(s) for s in schedule.shapes]``).
- :func:`multigrid` — Wu et al., CVPR 2020: a long cycle over (T, S, B) stages spread over the
  epochs and an optional short cycle over S inside each epoch, at constant voxels, with the linear
  learning-rate scaling rule. GN needs no model rebuild for it (no sub-batch BN, no SyncBN).

:class:`ShapeBatchSampler` turns a schedule into ``[(index, T, S), ...]`` batches for a
``DataLoader(dataset, batch_sampler=...)`` over a dataset that accepts ``ds[(i, T, S)]``.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional, Sequence, Sized, Union

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "ClipShape",
    "ScheduleStage",
    "ShapeSchedule",
    "ShapeBatchSampler",
    "SCHEDULE_KINDS",
    "SHAPE_ORDERS",
    "DEFAULT_LENGTHS",
    "DEFAULT_LONG_CYCLE",
    "DEFAULT_SHORT_CYCLE",
    "build_schedule",
    "constant_memory",
    "fixed",
    "multigrid",
]

SCHEDULE_KINDS = ("fixed", "constant_memory", "multigrid")
SHAPE_ORDERS = ("cycle", "random")
DEFAULT_LENGTHS = (8, 16, 32, 64)
# (temporal factor, spatial factor) of each long-cycle stage; the last is the base shape (Wu et al.).
DEFAULT_LONG_CYCLE: tuple[tuple[float, float], ...] = ((0.25, 0.5**0.5), (0.5, 0.5**0.5), (0.5, 1.0), (1.0, 1.0))
# spatial factors of the short cycle; the stage's own crop closes each cycle (Wu et al.).
DEFAULT_SHORT_CYCLE: tuple[float, ...] = (0.5, 0.5**0.5)

BatchIndices = list[tuple[int, int, int]]


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_factor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 1):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ClipShape:
    """One batch shape: ``batch_size`` clips of ``num_frames`` frames cropped to ``crop_size``².

    ``lr_scale`` is the factor the trainer multiplies its scheduled learning rate by while training
    on this shape (the linear scaling rule: proportional to ``batch_size``; 1.0 for the reference).
    """

    num_frames: int
    crop_size: int
    batch_size: int
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_int("num_frames", self.num_frames, 1)
        _check_int("crop_size", self.crop_size, 1)
        _check_int("batch_size", self.batch_size, 1)
        if isinstance(self.lr_scale, bool) or not isinstance(self.lr_scale, (int, float)) or not (
            math.isfinite(self.lr_scale) and self.lr_scale > 0
        ):
            raise ValueError(f"lr_scale must be a finite number > 0, got {self.lr_scale!r}")

    @property
    def voxels(self) -> int:
        """``T * S * S * B``: what the activation memory of a step is proportional to."""
        return self.num_frames * self.crop_size * self.crop_size * self.batch_size

    @property
    def frames(self) -> int:
        """``T * B``: frames in the batch."""
        return self.num_frames * self.batch_size

    def __str__(self) -> str:
        return f"{self.num_frames}x{self.crop_size}^2 x {self.batch_size} (lr x{self.lr_scale:g})"


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
            _check_int("stage epochs", self.epochs, 1)


@dataclass(frozen=True)
class ShapeSchedule:
    """Which clip shapes each epoch's batches use.

    Attributes:
        kind: "fixed", "constant_memory" or "multigrid" (informational).
        stages: consecutive epoch ranges; after the last stage's epochs the last stage continues.
        budget: voxels per process (``T * S^2 * B``) that every shape stays within.
        order: how a stage's shapes alternate over its batches: "cycle" (round robin from the
            first, every epoch) or "random" (drawn per batch from the sampler's seed and epoch).
    """

    kind: str
    stages: tuple[ScheduleStage, ...]
    budget: int
    order: str = "cycle"

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a schedule needs at least one stage, got stages=()")
        _check_int("budget", self.budget, 1)
        if self.order not in SHAPE_ORDERS:
            raise ValueError(f"order must be one of {SHAPE_ORDERS}, got {self.order!r}")
        for i, stage in enumerate(self.stages[:-1]):
            if stage.epochs is None:
                raise ValueError(f"stages[{i}].epochs must be set (only the last stage may be open-ended)")
        for shape in self.shapes:
            if shape.voxels > self.budget:
                raise ValueError(
                    f"shape {shape} needs {shape.voxels} voxels (T*S^2*B), over budget={self.budget}"
                )

    @property
    def shapes(self) -> tuple[ClipShape, ...]:
        """Every distinct shape, in order of first use."""
        return tuple(dict.fromkeys(s for stage in self.stages for s in stage.shapes))

    def stage_index(self, epoch: int) -> int:
        """The stage that ``epoch`` (0-based) trains in."""
        _check_int("epoch", epoch, 0)
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
        """A JSON-able description (for logs and run directories)."""
        return {
            "kind": self.kind,
            "budget": self.budget,
            "order": self.order,
            "stages": [{"epochs": st.epochs, "shapes": [asdict(s) for s in st.shapes]} for st in self.stages],
        }

    def describe(self) -> str:
        """A markdown table, one row per (stage, shape)."""
        lines = ["| stage | epochs | T | S | B | T*B | T*S^2*B | lr scale |", "|---|---|---|---|---|---|---|---|"]
        for i, st in enumerate(self.stages):
            for s in st.shapes:
                epochs = "rest" if st.epochs is None else str(st.epochs)
                lines.append(
                    f"| {i} | {epochs} | {s.num_frames} | {s.crop_size} | {s.batch_size} | {s.frames} "
                    f"| {s.voxels} | {s.lr_scale:.3g} |"
                )
        return "\n".join(lines)


def fixed(num_frames: int, batch_size: int, crop_size: int) -> ShapeSchedule:
    """One shape, (T, B, S), for every batch of the run."""
    shape = ClipShape(num_frames, crop_size, batch_size)
    return ShapeSchedule("fixed", (ScheduleStage((shape,)),), budget=shape.voxels)


def constant_memory(
    base: Optional[tuple[int, int]] = None,
    *,
    crop_size: int,
    pairs: Optional[Sequence[tuple[int, int]]] = None,
    budget: Optional[int] = None,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    order: str = "cycle",
) -> ShapeSchedule:
    """(T, B) pairs at (at most) equal ``T * S^2 * B``, e.g. (8, 32), (16, 16), (32, 8), (64, 4).

    Give either ``base=(T0, B0)`` — then ``budget`` defaults to ``T0 * S^2 * B0`` and each T in
    ``lengths`` gets ``B = floor(budget / (T * S^2))`` — or explicit ``pairs`` — then their batch
    sizes are scaled by ``budget / max(T * S^2 * B)`` (rounded down; unchanged when ``budget`` is
    not given). ``lr_scale`` is each B over the reference B (``B0``, or the first pair's B).

    Args:
        base: the reference (T0, B0).
        crop_size: S, the crop side of every shape.
        pairs: explicit (T, B) pairs instead of ``base`` + ``lengths``.
        budget: voxels per process.
        lengths: clip lengths used with ``base``.
        order: "cycle" or "random", see :class:`ShapeSchedule`.
    """
    _check_int("crop_size", crop_size, 1)
    area = crop_size * crop_size
    if (base is None) == (pairs is None):
        raise ValueError(f"give exactly one of base or pairs, got base={base!r}, pairs={pairs!r}")
    if budget is not None:
        _check_int("budget", budget, 1)
    if base is not None:
        if len(base) != 2:
            raise ValueError(f"base must be (num_frames, batch_size), got {base!r}")
        t0, b0 = _check_int("base num_frames", base[0], 1), _check_int("base batch_size", base[1], 1)
        budget = budget if budget is not None else t0 * area * b0
        if not lengths:
            raise ValueError(f"lengths must name at least one clip length, got {lengths!r}")
        ref_b = b0
        scaled = []
        for t in lengths:
            _check_int("lengths item", t, 1)
            b = budget // (t * area)
            if b < 1:
                raise ValueError(
                    f"lengths item {t} does not fit budget={budget}: one clip of {t}x{crop_size}^2 "
                    f"is {t * area} voxels"
                )
            scaled.append((t, b))
    else:
        if not pairs:
            raise ValueError(f"pairs must hold at least one (num_frames, batch_size), got {pairs!r}")
        for p in pairs:
            if len(p) != 2:
                raise ValueError(f"pairs items must be (num_frames, batch_size), got {p!r}")
            _check_int("pairs num_frames", p[0], 1)
            _check_int("pairs batch_size", p[1], 1)
        biggest = max(t * area * b for t, b in pairs)
        budget = budget if budget is not None else biggest
        scaled = []
        for t, b in pairs:
            # exact integer arithmetic: floor(b * budget / biggest)
            new_b = (b * budget) // biggest
            if new_b < 1:
                raise ValueError(
                    f"pair ({t}, {b}) scaled to budget={budget} leaves batch_size 0 "
                    f"(one clip of {t}x{crop_size}^2 is {t * area} voxels)"
                )
            scaled.append((t, new_b))
        ref_b = scaled[0][1]
    shapes = tuple(ClipShape(t, crop_size, b, lr_scale=b / ref_b) for t, b in dict.fromkeys(scaled))
    return ShapeSchedule("constant_memory", (ScheduleStage(shapes),), budget=budget, order=order)


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
    scale_lr_short_cycle: bool = False,
) -> ShapeSchedule:
    """Multigrid training (Wu, Girshick, He, Feichtenhofer, Krähenbühl; CVPR 2020) at constant
    voxels ``T * S^2 * B`` of the base shape (T, S, B).

    The long cycle visits ``long_cycle`` stages (temporal factor, spatial factor) in order,
    ``num_long_cycles`` times over ``epochs``; each stage's T and S are the base ones times the
    factors (rounded, at least 1) and its B is ``floor(budget / (T * S^2))`` (rounded down, so no
    shape exceeds the base's voxels), with ``lr_scale = B / base B`` (linear scaling rule, as the
    paper does for the long cycle). The short cycle, if not empty, alternates batch by batch over
    the stage's T with crops ``round(base S * f)`` for each ``short_cycle`` factor (B grown to
    match) and then the stage's own shape; those batches keep the stage's ``lr_scale`` unless
    ``scale_lr_short_cycle``.

    With GroupNorm nothing in the model depends on B, so no sub-batch BN or SyncBN juggling and no
    rebuild between shapes is needed; the model must be fully convolutional in T and S (global
    pooling before the classifier), which the I3D models are.
    """
    t0 = _check_int("num_frames", num_frames, 1)
    b0 = _check_int("batch_size", batch_size, 1)
    s0 = _check_int("crop_size", crop_size, 1)
    _check_int("epochs", epochs, 1)
    _check_int("num_long_cycles", num_long_cycles, 1)
    if not long_cycle:
        raise ValueError(f"long_cycle must hold at least one (temporal, spatial) factor pair, got {long_cycle!r}")
    budget = t0 * s0 * s0 * b0
    n_stages = len(long_cycle) * num_long_cycles
    if epochs < n_stages:
        raise ValueError(
            f"epochs={epochs} is fewer than the {n_stages} long-cycle stages "
            f"({len(long_cycle)} factors x num_long_cycles={num_long_cycles})"
        )

    def shape_for(t: int, s: int, lr_ref_b: Optional[int]) -> ClipShape:
        b = budget // (t * s * s)
        if b < 1:  # only reachable when a factor rounds T or S above the base
            raise ValueError(f"shape {t}x{s}^2 needs {t * s * s} voxels per clip, over budget={budget}")
        return ClipShape(t, s, b, lr_scale=(b if lr_ref_b is None else lr_ref_b) / b0)

    cycle_stages = []
    for pair in long_cycle:
        if len(pair) != 2:
            raise ValueError(f"long_cycle items must be (temporal factor, spatial factor), got {pair!r}")
        ft = _check_factor("long_cycle temporal factor", pair[0])
        fs = _check_factor("long_cycle spatial factor", pair[1])
        t, s = max(1, round(t0 * ft)), max(1, round(s0 * fs))
        main = shape_for(t, s, None)
        shapes = []
        for f in short_cycle:
            # short-cycle crops are fractions of the base crop, as in the paper's code: a stage
            # whose own crop is already S/sqrt(2) repeats that shape, keeping the cycle's rhythm
            s_short = max(1, round(s0 * _check_factor("short_cycle factor", f)))
            shapes.append(shape_for(t, s_short, None if scale_lr_short_cycle else main.batch_size))
        shapes.append(main)
        cycle_stages.append(tuple(shapes))
    stage_shapes = cycle_stages * num_long_cycles
    stages = tuple(ScheduleStage(sh, e) for sh, e in zip(stage_shapes, _split_epochs(epochs, n_stages)))
    return ShapeSchedule("multigrid", stages, budget=budget, order="cycle")


def build_schedule(
    kind: str,
    *,
    num_frames: int,
    batch_size: int,
    crop_size: int,
    epochs: Optional[int] = None,
    budget: Optional[int] = None,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    pairs: Optional[Sequence[tuple[int, int]]] = None,
    order: str = "cycle",
    long_cycle: Sequence[tuple[float, float]] = DEFAULT_LONG_CYCLE,
    short_cycle: Sequence[float] = DEFAULT_SHORT_CYCLE,
    num_long_cycles: int = 1,
    scale_lr_short_cycle: bool = False,
) -> ShapeSchedule:
    """One entry point for configs: ``kind`` picks :func:`fixed`, :func:`constant_memory` (with
    ``base=(num_frames, batch_size)`` unless ``pairs`` is given) or :func:`multigrid` (needs
    ``epochs``); the other arguments are passed to the one picked."""
    if kind == "fixed":
        return fixed(num_frames, batch_size, crop_size)
    if kind == "constant_memory":
        if pairs:
            return constant_memory(crop_size=crop_size, pairs=[tuple(p) for p in pairs], budget=budget, order=order)
        return constant_memory((num_frames, batch_size), crop_size=crop_size, budget=budget, lengths=lengths, order=order)
    if kind == "multigrid":
        if epochs is None:
            raise ValueError("kind='multigrid' needs epochs (the long cycle is spread over them), got epochs=None")
        return multigrid(
            num_frames, batch_size, crop_size, epochs=epochs, long_cycle=[tuple(p) for p in long_cycle],
            short_cycle=list(short_cycle), num_long_cycles=num_long_cycles,
            scale_lr_short_cycle=scale_lr_short_cycle,
        )
    raise ValueError(f"kind must be one of {SCHEDULE_KINDS}, got {kind!r}")


class ShapeBatchSampler(Sampler[BatchIndices]):
    """Batches of one clip shape each, ``[(index, T, S), ...]``, identical in shape on every rank.

    Each epoch the dataset indices are shuffled with ``seed + epoch`` (the same permutation on
    every rank, as ``DistributedSampler``); step ``k`` takes the next ``B_k * num_replicas``
    indices of it, and rank ``r`` gets the ``r``-th block of ``B_k``. The shape of step ``k`` comes
    from the schedule only (never from the rank), so every rank runs the same (T, S, B) at the same
    step, on disjoint indices, and ``len()`` is the same everywhere.

    The end of an epoch: with ``drop_last=False`` (default) a last step that the remaining indices
    cannot fill is padded with indices from the start of the permutation (as ``DistributedSampler``
    pads), so every index is used at least once per epoch and a few twice; with ``drop_last=True``
    it is dropped, so no index repeats and at most one step's worth is left out.

    Resuming: ``state_dict(consumed=k)`` records the epoch and the ``k`` batches already trained on
    in it; after ``load_state_dict`` (and ``set_epoch`` of the same epoch) the next iteration yields
    exactly the batches ``k, k+1, ...`` of that epoch. The state is the same on every rank.

    Args:
        data_source: the dataset (anything with ``len``) or its length.
        schedule: a :class:`ShapeSchedule` or a single :class:`ClipShape`.
        budget: voxels per process (``T * S^2 * B``) no shape may exceed; default the schedule's.
        num_replicas: processes; default the ``torch.distributed`` world size (1 if not initialised).
        rank: this process; default the ``torch.distributed`` rank (0 if not initialised).
        shuffle: shuffle the indices each epoch.
        seed: base seed of the shuffle and of the "random" shape order; must match on all ranks.
        drop_last: drop rather than pad a last step that cannot be filled.
    """

    def __init__(
        self,
        data_source: Union[Sized, int],
        schedule: Union[ShapeSchedule, ClipShape],
        *,
        budget: Optional[int] = None,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        size = data_source if isinstance(data_source, int) and not isinstance(data_source, bool) else None
        if size is None:
            if not hasattr(data_source, "__len__"):
                raise TypeError(f"data_source must be a sized dataset or an int, got {type(data_source).__name__}")
            size = len(data_source)  # type: ignore[arg-type]
        self.dataset_size = _check_int("dataset length", size, 1)
        if isinstance(schedule, ClipShape):
            schedule = ShapeSchedule("fixed", (ScheduleStage((schedule,)),), budget=schedule.voxels)
        if not isinstance(schedule, ShapeSchedule):
            raise TypeError(f"schedule must be a ShapeSchedule or a ClipShape, got {type(schedule).__name__}")
        self.schedule = schedule
        self.budget = schedule.budget if budget is None else _check_int("budget", budget, 1)
        for shape in schedule.shapes:
            if shape.voxels > self.budget:
                raise ValueError(
                    f"budget={self.budget} voxels (T*S^2*B per process) is smaller than shape {shape}, "
                    f"which needs {shape.voxels}"
                )
        dist_on = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist_on else 1
        if rank is None:
            rank = dist.get_rank() if dist_on else 0
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        if isinstance(rank, bool) or not isinstance(rank, int) or not (0 <= rank < self.num_replicas):
            raise ValueError(f"rank must be an integer in [0, {self.num_replicas}), got {rank!r}")
        self.rank = rank
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._start = 0  # batches of self.epoch to skip on the next iteration (resume)
        self._yielded = 0  # batches of self.epoch handed out so far (including skipped ones)
        self._plans: dict[int, list[ClipShape]] = {}

    # -- the plan: shapes per step, the same on every rank --------------------------------------

    def batch_shapes(self, epoch: Optional[int] = None) -> list[ClipShape]:
        """The shape of every step of ``epoch`` (default: the current one); same on every rank.

        ``lr_scale`` is the shape's B over the reference B. videogn's trainer scales its rate by each
        step's actual global batch over ``optim.reference_batch_size``, which equals ``lr_scale``
        except for multigrid short-cycle batches (they get their own batch size's rate).
        """
        epoch = self.epoch if epoch is None else _check_int("epoch", epoch, 0)
        if epoch not in self._plans:
            self._plans = {epoch: self._make_plan(epoch)}  # keep one: epochs are visited in order
        return list(self._plans[epoch])

    def _make_plan(self, epoch: int) -> list[ClipShape]:
        shapes = self.schedule.shapes_at(epoch)
        rng = random.Random(f"{self.seed}:{epoch}:shapes") if self.schedule.order == "random" else None
        plan: list[ClipShape] = []
        left = self.dataset_size
        while left > 0:
            shape = shapes[len(plan) % len(shapes)] if rng is None else rng.choice(shapes)
            need = shape.batch_size * self.num_replicas
            if need > left and self.drop_last:
                break
            plan.append(shape)
            left -= need
        if not plan:
            raise ValueError(
                f"an epoch of the dataset (length {self.dataset_size}) cannot fill one step of shape "
                f"{shape} on num_replicas={self.num_replicas} with drop_last=True"
            )
        return plan

    def num_batches(self, epoch: Optional[int] = None) -> int:
        """Steps (batches per process) in ``epoch``, resumed or not."""
        return len(self.batch_shapes(epoch))

    def total_batches(self, num_epochs: int, start_epoch: int = 0) -> int:
        """Steps in epochs ``start_epoch .. start_epoch + num_epochs - 1`` (for step-based LR schedules)."""
        _check_int("num_epochs", num_epochs, 0)
        _check_int("start_epoch", start_epoch, 0)
        return sum(len(self._make_plan(e)) for e in range(start_epoch, start_epoch + num_epochs))

    def __len__(self) -> int:
        """Batches of the current epoch (the full epoch, also after a mid-epoch resume)."""
        return self.num_batches()

    # -- iteration --------------------------------------------------------------------------------

    def _permutation(self, epoch: int, needed: int) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(self.dataset_size, generator=g)
        else:
            order = torch.arange(self.dataset_size)
        if needed > self.dataset_size:  # pad from the start, repeating if the dataset is tiny
            order = order.repeat(math.ceil(needed / self.dataset_size))
        return order[:needed]

    def __iter__(self) -> Iterator[BatchIndices]:
        epoch, start = self.epoch, self._start
        plan = self.batch_shapes(epoch)
        world = self.num_replicas
        order = self._permutation(epoch, sum(s.batch_size for s in plan) * world).tolist()
        self._start = 0  # a resume position is used once
        self._yielded = start
        offset = 0
        for step, shape in enumerate(plan):
            b = shape.batch_size
            if step >= start:
                block = order[offset + self.rank * b: offset + (self.rank + 1) * b]
                self._yielded = step + 1
                yield [(i, shape.num_frames, shape.crop_size) for i in block]
            offset += b * world

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate (reshuffles). A resume position loaded by
        :meth:`load_state_dict` survives only if ``epoch`` is the epoch it was saved in."""
        _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self._start = 0
            self._yielded = 0
        self.epoch = epoch

    # -- resume -------------------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "dataset_size": self.dataset_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "schedule": self.schedule.to_dict(),
        }

    def state_dict(self, consumed: Optional[int] = None) -> dict[str, Any]:
        """The position to resume from: the epoch and ``consumed`` batches of it already trained on.

        Args:
            consumed: batches (micro-batches, with gradient accumulation) the trainer has finished in
                the current epoch. Default: the batches this sampler has yielded in the current
                iteration, exact only when nothing is prefetched — a ``DataLoader`` with workers
                reads ``prefetch_factor * num_workers`` batches ahead, so a trainer should pass
                its own count.
        """
        consumed = max(self._yielded, self._start) if consumed is None else consumed
        _check_int("consumed", consumed, 0)
        if consumed > len(self):
            raise ValueError(f"consumed must be at most the epoch's {len(self)} batches, got {consumed}")
        return {"epoch": self.epoch, "consumed": consumed, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s position; refuses a state of a different setup (the
        batches would differ), naming the field."""
        for key, value in self._fingerprint().items():
            if key not in state:
                raise ValueError(f"sampler state lacks {key!r}; keys: {sorted(state)}")
            if state[key] != value:
                raise ValueError(f"sampler state has {key}={state[key]!r}, this sampler has {key}={value!r}")
        epoch = _check_int("state epoch", state.get("epoch"), 0)
        consumed = _check_int("state consumed", state.get("consumed"), 0)
        self.epoch = epoch
        if consumed > len(self):
            raise ValueError(f"state consumed={consumed} exceeds the {len(self)} batches of epoch {epoch}")
        self._start = consumed
        self._yielded = consumed

"""The one batch sampler of training: every batch holds one clip shape from a :class:`ShapeSchedule`,
the same shape on every rank at every step (a fixed shape is the ``fixed`` schedule).

Iteration is a pure function of (seed, epoch, rank), so resuming needs only the epoch and the batches
of it already trained on: ``set_epoch(epoch, skip=k)`` is the one resume path. ``state_dict()``
records what else fixes the batches (schedule, dataset size, world size, seed); ``check_resumable``
refuses a checkpoint whose batches would not continue this run.
"""

from __future__ import annotations

import math
import random
from typing import Any, Iterator, Mapping, Optional, Protocol, Sized, Union

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from videogn.budget.schedules import ClipShape, ShapeSchedule, build_schedule
from videogn.checks import check_int

__all__ = ["BatchIndices", "BudgetSpec", "ShapeBatchSampler", "build_batch_sampler"]

BatchIndices = list[tuple[int, int, int]]


class ShapeBatchSampler(Sampler[BatchIndices]):
    """Batches of one clip shape each, ``[(index, T, S), ...]``, identical in shape on every rank.

    Each epoch the dataset indices are shuffled with ``seed + epoch`` (the same permutation on
    every rank, as ``DistributedSampler``); step ``k`` takes the next ``B_k * world_size`` indices
    of it, and rank ``r`` gets the ``r``-th block of ``B_k``. The shape of step ``k`` comes from the
    schedule only (never from the rank), so every rank runs the same (T, S, B) at the same step, on
    disjoint indices, and the number of batches is the same everywhere.

    The end of an epoch: with ``drop_last=False`` (default) a last step that the remaining indices
    cannot fill is padded with indices from the start of the permutation (as ``DistributedSampler``
    pads), so every index is used at least once per epoch and a few twice; with ``drop_last=True``
    it is dropped, so no index repeats and at most one step's worth is left out.

    Several clips per decode (``clips_per_decode`` K > 1, the dataset's ``data.clips_per_decode``):
    a shape's ``batch_size`` B still counts clips -- what the model sees, what the voxel budget and
    the learning-rate rule (:func:`~videogn.budget.batch_lr_scale`) count -- but a step takes B / K
    videos per rank, each of which the dataset expands into K clips; B must be a multiple of K for
    every shape. An epoch is still one pass over the videos, so it has about K times the steps of
    K = 1 at the same B (K clips of every video, K x as many clips in all): to train for as many
    steps as before, divide ``trainer.epochs`` by K. Shuffling, ranks, padding and ``skip`` work
    on videos exactly as for K = 1.

    Args:
        data_source: the dataset (anything with ``len``; for a ``DataLoader`` it must accept
            ``dataset[(index, T, S)]``) or its length.
        schedule: a :class:`ShapeSchedule` or a single :class:`ClipShape`.
        voxel_budget: voxels per process (``T * S^2 * B``) no shape may exceed; default the schedule's.
        world_size: processes; default the ``torch.distributed`` world size (1 if not initialised).
        rank: this process; default the ``torch.distributed`` rank (0 if not initialised).
        shuffle: shuffle the indices each epoch.
        seed: base seed of the shuffle and of the "random" shape order; must match on all ranks.
        drop_last: drop rather than pad a last step that cannot be filled.
        clips_per_decode: training clips the dataset makes of each index (K); default the
            dataset's ``clips_per_decode`` attribute, else 1.
    """

    def __init__(
        self,
        data_source: Union[Sized, int],
        schedule: Union[ShapeSchedule, ClipShape],
        *,
        voxel_budget: Optional[int] = None,
        world_size: Optional[int] = None,
        rank: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        clips_per_decode: Optional[int] = None,
    ) -> None:
        size = data_source if isinstance(data_source, int) and not isinstance(data_source, bool) else None
        if size is None:
            if not hasattr(data_source, "__len__"):
                raise TypeError(f"data_source must be a sized dataset or an int, got {type(data_source).__name__}")
            size = len(data_source)  # type: ignore[arg-type]
        self.dataset_size = check_int("dataset length", size, 1)
        if isinstance(schedule, ClipShape):
            schedule = ShapeSchedule.single(schedule)
        if not isinstance(schedule, ShapeSchedule):
            raise TypeError(f"schedule must be a ShapeSchedule or a ClipShape, got {type(schedule).__name__}")
        self.schedule = schedule
        self.voxel_budget = schedule.voxel_budget if voxel_budget is None else check_int("voxel_budget", voxel_budget, 1)
        for shape in schedule.shapes:
            if shape.voxels > self.voxel_budget:
                raise ValueError(
                    f"voxel_budget={self.voxel_budget} (T*S^2*B per process) is smaller than shape {shape}, "
                    f"which needs {shape.voxels}"
                )
        dist_on = dist.is_available() and dist.is_initialized()
        if world_size is None:
            world_size = dist.get_world_size() if dist_on else 1
        if rank is None:
            rank = dist.get_rank() if dist_on else 0
        self.world_size = check_int("world_size", world_size, 1)
        if isinstance(rank, bool) or not isinstance(rank, int) or not (0 <= rank < self.world_size):
            raise ValueError(f"rank must be an integer in [0, {self.world_size}), got {rank!r}")
        self.rank = rank
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        # one home: the dataset says how many clips it makes of an index; the sampler follows it
        own = getattr(data_source, "clips_per_decode", None)
        if clips_per_decode is None:
            clips_per_decode = 1 if own is None else own
        k = check_int("clips_per_decode", clips_per_decode, 1)
        if own is not None and own != k:
            raise ValueError(f"clips_per_decode={k} differs from the dataset's clips_per_decode={own}")
        for shape in schedule.shapes:
            if shape.batch_size % k:
                raise ValueError(
                    f"batch_size={shape.batch_size} of shape {shape} must be a multiple of clips_per_decode={k} "
                    f"(budget.batch_size counts clips, data.clips_per_decode of them from each video)"
                )
        self.clips_per_decode = k
        self.epoch = 0
        self.skip = 0  # batches of self.epoch not yielded (already trained on before a resume)
        self._plans: dict[int, list[ClipShape]] = {}

    # -- the plan: shapes per step, the same on every rank --------------------------------------

    def batch_shapes(self, epoch: Optional[int] = None) -> list[ClipShape]:
        """The shape of every step of ``epoch`` (default: the current one), skipped ones included;
        the same on every rank."""
        epoch = self.epoch if epoch is None else check_int("epoch", epoch, 0)
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
            need = shape.batch_size // self.clips_per_decode * self.world_size  # videos
            if need > left and self.drop_last:
                break
            plan.append(shape)
            left -= need
        if not plan:
            raise ValueError(
                f"an epoch of the dataset (length {self.dataset_size}) cannot fill one step of shape "
                f"{shape} on world_size={self.world_size} with drop_last=True"
            )
        return plan

    def num_batches(self, epoch: Optional[int] = None) -> int:
        """Steps (batches per process) in the whole of ``epoch`` (default: the current one)."""
        return len(self.batch_shapes(epoch))

    def total_batches(self, num_epochs: int, start_epoch: int = 0) -> int:
        """Steps in epochs ``start_epoch .. start_epoch + num_epochs - 1`` (for step-based LR schedules)."""
        check_int("num_epochs", num_epochs, 0)
        check_int("start_epoch", start_epoch, 0)
        return sum(len(self._make_plan(e)) for e in range(start_epoch, start_epoch + num_epochs))

    def __len__(self) -> int:
        """Batches the next iteration yields: the current epoch's, less the skipped ones."""
        return max(0, self.num_batches() - self.skip)

    # -- iteration --------------------------------------------------------------------------------

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch ``epoch`` (reshuffled), without its first ``skip`` batches (resuming
        mid-epoch: the batches already trained on). Both hold until the next call."""
        check_int("epoch", epoch, 0)
        check_int("skip", skip, 0)
        if skip > self.num_batches(epoch):
            raise ValueError(f"skip must be at most the {self.num_batches(epoch)} batches of epoch {epoch}, got {skip}")
        self.epoch, self.skip = epoch, skip

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
        plan = self.batch_shapes(self.epoch)
        world = self.world_size
        k = self.clips_per_decode
        order = self._permutation(self.epoch, sum(s.batch_size // k for s in plan) * world).tolist()
        offset = 0
        for step, shape in enumerate(plan):
            b = shape.batch_size // k  # videos: the dataset makes k clips of each
            if step >= self.skip:  # skipped batches cost no data loading: only their offset is used
                block = order[offset + self.rank * b: offset + (self.rank + 1) * b]
                yield [(i, shape.num_frames, shape.crop_size) for i in block]
            offset += b * world

    # -- resume -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What fixes the batches besides (epoch, skip): the same on every rank, JSON-able, for
        checkpoints (the position itself is the trainer's: epoch and batches consumed)."""
        return {
            "schedule": self.schedule.to_dict(),
            "dataset_size": self.dataset_size,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "clips_per_decode": self.clips_per_decode,
        }

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Raise ValueError naming every field of ``state`` (a saved :meth:`state_dict`) that differs
        from this sampler's (or is missing): resuming would not continue the saved run's batches."""
        mine = self.state_dict()
        state = {"clips_per_decode": 1, **state}  # saved before the option existed: one clip per video
        missing = [k for k in mine if k not in state]
        if missing:
            raise ValueError(f"sampler state lacks {missing}; keys: {sorted(state)}")
        diff = [f"{k}={state[k]!r}, this sampler has {k}={mine[k]!r}" for k in mine if state[k] != mine[k]]
        if diff:
            raise ValueError("sampler state has " + "; ".join(diff))


class BudgetSpec(Protocol):
    """What :func:`build_batch_sampler` reads of a ``budget`` config (``videogn.config.BudgetConfig``
    is one): the base shape's T and B, the schedule's name and its options."""

    num_frames: int
    batch_size: int
    schedule: str
    drop_last: bool

    def schedule_options(self) -> Mapping[str, Any]:
        """The options of ``schedule`` (only those it declares), by name."""
        ...


def build_batch_sampler(
    dataset: Any, budget: BudgetSpec, *, rank: int, world_size: int, seed: int, epochs: Optional[int]
) -> ShapeBatchSampler:
    """The training sampler of a ``budget`` config over ``dataset`` (which has an integer
    ``crop_size``, the base S, and accepts ``dataset[(index, T, S)]``).

    Args:
        budget: the base shape, the schedule and its options (:class:`BudgetSpec`).
        epochs: the run's epochs (a schedule registered with ``needs_epochs``, e.g. ``multigrid``,
            spreads its stages over them); None when the run is bounded by steps.
    """
    crop = getattr(dataset, "crop_size", None)
    if isinstance(crop, bool) or not isinstance(crop, int):
        raise ValueError(f"the training dataset needs an integer crop_size, got {crop!r}")
    base = ClipShape(budget.num_frames, crop, budget.batch_size)
    schedule = build_schedule(budget.schedule, base, epochs=epochs, **budget.schedule_options())
    return ShapeBatchSampler(dataset, schedule, world_size=world_size, rank=rank, seed=seed, drop_last=budget.drop_last)

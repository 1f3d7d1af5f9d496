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
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sized, Union

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from videogn.budget._checks import check_int
from videogn.budget.schedules import ClipShape, ShapeSchedule, build_schedule

if TYPE_CHECKING:
    from videogn.config.schema import BudgetConfig

__all__ = ["BatchIndices", "ShapeBatchSampler", "build_batch_sampler"]

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
            need = shape.batch_size * self.world_size
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
        order = self._permutation(self.epoch, sum(s.batch_size for s in plan) * world).tolist()
        offset = 0
        for step, shape in enumerate(plan):
            b = shape.batch_size
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
        }

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Raise ValueError naming every field of ``state`` (a saved :meth:`state_dict`) that differs
        from this sampler's (or is missing): resuming would not continue the saved run's batches."""
        mine = self.state_dict()
        missing = [k for k in mine if k not in state]
        if missing:
            raise ValueError(f"sampler state lacks {missing}; keys: {sorted(state)}")
        diff = [f"{k}={state[k]!r}, this sampler has {k}={mine[k]!r}" for k in mine if state[k] != mine[k]]
        if diff:
            raise ValueError("sampler state has " + "; ".join(diff))


def build_batch_sampler(
    dataset: Any, budget_cfg: "BudgetConfig", *, rank: int, world_size: int, seed: int, epochs: Optional[int]
) -> ShapeBatchSampler:
    """The training sampler of a ``budget`` config over ``dataset`` (which has an integer
    ``crop_size``, the base S, and accepts ``dataset[(index, T, S)]``).

    Args:
        epochs: the run's epochs (``multigrid`` spreads its long cycle over them); None when the run
            is bounded by steps.
    """
    crop = getattr(dataset, "crop_size", None)
    if isinstance(crop, bool) or not isinstance(crop, int):
        raise ValueError(f"the training dataset needs an integer crop_size, got {crop!r}")
    if budget_cfg.schedule == "multigrid" and epochs is None:
        raise ValueError(
            "budget.schedule='multigrid' spreads its long cycle over trainer.epochs, which must be set "
            "(got trainer.epochs=None with trainer.max_steps)"
        )
    schedule = build_schedule(
        budget_cfg.schedule,
        num_frames=budget_cfg.num_frames,
        batch_size=budget_cfg.batch_size,
        crop_size=crop,
        epochs=epochs,
        voxel_budget=budget_cfg.voxel_budget,
        lengths=[int(t) for t in budget_cfg.lengths],
        pairs=[(int(t), int(b)) for t, b in budget_cfg.pairs] if budget_cfg.pairs else None,
        order=budget_cfg.order,
        long_cycle=[(float(a), float(b)) for a, b in budget_cfg.long_cycle],
        short_cycle=[float(f) for f in budget_cfg.short_cycle],
        num_long_cycles=budget_cfg.num_long_cycles,
    )
    return ShapeBatchSampler(
        dataset, schedule, world_size=world_size, rank=rank, seed=seed, drop_last=budget_cfg.drop_last
    )

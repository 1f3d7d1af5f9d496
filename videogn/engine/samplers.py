"""Batch samplers of the training loop and how a resumed run skips what was already seen.

The trainer asks the sampler named by ``budget.sampler`` for batches. A batch sampler is any
object with

* ``__iter__`` yielding lists of dataset keys — an index ``i``, or ``(i, num_frames)`` or
  ``(i, num_frames, crop_size)`` to choose the clip shape per batch (every key of a batch must give
  the same shape, and under DDP every rank the same shape at the same step);
* ``__len__``: batches per epoch on this rank (equal on all ranks);
* ``set_epoch(epoch)``: reshuffle; iteration must be a pure function of (seed, epoch, rank).

Because iteration is deterministic, resuming needs only (epoch, batches consumed):
:class:`SkipBatches` drops the consumed prefix without loading any data. New samplers (e.g.
variable clip lengths) register with :func:`register_batch_sampler` and are chosen by name.

Registered: ``fixed`` (one shape, a :class:`FixedBatchSampler`) and ``shape``
(:class:`videogn.data.budget.ShapeBatchSampler` over the schedule ``budget.schedule``: fixed,
constant memory or multigrid; every batch one clip shape, the same on every rank at each step).
A sampler may also offer ``num_batches(epoch)`` when its epochs differ in length (multigrid); the
trainer then sizes each epoch and the learning-rate schedule from it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, Union

from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "BatchSampler",
    "FixedBatchSampler",
    "SkipBatches",
    "batch_sampler_names",
    "build_batch_sampler",
    "epoch_batches",
    "register_batch_sampler",
]

Key = Union[int, tuple[int, int], tuple[int, int, int]]


class BatchSampler(Protocol):
    def __iter__(self) -> Iterator[list[Key]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class FixedBatchSampler:
    """Fixed-size batches of indices for this rank; a :class:`DistributedSampler` underneath
    shards and reshuffles per epoch (``seed + epoch``), incomplete last batches are dropped.

    Args:
        dataset: anything with ``__len__``.
        batch_size: clips per batch on this rank.
        rank / world_size: this process and the number of processes.
        seed: shuffling seed, the same on every rank.
        shuffle: reshuffle each epoch (False: dataset order).
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        # drop_last=False pads by repeating indices so every rank gets the same count
        self.sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        if len(self) == 0:
            raise ValueError(
                f"batch_size={batch_size} x {world_size} process(es) is larger than the dataset "
                f"({len(dataset)} clips): no full batch"  # type: ignore[arg-type]
            )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[Key]]:
        batch: list[Key] = []
        for i in self.sampler:
            batch.append(int(i))
            if len(batch) == self.batch_size:
                yield batch
                batch = []

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


class SkipBatches:
    """``inner``'s batches of the current epoch without the first ``skip`` (for resuming)."""

    def __init__(self, inner: BatchSampler, skip: int = 0) -> None:
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip!r}")
        self.inner = inner
        self.skip = skip

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[list[Key]]:
        for i, batch in enumerate(self.inner):
            if i >= self.skip:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


SamplerFactory = Callable[..., BatchSampler]
_REGISTRY: dict[str, SamplerFactory] = {}


def register_batch_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    """Decorator: make ``factory(dataset, budget, *, rank, world_size, seed, epochs)`` selectable
    as ``budget.sampler=<name>`` (``epochs``: the run's epochs, None when it is step-bounded)."""

    def deco(factory: SamplerFactory) -> SamplerFactory:
        if name in _REGISTRY:
            raise ValueError(f"batch sampler {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def batch_sampler_names() -> Sequence[str]:
    return sorted(_REGISTRY)


def build_batch_sampler(
    name: str, dataset: Dataset, budget: Any, *, rank: int, world_size: int, seed: int, epochs: Optional[int] = None
) -> BatchSampler:
    """The registered sampler ``name`` for ``budget`` (a BudgetConfig)."""
    if name not in _REGISTRY:
        raise ValueError(f"budget.sampler must be one of {batch_sampler_names()}, got {name!r}")
    return _REGISTRY[name](dataset, budget, rank=rank, world_size=world_size, seed=seed, epochs=epochs)


def epoch_batches(sampler: BatchSampler, epoch: int) -> int:
    """Batches of ``epoch`` on this rank: ``num_batches(epoch)`` if the sampler varies it, else ``len``."""
    num_batches = getattr(sampler, "num_batches", None)
    return int(num_batches(epoch)) if callable(num_batches) else len(sampler)


@register_batch_sampler("fixed")
def _fixed(dataset: Dataset, budget: Any, *, rank: int, world_size: int, seed: int, epochs: Optional[int] = None) -> BatchSampler:
    # The dataset was built with budget.num_frames, so plain indices suffice.
    return FixedBatchSampler(dataset, budget.batch_size, rank=rank, world_size=world_size, seed=seed)


@register_batch_sampler("shape")
def _shape(dataset: Dataset, budget: Any, *, rank: int, world_size: int, seed: int, epochs: Optional[int] = None) -> BatchSampler:
    from videogn.data.budget import ShapeBatchSampler, build_schedule

    crop = getattr(dataset, "crop_size", None)
    if not isinstance(crop, int):
        raise ValueError(f"budget.sampler='shape' needs a dataset with an integer crop_size, got {crop!r}")
    if budget.schedule == "multigrid" and epochs is None:
        raise ValueError(
            "budget.schedule='multigrid' spreads its long cycle over trainer.epochs, which must be set "
            "(got trainer.epochs=None with trainer.max_steps)"
        )
    schedule = build_schedule(
        budget.schedule,
        num_frames=budget.num_frames,
        batch_size=budget.batch_size,
        crop_size=crop,
        epochs=epochs,
        budget=budget.voxel_budget,
        lengths=[int(t) for t in budget.lengths],
        pairs=[(int(t), int(b)) for t, b in budget.pairs] if budget.pairs else None,
        order=budget.order,
        long_cycle=[(float(a), float(b)) for a, b in budget.long_cycle],
        short_cycle=[float(f) for f in budget.short_cycle],
        num_long_cycles=budget.num_long_cycles,
    )
    return ShapeBatchSampler(
        dataset, schedule, num_replicas=world_size, rank=rank, seed=seed, drop_last=budget.drop_last
    )

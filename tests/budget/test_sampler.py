"""The one batch sampler: one clip shape per batch (DDP simulated with world_size/rank), its one
resume path, and the config entry point."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dataclasses import dataclass

from omegaconf import OmegaConf

from videogn.budget import (
    SCHEDULES,
    ClipShape,
    ScheduleStage,
    ShapeBatchSampler,
    ShapeSchedule,
    build_batch_sampler,
    constant_memory,
    fixed,
    multigrid,
    register_schedule,
)
from videogn.config import ConfigError
from videogn.config.schema import BudgetConfig, budget_config_class


def all_batches(sampler: ShapeBatchSampler) -> list[list[tuple[int, int, int]]]:
    return [list(b) for b in sampler]


def ranks(n: int, schedule, world: int, **kw) -> list[ShapeBatchSampler]:
    return [ShapeBatchSampler(n, schedule, world_size=world, rank=r, **kw) for r in range(world)]


# -- the sampler ------------------------------------------------------------------------------------------


def test_every_batch_holds_one_shape_within_budget():
    sched = constant_memory((4, 8), crop_size=32, lengths=(4, 8, 16))
    sampler = ShapeBatchSampler(101, sched, seed=3)
    batches = all_batches(sampler)
    assert len(batches) == len(sampler)
    for batch, shape in zip(batches, sampler.batch_shapes()):
        assert {(t, s) for _, t, s in batch} == {(shape.num_frames, shape.crop_size)}
        assert len(batch) == shape.batch_size
        t, s = batch[0][1], batch[0][2]
        assert t * s * s * len(batch) <= sched.voxel_budget
    # "cycle" order: the shapes alternate from the first
    assert [s.num_frames for s in sampler.batch_shapes()[:6]] == [4, 8, 16, 4, 8, 16]


def test_sampler_budget_smaller_than_a_shape_is_refused():
    with pytest.raises(ValueError, match=r"voxel_budget=1000 \(T\*S\^2\*B per process\) is smaller than shape 8x32\^2 x 4"):
        ShapeBatchSampler(10, fixed(8, 32, 4), voxel_budget=1000)


def test_sampler_argument_errors_name_the_value():
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 2\), got 2"):
        ShapeBatchSampler(10, fixed(8, 32, 4), world_size=2, rank=2)
    with pytest.raises(ValueError, match=r"world_size .* got 0"):
        ShapeBatchSampler(10, fixed(8, 32, 4), world_size=0, rank=0)
    with pytest.raises(ValueError, match=r"dataset length .* got 0"):
        ShapeBatchSampler(0, fixed(8, 32, 4))
    with pytest.raises(ValueError, match="cannot fill one step"):
        ShapeBatchSampler(7, fixed(8, 32, 4), world_size=2, rank=0, drop_last=True).batch_shapes()


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("order", ["cycle", "random"])
def test_ddp_ranks_share_shapes_and_split_indices(world, order):
    n = 203  # not a multiple of any batch: the last step is padded
    sched = constant_memory((4, 6), crop_size=16, lengths=(4, 8, 12), order=order)
    samplers = ranks(n, sched, world, seed=11)
    lengths = {len(s) for s in samplers}
    assert len(lengths) == 1
    per_rank = [all_batches(s) for s in samplers]
    assert {len(b) for b in per_rank} == lengths
    seen = Counter()
    for step in zip(*per_rank):
        shapes = {(len(b), b[0][1], b[0][2]) for b in step}
        assert len(shapes) == 1, f"ranks disagree on the shape: {shapes}"
        flat = [i for b in step for i, _, _ in b]
        assert len(set(flat)) == len(flat), f"ranks share indices within a step: {flat}"
        seen.update(flat)
    assert set(seen) == set(range(n))  # every clip is used
    padded = sum(seen.values()) - n
    assert 0 <= padded < max(s.batch_size for s in sched.shapes) * world


@pytest.mark.parametrize("world", [2, 4])
def test_ddp_drop_last_never_repeats(world):
    n = 203
    samplers = ranks(n, constant_memory((4, 6), crop_size=16, lengths=(4, 8)), world, drop_last=True)
    flat = [i for s in samplers for b in s for i, _, _ in b]
    assert len(flat) == len(set(flat))
    assert n - len(flat) < 6 * world  # at most one step is left out
    assert len({len(s) for s in samplers}) == 1


def test_tiny_dataset_is_padded_to_a_full_step():
    samplers = ranks(3, fixed(4, 16, 4), 2)
    batches = [all_batches(s) for s in samplers]
    assert [len(b) for b in batches] == [1, 1]
    flat = [i for b in batches for i, _, _ in b[0]]
    assert len(flat) == 8 and set(flat) == {0, 1, 2}


def test_world_size_is_read_from_torch_distributed(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        s = ShapeBatchSampler(10, fixed(4, 16, 2))
        assert (s.world_size, s.rank) == (1, 0)
    finally:
        dist.destroy_process_group()


def test_set_epoch_reshuffles_deterministically():
    sched = constant_memory((4, 4), crop_size=16, lengths=(4, 8), order="random")
    a, b = ShapeBatchSampler(64, sched, seed=5), ShapeBatchSampler(64, sched, seed=5)
    first = all_batches(a)
    assert all_batches(a) == first  # re-iterating the same epoch repeats it
    a.set_epoch(1)
    b.set_epoch(1)
    second = all_batches(a)
    assert second != first
    assert all_batches(b) == second  # same (seed, epoch) -> same batches, shapes included
    b.set_epoch(0)
    assert all_batches(b) == first
    other_seed = ShapeBatchSampler(64, sched, seed=6)
    assert all_batches(other_seed) != first


def test_no_shuffle_keeps_dataset_order():
    s = ShapeBatchSampler(10, fixed(2, 8, 3), shuffle=False)
    assert [[i for i, _, _ in b] for b in s] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]]


def test_multigrid_epochs_change_shape_and_length():
    sched = multigrid(8, 32, 2, epochs=4, short_cycle=())
    s = ShapeBatchSampler(96, sched, shuffle=False)
    lengths = []
    for epoch in range(4):
        s.set_epoch(epoch)
        batches = all_batches(s)
        lengths.append(len(batches))
        assert {b[0][1] for b in batches} == {sched.shapes_at(epoch)[0].num_frames}
    sizes = [sched.shapes_at(e)[0].batch_size for e in range(4)]
    assert sizes == [15, 7, 4, 2]  # (2, 23), (4, 23), (4, 32), (8, 32): floor(16384 / (T * S^2))
    assert lengths == [-(-96 // b) for b in sizes]  # the last step padded
    assert s.total_batches(4) == sum(lengths)


@pytest.mark.parametrize("world", [1, 3])
def test_resume_yields_exactly_the_remaining_batches(world):
    sched = constant_memory((4, 4), crop_size=16, lengths=(4, 8), order="random")
    n = 77
    for rank in range(world):
        full = ShapeBatchSampler(n, sched, world_size=world, rank=rank, seed=2)
        full.set_epoch(3)
        expected = all_batches(full)
        k = len(expected) // 2
        # a run that stopped after k batches of epoch 3 resumes there (the same position on every rank)
        resumed = ShapeBatchSampler(n, sched, world_size=world, rank=rank, seed=2)
        resumed.check_resumable(full.state_dict())
        resumed.set_epoch(3, skip=k)
        assert resumed.num_batches() == len(expected)  # the epoch is still the whole epoch
        assert len(resumed) == len(expected) - k  # what a DataLoader over it will yield
        assert all_batches(resumed) == expected[k:]
        # the skip holds for this epoch only: the next set_epoch starts whole again
        resumed.set_epoch(3)
        assert all_batches(resumed) == expected
        resumed.set_epoch(4)
        assert len(all_batches(resumed)) == len(resumed)


def test_skip_and_epoch_change_reset():
    s = ShapeBatchSampler(40, fixed(4, 16, 4), seed=1)
    expected = all_batches(s)
    r = ShapeBatchSampler(40, fixed(4, 16, 4), seed=1)
    r.set_epoch(0, skip=7)
    assert all_batches(r) == expected[7:]
    r.set_epoch(0, skip=7)
    r.set_epoch(1)  # a different epoch without skip is whole
    assert len(all_batches(r)) == len(expected)
    with pytest.raises(ValueError, match=r"skip must be at most the 10 batches of epoch 0, got 11"):
        s.set_epoch(0, skip=11)


def test_check_resumable_refuses_another_setup():
    s = ShapeBatchSampler(40, fixed(4, 16, 4), seed=1, world_size=2, rank=0)
    state = s.state_dict()
    with pytest.raises(ValueError, match=r"seed=1, this sampler has seed=2"):
        ShapeBatchSampler(40, fixed(4, 16, 4), seed=2, world_size=2, rank=1).check_resumable(state)
    with pytest.raises(ValueError, match=r"world_size=2, this sampler has world_size=4"):
        ShapeBatchSampler(40, fixed(4, 16, 4), seed=1, world_size=4, rank=1).check_resumable(state)
    with pytest.raises(ValueError, match=r"dataset_size=40, this sampler has dataset_size=41"):
        ShapeBatchSampler(41, fixed(4, 16, 4), seed=1, world_size=2, rank=1).check_resumable(state)
    with pytest.raises(ValueError, match=r"schedule="):
        ShapeBatchSampler(40, fixed(8, 16, 2), seed=1, world_size=2, rank=1).check_resumable(state)
    with pytest.raises(ValueError, match=r"sampler state lacks \['schedule'"):
        s.check_resumable({})
    # and any rank accepts rank 0's state
    ShapeBatchSampler(40, fixed(4, 16, 4), seed=1, world_size=2, rank=1).check_resumable(state)


def test_state_survives_a_weights_only_checkpoint(tmp_path):
    sched = multigrid(8, 32, 2, epochs=4)
    s = ShapeBatchSampler(50, sched, seed=4)
    s.set_epoch(2)
    torch.save({"sampler_setup": s.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["sampler_setup"]
    r = ShapeBatchSampler(50, sched, seed=4)
    r.check_resumable(state)
    r.set_epoch(2, skip=3)
    assert r.epoch == 2 and all_batches(r) == all_batches(s)[3:]


class ClipDataset(Dataset):
    """Stands in for KineticsDataset: ds[(i, T, S)] -> a (3, T, S, S) clip that carries its index."""

    def __len__(self) -> int:
        return 30

    def __getitem__(self, key):
        i, t, s = key
        return {"video": torch.full((3, t, s, s), float(i)), "label": i % 3}


def test_dataloader_collates_one_shape_per_batch():
    sched = constant_memory((2, 6), crop_size=8, lengths=(2, 4))
    sampler = ShapeBatchSampler(ClipDataset(), sched, seed=0)
    loader = DataLoader(ClipDataset(), batch_sampler=sampler)
    assert len(loader) == len(sampler)
    for batch, shape, indices in zip(loader, sampler.batch_shapes(), sampler):
        assert batch["video"].shape == (shape.batch_size, 3, shape.num_frames, 8, 8)  # (N, C, T, H, W)
        assert batch["video"][:, 0, 0, 0, 0].long().tolist() == [i for i, _, _ in indices]


def _ddp_worker(rank: int, world: int, store: str, out: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        # world size and rank come from the process group
        sampler = ShapeBatchSampler(50, constant_memory((4, 4), crop_size=16, lengths=(4, 8), order="random"), seed=9)
        sampler.set_epoch(1)
        gathered = [None] * world
        dist.all_gather_object(gathered, {"rank": sampler.rank, "len": len(sampler), "batches": all_batches(sampler)})
        if rank == 0:
            with open(out, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_real_ddp_processes_get_the_same_shapes(tmp_path):
    import json

    import torch.multiprocessing as mp

    world, out = 2, tmp_path / "batches.json"
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "store"), str(out)), nprocs=world)
    gathered = json.loads(out.read_text())
    assert [g["rank"] for g in gathered] == [0, 1]
    assert gathered[0]["len"] == gathered[1]["len"] == len(gathered[0]["batches"])
    flat = []
    for b0, b1 in zip(gathered[0]["batches"], gathered[1]["batches"]):
        assert len(b0) == len(b1) and {tuple(k[1:]) for k in b0 + b1} == {tuple(b0[0][1:])}
        flat += [k[0] for k in b0 + b1]
    assert set(flat) == set(range(50))
    # the processes agree with the single-process simulation
    sched = constant_memory((4, 4), crop_size=16, lengths=(4, 8), order="random")
    for rank in range(world):
        sim = ShapeBatchSampler(50, sched, seed=9, world_size=world, rank=rank)
        sim.set_epoch(1)
        assert [[list(k) for k in b] for b in sim] == gathered[rank]["batches"]


def test_kinetics_dataset_through_the_sampler(tmp_path, video_factory):
    from videogn.data import KineticsDataset

    for c in ["left", "right"]:
        for k in range(6):  # 12 videos: one step of 4 clips x 2 ranks, one of 2 x 2
            video_factory.make_video(tmp_path / c / f"{k}.mp4", num_frames=12, seed=k)
    ds = KineticsDataset(tmp_path, num_frames=4, stride=1, train_scale=(36, 40), crop_size=32, flip=False)
    sched = constant_memory((4, 2), crop_size=24, lengths=(2, 4))  # (T=2, B=4) and (T=4, B=2) at 24^2
    sampler = ShapeBatchSampler(ds, sched, world_size=2, rank=1, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler)
    shapes = [tuple(batch["video"].shape) for batch in loader]
    expected = [(s.batch_size, 3, s.num_frames, 24, 24) for s in sampler.batch_shapes()]  # (N, C, T, H, W)
    assert shapes == expected and len(shapes) == len(sampler) == 2



class Sized:
    crop_size = 16

    def __len__(self) -> int:
        return 40


def test_build_batch_sampler_from_a_budget_config():
    s = build_batch_sampler(Sized(), BudgetConfig(num_frames=4, batch_size=5), rank=1, world_size=2, seed=3, epochs=2)
    assert s.schedule.kind == "fixed" and s.batch_shapes(0)[0] == fixed(4, 16, 5).shapes[0]
    assert (s.rank, s.world_size, s.seed, s.num_batches(0)) == (1, 2, 3, 4)
    cm = build_batch_sampler(Sized(), BudgetConfig(num_frames=4, batch_size=2, schedule="constant_memory", lengths=[2, 4]),
                             rank=0, world_size=1, seed=0, epochs=None)
    assert [(x.num_frames, x.batch_size) for x in cm.schedule.shapes] == [(2, 4), (4, 2)]
    with pytest.raises(ValueError, match=r"schedule 'multigrid' spreads its stages over the run's epochs: set trainer\.epochs"):
        build_batch_sampler(Sized(), BudgetConfig(num_frames=4, batch_size=2, schedule="multigrid"), rank=0, world_size=1, seed=0, epochs=None)
    with pytest.raises(ValueError, match=r"integer crop_size, got None"):
        build_batch_sampler(list(range(4)), BudgetConfig(num_frames=4, batch_size=2), rank=0, world_size=1, seed=0, epochs=1)


# -- several clips per decode: B counts clips, a step takes B / K videos, an epoch is one pass over them ------


@pytest.mark.parametrize("world", [1, 2])
def test_clips_per_decode_steps_take_b_over_k_videos(world):
    sched = fixed(4, 16, 4)  # B = 4 clips
    one = ranks(48, sched, world, seed=7)
    two = ranks(48, sched, world, seed=7, clips_per_decode=2)
    assert two[0].num_batches() == 2 * one[0].num_batches() == 48 // (2 * world)  # K x the steps, one pass
    batches = [all_batches(s) for s in two]
    for step in zip(*batches):  # every rank: 2 videos per step, disjoint across ranks
        assert all(len(b) == 2 and {k[1:] for k in b} == {(4, 16)} for b in step)
        assert len({k[0] for b in step for k in b}) == 2 * world
    assert sorted(k[0] for rank in batches for b in rank for k in b) == list(range(48))  # each video once
    # the shuffle is the K = 1 one: the same videos in the same order, taken 2 instead of 4 a rank and step
    def flat(per_rank):
        return [k for step in zip(*per_rank) for b in step for k in b]

    assert flat(batches) == flat([all_batches(s) for s in one])


def test_clips_per_decode_resume_and_state():
    sched = constant_memory((4, 4), crop_size=16, lengths=(2, 4), order="random")  # B = 8 and 4
    full = ShapeBatchSampler(50, sched, seed=3, clips_per_decode=2)
    full.set_epoch(2)
    expected = all_batches(full)
    assert [len(b) for b in expected] == [s.batch_size // 2 for s in full.batch_shapes()]
    resumed = ShapeBatchSampler(50, sched, seed=3, clips_per_decode=2)
    resumed.check_resumable(full.state_dict())
    resumed.set_epoch(2, skip=5)
    assert all_batches(resumed) == expected[5:]
    assert full.state_dict()["clips_per_decode"] == 2
    with pytest.raises(ValueError, match=r"clips_per_decode=2, this sampler has clips_per_decode=1"):
        ShapeBatchSampler(50, sched, seed=3).check_resumable(full.state_dict())
    # a state saved before the option: one clip per video
    old = {k: v for k, v in ShapeBatchSampler(50, sched, seed=3).state_dict().items() if k != "clips_per_decode"}
    ShapeBatchSampler(50, sched, seed=3).check_resumable(old)
    with pytest.raises(ValueError, match=r"clips_per_decode=1, this sampler has clips_per_decode=2"):
        resumed.check_resumable(old)


def test_clips_per_decode_must_divide_every_batch():
    with pytest.raises(ValueError, match=r"batch_size=2 of shape .* must be a multiple of clips_per_decode=4"):
        ShapeBatchSampler(50, constant_memory((4, 4), crop_size=16, lengths=(2, 4, 8)), clips_per_decode=4)
    with pytest.raises(ValueError, match=r"clips_per_decode must be an integer >= 1, got 0"):
        ShapeBatchSampler(50, fixed(4, 16, 4), clips_per_decode=0)


class SizedTwoClips(Sized):
    clips_per_decode = 2


def test_build_batch_sampler_follows_the_dataset_clips_per_decode():
    s = build_batch_sampler(SizedTwoClips(), BudgetConfig(num_frames=4, batch_size=4), rank=0, world_size=1, seed=0,
                            epochs=1)
    assert s.clips_per_decode == 2 and s.num_batches(0) == 20 and len(next(iter(s))) == 2


# -- a new schedule: one registered builder (with its options), nothing else -------------------------------


@dataclass(frozen=True)
class WarmupOptions:
    """A toy schedule: ``short_epochs`` epochs of clips ``divisor`` times shorter, then the base shape."""

    divisor: int = 2
    short_epochs: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.divisor, bool) or not isinstance(self.divisor, int) or self.divisor < 1:
            raise ValueError(f"divisor must be an integer >= 1, got {self.divisor!r}")


def _build_warmup(base: ClipShape, o: WarmupOptions, *, epochs: int) -> ShapeSchedule:
    short = ClipShape(max(1, base.num_frames // o.divisor), base.crop_size, base.batch_size * o.divisor)
    stages = (ScheduleStage((short,), min(o.short_epochs, epochs)), ScheduleStage((base,)))
    return ShapeSchedule("short_first", stages, voxel_budget=max(short.voxels, base.voxels))


@pytest.fixture
def short_first(monkeypatch):
    monkeypatch.setattr(SCHEDULES, "_entries", dict(SCHEDULES._entries))  # registered for this test only
    register_schedule("short_first", WarmupOptions, needs_epochs=True)(_build_warmup)
    return "short_first"


def test_a_registered_schedule_works_end_to_end(short_first: str) -> None:
    # the config class built after registration has the schedule's options as budget.<option> keys,
    # typed and defaulted by its dataclass; a YAML selecting it is all a user adds
    config_class = budget_config_class()
    node = OmegaConf.merge(OmegaConf.structured(config_class),
                           {"schedule": short_first, "num_frames": 8, "batch_size": 2, "divisor": 4})
    cfg = OmegaConf.to_object(node)
    assert cfg.schedule_options() == {"divisor": 4, "short_epochs": 1}
    sampler = build_batch_sampler(Sized(), cfg, rank=0, world_size=1, seed=0, epochs=3)
    assert sampler.batch_shapes(0)[0] == ClipShape(2, 16, 8) and sampler.batch_shapes(1)[0] == ClipShape(8, 16, 2)
    assert [len(b) for b in sampler] == [8] * 5  # 40 clips, 8 per batch in the first epoch
    # the builder's own check names the option, as a config error under budget.
    with pytest.raises(ConfigError, match=r"budget\.divisor must be an integer >= 1, got 0"):
        config_class(schedule=short_first, divisor=0)
    # it needs epochs because it declared so; no name is special-cased anywhere
    with pytest.raises(ValueError, match=r"schedule 'short_first' spreads its stages over the run's epochs"):
        build_batch_sampler(Sized(), cfg, rank=0, world_size=1, seed=0, epochs=None)


def test_an_option_of_another_schedule_is_refused_naming_the_valid_ones(short_first: str) -> None:
    config_class = budget_config_class()
    with pytest.raises(ConfigError, match=r"budget\.lengths is not an option of budget\.schedule='short_first' "
                                          r"\(its options: budget\.divisor, budget\.short_epochs\)"):
        config_class(schedule=short_first, lengths=[2, 4])
    with pytest.raises(ConfigError, match=r"budget\.divisor is not an option of budget\.schedule='fixed' \(its options: none\)"):
        config_class(divisor=3)
    config_class(schedule="fixed", divisor=2)  # at its default: nothing was asked of the schedule


def test_two_schedules_cannot_give_one_key_two_defaults(short_first: str) -> None:
    @dataclass(frozen=True)
    class Clash:
        lengths: int = 3  # constant_memory's lengths is a list defaulting to (8, 16, 32, 64)

    register_schedule("clash", Clash)(lambda base, o: ShapeSchedule.single(base))
    with pytest.raises(TypeError, match=r"schedules 'clash' and 'constant_memory' both declare option 'lengths'"):
        budget_config_class()

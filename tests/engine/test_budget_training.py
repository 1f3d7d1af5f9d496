"""Budget schedules in training: exact gradient accumulation (GN yes, BN no), one clip shape per
batch from the constant-memory and multigrid samplers, the same shapes on every rank, the
per-step learning-rate rule, and resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from videogn.budget import build_batch_sampler
from videogn.config import ConfigError, validate
from videogn.engine.build import build_dataset, resolve_data
from videogn.engine.trainer import Trainer
from videogn.models import create_model


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def _accumulated_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    # the trainer's rule: micro-batch i's mean loss weighs B_i / sum(B)
    model.zero_grad(set_to_none=True)
    start, total = 0, sum(sizes)
    for b in sizes:
        loss = F.cross_entropy(model(x[start:start + b]), y[start:start + b])
        (loss * b / total).backward()
        start += b
    return _grads(model)


def _full_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return _grads(model)


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max(float((u - v).abs().max()) for u, v in zip(a, b))


@pytest.mark.parametrize("sizes", [[4, 4], [3, 5], [1, 2, 5]])
def test_accumulation_equals_the_large_batch_for_gn(sizes: list[int]) -> None:
    torch.manual_seed(0)
    # SiLU, not ReLU: ReLU's exact zeros tie in the max-pools, and which tied input gets the gradient
    # differs between CPU kernels (seen for a batch of 1 under ATEN_CPU_CAPABILITY=default with
    # ONEDNN_MAX_CPU_ISA=SSE41): a valid subgradient either way, but not the same numbers
    model = create_model("i3d_tiny", num_classes=5, norm="gn", dropout=0.0, zero_init_last=False, act_layer="silu").train()
    x = torch.randn(8, 3, 4, 24, 24)  # (N, C, T, H, W)
    y = torch.randint(0, 5, (8,))
    full = _full_grads(model, x, y)
    acc = _accumulated_grads(model, x, y, sizes)
    scale = max(float(g.abs().max()) for g in full)
    assert scale > 0
    assert _max_diff(full, acc) <= 1e-5 * max(1.0, scale)
    # 1/k weighting (the naive rule) is NOT the large batch's gradient when the sizes differ
    if len(set(sizes)) > 1:
        model.zero_grad(set_to_none=True)
        start = 0
        for b in sizes:
            (F.cross_entropy(model(x[start:start + b]), y[start:start + b]) / len(sizes)).backward()
            start += b
        assert _max_diff(full, _grads(model)) > 1e-4 * scale


def test_accumulation_is_not_the_large_batch_for_bn() -> None:
    torch.manual_seed(0)
    model = create_model("i3d_tiny", num_classes=5, norm="bn", dropout=0.0, zero_init_last=False).train()
    x = torch.randn(8, 3, 4, 24, 24)  # (N, C, T, H, W)
    y = torch.randint(0, 5, (8,))
    full = _full_grads(model, x, y)
    acc = _accumulated_grads(model, x, y, [4, 4])
    scale = max(float(g.abs().max()) for g in full)
    # each micro-batch is normalised by its own statistics: a different function, another gradient
    assert _max_diff(full, acc) > 1e-3 * scale


def test_trainer_accumulation_reaches_the_large_batch_weights(compose_train, tmp_path: Path) -> None:
    # 12 clips: batch 8 -> 1 step per epoch; batch 4 x accumulate 2 -> the same 8 clips per step,
    # in the same order (the shuffle depends on seed and epoch only). GN, no dropout.
    common = ["trainer.max_steps=3", "trainer.checkpoint_every=100", "model.dropout=0.0", "norm=gn"]
    big = Trainer(validate(compose_train(*common, "budget.batch_size=8")), tmp_path / "big")
    big.fit()
    small = Trainer(validate(compose_train(*common, "budget.batch_size=4", "trainer.accumulate=2")), tmp_path / "small")
    small.fit()
    assert small.state.step == big.state.step == 3
    big_rows, small_rows = _rows(tmp_path / "big"), _rows(tmp_path / "small")
    for a, b in zip(big_rows, small_rows):
        assert float(a["lr"]) == pytest.approx(float(b["lr"]))
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)
    sd_big, sd_small = big.unwrapped_model.state_dict(), small.unwrapped_model.state_dict()
    moved = 0.0
    for k in sd_big:
        torch.testing.assert_close(sd_small[k], sd_big[k], rtol=1e-4, atol=1e-5, msg=k)
    init = Trainer(validate(compose_train(*common, "budget.batch_size=8")), tmp_path / "init").unwrapped_model.state_dict()
    moved = max(float((sd_big[k].float() - init[k].float()).abs().max()) for k in sd_big)
    assert moved > 1e-3  # the weights did change: the comparison is not vacuous


def _record_shapes(trainer: Trainer) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    trainer.unwrapped_model.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    return shapes


def test_constant_memory_training_one_shape_per_batch(compose_train, tmp_path: Path) -> None:
    # base 4 frames x 2 clips at 28^2; lengths 2 and 4 -> (2, 4) and (4, 2), alternating
    conf = validate(compose_train(
        "budget=constant_memory", "budget.num_frames=4", "budget.batch_size=2", "budget.stride=2",
        "budget.lengths=[2,4]", "trainer.max_steps=5", "optim.reference_batch_size=2",
        "sched.warmup_fraction=0.0", "trainer.checkpoint_every=100",
    ))
    trainer = Trainer(conf, tmp_path)
    shapes = _record_shapes(trainer)
    trainer.fit()
    plan0 = trainer.batch_sampler.batch_shapes(0)
    assert [(s.num_frames, s.batch_size) for s in plan0] == [(2, 4), (4, 2), (2, 4), (4, 2)]
    plan = plan0 + trainer.batch_sampler.batch_shapes(1)
    assert len(shapes) == 5
    for got, want in zip(shapes, plan):
        assert got == (want.batch_size, 3, want.num_frames, want.crop_size, want.crop_size)
    # one rule: lr = optim.lr x schedule(step) x clips / reference_batch_size
    for i, row in enumerate(_rows(tmp_path)):
        expected = conf.optim.lr * trainer.schedule.factor(i) * plan[i].batch_size / 2
        assert float(row["lr"]) == pytest.approx(expected)


def test_multigrid_training_varies_shapes_without_rebuilding(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train(
        "budget=multigrid", "budget.num_frames=4", "budget.batch_size=2", "budget.stride=2",
        "budget.long_cycle=[[0.5,0.5],[1.0,1.0]]", "budget.short_cycle=[0.5]",
        "trainer.max_steps=null", "trainer.epochs=2", "trainer.checkpoint_every=100",
    ))
    trainer = Trainer(conf, tmp_path)
    model = trainer.unwrapped_model
    sampler = trainer.batch_sampler
    assert trainer.total_steps == sampler.num_batches(0) + sampler.num_batches(1)
    shapes = _record_shapes(trainer)
    trainer.fit()
    plan = sampler.batch_shapes(0) + sampler.batch_shapes(1)
    assert len(shapes) == len(plan) == trainer.state.step
    for got, want in zip(shapes, plan):
        assert got == (want.batch_size, 3, want.num_frames, want.crop_size, want.crop_size)
    assert len({s[2:] for s in shapes}) >= 3  # (T, H, W) really varied
    assert all(s[0] * s[2] * s[3] * s[4] <= 2 * 4 * 28 * 28 for s in shapes)  # within the base voxels
    assert trainer.unwrapped_model is model


@pytest.mark.parametrize(
    "budget, options",  # each schedule takes only its own options
    [("constant_memory", ["budget.lengths=[2,4]"]),
     ("multigrid", ["budget.long_cycle=[[0.5,0.5],[1.0,1.0]]", "budget.short_cycle=[0.5]"])],
)
def test_two_ranks_get_the_same_shape_at_every_step(compose_train, budget: str, options: list[str]) -> None:
    conf = validate(compose_train(
        f"budget={budget}", "budget.num_frames=4", "budget.batch_size=2", "budget.stride=2", *options,
        "data.synthetic.train_per_class=8", "trainer.max_steps=null", "trainer.epochs=2",
    ))
    sources = resolve_data(conf.data)
    ds = build_dataset(conf.data, conf.budget, sources, "train", mode="train")
    samplers = [build_batch_sampler(ds, conf.budget, rank=r, world_size=2, seed=3, epochs=2) for r in (0, 1)]
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        b0, b1 = list(samplers[0]), list(samplers[1])
        assert len(b0) == len(b1) == samplers[0].num_batches(epoch)
        seen = []
        for k, (x, y) in enumerate(zip(b0, b1)):
            # the clips really loaded: one shape per batch, the same on both ranks
            v0 = torch.stack([ds[key]["video"] for key in x])
            v1 = torch.stack([ds[key]["video"] for key in y])
            assert v0.shape == v1.shape
            want = samplers[0].batch_shapes(epoch)[k]
            assert v0.shape == (want.batch_size, 3, want.num_frames, want.crop_size, want.crop_size)
            seen += [key[0] for key in x + y]
        assert set(seen) == set(range(len(ds)))  # every clip used in the epoch
        offset = 0
        for x, y in zip(b0, b1):
            offset += len(x) + len(y)
            if offset <= len(ds):  # ranks disjoint (a last step past the end is padded from the start)
                assert not {k[0] for k in x} & {k[0] for k in y}


def test_resume_with_a_shape_schedule(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train(
        "budget=constant_memory", "budget.num_frames=4", "budget.batch_size=2", "budget.stride=2",
        "budget.lengths=[2,4]", "trainer.max_steps=6", "trainer.checkpoint_every=100", "trainer.accumulate=2",
    ))
    full = Trainer(conf, tmp_path / "full")
    full.fit()
    first = Trainer(conf, tmp_path / "resumed")
    first.fit(until_step=1)
    second = Trainer(conf, tmp_path / "resumed")
    assert second.state.step == 1
    second.fit()
    a, b = _rows(tmp_path / "full"), _rows(tmp_path / "resumed")
    assert [(r["step"], r["loss"], r["lr"]) for r in a] == [(r["step"], r["loss"], r["lr"]) for r in b]
    for k, v in full.unwrapped_model.state_dict().items():
        assert torch.equal(v, second.unwrapped_model.state_dict()[k]), k


@pytest.mark.parametrize(
    "override, field",
    [
        ("budget.schedule=zigzag", "budget.schedule"),
        ("budget.order=shuffle", "budget.order"),
        ("budget.lengths=[8,0]", "budget.lengths item"),
        ("budget.pairs=[[8,4,2]]", "budget.pairs item"),
        ("budget.voxel_budget=0", "budget.voxel_budget"),
        ("budget.short_cycle=[1.5]", "budget.short_cycle factor"),
        ("budget.num_long_cycles=0", "budget.num_long_cycles"),
    ],
)
def test_bad_budget_values_name_the_field(compose_train, override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        validate(compose_train("budget=constant_memory", override))


def test_multigrid_needs_epochs(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("budget=multigrid", "trainer.max_steps=4", "trainer.epochs=null"))
    with pytest.raises(ConfigError, match="trainer.epochs"):
        Trainer(conf, tmp_path)


def test_resume_refuses_another_schedule(compose_train, tmp_path: Path) -> None:
    base = ["budget=constant_memory", "budget.num_frames=4", "budget.batch_size=2", "budget.stride=2",
            "trainer.checkpoint_every=100"]
    Trainer(validate(compose_train(*base, "budget.lengths=[2,4]", "trainer.max_steps=1")), tmp_path).fit()
    with pytest.raises(ConfigError, match="schedule"):
        Trainer(validate(compose_train(*base, "budget.lengths=[4]", "trainer.max_steps=2")), tmp_path)

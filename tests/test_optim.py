"""Weight-decay groups (none on biases, nor on norms that declare none: videogn.layers.norm_weight_decay),
the head's learning-rate multiplier, SGD and AdamW, schedules, label smoothing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from videogn import FrozenBatchNorm, GroupNorm3d
from videogn.optim import LRSchedule, build_sgd, create_optimizer, norm_and_bias_parameters, param_groups
from videogn.runtime import forward_backward


class _CustomGN(GroupNorm3d):  # a subclass is still a norm
    pass


def _model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 8, 3, bias=False), GroupNorm3d(8, 4), nn.Conv3d(8, 8, 1, bias=True), nn.BatchNorm3d(8),
        _CustomGN(8, 2), FrozenBatchNorm(8), nn.Flatten(), nn.Linear(8, 2),
    )


def test_norm_params_and_biases_get_no_decay() -> None:
    m = _model()
    groups = {g["name"]: g for g in param_groups(m, 1e-4, 0.0)}
    no_decay = {id(p) for p in groups["norm_and_bias"]["params"]}
    decay = {id(p) for p in groups["decay"]["params"]}
    expected_no_decay = {id(p) for p in (m[1].weight, m[1].bias, m[2].bias, m[3].weight, m[3].bias, m[4].weight, m[4].bias, m[7].bias)}
    assert no_decay == expected_no_decay == norm_and_bias_parameters(m)
    assert decay == {id(m[0].weight), id(m[2].weight), id(m[7].weight)}
    assert groups["decay"]["weight_decay"] == 1e-4 and groups["norm_and_bias"]["weight_decay"] == 0.0


def test_norm_weight_decay_none_decays_everything() -> None:
    groups = param_groups(_model(), 1e-4, None)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4


def test_zero_decay_really_leaves_norm_weights_alone() -> None:
    m = _model()
    opt = build_sgd(m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5, norm_weight_decay=0.0)
    assert opt.defaults["nesterov"] and all(g["initial_lr"] == 0.1 for g in opt.param_groups)
    before_gn, before_conv = m[1].weight.detach().clone(), m[0].weight.detach().clone()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(m[1].weight, before_gn)  # zero grad, zero decay: unchanged
    # first Nesterov step with zero gradient: update = (1 + momentum) * wd * w
    assert torch.allclose(m[0].weight, before_conv * (1 - 0.1 * 0.5 * 1.9))


def test_cosine_with_warmup() -> None:
    s = LRSchedule("cosine", 100, warmup_fraction=0.1, warmup_start_factor=0.1)
    assert s.factor(0) == pytest.approx(0.1)
    assert s.factor(5) == pytest.approx(0.55)
    assert s.factor(10) == pytest.approx(1.0)
    assert s.factor(55) == pytest.approx(0.5)
    assert s.factor(100) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_matches_the_paper() -> None:
    s = LRSchedule("step", 400_000, milestones=[0.375, 0.75], gamma=0.1)
    assert [s.factor(i) for i in (0, 149_999, 150_000, 299_999, 300_000)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_apply_scales_with_batch() -> None:
    opt = build_sgd(nn.Linear(2, 2), lr=0.01)
    lr = LRSchedule("constant", 10).apply(opt, 3, batch_scale=32 / 64)
    assert lr == pytest.approx(0.005) and all(g["lr"] == pytest.approx(0.005) for g in opt.param_groups)


def test_bad_schedule_is_named() -> None:
    with pytest.raises(ValueError, match="'linear'"):
        LRSchedule("linear", 10)
    with pytest.raises(ValueError, match="total_steps"):
        LRSchedule("cosine", 0)
    assert math.isfinite(LRSchedule("cosine", 1).factor(0))


def test_head_lr_mult_is_in_the_param_groups_and_survives_every_schedule_step() -> None:
    m = _model()
    head = m[7]
    opt = create_optimizer(m, "sgd", 0.1, weight_decay=1e-4, head=head, head_lr_mult=10.0)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"decay", "norm_and_bias", "head_decay", "head_norm_and_bias"}
    assert [id(p) for p in by_name["head_decay"]["params"]] == [id(head.weight)]
    assert [id(p) for p in by_name["head_norm_and_bias"]["params"]] == [id(head.bias)]
    assert by_name["head_decay"]["weight_decay"] == 1e-4 and by_name["head_norm_and_bias"]["weight_decay"] == 0.0
    assert by_name["head_decay"]["lr"] == pytest.approx(1.0) and by_name["decay"]["lr"] == pytest.approx(0.1)
    schedule = LRSchedule("cosine", 10, warmup_fraction=0.2)
    for step in (0, 1, 5, 9):
        first = schedule.apply(opt, step, batch_scale=0.5)
        assert first == pytest.approx(0.1 * schedule.factor(step) * 0.5)
        assert by_name["head_decay"]["lr"] == pytest.approx(10 * first)
        assert by_name["head_norm_and_bias"]["lr"] == pytest.approx(10 * first)
        assert by_name["norm_and_bias"]["lr"] == pytest.approx(first)
    # a multiplier of 1 keeps the two groups a checkpoint of an earlier run has
    assert len(create_optimizer(m, "sgd", 0.1, head=head, head_lr_mult=1.0).param_groups) == 2


def test_frozen_parameters_are_left_out_of_the_optimizer() -> None:
    m = _model()
    m[0].weight.requires_grad_(False)
    params = {id(p) for g in create_optimizer(m, "adamw", 1e-3).param_groups for p in g["params"]}
    assert id(m[0].weight) not in params and id(m[2].weight) in params


def test_adamw_builds_with_the_declared_no_decay_groups() -> None:
    m = _model()
    opt = create_optimizer(m, "adamw", 1e-3, betas=(0.8, 0.99), weight_decay=0.05, norm_weight_decay=0.0)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.99)
    groups = {g["name"]: g for g in opt.param_groups}
    assert {id(p) for p in groups["norm_and_bias"]["params"]} == norm_and_bias_parameters(m)
    assert groups["decay"]["weight_decay"] == 0.05 and groups["norm_and_bias"]["weight_decay"] == 0.0
    # zero gradients: AdamW's update is the decoupled decay alone, w <- w (1 - lr wd), and nothing on norms
    before_gn, before_conv = m[1].weight.detach().clone(), m[0].weight.detach().clone()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(m[1].weight, before_gn)
    torch.testing.assert_close(m[0].weight, before_conv * (1 - 1e-3 * 0.05))
    with pytest.raises(ValueError, match="'adamw'.*got 'adam'"):
        create_optimizer(m, "adam", 1e-3)


def test_label_smoothing_changes_the_loss_as_cross_entropy_does() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 5))
    clips, labels = torch.randn(4, 3, 2, 4, 4), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        logits = model(clips)
    plain = forward_backward(model, clips, labels)
    smoothed = forward_backward(model, clips, labels, label_smoothing=0.2)
    torch.testing.assert_close(plain, torch.nn.functional.cross_entropy(logits, labels))
    torch.testing.assert_close(smoothed, torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2))
    assert not torch.allclose(plain, smoothed)

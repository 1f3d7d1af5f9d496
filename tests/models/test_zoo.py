"""Every registered model: builds with GN and BN, runs a tiny clip to (N, classes), exports."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videogn import FrozenBatchNorm, GroupNorm3d
from videogn.layers import zero_init_last_norm
from videogn.models import create_model, describe_models, get_model_spec, list_models

_CLIP = (1, 3, 8, 32, 32)  # (N, C, T, H, W): every registered model's output stride fits


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, FrozenBatchNorm))]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_every_model_builds_and_runs_with_the_norm(name, norm):
    torch.manual_seed(0)
    model = create_model(name, 5, norm=norm).eval()
    norms = _norms(model)
    assert norms, name
    wanted = GroupNorm3d if norm == "gn" else nn.modules.batchnorm._BatchNorm
    assert all(isinstance(m, wanted) for m in norms), {type(m).__name__ for m in norms}
    if norm == "gn":  # at least 2 channels per group wherever the layer has 2 channels or more
        assert all(m.num_channels // m.num_groups >= 2 for m in norms if m.num_channels >= 2)
    with torch.no_grad():
        out = model(torch.randn(*_CLIP))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in list_models() if get_model_spec(n).family != "s3d"])
def test_residual_models_start_with_zero_gamma_in_block_last_norms(name):
    model = create_model(name, 5, norm="gn")
    assert zero_init_last_norm(model) > 0  # the blocks are recognised ...
    zeroed = [m for m in _norms(model) if not m.weight.any()]
    assert len(zeroed) == zero_init_last_norm(model)  # ... and create_model already zeroed them
    assert all(m.weight.all() for m in _norms(create_model(name, 5, norm="gn", zero_init_last=False)))


@pytest.mark.parametrize("name", list_models())
def test_every_model_exports(name):
    torch.manual_seed(0)
    model = create_model(name, 5, norm="gn").eval()
    x = torch.randn(*_CLIP)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


def test_slowfast_takes_one_clip_and_feeds_every_fourth_frame_to_the_slow_path():
    model = create_model("slowfast_r50", 3, norm="gn").eval()
    seen = []
    model.blocks[0].multipathway_blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 12, 32, 32)).shape == (2, 3)
    assert seen == [torch.Size([2, 3, 3, 32, 32])]


def test_pytorchvideo_models_take_the_norm_and_activation():
    model = create_model("x3d_xs", 4, norm="frozen_bn", act_layer="silu")
    assert any(isinstance(m, FrozenBatchNorm) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    tv = create_model("r3d_18", 4, norm="ln", act_layer="gelu")
    assert {m.num_groups for m in _norms(tv)} == {1}
    assert not any(isinstance(m, nn.ReLU) for m in tv.modules())


def test_x3d_group_counts_keep_two_channels_per_group():
    model = create_model("x3d_s", 4)
    groups = {m.num_channels: m.num_groups for m in _norms(model)}
    assert groups[24] == 12 and groups[54] == 27 and groups[108] == 27 and groups[432] == 27
    explicit = create_model("x3d_s", 4, norm_kwargs={"num_groups": 32})  # the user's G is kept
    assert {m.num_channels: m.num_groups for m in _norms(explicit)}[24] == 24


def test_describe_models_gives_one_line_per_model():
    lines = describe_models()
    assert len(lines) == len(list_models())
    line = next(line for line in lines if line.startswith("slowfast_r50 "))
    assert "pytorchvideo" in line and "34.6M" in line and "32x224" in line
    assert "28.0M" in next(line for line in lines if line.startswith("i3d_r50 "))

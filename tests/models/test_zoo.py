"""Every registered model: builds with GN and BN, runs a tiny clip to (N, classes), exports."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videogn import FrozenBatchNorm, GroupNorm3d
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


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_its_stem_and_blocks_and_zero_init_uses_them(name):
    """Zero-γ init and activation checkpointing read these declarations; a family without them fails here."""
    spec = get_model_spec(name)
    assert spec.residual_blocks is not None and spec.stem is not None, f"{name}: declare residual_blocks and stem"
    model = create_model(name, 5, norm="gn")
    modules = {id(m) for m in model.modules()}
    stem = spec.stem(model)
    assert isinstance(stem, nn.Module) and id(stem) in modules
    blocks = spec.residual_blocks(model)
    assert len(blocks) >= 1
    norms = [norm for _, norm in blocks if norm is not None]
    for block, norm in blocks:
        assert id(block) in modules and block is not stem
        if norm is not None:  # in its block, and a norm
            assert any(m is norm for m in block.modules()) and norm in _norms(block)
    if spec.family == "s3d":  # Inception blocks: concatenated branches, nothing to zero
        assert not norms
        return
    assert norms and all(not n.weight.any() for n in norms)  # zero-γ applied to exactly the declared norms
    assert len(norms) == len([m for m in _norms(model) if not m.weight.any()])
    fresh = create_model(name, 5, norm="gn", zero_init_last=False)
    assert all(n.weight.all() for _, n in get_model_spec(name).residual_blocks(fresh))


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_its_stages_and_freezing_them_stops_training_there(name):
    """Stage freezing (model.freeze_stages) reads ``ModelSpec.stages``: the stem first, then stages that
    hold every residual block exactly once, never the classifier; a family without them fails here."""
    from videogn.models import classifier_name, freeze_stages

    spec = get_model_spec(name)
    assert spec.stages is not None, f"{name}: declare stages"
    model = create_model(name, 5, norm="bn")
    stages = spec.stages(model)
    assert len(stages) >= 2 and stages[0] is spec.stem(model)
    owned = [{id(p) for p in stage.parameters()} for stage in stages]
    assert all(owned) and sum(map(len, owned)) == len(set().union(*owned))  # each non-empty, disjoint
    classifier = model.get_submodule(classifier_name(model))  # new heads and the head's rate use it
    assert classifier.weight.shape[0] == 5
    head = {id(p) for p in classifier.parameters()}
    assert head and not head & set().union(*owned)
    for block, _ in spec.residual_blocks(model):  # every block in exactly one stage
        assert sum(any(m is block for m in stage.modules()) for stage in stages) == 1
    frozen = set(freeze_stages(model, name, 2))
    params = dict(model.named_parameters())
    assert {id(params[n]) for n in frozen} == owned[0] | owned[1]
    assert all(p.requires_grad == (n not in frozen) for n, p in params.items())
    model.train()
    in_model = {id(m) for m in model.modules()}  # S3D's stages are Sequentials over the model's modules
    assert not any(m.training for stage in stages[:2] for m in stage.modules() if id(m) in in_model)
    assert all(m.training for m in stages[2].modules() if id(m) in in_model)
    with pytest.raises(ValueError, match=f"freeze_stages must be an int in \\[0, {len(stages)}\\]"):
        freeze_stages(model, name, len(stages) + 1)


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
    # the one rule (videogn.layers.resolve_num_groups): a G that divides C is kept, one that does not
    # is lowered to a divisor that keeps 2 channels per group
    explicit = create_model("x3d_s", 4, norm_kwargs={"num_groups": 24})
    assert {m.num_channels: m.num_groups for m in _norms(explicit)}[24] == 24
    adjusted = create_model("x3d_s", 4, norm_kwargs={"num_groups": 32})
    assert {m.num_channels: m.num_groups for m in _norms(adjusted)}[24] == 12


def test_describe_models_gives_one_line_per_model():
    lines = describe_models()
    assert len(lines) == len(list_models())
    line = next(line for line in lines if line.startswith("slowfast_r50 "))
    assert "pytorchvideo" in line and "34.6M" in line and "32x224" in line
    assert "28.0M" in next(line for line in lines if line.startswith("i3d_r50 "))

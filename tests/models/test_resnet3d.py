"""I3D / C2D ResNets: layout, shapes for any clip length, every norm, zero-γ, fusion, memory format."""

import functools
import math

import pytest
import torch
from torch import nn

from videogn import FrozenBatchNorm, GroupNorm3d
from videogn.models import BasicBlock3d, Bottleneck3d, ClipMaxPool3d, create_model, get_model_spec, list_models
from videogn.models.registry import i3d_inflation

# The default geometry at narrow widths: same strides and kernels as i3d_r50, a fraction of the cost.
NARROW_WIDTHS = dict(widths=(4, 8, 16, 32), stem_width=8)
NARROW = dict(NARROW_WIDTHS, norm_kwargs={"num_groups": 4})


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_conv_kt(model: nn.Module) -> list[list[int]]:
    return [[blk.conv1.kernel_size[0] for blk in getattr(model, f"layer{i}")] for i in range(1, 5)]


def test_registry_lists_required_models():
    assert {"i3d_r18", "i3d_r34", "i3d_r50", "i3d_r101", "c2d_r50", "i3d_tiny"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'i3d_r51'.*i3d_r50"):
        create_model("i3d_r51", 10)


def test_unknown_keyword_is_named():
    with pytest.raises(TypeError, match="stem_widht"):
        create_model("i3d_tiny", 10, stem_widht=8)


@pytest.mark.parametrize("bad", [dict(dropout=1.0), dict(num_classes=-1), dict(temporal_padding="reflect")])
def test_bad_arguments_raise_with_name(bad):
    kwargs = dict(num_classes=10)
    kwargs.update(bad)
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        create_model("i3d_tiny", **kwargs)


def test_unknown_activation_lists_names():
    with pytest.raises(ValueError, match="act_layer.*relu"):
        create_model("i3d_tiny", 10, act_layer="tanhh")


def test_i3d_r50_inflation_pattern_is_the_nonlocal_baseline():
    model = create_model("i3d_r50", 10, **NARROW)
    assert first_conv_kt(model) == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    assert model.stem.conv.kernel_size == (5, 7, 7) and model.stem.conv.stride == (2, 2, 2)
    assert model.stem.pool.kernel_size == (2, 3, 3) and model.stem.pool.stride == (2, 2, 2)
    assert model.pool2.kernel_size == (2, 1, 1) and model.pool2.stride == (2, 1, 1)
    for block in model.modules():
        if isinstance(block, Bottleneck3d):  # only the first 1x1 is inflated, to 3x1x1
            assert block.conv1.kernel_size in ((1, 1, 1), (3, 1, 1))
            assert block.conv2.kernel_size == (1, 3, 3) and block.conv3.kernel_size == (1, 1, 1)


def test_inflation_patterns_for_other_depths():
    assert i3d_inflation((3, 4, 23, 3))[2] == tuple(1 - j % 2 for j in range(23))
    r18 = create_model("i3d_r18", 10, **NARROW)
    assert first_conv_kt(r18) == [[3, 3], [3, 1], [3, 1], [1, 3]]
    assert all(isinstance(b, BasicBlock3d) for b in r18.modules() if isinstance(b, (BasicBlock3d, Bottleneck3d)))
    r34 = create_model("i3d_r34", 10, **NARROW)
    assert first_conv_kt(r34) == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    assert get_model_spec("i3d_r101").kwargs["layers"] == (3, 4, 23, 3)


def test_c2d_has_no_temporal_kernels():
    model = create_model("c2d_r50", 10, **NARROW)
    kts = [m.kernel_size[0] for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert len(kts) == 53 and set(kts) == {1}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_i3d_r50_parameter_count_matches_pytorchvideo():
    """Independent builder: pytorchvideo's hub i3d_r50 / c2d_r50 (same convs, norms and fc).

    pytorchvideo uses temporal stride 1 in its stem (its 8x8 checkpoint setting); strides carry
    no parameters, so the counts must agree exactly, for BN and for GN (same γ/β per channel).
    """
    from pytorchvideo.models.hub.resnet import c2d_r50, i3d_r50

    ref = i3d_r50(pretrained=False, model_num_class=400)
    ours = create_model("i3d_r50", 400, norm="bn")
    assert n_params(ours) == n_params(ref) == 28_043_472
    ref_gn = i3d_r50(pretrained=False, model_num_class=400, norm=GroupNorm3d)
    assert n_params(create_model("i3d_r50", 400)) == n_params(ref_gn) == n_params(ref)
    # Same conv kernels, block by block: the 3x1x1 inflation lands on the same blocks.
    ref_kt = [[blk.branch2.conv_a.kernel_size[0] for blk in ref.blocks[i].res_blocks] for i in (1, 3, 4, 5)]
    assert ref_kt == first_conv_kt(ours)
    shapes = lambda m: sorted(tuple(c.weight.shape) for c in m.modules() if isinstance(c, nn.Conv3d))
    assert shapes(ref) == shapes(ours)
    assert n_params(create_model("c2d_r50", 400, norm="bn")) == n_params(c2d_r50(pretrained=False, model_num_class=400))


def test_i3d_r50_forward_at_tiny_input():
    model = create_model("i3d_r50", 7).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 8, 64, 64))
        logits = model.forward_head(feats)
    assert feats.shape == (1, 2048, 1, 2, 2)
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()


@pytest.mark.parametrize("t", [4, 5, 7, 8, 16, 31, 32, 64, 128])
def test_output_shape_for_clip_lengths(t):
    model = create_model("i3d_r50", 5, **NARROW).eval()
    h, w = 40, 57  # odd sizes: no divisibility needed
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, t, h, w))
        logits = model(torch.randn(2, 3, t, h, w))
    # conv1 /2 and both temporal pools /2 with ceil semantics: ceil(T / 8) frames.
    assert feats.shape == (1, 32 * 4, math.ceil(t / 8), math.ceil(h / 32), math.ceil(w / 32))
    assert logits.shape == (2, 5)


@pytest.mark.parametrize("t", [1, 2, 3, 8, 13])
def test_tiny_model_short_clips(t):
    model = create_model("i3d_tiny", 3)
    feats = model.forward_features(torch.randn(2, 3, t, 64, 64))
    assert feats.shape == (2, 128, math.ceil(t / 2), 2, 2)


def test_clip_max_pool_never_drops_frames():
    pool = ClipMaxPool3d((2, 1, 1), (2, 1, 1))
    x = torch.arange(5.0).view(1, 1, 5, 1, 1)  # (N, C, T, H, W)
    assert pool(x).flatten().tolist() == [1.0, 3.0, 4.0]  # last window: frame 4 and its copy
    assert pool(x[:, :, :1]).flatten().tolist() == [0.0]


def test_wrong_input_shape_is_named():
    model = create_model("i3d_tiny", 3)
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\).*\(2, 3, 64, 64\)"):
        model(torch.randn(2, 3, 64, 64))


NORMS = ["gn", "bn", "syncbn", "frozen_bn", "ln", "in", "none", functools.partial(GroupNorm3d, group_size=4)]


@pytest.mark.parametrize("norm", NORMS, ids=lambda n: n if isinstance(n, str) else "partial_gn")
def test_every_norm_takes_a_training_step(norm):
    torch.manual_seed(0)
    model = create_model("i3d_tiny", 4, norm=norm, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(3, 3, 4, 32, 32), torch.tensor([0, 1, 3])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.stem.conv.weight.grad.abs().sum() > 0  # gradients reach the stem
    opt.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "stem.conv.weight" in changed and "fc.weight" in changed
    norm_type = type(model.stem.norm)
    if norm == "frozen_bn":
        assert norm_type is FrozenBatchNorm and not any("norm" in k and "running" in k for k in changed)
    if norm == "bn":
        assert "stem.norm.running_mean" in changed  # BN still tracks statistics


@pytest.mark.parametrize("norm", ["gn", "bn", "ln"])
def test_zero_gamma_in_each_block_last_norm(norm):
    norm_kwargs = {"num_groups": 4} if norm == "gn" else None
    model = create_model("i3d_r18", 10, norm=norm, norm_kwargs=norm_kwargs, **NARROW_WIDTHS)
    blocks = [b for b in model.modules() if isinstance(b, BasicBlock3d)]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.count_nonzero(block.last_norm.weight) == 0
        assert torch.all(block.norm1.weight == 1)
    assert torch.all(model.stem.norm.weight == 1)
    kept = create_model("i3d_r18", 10, norm=norm, norm_kwargs=norm_kwargs, zero_init_last=False, **NARROW_WIDTHS)
    assert all(torch.all(b.last_norm.weight == 1) for b in kept.modules() if isinstance(b, BasicBlock3d))


def test_gn_fuses_relu_and_matches_unfused():
    torch.manual_seed(0)
    fused = create_model("i3d_tiny", 5, dropout=0.0, zero_init_last=False)
    plain = create_model("i3d_tiny", 5, dropout=0.0, zero_init_last=False, fuse_norm_act=False)
    plain.load_state_dict(fused.state_dict())  # fusion changes no state-dict key
    assert fused.stem.norm.activation == "relu" and isinstance(fused.stem.act, nn.Identity)
    assert plain.stem.norm.activation is None and isinstance(plain.stem.act, nn.ReLU)
    assert fused.layer1[0].last_norm.activation is None  # the residual add comes before the act
    x = torch.randn(2, 3, 4, 32, 32)
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-6)
    bn = create_model("i3d_tiny", 5, norm="bn")
    assert isinstance(bn.stem.act, nn.ReLU)  # other norms keep a separate activation
    gelu = create_model("i3d_tiny", 5, act_layer="gelu")
    assert gelu.stem.norm.activation is None and isinstance(gelu.stem.act, nn.GELU)
    silu = create_model("i3d_tiny", 5, act_layer=functools.partial(nn.SiLU, inplace=False))
    assert silu.stem.norm.activation == "silu"


@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_channels_last_3d_matches_contiguous(norm):
    torch.manual_seed(0)
    model = create_model("i3d_tiny", 6, norm=norm, zero_init_last=False).eval()
    x = torch.randn(2, 3, 8, 48, 48)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last_3d)
        out = model_cl(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_forward_is_features_then_head_and_dropout_is_there():
    model = create_model("i3d_tiny", 6, dropout=0.3).eval()
    assert model.dropout.p == 0.3
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
    headless = create_model("i3d_tiny", 0).eval()
    assert headless(x).shape == (1, headless.num_features)


def test_replicate_padding_keeps_a_static_clip_static():
    model = create_model("i3d_tiny", 3, temporal_padding="replicate", zero_init_last=False).eval()
    clip = torch.randn(1, 3, 1, 32, 32).expand(-1, -1, 6, -1, -1)  # (N, C, T, H, W), constant in T
    with torch.no_grad():
        feats = model.forward_features(clip)
    torch.testing.assert_close(feats, feats[:, :, :1].expand_as(feats), rtol=0, atol=1e-6)


def test_norm_with_built_in_activation_is_refused():
    # it would act after each block's last norm too, before the residual add
    with pytest.raises(ValueError, match="activation='relu'.*act_layer"):
        create_model("i3d_tiny", 3, norm=functools.partial(GroupNorm3d, num_groups=8, activation="relu"))


def moving_bar_clips(direction: int, n: int, t: int = 8, size: int = 32) -> torch.Tensor:
    """Clips of a vertical bar sweeping right (direction 1) or left (-1); both classes show the
    same set of frames, only their order differs."""
    clips = torch.zeros(n, 3, t, size, size)  # (N, C, T, H, W)
    for i in range(n):
        start = int(torch.randint(0, size - 3 * t, ()))
        for f in range(t):
            x = start + 3 * (f if direction > 0 else t - 1 - f)
            clips[i, :, f, :, x:x + 3] = 1.0
    return clips


def test_tiny_model_learns_motion_direction():
    torch.manual_seed(0)
    x = torch.cat([moving_bar_clips(1, 8), moving_bar_clips(-1, 8)])
    y = torch.tensor([0] * 8 + [1] * 8)
    model = create_model("i3d_tiny", 2, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert nn.functional.cross_entropy(logits, y) < 0.05
    assert torch.equal(logits.argmax(1), y)

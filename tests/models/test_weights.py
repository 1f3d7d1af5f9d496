"""create_model(..., weights=...): videogn and pytorchvideo checkpoints, strictness, BN vs GN."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from videogn.models import create_model

_I3D_AS_PYTORCHVIDEO = dict(stem_stride=(1, 2, 2), pool1_kernel=(1, 3, 3), pool1_stride=(1, 2, 2))


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine, so a mis-mapped key changes the logits."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


def _pytorchvideo(name: str, t: int, s: int) -> nn.Module:
    from pytorchvideo.models import hub

    torch.manual_seed(0)
    if name == "i3d_r50":  # temporal stride 2 in its stage-1 pool, spatial 32
        model = hub.i3d_r50(pretrained=False, head_pool_kernel_size=(t // 2, s // 32, s // 32))
    elif name == "slow_r50":
        from pytorchvideo.models.resnet import create_resnet  # hub.slow_r50's settings; it fixes the head pool

        model = create_resnet(model_depth=50, stem_conv_kernel_size=(1, 7, 7), head_pool_kernel_size=(t, s // 32, s // 32))
    else:
        from pytorchvideo.models.x3d import create_x3d  # hub.x3d_s fixes the clip its head pools

        model = create_x3d(input_clip_length=t, input_crop_size=s, head_activation=None)
    return _randomise_bn(model).eval()


@pytest.mark.parametrize("name", ["i3d_r50", "slow_r50", "x3d_s"])
@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_pytorchvideo_state_dict_gives_the_same_logits(name, norm):
    t, s = 8, 64
    ref = _pytorchvideo(name, t, s)
    extra = _I3D_AS_PYTORCHVIDEO if name == "i3d_r50" else {}
    ours = create_model(name, 400, norm=norm, weights={"model_state": ref.state_dict()}, **extra).eval()
    x = torch.randn(2, 3, t, s, s)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


def test_videogn_checkpoint_file_round_trips(tmp_path):
    src = create_model("i3d_tiny", 5, norm="gn")
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    torch.save({"model": src.state_dict(), "step": 3}, tmp_path / "ckpt.pt")
    torch.save(src.state_dict(), tmp_path / "bare.pt")
    x = torch.randn(1, 3, 4, 32, 32)
    for path in ("ckpt.pt", "bare.pt"):
        dst = create_model("i3d_tiny", 5, norm="gn", weights=str(tmp_path / path)).eval()
        with torch.no_grad():
            torch.testing.assert_close(dst(x), src.eval()(x))


def test_bn_checkpoint_into_gn_model_is_an_error_naming_the_fix():
    bn = create_model("i3d_tiny", 5, norm="bn").state_dict()
    with pytest.raises(ValueError, match="BatchNorm statistics.*norm='bn' or norm='frozen_bn'"):
        create_model("i3d_tiny", 5, norm="gn", weights=bn)
    with pytest.raises(ValueError, match="BatchNorm statistics"):
        create_model("i3d_tiny", 5, norm="gn", weights=bn, strict=False)


def test_missing_and_unexpected_keys_raise_unless_not_strict(caplog):
    state = create_model("i3d_tiny", 5, norm="gn").state_dict()
    state.pop("stem.conv.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="1 missing key.*stem.conv.weight.*1 unexpected key.*extra.weight"):
        create_model("i3d_tiny", 5, norm="gn", weights=state)
    with caplog.at_level(logging.WARNING, logger="videogn.models.weights"):
        create_model("i3d_tiny", 5, norm="gn", weights=state, strict=False)
    assert "stem.conv.weight" in caplog.text and "extra.weight" in caplog.text


def test_classifier_of_another_size_is_reinitialised_with_a_message(caplog):
    src = create_model("i3d_tiny", 400, norm="gn")
    with caplog.at_level(logging.INFO, logger="videogn.models.weights"):
        dst = create_model("i3d_tiny", 7, norm="gn", weights=src.state_dict())
    assert "classifier 'fc'" in caplog.text
    assert dst.fc.weight.shape == (7, 128)
    torch.testing.assert_close(dst.stem.conv.weight, src.stem.conv.weight)
    with pytest.raises(ValueError, match="stem.conv.weight.*shape"):
        create_model("i3d_tiny", 7, norm="gn", weights=src.state_dict(), stem_width=8)


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18", "s3d"])
def test_torchvision_video_state_dict_gives_the_same_logits(name):
    """docs/models.md's torchvision K400 checkpoints: their state dicts load strictly with norm="bn"."""
    import torchvision.models.video as tvv

    torch.manual_seed(0)
    ref = _randomise_bn(getattr(tvv, name)(weights=None)).eval()
    ref.avgpool = nn.AdaptiveAvgPool3d(1)  # S3D's is fixed to its 16x224 clip; the ResNets' already global
    bn = {"eps": 1e-3} if name == "s3d" else None  # torchvision's S3D builds BatchNorm3d(eps=0.001)
    ours = create_model(name, 400, norm="bn", norm_kwargs=bn, weights=ref.state_dict()).eval()
    x = torch.randn(1, 3, 8, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.double()(x), ref.double()(x), atol=1e-10, rtol=1e-10)

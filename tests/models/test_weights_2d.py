"""The paper's first step with a real 2-D source: timm's GroupNorm ResNet-50 (``resnet50_gn``, built
here with random weights) inflated into ``i3d_r50``, directly and through ``model.weights_2d``;
``model.weights`` / ``model.weights_2d`` errors name the field and the path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from videogn.config import ConfigError, validate
from videogn.engine.build import build_model
from videogn.models import create_model, inflate_from_2d

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def resnet50_gn() -> nn.Module:
    """timm's ``resnet50_gn``, random, with GN affine far from identity (so copying it matters)."""
    torch.manual_seed(0)
    net = timm.create_model("resnet50_gn", pretrained=False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture
def saved_2d(resnet50_gn: nn.Module, tmp_path: Path) -> Path:
    path = tmp_path / "resnet50_gn.pth"
    torch.save(resnet50_gn.state_dict(), path)  # what a user saves from timm/resnet50_gn.a1h_in1k
    return path


def test_static_clip_gives_timm_pooled_features(resnet50_gn: nn.Module) -> None:
    net2d = copy.deepcopy(resnet50_gn).double()
    net3d = create_model("i3d_r50", 5, norm="gn", temporal_padding="replicate").double().eval()
    report = inflate_from_2d(net3d, net2d.state_dict(), strict=True)
    assert report.ok and report.skipped == ["fc.weight", "fc.bias"] and not report.dropped_running_stats
    frame = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    clip = frame.unsqueeze(2).expand(-1, -1, 8, -1, -1).contiguous()  # (N, C, T, H, W), one frame repeated
    with torch.no_grad():
        ref = net2d.forward_head(net2d.forward_features(frame), pre_logits=True)  # (N, 2048)
        feats = net3d.forward_features(clip)  # (N, 2048, T', H', W')
    torch.testing.assert_close(feats.mean(dim=(2, 3, 4)), ref, rtol=1e-10, atol=1e-10)
    assert ref.abs().max() > 1e-3  # not a trivially zero comparison


def test_hydra_weights_2d_inflates_at_build(compose, resnet50_gn: nn.Module, saved_2d: Path) -> None:
    conf = validate(compose("train", "model=i3d_r50", f"model.weights_2d={saved_2d}", tiny=True))
    assert conf.model.weights_2d == str(saved_2d)
    model = build_model(conf.model, conf.norm, num_classes=3)
    w2d = resnet50_gn.state_dict()["conv1.weight"].float()  # (64, 3, 7, 7)
    kt = model.stem.conv.weight.shape[2]
    assert kt == 5
    torch.testing.assert_close(model.stem.conv.weight, w2d.unsqueeze(2).expand(-1, -1, kt, -1, -1) / kt)
    # the block-final γ comes from the checkpoint, not create_model's zero init
    torch.testing.assert_close(model.layer1[0].last_norm.weight, resnet50_gn.layer1[0].bn3.weight.float())
    # without load_weights (evaluation rebuilds a trained run) nothing is read
    fresh = build_model(conf.model, conf.norm, num_classes=3, load_weights=False)
    assert not torch.equal(fresh.stem.conv.weight, model.stem.conv.weight)


def test_hydra_weights_loads_a_video_checkpoint(compose, tmp_path: Path) -> None:
    source = create_model("i3d_tiny", 3, norm="gn")
    path = tmp_path / "video.pt"
    torch.save({"model": source.state_dict()}, path)
    conf = validate(compose("train", f"model.weights={path}", tiny=True))
    model = build_model(conf.model, conf.norm, num_classes=3)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def _build(compose, *overrides: str) -> nn.Module:
    conf = validate(compose("train", *overrides, tiny=True))
    return build_model(conf.model, conf.norm, num_classes=3)


@pytest.mark.parametrize("field", ["weights", "weights_2d"])
def test_bad_checkpoint_files_name_the_field_and_path(compose, tmp_path: Path, field: str) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match=rf"model\.{field} .*nope\.pth.*not found"):
        _build(compose, "model=i3d_r50", f"model.{field}={missing}")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ConfigError, match=rf"model\.{field}=.*garbage\.pth.* cannot be used"):
        _build(compose, "model=i3d_r50", f"model.{field}={garbage}")


def test_checkpoint_of_another_architecture_is_refused(compose, resnet50_gn: nn.Module, saved_2d: Path,
                                                       tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.weights_2d=.*resnet50_gn\.pth.* cannot be used.*'x3d_xs' does not take an "
                       r"inflated 2-D ResNet.*inflate into one of .*i3d_r50"):
        _build(compose, "model=x3d_xs", f"model.weights_2d={saved_2d}")
    r18 = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), r18)
    with pytest.raises(ConfigError, match=r"model\.weights_2d=.*resnet18\.pth.* cannot be used"):
        _build(compose, "model=i3d_r50", f"model.weights_2d={r18}")
    video = tmp_path / "i3d_tiny.pt"
    torch.save(create_model("i3d_tiny", 3).state_dict(), video)
    with pytest.raises(ConfigError, match=r"model\.weights=.*i3d_tiny\.pt.* cannot be used"):
        _build(compose, "model=i3d_r18", f"model.weights={video}")


def test_weights_and_weights_2d_together_are_refused(compose, saved_2d: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.weights_2d must be null when model\.weights is set"):
        validate(compose("train", f"model.weights={saved_2d}", f"model.weights_2d={saved_2d}", tiny=True))


@pytest.mark.parametrize("arch,name", [("resnet18", "i3d_r18"), ("resnet50", "i3d_r50")])
def test_hydra_weights_2d_takes_torchvision_bn_resnets(compose, tmp_path: Path, arch: str, name: str) -> None:
    import torchvision

    torch.manual_seed(0)
    net2d = getattr(torchvision.models, arch)(weights=None)
    with torch.no_grad():
        net2d.bn1.running_mean.uniform_(-0.2, 0.2)
    path = tmp_path / f"{arch}.pth"
    torch.save(net2d.state_dict(), path)  # e.g. ResNet50_Weights.IMAGENET1K_V2's state dict
    model = _build(compose, f"model={name}", "norm=bn", f"model.weights_2d={path}")
    torch.testing.assert_close(model.stem.norm.running_mean, net2d.bn1.running_mean)
    torch.testing.assert_close(model.stem.conv.weight[:, :, 0] * model.stem.conv.weight.shape[2], net2d.conv1.weight)


def test_weight_standardization_builds_gn_ws_and_loads_plain_checkpoints(compose, tmp_path: Path) -> None:
    from videogn import WSConv3d

    source = create_model("i3d_tiny", 3, norm="gn")
    path = tmp_path / "video.pt"
    torch.save({"model": source.state_dict()}, path)
    model = _build(compose, "model.weight_standardization=true", f"model.weights={path}")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(type(m) is WSConv3d for m in convs)  # every conv, same keys as nn.Conv3d
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not any(isinstance(m, WSConv3d) for m in _build(compose).modules())

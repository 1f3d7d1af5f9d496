"""2-D -> 3-D inflation: the static-clip property, and the report (matched/missing/unexpected/dropped).

The 2-D references are torchvision ResNets built here with random weights and random norm
parameters (GroupNorm via ``norm_layer``, which also has the key layout of timm's ``resnet50_gn``).
Comparisons run in float64, so "exact" means agreement to ~1e-12.
"""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from videogn import FrozenBatchNorm
from videogn.models import ClipMaxPool3d, InflationReport, create_model, inflate_from_2d

F64 = dict(rtol=1e-10, atol=1e-10)


def gn2d(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


def reference_2d(arch: str, norm: str, num_classes: int = 7, seed: int = 0) -> nn.Module:
    """A random 2-D torchvision ResNet whose norms are far from identity (so copying them matters)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(
        weights=None, num_classes=num_classes, norm_layer=gn2d if norm == "gn" else nn.BatchNorm2d
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        model.fc.bias.uniform_(-1, 1)
    return model.double().eval()


def features_2d(model: nn.Module, frame: torch.Tensor) -> torch.Tensor:
    body = nn.Sequential(*list(model.children())[:-2])  # up to layer4, before avgpool/fc
    return body(frame)


def static_clip(frame: torch.Tensor, t: int) -> torch.Tensor:
    return frame.unsqueeze(2).expand(-1, -1, t, -1, -1).contiguous()  # (N, C, T, H, W)


@pytest.mark.parametrize(
    "arch,name",
    [("resnet18", "i3d_r18"), ("resnet50", "i3d_r50")],
)
def test_static_clip_gives_2d_output_with_gn_and_replicate_padding(arch, name):
    """GN target, GN source (timm resnet50_gn layout): features on every frame and logits agree."""
    net2d = reference_2d(arch, "gn")
    net3d = create_model(name, 7, norm="gn", temporal_padding="replicate").double().eval()
    report = inflate_from_2d(net3d, net2d.state_dict(), skip_classifier=False, strict=True)
    assert report.ok and not report.dropped_running_stats
    frame = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref_feats, ref_logits = features_2d(net2d, frame), net2d(frame)
        feats = net3d.forward_features(static_clip(frame, 16))  # (N, C, 2, 1, 1)
        logits = net3d(static_clip(frame, 16))
    assert feats.shape[2] == 2
    for t in range(feats.shape[2]):
        torch.testing.assert_close(feats[:, :, t], ref_feats, **F64)
    torch.testing.assert_close(logits, ref_logits, **F64)


def exact_frame_range(model: nn.Module, t: int) -> tuple[int, int]:
    """Output frames whose temporal receptive field never touches zero padding, for a clip of t.

    Walks the I3D layout: the stem conv and the pools narrow the valid interval [a, b] by their
    windows; each block whose first conv has kt = 3 (stride 1, pad 1) trims one frame per side.
    """
    a, b = 0, t - 1

    def window(a: int, b: int, k: int, s: int, p: int) -> tuple[int, int]:
        return -(-(a + p) // s), (b + p - k + 1) // s  # j with [j*s - p, j*s - p + k - 1] in [a, b]

    conv = model.stem.conv
    a, b = window(a, b, conv.kernel_size[0], conv.stride[0], conv.padding[0])
    for stage in ("stem.pool", "layer1", "pool2", "layer2", "layer3", "layer4"):
        module = model.get_submodule(stage)
        if isinstance(module, ClipMaxPool3d):
            a, b = window(a, b, module.kernel_size[0], module.stride[0], 0)
        else:
            for block in module:
                trim = block.conv1.kernel_size[0] // 2
                a, b = a + trim, b - trim
    return a, b


def test_static_clip_center_frames_exact_with_zero_padding_and_frozen_bn():
    """Zero temporal padding (the default): exact exactly where the receptive field is inside the clip.

    Needs a per-channel affine norm (frozen BN); with GN the border frames enter the statistics.
    """
    net2d = reference_2d("resnet18", "bn")
    net3d = create_model("i3d_r18", 7, norm="frozen_bn").double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # frozen BN keeps the statistics: no warning
        report = inflate_from_2d(net3d, net2d.state_dict())
    assert not report.missing and not report.unexpected
    assert report.dropped_running_stats == [k for k in net2d.state_dict() if k.endswith("num_batches_tracked")]
    frame = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    t = 96
    with torch.no_grad():
        ref = features_2d(net2d, frame)
        feats = net3d.forward_features(static_clip(frame, t))  # (1, 512, 12, 1, 1)
    a, b = exact_frame_range(net3d, t)
    assert (a, b) == (5, 6)
    for j in range(feats.shape[2]):
        if a <= j <= b:
            torch.testing.assert_close(feats[:, :, j], ref, **F64)
        else:  # the padding reaches these frames: they differ
            assert (feats[:, :, j] - ref).abs().max() > 1e-8


@pytest.mark.slow
def test_static_clip_center_frames_exact_i3d_r50_zero_padding():
    net2d = reference_2d("resnet50", "bn")
    net3d = create_model("i3d_r50", 7, norm="frozen_bn").double().eval()
    inflate_from_2d(net3d, net2d.state_dict())
    frame = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = features_2d(net2d, frame)
        feats = net3d.forward_features(static_clip(frame, 160))  # (1, 2048, 20, 1, 1)
    a, b = exact_frame_range(net3d, 160)
    assert b >= a
    for j in range(a, b + 1):
        torch.testing.assert_close(feats[:, :, j], ref, **F64)


def test_bn_to_gn_drops_running_stats_with_warning_and_copies_affine():
    net2d = reference_2d("resnet18", "bn")
    net3d = create_model("i3d_r18", 10)
    with pytest.warns(UserWarning, match="dropped 40 BatchNorm running statistics"):
        report = inflate_from_2d(net3d, net2d.state_dict())
    assert isinstance(report, InflationReport)
    assert len(report.dropped_running_stats) == 60  # mean, var, num_batches_tracked of 20 BNs
    assert not report.missing and not report.unexpected and not report.mismatched
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]
    assert len(report.inflated) == 20 and len(report.matched) == 20 + 2 * 20
    sd2 = net2d.state_dict()
    torch.testing.assert_close(net3d.stem.norm.weight.double(), sd2["bn1.weight"])
    torch.testing.assert_close(net3d.layer2[0].last_norm.bias.double(), sd2["layer2.0.bn2.bias"])
    torch.testing.assert_close(net3d.layer3[0].downsample.norm.weight.double(), sd2["layer3.0.downsample.1.weight"])
    # conv1 5x7x7: the 7x7 kernel repeated five times, each copy divided by 5
    w3 = net3d.stem.conv.weight.double()
    assert w3.shape == (64, 3, 5, 7, 7)
    for t in range(5):
        torch.testing.assert_close(w3[:, :, t], sd2["conv1.weight"] / 5, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(w3.sum(2), sd2["conv1.weight"], rtol=1e-5, atol=1e-6)
    assert "dropped" in str(report) and "60 running stats dropped" in str(report)


@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_bn_targets_keep_running_stats(norm):
    net2d = reference_2d("resnet18", "bn")
    net3d = create_model("i3d_r18", 10, norm=norm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped that matters: no warning
        report = inflate_from_2d(net3d, net2d.state_dict())
    sd2 = net2d.state_dict()
    torch.testing.assert_close(net3d.layer1[1].norm1.running_var.double(), sd2["layer1.1.bn1.running_var"])
    torch.testing.assert_close(net3d.stem.norm.running_mean.double(), sd2["bn1.running_mean"])
    if norm == "frozen_bn":
        assert isinstance(net3d.stem.norm, FrozenBatchNorm)
    else:
        assert not report.dropped_running_stats


def test_gn_source_into_bn_target_reports_missing_statistics():
    net3d = create_model("i3d_r18", 10, norm="bn")
    report = inflate_from_2d(net3d, reference_2d("resnet18", "gn").state_dict())
    assert "stem.norm.running_mean" in report.missing and "stem.norm.weight" in report.matched
    assert not report.ok


def test_classifier_loaded_when_asked_and_mismatch_reported():
    net2d = reference_2d("resnet18", "gn", num_classes=10)
    same = create_model("i3d_r18", 10)
    report = inflate_from_2d(same, net2d.state_dict(), skip_classifier=False)
    assert "fc.weight" in report.matched and not report.skipped
    torch.testing.assert_close(same.fc.bias.double(), net2d.fc.bias)
    other = create_model("i3d_r18", 5)
    report = inflate_from_2d(other, net2d.state_dict(), skip_classifier=False)
    assert any(m.startswith("fc.weight <- fc.weight") for m in report.mismatched)


def test_strict_raises_before_changing_the_model():
    net3d = create_model("i3d_r18", 10, in_channels=1)  # conv1 takes 1 channel: cannot inflate RGB
    before = net3d.stem.conv.weight.clone()
    before_norm = net3d.stem.norm.weight.clone()
    with pytest.raises(ValueError, match="stem.conv.weight <- conv1.weight"):
        inflate_from_2d(net3d, reference_2d("resnet18", "gn").state_dict(), strict=True)
    assert torch.equal(net3d.stem.conv.weight, before) and torch.equal(net3d.stem.norm.weight, before_norm)


def test_wrapped_and_prefixed_checkpoints_and_unexpected_keys():
    sd = {f"module.{k}": v for k, v in reference_2d("resnet18", "gn").state_dict().items()}
    sd["module.extra_head.weight"] = torch.zeros(3)
    net3d = create_model("i3d_r18", 10)
    report = inflate_from_2d(net3d, {"state_dict": sd, "epoch": 3})
    assert report.unexpected == ["extra_head.weight"]
    assert not report.missing and len(report.matched) == 60
    with pytest.raises(TypeError, match="state_dict_2d"):
        inflate_from_2d(net3d, [1, 2])

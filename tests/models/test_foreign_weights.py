"""Every supported (source, model) pair: a random network built with the source project's own code
and the registered model loaded from its state dict compute the same outputs; a checkpoint of
another geometry is refused, naming the model to use.

The sources' fixed-size average pools are made global, as the zoo does (equal at their default
clip), so the comparison can run on a small clip. pytorchvideo's X3D and R(2+1)D heads end in a
Softmax; videogn returns logits, so those are compared after a softmax.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videogn.layers import replace_children
from videogn.models import create_model, detect_layout, get_model_spec, inflate_from_2d, list_models, models_for

# (pytorchvideo hub name, registered model): docs/models.md lists the same pairs.
PYTORCHVIDEO = [
    ("i3d_r50", "pv_i3d_r50"), ("c2d_r50", "pv_c2d_r50"), ("slow_r50", "slow_r50"),
    ("slowfast_r50", "slowfast_r50"), ("x3d_xs", "x3d_xs"), ("x3d_s", "x3d_s"), ("x3d_m", "x3d_m"),
    ("r2plus1d_r50", "r2plus1d_r50"), ("csn_r101", "csn_r101"),
]
TORCHVISION_VIDEO = ["r3d_18", "mc3_18", "r2plus1d_18", "s3d"]
# (2-D ImageNet ResNet, registered model it inflates into)
RESNET_2D = [
    ("torchvision:resnet18", "i3d_r18"), ("torchvision:resnet34", "i3d_r34"), ("torchvision:resnet50", "i3d_r50"),
    ("torchvision:resnet101", "i3d_r101"), ("torchvision:resnet50", "c2d_r50"), ("timm:resnet50_gn", "i3d_r50"),
]
CLIP = (2, 3, 8, 64, 64)  # (N, C, T, H, W)
F32 = dict(atol=1e-5, rtol=1e-5)


def _randomise_norms(model: nn.Module) -> nn.Module:
    """Norm affine and BN statistics far from identity, so a mis-mapped key changes the outputs."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            c = m.weight.shape[0]
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    return model


def _global_pools(model: nn.Module) -> nn.Module:
    replace_children(model, lambda child, _: nn.AdaptiveAvgPool3d(1) if isinstance(child, nn.AvgPool3d) else None)
    return model


def _pytorchvideo_source(hub_name: str) -> nn.Module:
    from pytorchvideo.models import hub

    torch.manual_seed(0)
    return _global_pools(_randomise_norms(getattr(hub, hub_name)(pretrained=False))).eval()


def _torchvision_source(name: str) -> nn.Module:
    import torchvision.models.video as tvv

    torch.manual_seed(0)
    return _global_pools(_randomise_norms(getattr(tvv, name)(weights=None))).eval()


def _resnet_2d(source: str) -> nn.Module:
    project, arch = source.split(":")
    torch.manual_seed(0)
    if project == "timm":
        import timm

        net = timm.create_model(arch, pretrained=False)
    else:
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
    with torch.no_grad():
        net.fc.bias.uniform_(-1, 1)
    return _randomise_norms(net).eval()


@pytest.mark.parametrize("hub_name,name", PYTORCHVIDEO)
def test_pytorchvideo_checkpoint_loads_into_the_model_of_its_geometry(hub_name, name, tmp_path):
    ref = _pytorchvideo_source(hub_name)
    path = tmp_path / f"{hub_name}.pyth"
    torch.save({"model_state": ref.state_dict()}, path)  # pytorchvideo's file format
    ours = create_model(name, 400, norm="bn", weights=str(path)).eval()
    x = torch.randn(*CLIP)
    with torch.no_grad():
        want = ref([x[:, :, ::4], x]) if name == "slowfast_r50" else ref(x)  # slow path: every 4th frame
        got = ours(x)
    if any(isinstance(m, nn.Softmax) for m in ref.modules()):  # X3D, R(2+1)D: videogn gives logits
        assert hub_name.startswith(("x3d", "r2plus1d"))
        got = got.softmax(dim=1)
    assert got.shape == (2, 400)
    torch.testing.assert_close(got, want, **F32)


@pytest.mark.parametrize("name", TORCHVISION_VIDEO)
def test_torchvision_video_checkpoint_loads_into_the_same_model(name):
    ref = _torchvision_source(name)
    bn = {"eps": 1e-3} if name == "s3d" else None  # torchvision's S3D builds BatchNorm3d(eps=0.001)
    ours = create_model(name, 400, norm="bn", norm_kwargs=bn, weights=ref.state_dict()).eval()
    x = torch.randn(*CLIP)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **F32)


@pytest.mark.parametrize("source,name", RESNET_2D)
def test_2d_resnet_inflates_into_the_model_of_its_depth(source, name):
    """On a clip of one repeated frame (replicate temporal padding) the logits are the 2-D net's.

    In float64: the inflated kernels (2-D kernel / kt, kt times) sum in another order, which
    float32 rounding shows at ~1e-4.
    """
    net2d = _resnet_2d(source).double()
    norm = "gn" if source.endswith("_gn") else "bn"
    net3d = create_model(name, 1000, norm=norm, temporal_padding="replicate").double().eval()
    report = inflate_from_2d(net3d, net2d.state_dict(), skip_classifier=False, strict=True, name=name)
    assert report.inflated or name.startswith("c2d")
    frame = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    clip = frame.unsqueeze(2).expand(-1, -1, 4, -1, -1).contiguous()  # (N, C, T, H, W)
    with torch.no_grad():
        torch.testing.assert_close(net3d(clip), net2d(frame), atol=1e-10, rtol=1e-10)


def test_pytorchvideo_i3d_is_refused_by_the_nonlocal_i3d_naming_pv_i3d_r50():
    """The issue's case: every key fits i3d_r50, the strides do not."""
    sd = {"model_state": _pytorchvideo_source("i3d_r50").state_dict()}
    with pytest.raises(ValueError, match=r"pytorchvideo .*'i3d_r50' does not load.*load it into 'pv_i3d_r50'"):
        create_model("i3d_r50", 400, norm="bn", weights=sd)
    with pytest.raises(ValueError, match="load it into 'pv_c2d_r50'"):
        create_model("c2d_r50", 400, norm="bn", weights=_pytorchvideo_source("c2d_r50").state_dict())


def test_videogn_resnet3d_checkpoint_is_refused_by_pytorchvideo_geometry():
    sd = create_model("i3d_r50", 400, norm="bn").state_dict()
    with pytest.raises(ValueError, match=r"videogn ResNet3d .*'pv_i3d_r50' does not load.*load it into 'i3d_r50'"):
        create_model("pv_i3d_r50", 400, norm="bn", weights=sd)


def test_torchvision_video_checkpoint_is_refused_by_resnet3d_naming_its_model():
    sd = _torchvision_source("r3d_18").state_dict()
    with pytest.raises(ValueError, match="torchvision video.*load it into 'r3d_18'"):
        create_model("i3d_r18", 400, norm="bn", weights=sd)


def test_same_layout_other_shapes_names_the_model_that_fits():
    sd = _pytorchvideo_source("slow_r50").state_dict()
    with pytest.raises(ValueError, match="shape.*its shapes are those of 'slow_r50'"):
        create_model("pv_i3d_r50", 400, norm="bn", weights=sd)


def test_2d_and_video_checkpoints_go_through_their_own_entry_point():
    net2d = _resnet_2d("torchvision:resnet18").state_dict()
    with pytest.raises(ValueError, match="2-D ImageNet ResNet.*inflate it into i3d_r18"):
        create_model("i3d_r18", 400, norm="bn", weights=net2d)
    with pytest.raises(ValueError, match="'r3d_18' does not take an inflated 2-D ResNet.*i3d_r18"):
        inflate_from_2d(create_model("r3d_18", 400, norm="bn"), net2d, name="r3d_18")
    video = _pytorchvideo_source("i3d_r50").state_dict()
    with pytest.raises(ValueError, match="video checkpoint.*'pv_i3d_r50'"):
        inflate_from_2d(create_model("i3d_r50", 400, norm="bn"), video)


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_the_layout_of_its_own_state_dict(name):
    spec = get_model_spec(name)
    with torch.device("meta"):
        state = create_model(name, 5, norm="bn").state_dict()
    assert spec.layouts, f"{name}: ModelSpec.layouts is not declared"
    assert detect_layout(state) in spec.layouts
    matches = models_for(state)  # the X3D sizes share one network: they differ in the clip
    assert name in matches and {get_model_spec(n).family for n in matches} == {spec.family}

"""Video models from pytorchvideo and torchvision, rebuilt so that ``norm=`` reaches every norm.

Every builder returns a module mapping one (N, C, T, H, W) clip batch to (N, num_classes) logits;
fixed-size average pools are replaced by global ones (any T, H, W; equal to the original at its
default clip), softmax heads are dropped (logits out: pytorchvideo's X3D and R(2+1)D builders end
in a Softmax, so their outputs are ``create_model(...)(x).softmax(1)`` of these).

``pv_i3d_r50`` and ``pv_c2d_r50`` are pytorchvideo's own I3D and C2D ResNet-50 (8x8 setting: stem
temporal stride 1, 1x3x3 stem pool, 2x1x1 pool after res2), the networks its published
``I3D_8x8_R50.pyth`` / ``C2D_8x8_R50.pyth`` were trained as; videogn's ``i3d_r50`` / ``c2d_r50``
are the Non-local baseline's geometry (stem temporal stride 2, 2x3x3 stem pool), which has the same
weights and computes another function, so those checkpoints are refused there.

Each family declares its residual blocks with the norm closing each branch (zero-γ init,
activation checkpointing), its stem and its resolution stages (``ModelSpec.residual_blocks`` /
``stem`` / ``stages``: stage freezing), and the state-dict layout it loads (``ModelSpec.layouts``).

GroupNorm settings (``norm="gn"`` without ``norm_kwargs``): G = min(32, C // 2), then
GroupNorm3d's rule (largest divisor of C not above G), so no layer falls back to InstanceNorm:

- pytorchvideo ``slow_r50``, ``r2plus1d_r50``, ``csn_r101``: C in {64, ..., 2048}: 32 groups.
  ``slowfast_r50``: the same on the slow path; the fast path's C = 8, 16, 32 get 4, 8, 16 groups of 2.
- ``x3d_xs/s/m`` (C = 24, 48, 54, 96, 108, 192, 216, 432; the 2.25x bottlenecks give 54, 108, 216,
  432): 24 -> 12 groups of 2, 48 -> 24 of 2, 54 -> 27 of 2, 96 -> 32 of 3, 108 -> 27 of 4,
  192 -> 32 of 6, 216 -> 27 of 8, 432 -> 27 of 16 (the head's 2048-d layer has no norm).
- torchvision ``r2plus1d_18`` (C = 45, 144, 230, 460, 921 in the (2+1)D mid-planes, besides 64..512):
  45 -> 15 of 3, 144 -> 24 of 6, 230 -> 23 of 10, 460 -> 23 of 20, 921 -> 3 of 307 (921 = 3 x 307).
- ``r3d_18``, ``mc3_18``: C in {64, ..., 512}: 32 groups. ``s3d``: C = 16..64 -> C/2 groups of 2,
  112 -> 28 of 4, 144 -> 24 of 6, 208 -> 26 of 8, multiples of 32 -> 32 groups.

pytorchvideo builds norms as ``norm(num_features=C, eps=1e-5, momentum=0.1)``; here they are built
as ``norm_layer(C)`` (the same eps and momentum for BN); activations other than ReLU replace the
ReLUs everywhere (X3D keeps its inner Swish). torchvision's video ResNets hard-code
BatchNorm3d: they are converted with :func:`videogn.layers.convert_norm`. Norm and activation are
not fused in these families.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from torch import Tensor, nn

from videogn.layers import ActSpec, convert_norm, replace_children, resolve_act
from videogn.models.spec import BlockList, ModelSpec, register_model

__all__ = ["SlowFastFromClip"]

NormLayer = Callable[[int], nn.Module]


def _pv_norm(norm_layer: NormLayer) -> Callable[..., nn.Module]:
    """pytorchvideo calls ``norm(num_features=C, eps=..., momentum=...)``; videogn norms are ``norm(C)``."""

    def make(num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> nn.Module:
        return norm_layer(num_features)

    return make


def _global_pools(model: nn.Module) -> nn.Module:
    """Replace fixed-size average pools by global ones, so any clip size works."""
    replace_children(model, lambda child, _: nn.AdaptiveAvgPool3d(1) if isinstance(child, nn.AvgPool3d) else None)
    return model


def _replace_relu(model: nn.Module, act_layer: ActSpec) -> nn.Module:
    factory = resolve_act(act_layer)
    if isinstance(factory, functools.partial) and factory.func is nn.ReLU:
        return model
    replace_children(model, lambda child, _: factory() if isinstance(child, nn.ReLU) else None)
    return model


def _check_in_channels(name: str, in_channels: int) -> None:
    if in_channels != 3:
        raise ValueError(f"{name} takes RGB clips: in_channels must be 3, got {in_channels!r}")


class SlowFastFromClip(nn.Module):
    """pytorchvideo's SlowFast fed from one clip: slow = every ``alpha``-th frame, fast = all frames.

    Holds the network's ``blocks`` directly, so its state-dict keys are pytorchvideo's.
    """

    def __init__(self, net: nn.Module, alpha: int = 4) -> None:
        super().__init__()
        self.blocks = net.blocks
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a clip batch of shape (N, C, T, H, W), got {tuple(x.shape)}")
        # slow (N, C, ceil(T/alpha), H, W), fast (N, C, T, H, W)
        paths: Any = [x[:, :, :: self.alpha], x]
        for block in self.blocks:
            paths = block(paths)
        return paths


def _pv_blocks(model: nn.Module) -> BlockList:
    """pytorchvideo's residual blocks: ``ResBlock``, whose branch ends in ``branch2.norm_c``."""
    from pytorchvideo.models.resnet import ResBlock

    return [(m, m.branch2.norm_c) for m in model.modules() if isinstance(m, ResBlock)]


def _pv_stem(model: nn.Module) -> nn.Module:
    return model.blocks[0]  # SlowFast: both pathways' stems with their fusion


def _pv_stages(model: nn.Module) -> list[nn.Module]:
    """The stem, then each block holding a ``ResStage`` (SlowFast: both pathways' stage and their
    fusion); parameter-free pools between stages and the head are left out."""
    from pytorchvideo.models.resnet import ResStage

    rest = [b for b in model.blocks[1:] if any(isinstance(m, ResStage) for m in b.modules())]
    return [model.blocks[0], *rest]


def _tv_resnet_blocks(model: nn.Module) -> BlockList:
    """torchvision's video BasicBlocks: ``conv2`` is Sequential(conv, norm)."""
    return [(b, b.conv2[1]) for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]


def _tv_resnet_stem(model: nn.Module) -> nn.Module:
    return model.stem


def _tv_resnet_stages(model: nn.Module) -> list[nn.Module]:
    return [model.stem, model.layer1, model.layer2, model.layer3, model.layer4]


def _s3d_blocks(model: nn.Module) -> BlockList:
    """S3D's Inception blocks: concatenated branches, no residual, so no norm to zero."""
    from torchvision.models.video.s3d import SepInceptionBlock3D

    return [(m, None) for m in model.features if isinstance(m, SepInceptionBlock3D)]


def _s3d_stem(model: nn.Module) -> nn.Module:
    return model.features[0]


def _s3d_stages(model: nn.Module) -> list[nn.Module]:
    """Conv1a; pool, Conv2b, Conv2c, pool; Mixed_3b-3c, pool; Mixed_4b-4f, pool; Mixed_5b-5c. The
    slices are new Sequentials over the model's own modules (the same parameters)."""
    f = model.features
    return [f[0], f[1:5], f[5:8], f[8:14], f[14:]]


def _pytorchvideo(
    hub_name: str,
    *,
    num_classes: int,
    norm_layer: NormLayer,
    act_layer: ActSpec,
    dropout: float,
    in_channels: int,
    **kwargs: Any,
) -> nn.Module:
    from pytorchvideo.models import hub

    if hub_name == "r2plus1d_r50":  # its hub function fixes dropout_rate; it adds nothing else
        from pytorchvideo.models.r2plus1d import create_r2plus1d

        fn: Callable[..., nn.Module] = lambda pretrained, **kw: create_r2plus1d(**kw)
    else:
        fn = getattr(hub, hub_name)
    channel_kw: dict[str, Any] = (
        {"input_channels": (in_channels, in_channels)} if hub_name.startswith("slowfast") else {"input_channel": in_channels}
    )
    if hub_name.startswith(("x3d", "r2plus1d")):
        kwargs.setdefault("head_activation", None)  # logits, not softmax
    act = resolve_act(act_layer)
    model = fn(
        pretrained=False, model_num_class=num_classes, norm=_pv_norm(norm_layer), activation=act,
        dropout_rate=dropout, **channel_kw, **kwargs,
    )
    if hub_name.startswith("slowfast"):
        model = SlowFastFromClip(model, alpha=4)
    return _replace_relu(_global_pools(model), act_layer)


def _torchvision(
    tv_name: str,
    *,
    num_classes: int,
    norm_layer: NormLayer,
    act_layer: ActSpec,
    dropout: float,
    in_channels: int,
) -> nn.Module:
    import torchvision.models.video as tvv

    _check_in_channels(tv_name, in_channels)
    if tv_name == "s3d":
        model = tvv.s3d(weights=None, num_classes=num_classes, dropout=dropout, norm_layer=norm_layer)
    else:
        model = getattr(tvv, tv_name)(weights=None, num_classes=num_classes)
        if norm_layer is not nn.BatchNorm3d:
            convert_norm(model, to=norm_layer)
        # torchvision's video ResNets have no dropout; a parameter-free slot keeps their keys.
        model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(dropout))
    return _replace_relu(_global_pools(model), act_layer)


_PV = [  # (registry name, pytorchvideo hub name, family, default clip, description)
    ("pv_i3d_r50", "i3d_r50", "i3d", (8, 224),
     "I3D ResNet-50, pytorchvideo 8x8 geometry (loads I3D_8x8_R50.pyth): conv1 5x7x7 /(1,2,2), pools 1x3x3 and 2x1x1"),
    ("pv_c2d_r50", "c2d_r50", "c2d", (8, 224),
     "C2D ResNet-50, pytorchvideo 8x8 geometry (loads C2D_8x8_R50.pyth): conv1 1x7x7 /(1,2,2), pools 1x3x3 and 2x1x1"),
    ("x3d_xs", "x3d_xs", "x3d", (4, 160), "X3D-XS (pytorchvideo): expand-from-2D net, depthwise 3x3x3, SE, Swish"),
    ("x3d_s", "x3d_s", "x3d", (13, 160), "X3D-S (pytorchvideo)"),
    ("x3d_m", "x3d_m", "x3d", (16, 224), "X3D-M (pytorchvideo)"),
    ("slow_r50", "slow_r50", "slow", (8, 224), "Slow-only ResNet-50 (pytorchvideo 8x8): 1x7x7 stem, 3x1x1 in res4/res5"),
    ("slowfast_r50", "slowfast_r50", "slowfast", (32, 224),
     "SlowFast R50 (pytorchvideo 8x8): slow = every 4th frame of the clip, fast = all frames"),
    ("r2plus1d_r50", "r2plus1d_r50", "r2plus1d", (16, 224), "R(2+1)D-50 (pytorchvideo)"),
    ("csn_r101", "csn_r101", "csn", (32, 224), "ir-CSN-101 (pytorchvideo): channel-separated bottlenecks"),
]
_TV = [
    ("r3d_18", "r3d", (16, 112), "R3D-18 (torchvision), BN converted to the chosen norm"),
    ("mc3_18", "mc3", (16, 112), "MC3-18 (torchvision), BN converted to the chosen norm"),
    ("r2plus1d_18", "r2plus1d", (16, 112), "R(2+1)D-18 (torchvision), BN converted to the chosen norm"),
    ("s3d", "s3d", (16, 224), "S3D (torchvision), norm passed to its norm_layer"),
]

for _name, _hub, _family, _clip, _desc in _PV:
    register_model(ModelSpec(
        name=_name, description=_desc, builder=functools.partial(_pytorchvideo, _hub), family=_family,
        source="pytorchvideo", default_clip=_clip,
        min_clip=(2, 16) if _name.startswith("pv_") else (1, 16),  # the 2x1x1 pool after res2 needs 2 frames
        layouts=("pytorchvideo",), residual_blocks=_pv_blocks, stem=_pv_stem, stages=_pv_stages,
    ))
for _name, _family, _clip, _desc in _TV:
    _s3d = _name == "s3d"
    register_model(ModelSpec(
        name=_name, description=_desc, builder=functools.partial(_torchvision, _name), family=_family,
        source="torchvision", default_clip=_clip,
        min_clip=(8, 32) if _s3d else (1, 16),  # S3D's last pool has a fixed 2x2x2 window
        layouts=("torchvision_video",),
        residual_blocks=_s3d_blocks if _s3d else _tv_resnet_blocks, stem=_s3d_stem if _s3d else _tv_resnet_stem,
        stages=_s3d_stages if _s3d else _tv_resnet_stages,
    ))

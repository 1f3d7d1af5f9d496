"""3-D ResNets for video: I3D (inflated), C2D (no temporal kernels) and R3D-style layouts.

One class, :class:`ResNet3d`, builds every depth and layout from a few numbers; the named
configurations live in :mod:`videogn.models.registry`. The norm and the activation are resolved
once, at the top, and every conv-norm pair (stem, blocks, downsample) is built as ``norm_layer(C)``,
so GroupNorm3d, BatchNorm3d, SyncBatchNorm, frozen BN, LN/IN or any callable work alike.

Default geometry (the Non-local I3D baseline, Wang et al. 2018)::

    x (N, 3, T, H, W)
    stem   conv 5x7x7 /(2,2,2) -> norm -> act -> max-pool 2x3x3 /(2,2,2)
    layer1 (res2)                               T/4,  H/4
    pool2  max-pool 2x1x1 /(2,1,1)              T/8
    layer2 (res3) -> layer3 (res4) -> layer4 (res5)   spatial /8, /16, /32
    head   global average pool -> dropout -> fc

Temporal max pools use ceil semantics in time (a short or odd clip is padded at its end with a
copy of its last frame), so every clip length from 1 frame up works and no frame is dropped.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videogn.checks import check_int
from videogn.layers import ActSpec, create_norm_act, resolve_act, resolve_norm, zero_init_last_norm

__all__ = [
    "ResNet3d",
    "Bottleneck3d",
    "BasicBlock3d",
    "Stem3d",
    "Downsample3d",
    "TemporalConv3d",
    "ClipMaxPool3d",
    "TEMPORAL_PADDINGS",
]

NormLayer = Callable[[int], nn.Module]
Triple = tuple[int, int, int]

TEMPORAL_PADDINGS = ("zeros", "replicate")


def _triple(value: Union[int, Sequence[int]], name: str) -> Triple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise ValueError(f"{name} must be an int or three non-negative ints (t, h, w), got {value!r}")
    return tuple(value)  # type: ignore[return-value]


class TemporalConv3d(nn.Conv3d):
    """Conv3d whose temporal padding replicates the border frames; spatial padding stays zeros.

    With replicate temporal padding a clip that is constant in time stays constant through every
    layer, so an inflated network reproduces its 2-D source exactly on every frame, whatever the
    norm (zero padding changes the border frames, and GN's statistics pool over all of T).
    Its state-dict keys are those of ``nn.Conv3d``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temporal_pad = self.padding[0]  # type: ignore[index]
        self.padding = (0,) + tuple(self.padding[1:])  # type: ignore[assignment]

    def forward(self, input: Tensor) -> Tensor:
        if self.temporal_pad:
            pt = self.temporal_pad
            input = F.pad(input, (0, 0, 0, 0, pt, pt), mode="replicate")  # (N, C, T+2pt, H, W)
        return super().forward(input)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", temporal_pad={self.temporal_pad} (replicate)"


def _conv(
    in_ch: int,
    out_ch: int,
    kernel: Triple,
    stride: Triple = (1, 1, 1),
    temporal_padding: str = "zeros",
) -> nn.Conv3d:
    padding = tuple(k // 2 for k in kernel)
    cls = TemporalConv3d if temporal_padding == "replicate" and kernel[0] > 1 else nn.Conv3d
    return cls(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)


class ClipMaxPool3d(nn.Module):
    """Max pooling with ceil semantics in time and floor semantics in space.

    Before pooling, the clip is extended at its end by copies of its last frame until the
    temporal windows cover every frame; the copies cannot change a max over real frames. Clips
    shorter than the temporal kernel (even one frame) therefore pool to one frame instead of
    failing, and odd lengths drop nothing. Spatial pooling is ``nn.MaxPool3d``'s.
    """

    def __init__(self, kernel_size: Triple, stride: Triple, padding: Triple = (0, 0, 0)) -> None:
        super().__init__()
        self.kernel_size = _triple(kernel_size, "kernel_size")
        self.stride = _triple(stride, "stride")
        self.padding = _triple(padding, "padding")
        if self.padding[0] != 0:
            raise ValueError(f"ClipMaxPool3d pads time itself; padding[0] must be 0, got {padding!r}")

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[2]
        kt, st = self.kernel_size[0], self.stride[0]
        out_t = -(-max(t - kt, 0) // st) + 1  # ceil((T - kt) / st) + 1, at least 1
        extra = (out_t - 1) * st + kt - t
        if extra > 0:
            last = x[:, :, -1:].expand(-1, -1, extra, -1, -1)  # (N, C, extra, H, W)
            x = torch.cat([x, last], dim=2)  # (N, C, T + extra, H, W)
        return F.max_pool3d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _NormActFactory:
    """The resolved norm and activation of one network, handed to every block."""

    def __init__(self, norm_layer: NormLayer, act_layer: ActSpec, fuse: bool) -> None:
        self.norm_layer = norm_layer
        self.act_layer = act_layer
        self.act_factory = resolve_act(act_layer)
        self.fuse = fuse

    def norm(self, channels: int) -> nn.Module:
        """A norm with no activation (before a residual add)."""
        return create_norm_act(self.norm_layer, channels, None)[0]

    def act(self) -> nn.Module:
        return self.act_factory()

    def norm_act(self, channels: int) -> tuple[nn.Module, nn.Module]:
        return create_norm_act(self.norm_layer, channels, self.act_layer, fuse=self.fuse)


class Stem3d(nn.Module):
    """conv (kt x k x k) -> norm -> act -> max-pool."""

    names_2d = {"conv": "conv1", "norm": "bn1"}

    def __init__(
        self,
        in_channels: int,
        width: int,
        kernel: Triple,
        stride: Triple,
        pool_kernel: Triple,
        pool_stride: Triple,
        parts: _NormActFactory,
        temporal_padding: str,
    ) -> None:
        super().__init__()
        self.conv = _conv(in_channels, width, kernel, stride, temporal_padding)
        self.norm, self.act = parts.norm_act(width)
        spatial_pad = (0, pool_kernel[1] // 2, pool_kernel[2] // 2)
        self.pool = (
            ClipMaxPool3d(pool_kernel, pool_stride, spatial_pad)
            if pool_kernel != (1, 1, 1) or pool_stride != (1, 1, 1)
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class Downsample3d(nn.Module):
    """Projection shortcut: 1x1x1 conv (spatial stride) -> norm."""

    names_2d = {"conv": "0", "norm": "1"}

    def __init__(self, in_ch: int, out_ch: int, stride: Triple, parts: _NormActFactory) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 1, stride=stride, bias=False)
        self.norm = parts.norm(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class _ResidualBlock(nn.Module):
    """What both blocks share: the shortcut (identity, or a projection when the shape changes) and
    the activation after the sum."""

    downsample: Optional[Downsample3d]

    def _init_shortcut(self, in_ch: int, out_ch: int, stride: Triple, parts: _NormActFactory) -> None:
        # registered after the branch, as before: parameter order is the optimizer state's order
        self.downsample = Downsample3d(in_ch, out_ch, stride, parts) if stride != (1, 1, 1) or in_ch != out_ch else None

    def _add_shortcut(self, x: Tensor, branch: Tensor, act: nn.Module) -> Tensor:
        return act(branch + (x if self.downsample is None else self.downsample(x)))


class Bottleneck3d(_ResidualBlock):
    """I3D bottleneck; ``temporal_kernel`` 3 inflates the first 1x1 conv to 3x1x1::

        x ─ conv1 kt×1×1 ─ norm1 ─ act ─ conv2 1×3×3 /s ─ norm2 ─ act ─ conv3 1×1×1 ─ last_norm ─(+)─ act
        └──────────────────────────── identity or downsample ────────────────────────────────┘
    """

    expansion = 4
    names_2d = {"norm1": "bn1", "norm2": "bn2", "last_norm": "bn3"}

    def __init__(
        self,
        in_ch: int,
        width: int,
        spatial_stride: int,
        temporal_kernel: int,
        parts: _NormActFactory,
        temporal_padding: str = "zeros",
    ) -> None:
        super().__init__()
        out_ch = width * self.expansion
        stride = (1, spatial_stride, spatial_stride)
        self.conv1 = _conv(in_ch, width, (temporal_kernel, 1, 1), temporal_padding=temporal_padding)
        self.norm1, self.act1 = parts.norm_act(width)
        self.conv2 = _conv(width, width, (1, 3, 3), stride)
        self.norm2, self.act2 = parts.norm_act(width)
        self.conv3 = _conv(width, out_ch, (1, 1, 1))
        self.last_norm = parts.norm(out_ch)
        self._init_shortcut(in_ch, out_ch, stride, parts)
        self.act3 = parts.act()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.act2(self.norm2(self.conv2(y)))
        return self._add_shortcut(x, self.last_norm(self.conv3(y)), self.act3)


class BasicBlock3d(_ResidualBlock):
    """Basic residual block; ``temporal_kernel`` 3 inflates the first 3x3 conv to 3x3x3::

        x ─ conv1 kt×3×3 /s ─ norm1 ─ act ─ conv2 1×3×3 ─ last_norm ─(+)─ act
        └──────────────── identity or downsample ─────────────────┘
    """

    expansion = 1
    names_2d = {"norm1": "bn1", "last_norm": "bn2"}

    def __init__(
        self,
        in_ch: int,
        width: int,
        spatial_stride: int,
        temporal_kernel: int,
        parts: _NormActFactory,
        temporal_padding: str = "zeros",
    ) -> None:
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.conv1 = _conv(in_ch, width, (temporal_kernel, 3, 3), stride, temporal_padding)
        self.norm1, self.act1 = parts.norm_act(width)
        self.conv2 = _conv(width, width, (1, 3, 3))
        self.last_norm = parts.norm(width)
        self._init_shortcut(in_ch, width, stride, parts)
        self.act2 = parts.act()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        return self._add_shortcut(x, self.last_norm(self.conv2(y)), self.act2)


_BLOCKS: dict[str, type[nn.Module]] = {"bottleneck": Bottleneck3d, "basic": BasicBlock3d}


class ResNet3d(nn.Module):
    """A 3-D ResNet for (N, C, T, H, W) clips; any norm, any activation, any clip length.

    Args:
        block: "bottleneck" or "basic" (or :class:`Bottleneck3d` / :class:`BasicBlock3d`).
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        num_classes: size of the classifier; 0 leaves it out (``forward`` returns pooled features).
        inflate: per stage, per block, 1 for a temporal kernel of 3 in the block's first conv and
            0 for none, e.g. ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)).
            Default: no temporal kernels (C2D).
        widths: bottleneck widths (or block widths for basic blocks) of the four stages.
        stem_width: channels of the stem conv.
        stem_kernel, stem_stride: stem conv geometry (t, h, w).
        pool1_kernel, pool1_stride: stem max-pool geometry (t, h, w); (1, 1, 1) twice disables it.
        pool2_temporal: temporal kernel = stride of the max-pool after stage 1 (1 disables it).
        norm_layer: a norm name or ``norm_layer(C) -> nn.Module`` (see :func:`videogn.resolve_norm`).
        act_layer: "relu", "silu", "gelu", "none", or an ``nn.Module`` class / partial.
        dropout: dropout probability before the classifier.
        zero_init_last: start each block's ``last_norm`` with γ = 0 (GN and BN alike).
        in_channels: input channels.
        temporal_padding: "zeros" (the standard) or "replicate" (temporal convs pad with copies of
            the border frames, which makes inflation exact on static clips for every norm).
        fuse_norm_act: let a norm that can apply the activation itself do so (GroupNorm3d fuses
            ReLU/SiLU: one kernel on the Triton path); see :func:`videogn.layers.create_norm_act`.
    """

    names_2d = {"stem": ""}

    def __init__(
        self,
        block: Union[str, type[nn.Module]],
        layers: Sequence[int],
        num_classes: int,
        *,
        inflate: Optional[Sequence[Sequence[int]]] = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        stem_kernel: Union[int, Sequence[int]] = (5, 7, 7),
        stem_stride: Union[int, Sequence[int]] = (2, 2, 2),
        pool1_kernel: Union[int, Sequence[int]] = (2, 3, 3),
        pool1_stride: Union[int, Sequence[int]] = (2, 2, 2),
        pool2_temporal: int = 2,
        norm_layer: Union[str, NormLayer] = "gn",
        act_layer: ActSpec = "relu",
        dropout: float = 0.5,
        zero_init_last: bool = True,
        in_channels: int = 3,
        temporal_padding: str = "zeros",
        fuse_norm_act: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(block, str):
            if block not in _BLOCKS:
                raise ValueError(f"unknown block {block!r}; valid: {', '.join(_BLOCKS)}")
            block = _BLOCKS[block]
        if block not in (Bottleneck3d, BasicBlock3d):
            raise ValueError(f"block must be Bottleneck3d or BasicBlock3d, got {block!r}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"layers and widths need 4 stages, got layers={layers!r}, widths={widths!r}")
        for i, n in enumerate(layers):
            check_int(f"layers[{i}]", n)
        for i, w in enumerate(widths):
            check_int(f"widths[{i}]", w)
        check_int("num_classes", num_classes, 0)
        check_int("stem_width", stem_width)
        check_int("in_channels", in_channels)
        check_int("pool2_temporal", pool2_temporal)
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if temporal_padding not in TEMPORAL_PADDINGS:
            raise ValueError(f"temporal_padding must be one of {TEMPORAL_PADDINGS}, got {temporal_padding!r}")
        if inflate is None:
            inflate = [[0] * n for n in layers]
        if len(inflate) != 4 or any(len(p) != n for p, n in zip(inflate, layers)):
            raise ValueError(f"inflate must give one 0/1 per block of each stage {tuple(layers)}, got {inflate!r}")
        if any(v not in (0, 1) for p in inflate for v in p):
            raise ValueError(f"inflate entries must be 0 or 1, got {inflate!r}")
        parts = _NormActFactory(resolve_norm(norm_layer), act_layer, fuse_norm_act)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.temporal_padding = temporal_padding
        self.inflate = tuple(tuple(p) for p in inflate)

        self.stem = Stem3d(
            in_channels, stem_width, _triple(stem_kernel, "stem_kernel"), _triple(stem_stride, "stem_stride"),
            _triple(pool1_kernel, "pool1_kernel"), _triple(pool1_stride, "pool1_stride"), parts, temporal_padding,
        )
        channels = stem_width
        stages = []
        for index, (n_blocks, width, pattern) in enumerate(zip(layers, widths, self.inflate)):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if index > 0 and j == 0 else 1
                blocks.append(block(channels, width, stride, 3 if pattern[j] else 1, parts, temporal_padding))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        # Registered in forward order, so printing the model reads top to bottom.
        self.layer1 = stages[0]
        self.pool2 = (
            ClipMaxPool3d((pool2_temporal, 1, 1), (pool2_temporal, 1, 1)) if pool2_temporal > 1 else nn.Identity()
        )
        self.layer2, self.layer3, self.layer4 = stages[1:]
        self.num_features = channels
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)  # the Non-local baseline's classifier init
                nn.init.zeros_(m.bias)
        if zero_init_last:
            zero_init_last_norm(self, self.residual_blocks())

    def residual_blocks(self) -> list[tuple[nn.Module, nn.Module]]:
        """Every residual block with the norm that closes its branch (``last_norm``), in forward order."""
        return [(b, b.last_norm) for stage in (self.layer1, self.layer2, self.layer3, self.layer4) for b in stage]

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone: (N, C_in, T, H, W) -> (N, C, t, h, w) before global pooling."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a clip batch of shape (N, {self.in_channels}, T, H, W), got {tuple(x.shape)}"
            )
        x = self.stem(x)  # (N, C0, T/4, H/4, W/4) with the default strides
        x = self.pool2(self.layer1(x))  # (N, 4*w0, T/8, H/4, W/4)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # (N, C, T/8, H/32, W/32)

    def forward_head(self, features: Tensor) -> Tensor:
        """Global average pool over (t, h, w), dropout, classifier: (N, C, t, h, w) -> (N, classes)."""
        x = self.pool(features).flatten(1)  # (N, C)
        return self.fc(self.dropout(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

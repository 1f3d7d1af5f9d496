"""Named video models: ``create_model("i3d_r50", num_classes=400, norm="gn")``, ``list_models()``.

A registry entry (:class:`ModelSpec`) holds a *builder*: any callable that returns an
``nn.Module`` mapping (N, C, T, H, W) clips to (N, num_classes) logits, called as
``builder(num_classes=..., norm_layer=..., act_layer=..., dropout=..., in_channels=..., **kwargs)``
with ``norm_layer`` already resolved to a channel-first ``norm_layer(C)``. :func:`create_model`
then sets γ = 0 in every residual block's last norm, whatever the norm and the family.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from videogn.layers import ActSpec, GroupNorm3d, NormSpec, resolve_norm, zero_init_last_norm
from videogn.models.resnet3d import ResNet3d
from videogn.registry import Registry

__all__ = [
    "MODELS",
    "ModelSpec",
    "create_model",
    "list_models",
    "describe_models",
    "get_model_spec",
    "register_model",
    "i3d_inflation",
]


def i3d_inflation(layers: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The Non-local I3D pattern of temporal kernels for any depth.

    res2: every block; res3 and res4: every other block, starting with the first; res5: every
    other block, starting with the second. For [3, 4, 6, 3] this is the baseline's
    [1,1,1], [1,0,1,0], [1,0,1,0,1,0], [0,1,0]; for [3, 4, 23, 3] (R101) res4 alternates over 23.
    Bottlenecks inflate their first 1x1 conv to 3x1x1, basic blocks their first 3x3 to 3x3x3.
    """
    first, second, third, fourth = layers
    return (
        (1,) * first,
        tuple(1 - j % 2 for j in range(second)),
        tuple(1 - j % 2 for j in range(third)),
        tuple(j % 2 for j in range(fourth)),
    )


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes:
        name: registry key.
        description: one line for docs.
        builder: ``builder(num_classes=, norm_layer=, act_layer=, dropout=, in_channels=, **kwargs)``
            returning an ``nn.Module`` that maps (N, C, T, H, W) to (N, num_classes).
        kwargs: default keyword arguments of the builder (for ResNet3d entries: its layout).
        family: architecture family ("i3d", "x3d", "slowfast", ...).
        source: where the architecture comes from ("videogn", "pytorchvideo", "torchvision").
        default_clip: the (frames, crop size) the architecture is usually trained at.
        gn_kwargs: GroupNorm3d settings used for ``norm="gn"`` without ``norm_kwargs``.
        gn_min_group_size: with ``norm="gn"`` and no ``norm_kwargs``, use at most C // this many
            groups, so narrow layers keep that many channels per group instead of becoming IN.
        min_clip: the smallest (frames, crop size) the network accepts (e.g. S3D's temporal pools
            need 8 frames); tests and tiny runs use at least this.
    """

    name: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    builder: Callable[..., nn.Module] = ResNet3d
    family: str = "resnet3d"
    source: str = "videogn"
    default_clip: tuple[int, int] = (32, 224)
    gn_kwargs: dict[str, Any] = field(default_factory=dict)
    gn_min_group_size: int = 1
    min_clip: tuple[int, int] = (1, 16)


MODELS: Registry[ModelSpec] = Registry("model")
_SET_BY_CREATE_MODEL = {"norm_layer", "act_layer", "dropout", "zero_init_last", "in_channels", "num_classes"}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry; the name must be new."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register_model expects a ModelSpec, got {type(spec).__name__}")
    return MODELS.register(spec.name, spec)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return list(MODELS.names())


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` behind ``name``; an unknown name raises ValueError listing the valid ones."""
    return MODELS.get(name)


@functools.lru_cache(maxsize=None)
def _num_params_400(name: str) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = create_model(name, 400)
    return sum(p.numel() for p in model.parameters())


def describe_models() -> list[str]:
    """One line per model: name, family, source, parameters at 400 classes, default clip T×S."""
    lines = []
    for name in list_models():
        spec = MODELS.get(name)
        t, s = spec.default_clip
        lines.append(
            f"{name:<14} {spec.family:<9} {spec.source:<12} {_num_params_400(name) / 1e6:6.1f}M  {t}x{s}"
        )
    return lines


class _GroupNormAtLeast:
    """``norm_layer(C)``: GroupNorm3d with at most ``C // min_group_size`` of the requested groups."""

    def __init__(self, min_group_size: int, **gn_kwargs: Any) -> None:
        self.min_group_size = min_group_size
        self.num_groups = gn_kwargs.pop("num_groups", 32)
        self.gn_kwargs = gn_kwargs

    def __call__(self, num_channels: int) -> GroupNorm3d:
        groups = min(self.num_groups, max(1, num_channels // self.min_group_size))
        return GroupNorm3d(num_channels, num_groups=groups, **self.gn_kwargs)


def _builder_params(builder: Callable[..., nn.Module]) -> Optional[set[str]]:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None  # takes anything
    return set(params)


def create_model(
    name: str,
    num_classes: int,
    norm: NormSpec = "gn",
    *,
    norm_kwargs: Optional[dict[str, Any]] = None,
    act_layer: ActSpec = "relu",
    dropout: float = 0.5,
    zero_init_last: bool = True,
    in_channels: int = 3,
    weights: Optional[str] = None,
    strict: bool = True,
    **model_kw: Any,
) -> nn.Module:
    """Build a registered video model.

    Args:
        name: one of :func:`list_models` (e.g. "i3d_r50", "x3d_s", "slowfast_r50", "r2plus1d_18").
        num_classes: classifier size (ResNet3d only: 0 leaves the classifier out).
        norm: anything :func:`videogn.resolve_norm` accepts: "gn" (GroupNorm3d, default), "bn",
            "syncbn", "frozen_bn", "ln", "in", "none", a class or a partial.
        norm_kwargs: settings bound to the norm, e.g. ``{"num_groups": 16}`` or ``{"eps": 1e-3}``.
        act_layer: a name of :data:`videogn.layers.ACTS` or an ``nn.Module`` class / partial.
        dropout: dropout probability before the classifier.
        zero_init_last: γ = 0 in each residual block's last norm.
        in_channels: input channels.
        weights: a checkpoint to load (see :func:`videogn.models.load_weights`).
        strict: with ``weights``, missing or unexpected keys are an error (else reported).
        **model_kw: overrides of the builder's arguments, e.g. ``temporal_padding="replicate"``.

    Returns:
        The model, in training mode.
    """
    spec = get_model_spec(name)
    accepted = _builder_params(spec.builder)
    if accepted is not None:
        overridable = accepted - _SET_BY_CREATE_MODEL
        unknown = set(model_kw) - overridable
        if unknown:
            raise TypeError(
                f"create_model({name!r}) got unknown keyword arguments {sorted(unknown)}; "
                f"valid: {', '.join(sorted(overridable))}"
            )
    gn_default = norm_kwargs is None and isinstance(norm, str) and norm.lower() == "gn"
    if norm_kwargs is not None and not isinstance(norm_kwargs, dict):
        raise TypeError(f"norm_kwargs must be a dict or None, got {type(norm_kwargs).__name__}")
    if gn_default and spec.gn_min_group_size > 1:
        norm_layer: Callable[[int], nn.Module] = _GroupNormAtLeast(spec.gn_min_group_size, **spec.gn_kwargs)
    else:
        norm_layer = resolve_norm(norm, **(dict(spec.gn_kwargs) if gn_default else (norm_kwargs or {})))
    extra: dict[str, Any] = {"zero_init_last": False} if accepted is not None and "zero_init_last" in accepted else {}
    model = spec.builder(
        num_classes=num_classes,
        norm_layer=norm_layer,
        act_layer=act_layer,
        dropout=dropout,
        in_channels=in_channels,
        **{**spec.kwargs, **extra, **model_kw},
    )
    if zero_init_last:
        zero_init_last_norm(model)
    if weights is not None:
        from videogn.models.weights import load_weights

        load_weights(model, weights, name=name, strict=strict)
    return model


_BOTTLENECK_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_BASIC_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

for _depth, _layers in {**_BASIC_DEPTHS, **_BOTTLENECK_DEPTHS}.items():
    _block = "basic" if _depth in _BASIC_DEPTHS else "bottleneck"
    register_model(ModelSpec(
        name=f"i3d_r{_depth}",
        description=(
            f"I3D ResNet-{_depth}, Non-local baseline layout: conv1 5x7x7 /2, pools 2x3x3 and 2x1x1, "
            f"temporal kernels {i3d_inflation(_layers)} in each block's first conv"
        ),
        kwargs=dict(block=_block, layers=_layers, inflate=i3d_inflation(_layers)),
        family="i3d",
    ))

register_model(ModelSpec(
    name="c2d_r50",
    description="C2D ResNet-50: every conv kernel 1 in time (conv1 1x7x7 /2), same pools as I3D",
    kwargs=dict(block="bottleneck", layers=(3, 4, 6, 3), inflate=None, stem_kernel=(1, 7, 7)),
    family="c2d",
))

register_model(ModelSpec(
    name="i3d_tiny",
    description=(
        "narrow, shallow I3D for CPU runs and tests: basic blocks [1,1,1,1], widths 16-128, "
        "stem 3x5x5 /(1,2,2), every block inflated, output stride (2, 32, 32); GN uses 8 groups"
    ),
    kwargs=dict(
        block="basic", layers=(1, 1, 1, 1), inflate=((1,), (1,), (1,), (1,)),
        widths=(16, 32, 64, 128), stem_width=16, stem_kernel=(3, 5, 5), stem_stride=(1, 2, 2),
        pool1_kernel=(1, 3, 3), pool1_stride=(1, 2, 2), pool2_temporal=2,
    ),
    family="i3d",
    default_clip=(8, 64),
    gn_kwargs={"num_groups": 8},
))

import videogn.models.zoo  # noqa: E402,F401  (registers the pytorchvideo and torchvision families)

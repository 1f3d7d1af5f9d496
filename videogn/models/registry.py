"""Named video models: ``create_model("i3d_r50", num_classes=400, norm="gn")`` and ``list_models()``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from torch import nn

from videogn.layers import resolve_norm
from videogn.models.resnet3d import ActSpec, ResNet3d

__all__ = ["ModelSpec", "create_model", "list_models", "get_model_spec", "register_model", "i3d_inflation"]


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
    """A named configuration of :class:`ResNet3d`.

    Attributes:
        name: registry key.
        description: one line for ``list_models`` users and docs.
        kwargs: :class:`ResNet3d` arguments (block, layers, inflate, widths, stem and pools).
        gn_kwargs: GroupNorm settings used when ``norm="gn"`` is asked for without ``norm_kwargs``
            (narrow models need fewer than 32 groups).
    """

    name: str
    description: str
    kwargs: dict[str, Any]
    gn_kwargs: dict[str, Any] = field(default_factory=dict)


_MODELS: dict[str, ModelSpec] = {}
_SET_BY_CREATE_MODEL = {"norm_layer", "act_layer", "dropout", "zero_init_last", "in_channels", "num_classes"}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a configuration to the registry; the name must be new."""
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    _MODELS[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` behind ``name``; an unknown name raises ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(
    name: str,
    num_classes: int,
    norm: Union[str, Callable[..., nn.Module]] = "gn",
    *,
    norm_kwargs: Optional[dict[str, Any]] = None,
    act_layer: ActSpec = "relu",
    dropout: float = 0.5,
    zero_init_last: bool = True,
    in_channels: int = 3,
    **model_kw: Any,
) -> ResNet3d:
    """Build a registered video model.

    Args:
        name: one of :func:`list_models` (e.g. "i3d_r50", "c2d_r50", "i3d_tiny").
        num_classes: classifier size (0: no classifier, ``forward`` returns pooled features).
        norm: anything :func:`videogn.resolve_norm` accepts: "gn" (GroupNorm3d, default), "bn",
            "syncbn", "frozen_bn", "ln", "in", "none", a class or a partial.
        norm_kwargs: settings bound to the norm, e.g. ``{"num_groups": 16}`` or ``{"eps": 1e-3}``.
        act_layer: "relu", "silu", "gelu", "none", or an ``nn.Module`` class / partial.
        dropout: dropout probability before the classifier.
        zero_init_last: γ = 0 in each residual block's last norm.
        in_channels: input channels.
        **model_kw: overrides of the configuration's :class:`ResNet3d` arguments, e.g.
            ``temporal_padding="replicate"``, ``fuse_norm_act=False``, ``stem_stride=(1, 2, 2)``.

    Returns:
        The model, in training mode.
    """
    spec = get_model_spec(name)
    overridable = set(inspect.signature(ResNet3d).parameters) - _SET_BY_CREATE_MODEL
    unknown = set(model_kw) - overridable
    if unknown:
        raise TypeError(
            f"create_model({name!r}) got unknown keyword arguments {sorted(unknown)}; "
            f"valid: {', '.join(sorted(overridable))}"
        )
    if norm_kwargs is None:
        norm_kwargs = dict(spec.gn_kwargs) if isinstance(norm, str) and norm.lower() == "gn" else {}
    elif not isinstance(norm_kwargs, dict):
        raise TypeError(f"norm_kwargs must be a dict or None, got {type(norm_kwargs).__name__}")
    norm_layer = resolve_norm(norm, **norm_kwargs)
    kwargs = {**spec.kwargs, **model_kw}
    return ResNet3d(
        num_classes=num_classes,
        norm_layer=norm_layer,
        act_layer=act_layer,
        dropout=dropout,
        zero_init_last=zero_init_last,
        in_channels=in_channels,
        **kwargs,
    )


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
    ))

register_model(ModelSpec(
    name="c2d_r50",
    description="C2D ResNet-50: every conv kernel 1 in time (conv1 1x7x7 /2), same pools as I3D",
    kwargs=dict(block="bottleneck", layers=(3, 4, 6, 3), inflate=None, stem_kernel=(1, 7, 7)),
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
    gn_kwargs={"num_groups": 8},
))

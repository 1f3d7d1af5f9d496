"""The model registry itself: :class:`ModelSpec`, :data:`MODELS` and lookups. A leaf module.

Builders (:mod:`videogn.models.registry` for the ResNet3d family, :mod:`videogn.models.zoo` for the
pytorchvideo and torchvision families) register into it; :func:`videogn.models.create_model` and
:func:`videogn.models.load_weights` read it. Nothing here imports them, so there is no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch import nn

from videogn.models.resnet3d import ResNet3d
from videogn.registry import Registry

__all__ = ["MODELS", "ModelSpec", "BlockList", "register_model", "get_model_spec", "list_models"]

# (block, the norm closing its residual branch); None for a block without a residual branch
# (S3D's Inception blocks), which activation checkpointing still wraps but zero-γ leaves alone.
BlockList = list[tuple[nn.Module, Optional[nn.Module]]]


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
        min_clip: the smallest (frames, crop size) the network accepts (e.g. S3D's temporal pools
            need 8 frames); tests and tiny runs use at least this.
        layouts: the state-dict layouts (:data:`videogn.models.weights.LAYOUTS`) that load into
            this model: the key naming its builder produces, plus ``"resnet2d"`` where a 2-D
            ImageNet ResNet can be inflated into it. A checkpoint of any other layout comes from
            a network of another geometry and is refused, naming the model to use.
        residual_blocks: ``residual_blocks(model)`` -> every block as (block, last norm of its
            residual branch); zero-γ init sets those norms' γ to 0, activation checkpointing wraps
            each block.
        stem: ``stem(model)`` -> the module before the first block.
        stages: ``stages(model)`` -> the backbone by resolution stage, input to output: the stem
            (``stem(model)``), then res2, res3, ... (ResNet naming; S3D: its Inception groups),
            never the classifier. ``model.freeze_stages=N`` freezes the first N of them.
    """

    name: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    builder: Callable[..., nn.Module] = ResNet3d
    family: str = "resnet3d"
    source: str = "videogn"
    default_clip: tuple[int, int] = (32, 224)
    gn_kwargs: dict[str, Any] = field(default_factory=dict)
    min_clip: tuple[int, int] = (1, 16)
    layouts: tuple[str, ...] = ()
    residual_blocks: Optional[Callable[[nn.Module], BlockList]] = None
    stem: Optional[Callable[[nn.Module], nn.Module]] = None
    stages: Optional[Callable[[nn.Module], list[nn.Module]]] = None


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry; the name must be new."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register_model expects a ModelSpec, got {type(spec).__name__}")
    return MODELS.register(spec.name, spec)


def list_models() -> list[str]:
    """Names accepted by :func:`videogn.models.create_model`, sorted."""
    return list(MODELS.names())


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` behind ``name``; an unknown name raises ValueError listing the valid ones."""
    return MODELS.get(name)

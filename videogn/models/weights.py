"""Load weights into a registered model, or refuse those of a network of another geometry.

``create_model(name, classes, norm="bn", weights=PATH)`` calls :func:`load_weights`. File formats
(a videogn checkpoint, pytorchvideo's ``{"model_state": ...}``, ``{"state_dict": ...}``, a bare
state dict, ``module.`` prefixes) are unwrapped by :mod:`videogn.checkpoint`.

Strides and pools have no parameters, so two networks of the same widths and kernels but other
strides (pytorchvideo's I3D-R50: stem temporal stride 1, 1x3x3 stem pool; videogn's ``i3d_r50``:
the Non-local baseline's 2 and 2x3x3) take the same state dict and compute different functions.
What tells the source is the key *layout*: each builder names its modules its own way.
:func:`detect_layout` reads it (the one place that does), each :class:`~videogn.models.ModelSpec`
declares the layouts it loads (``layouts``), and :func:`load_weights` refuses any other, naming the
registered model of the checkpoint's geometry (``pv_i3d_r50`` for pytorchvideo's I3D).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from videogn.checkpoint import read_weights
from videogn.layers import GroupNorm3d
from videogn.models.spec import MODELS, ModelSpec

__all__ = ["LAYOUTS", "classifier_name", "detect_layout", "models_for", "check_layout", "load_weights"]

logger = logging.getLogger(__name__)

LAYOUTS: dict[str, str] = {
    "resnet3d": "videogn ResNet3d (stem.conv, layer1.0.conv1, ..., fc)",
    "pytorchvideo": "pytorchvideo (blocks.0.conv, blocks.1.res_blocks.0.branch2.conv_a, ...)",
    "torchvision_video": "torchvision video (stem.0, layer1.0.conv1.0.0, ...; S3D: features.0.0.0)",
    "resnet2d": "2-D ImageNet ResNet, torchvision or timm naming (conv1, bn1, layer1.0.conv1, ..., fc)",
}
"""Every state-dict layout :func:`detect_layout` tells apart, with the key names that mark it."""

# The one layout whose weights are inflated (videogn.models.inflate_from_2d), never loaded as they are.
INFLATED_LAYOUT = "resnet2d"


def detect_layout(state: Mapping[str, Tensor]) -> Optional[str]:
    """The :data:`LAYOUTS` key of ``state``'s naming, or None for a naming none of them has."""
    if "stem.conv.weight" in state:
        return "resnet3d"
    if any(k.startswith("blocks.0.") for k in state):
        return "pytorchvideo"
    if "stem.0.weight" in state or "features.0.0.0.weight" in state:
        return "torchvision_video"
    conv1 = state.get("conv1.weight")
    if isinstance(conv1, Tensor) and conv1.dim() == 4:
        return "resnet2d"
    return None


def classifier_name(model: nn.Module) -> str:
    """Name of the classifier: the last Linear/Conv3d module, which is the classifier of every
    registered family (a test checks it maps to the class count). The one place that finds it: new
    heads (:func:`load_weights`), the head's learning rate and the layout check read it."""
    last = ""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            last = name
    return last


def _conv_shapes(state: Mapping[str, Tensor], classifier: str) -> dict[str, tuple[int, ...]]:
    """Conv kernels by key (widths, kernels, grouping), without the classifier (any class count)."""
    head = classifier + "."
    return {k: tuple(v.shape) for k, v in state.items() if v.dim() >= 3 and not k.startswith(head)}


_META_SHAPES: dict[str, tuple[ModelSpec, str, dict[str, tuple[int, ...]]]] = {}


def _spec_conv_shapes(spec: ModelSpec) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The classifier's name and the conv shapes of ``spec``'s network at its defaults."""
    cached = _META_SHAPES.get(spec.name)
    if cached is None or cached[0] is not spec:
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = spec.builder(
                num_classes=2, norm_layer=nn.BatchNorm3d, act_layer="relu", dropout=0.0, in_channels=3, **spec.kwargs
            )
        head = classifier_name(model)
        cached = _META_SHAPES[spec.name] = (spec, head, _conv_shapes(model.state_dict(), head))
    return cached[1], cached[2]


def models_for(state: Mapping[str, Tensor]) -> list[str]:
    """Registered models that load ``state``: its layout is one they declare and, for a layout
    loaded as it is, their conv kernels have its shapes (any classifier size, any norm)."""
    layout = detect_layout(state)
    names = [n for n in MODELS.names() if layout is not None and layout in MODELS.get(n).layouts]
    if layout == INFLATED_LAYOUT:
        return names
    matches = []
    for name in names:
        head, shapes = _spec_conv_shapes(MODELS.get(name))
        if _conv_shapes(state, head) == shapes:
            matches.append(name)
    return matches


def _use_instead(state: Mapping[str, Tensor], layout: str) -> str:
    matches = models_for(state)
    if matches:
        return f"load it into {' or '.join(repr(n) for n in matches)}"
    accepting = [n for n in MODELS.names() if layout in MODELS.get(n).layouts]
    if accepting:
        return f"no registered model has its exact shapes; models of that layout: {', '.join(accepting)}"
    return "no registered model takes that layout"


def check_layout(state: Mapping[str, Tensor], name: str, source: str = "weights") -> None:
    """Refuse ``state`` for the registered model ``name`` unless its layout is one ``name`` declares.

    A state dict of an unrecognised naming, or a model that is not registered or declares no
    layouts, passes (the key check of :func:`load_weights` still applies).

    Raises:
        ValueError: naming the layout found and the registered model(s) to load it into.
    """
    if name not in MODELS:
        return
    spec = MODELS.get(name)
    layout = detect_layout(state)
    if layout is None or not spec.layouts or (layout in spec.layouts and layout != INFLATED_LAYOUT):
        return
    if layout == INFLATED_LAYOUT:
        into = name if layout in spec.layouts else " or ".join(models_for(state)) or "a ResNet3d model"
        raise ValueError(
            f"{source} is a {LAYOUTS[layout]} state dict: inflate it into {into} "
            "(model.weights_2d=PATH, or videogn.models.inflate_from_2d), it cannot be loaded as it is"
        )
    raise ValueError(
        f"{source} has the {LAYOUTS[layout]} layout, which {name!r} does not load "
        f"({name} loads {', '.join(x for x in spec.layouts if x != INFLATED_LAYOUT)}): "
        "it comes from a network of another geometry "
        f"(strides and pools hold no weights, so the keys would fit and the outputs differ); "
        f"{_use_instead(state, layout)}"
    )


def load_weights(
    model: nn.Module,
    weights: Union[str, Path, Mapping[str, Any]],
    *,
    name: str = "model",
    strict: bool = True,
    new_head: bool = False,
) -> dict[str, list[str]]:
    """Load ``weights`` (a path or a loaded checkpoint) into ``model`` in place.

    When ``name`` is a registered model, a checkpoint of a layout it does not declare is refused
    (:func:`check_layout`). A BatchNorm checkpoint into a GroupNorm model is refused. Missing or
    unexpected keys raise unless ``strict=False``, when they are logged and returned.

    Args:
        new_head: fine-tuning: load everything but the classifier (:func:`classifier_name`), whose
            keys are skipped (logged) and which keeps its fresh initialisation for this model's
            classes. Without it, a classifier of another size (another class count) is an error.

    Returns:
        ``{"missing": [...], "unexpected": [...], "reinitialized": [...]}`` (reinitialized: the
        classifier keys skipped with ``new_head``).
    """
    source = repr(str(weights)) if isinstance(weights, (str, Path)) else "weights"
    state = dict(read_weights(weights).state_dict)
    check_layout(state, name, source)
    own = model.state_dict()

    bn_stats = sorted(k for k in state if k.endswith(".running_mean"))
    gn_modules = {n for n, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    clash = [k for k in bn_stats if k[: -len(".running_mean")] in gn_modules]
    if clash:
        kind = "GroupNorm3d" if any(isinstance(m, GroupNorm3d) for m in model.modules()) else "GroupNorm"
        raise ValueError(
            f"{source} holds BatchNorm statistics (e.g. {clash[0]!r}) but {name} uses {kind} there; "
            "build it with norm='bn' or norm='frozen_bn' to load a BatchNorm checkpoint"
        )

    head = classifier_name(model)
    in_head = (lambda key: key.startswith(head + ".")) if head else (lambda key: False)
    reinitialized = sorted(k for k in own if in_head(k)) if new_head else []
    if new_head:
        for key in [k for k in state if in_head(k)]:
            del state[key]
    for key in list(state):
        if key in own and state[key].shape != own[key].shape:
            if in_head(key):
                raise ValueError(
                    f"{source}: classifier {key!r} has shape {tuple(state[key].shape)}, {name} has "
                    f"{tuple(own[key].shape)} (another class count); to fine-tune with a new head for this "
                    "model's classes pass new_head=True (model.new_head=true)"
                )
            fits = [repr(n) for n in models_for(state) if n != name]
            raise ValueError(
                f"{source}: {key!r} has shape {tuple(state[key].shape)}, {name} has {tuple(own[key].shape)}"
                + (f"; its shapes are those of {' or '.join(fits)}" if fits else "")
            )
    if reinitialized:
        logger.info("%s: new head: skipped the classifier's keys %s of %s; they keep their initialisation",
                    name, reinitialized, source)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in reinitialized]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        text = f"{source} into {name}: {len(missing)} missing key(s) {missing[:5]}, " \
               f"{len(unexpected)} unexpected key(s) {unexpected[:5]}"
        if strict:
            raise ValueError(text + "; pass strict=False to load the rest")
        logger.warning(text)
    return {"missing": missing, "unexpected": unexpected, "reinitialized": reinitialized}

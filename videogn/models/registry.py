"""Named video models: ``create_model("i3d_r50", num_classes=400, norm="gn")``, ``list_models()``.

A registry entry (:class:`ModelSpec`, in the leaf module :mod:`videogn.models.spec`) holds a
*builder*: any callable that returns an ``nn.Module`` mapping (N, C, T, H, W) clips to
(N, num_classes) logits, called as ``builder(num_classes=..., norm_layer=..., act_layer=...,
dropout=..., in_channels=..., **kwargs)`` with ``norm_layer`` already resolved to a channel-first
``norm_layer(C)``. :func:`create_model` then sets γ = 0 in the last norm of every residual block the
entry declares (``ModelSpec.residual_blocks``). This module registers the ResNet3d family;
:mod:`videogn.models.zoo` the pytorchvideo and torchvision ones (both imported by
``videogn.models``).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

from videogn.layers import ActSpec, NormSpec, resolve_norm, zero_init_last_norm
from videogn.models.resnet3d import ResNet3d
from videogn.models.spec import MODELS, ModelSpec, get_model_spec, list_models, register_model
from videogn.models.weights import load_weights

__all__ = [
    "MODELS",
    "ModelSpec",
    "create_model",
    "list_models",
    "describe_models",
    "get_model_spec",
    "register_model",
    "i3d_inflation",
    "freeze_stages",
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


_SET_BY_CREATE_MODEL = {"norm_layer", "act_layer", "dropout", "zero_init_last", "in_channels", "num_classes"}


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
    new_head: bool = False,
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
        zero_init_last: γ = 0 in the last norm of each residual block ``ModelSpec.residual_blocks``
            declares.
        in_channels: input channels.
        weights: a checkpoint to load (see :func:`videogn.models.load_weights`); one of another
            layout than the entry declares (another network geometry) is refused.
        strict: with ``weights``, missing or unexpected keys are an error (else reported).
        new_head: with ``weights``, load all but the classifier, which keeps its initialisation for
            ``num_classes`` (fine-tuning onto other classes); without it a classifier of another
            size is an error.
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
    # channel counts G does not divide: videogn.layers.resolve_num_groups, as for the bare layer
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
        if spec.residual_blocks is not None:
            zero_init_last_norm(model, spec.residual_blocks(model))
        elif not zero_init_last_norm(model):  # a user's builder that declares no blocks: recognised types only
            warnings.warn(
                f"create_model({name!r}): zero_init_last found no residual block; declare them in its "
                "ModelSpec (residual_blocks=...) or pass zero_init_last=False",
                UserWarning,
                stacklevel=2,
            )
    if weights is not None:
        load_weights(model, weights, name=name, strict=strict, new_head=new_head)
    return model


class _StayInEval:
    """Stands in for a frozen module's ``train``: whatever mode is asked, the module stays in eval
    mode, so ``model.train()`` (the trainer's, DDP's, a user's) never restarts a frozen BN's
    statistics or a frozen dropout. A class, not a closure: a frozen model still deep-copies."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        return nn.Module.train(self.module, False)


def freeze_stages(model: nn.Module, name: str, num_stages: int) -> list[str]:
    """Freeze the first ``num_stages`` stages ``name``'s :class:`ModelSpec` declares (``stages``):
    0 nothing, 1 the stem, 2 the stem and res2, ..., all of them: only the head trains.

    Frozen parameters get ``requires_grad=False`` (so :func:`videogn.optim.param_groups` leaves them
    out of the optimizer); every frozen module is put in eval mode and stays there when the model
    is put in train mode (norm statistics stop updating).

    Returns:
        The names of the frozen parameters.

    Raises:
        ValueError: ``num_stages`` out of ``[0, number of stages]``, or an entry that declares no stages.
    """
    spec = get_model_spec(name)
    if spec.stages is None:
        raise ValueError(f"freeze_stages: {name!r} declares no stages; register it with ModelSpec(stages=...)")
    stages = spec.stages(model)
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or not 0 <= num_stages <= len(stages):
        raise ValueError(
            f"freeze_stages must be an int in [0, {len(stages)}] for {name} (1: the stem, 2: stem + res2, ..., "
            f"{len(stages)}: the whole backbone), got {num_stages!r}"
        )
    frozen = {id(p) for stage in stages[:num_stages] for p in stage.parameters()}
    for stage in stages[:num_stages]:
        for module in stage.modules():  # each one: a stage may be a Sequential over the model's modules
            module.train = _StayInEval(module)  # type: ignore[method-assign]
            nn.Module.train(module, False)
    names = []
    for pname, p in model.named_parameters():
        if id(p) in frozen:
            p.requires_grad_(False)
            names.append(pname)
    return names


def _resnet3d_stem(model: nn.Module) -> nn.Module:
    return model.stem


def _resnet3d_stages(model: nn.Module) -> list[nn.Module]:
    return [model.stem, model.layer1, model.layer2, model.layer3, model.layer4]


# Every ResNet3d entry: its own keys, and a 2-D ImageNet ResNet inflated (i3d_tiny has no 2-D twin).
_RESNET3D = dict(layouts=("resnet3d", "resnet2d"), residual_blocks=ResNet3d.residual_blocks, stem=_resnet3d_stem,
                stages=_resnet3d_stages)

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
        **_RESNET3D,
    ))

register_model(ModelSpec(
    name="c2d_r50",
    description="C2D ResNet-50: every conv kernel 1 in time (conv1 1x7x7 /2), same pools as I3D",
    kwargs=dict(block="bottleneck", layers=(3, 4, 6, 3), inflate=None, stem_kernel=(1, 7, 7)),
    family="c2d",
    **_RESNET3D,
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
    **{**_RESNET3D, "layouts": ("resnet3d",)},
))

"""Load weights into a registered model: videogn checkpoints, bare state dicts, pytorchvideo's format.

``create_model(name, classes, norm="bn", weights=PATH)`` calls :func:`load_weights`. Accepted:
a videogn training checkpoint (``{"model": state_dict, ...}``), pytorchvideo's (``{"model_state":
...}``), ``{"state_dict": ...}`` or a bare state dict; a DDP ``module.`` prefix is dropped.
pytorchvideo's ResNet names (``blocks.0.conv``, ``blocks.k.res_blocks.j.branch2.conv_a``, ...)
are mapped to :class:`ResNet3d`'s (``stem.conv``, ``layer{s}.{j}.conv1``, ...); models built from
pytorchvideo builders (``slow_r50``, ``x3d_*``, ...) already use pytorchvideo's names.

Note: pytorchvideo's ``i3d_r50`` (8x8 setting) has a stem of temporal stride 1 and a 1x3x3 stem
pool, videogn's ``i3d_r50`` the Non-local baseline's 2 and 2x3x3: same parameters, different
strides. Build with ``stem_stride=(1, 2, 2), pool1_kernel=(1, 3, 3), pool1_stride=(1, 2, 2)`` to
run pytorchvideo's network exactly.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import Tensor, nn

from videogn.layers import GroupNorm3d

__all__ = ["load_weights", "extract_state_dict", "map_pytorchvideo_resnet_keys"]

logger = logging.getLogger(__name__)

_BRANCH2 = {"conv_a": "conv1", "norm_a": "norm1", "conv_b": "conv2", "norm_b": "norm2",
            "conv_c": "conv3", "norm_c": "last_norm"}
_RES_KEY = re.compile(r"^blocks\.(\d+)\.res_blocks\.(\d+)\.(.+)$")


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict inside a checkpoint object (see the module docstring for the formats)."""
    if isinstance(obj, Mapping):
        for key in ("model", "model_state", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"{source} holds no state dict: expected a mapping of tensors or a dict with a "
            "'model', 'model_state' or 'state_dict' entry"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def map_pytorchvideo_resnet_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a pytorchvideo ``create_resnet`` state dict (i3d_r50, c2d_r50, ...) to ResNet3d's keys."""
    stages = sorted({int(m.group(1)) for k in state if (m := _RES_KEY.match(k))})
    stage_of = {block: f"layer{i + 1}" for i, block in enumerate(stages)}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        if key.startswith("blocks.0.conv."):
            new = "stem.conv." + key[len("blocks.0.conv."):]
        elif key.startswith("blocks.0.norm."):
            new = "stem.norm." + key[len("blocks.0.norm."):]
        elif (m := _RES_KEY.match(key)) and int(m.group(1)) in stage_of:
            rest = m.group(3)
            for old, repl in (("branch1_conv.", "downsample.conv."), ("branch1_norm.", "downsample.norm.")):
                if rest.startswith(old):
                    rest = repl + rest[len(old):]
            if rest.startswith("branch2."):
                part, _, tail = rest[len("branch2."):].partition(".")
                rest = f"{_BRANCH2.get(part, part)}.{tail}"
            new = f"{stage_of[int(m.group(1))]}.{m.group(2)}.{rest}"
        elif re.match(r"^blocks\.\d+\.proj\.", key):
            new = "fc." + key.split(".proj.", 1)[1]
        out[new] = value
    return out


def _classifier(model: nn.Module) -> str:
    """Name of the last Linear/Conv module: the classifier of every registered family."""
    last = ""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            last = name
    return last


def load_weights(
    model: nn.Module,
    weights: Union[str, Path, Mapping[str, Any]],
    *,
    name: str = "model",
    strict: bool = True,
) -> dict[str, list[str]]:
    """Load ``weights`` (a path or a loaded checkpoint) into ``model`` in place.

    A classifier of another size is left at its initialisation (logged). A BatchNorm checkpoint
    into a GroupNorm model is refused. Missing or unexpected keys raise unless ``strict=False``,
    when they are logged and returned.

    Returns:
        ``{"missing": [...], "unexpected": [...], "reinitialized": [...]}``.
    """
    source = str(weights) if isinstance(weights, (str, Path)) else "weights"
    if isinstance(weights, (str, Path)):
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights not found: {source!r}")
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    state = extract_state_dict(weights, source)
    own = model.state_dict()
    if any(k.startswith("blocks.0.") for k in state) and not any(k.startswith("blocks.") for k in own):
        state = map_pytorchvideo_resnet_keys(state)

    bn_stats = sorted(k for k in state if k.endswith(".running_mean"))
    gn_modules = {n for n, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    clash = [k for k in bn_stats if k[: -len(".running_mean")] in gn_modules]
    if clash:
        kind = "GroupNorm3d" if any(isinstance(m, GroupNorm3d) for m in model.modules()) else "GroupNorm"
        raise ValueError(
            f"{source} holds BatchNorm statistics (e.g. {clash[0]!r}) but {name} uses {kind} there; "
            "build it with norm='bn' or norm='frozen_bn' to load a BatchNorm checkpoint"
        )

    head = _classifier(model)
    reinitialized = []
    for key in list(state):
        if key in own and state[key].shape != own[key].shape:
            if head and key.startswith(head + "."):
                reinitialized.append(key)
                del state[key]
            else:
                raise ValueError(
                    f"{source}: {key!r} has shape {tuple(state[key].shape)}, {name} has {tuple(own[key].shape)}"
                )
    if reinitialized:
        logger.info("%s: classifier %r has another size in %s; left at its initialisation", name, head, source)
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

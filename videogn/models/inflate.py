"""2-D -> 3-D inflation: load an image ResNet checkpoint (torchvision or timm naming) into a video ResNet.

A 2-D kernel (O, I, k, k) becomes (O, I, kt, k, k): repeated kt times over time and divided by kt,
so on a clip of one repeated frame each temporal conv computes what the 2-D conv computes on that
frame. Norm γ/β are copied as they are. Running statistics of BatchNorm go only where the target
norm keeps them (BN, SyncBN, frozen BN); a GroupNorm target has none, so they are dropped with a
warning. Where the property holds exactly, and where it cannot, is written in
:func:`inflate_from_2d`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from videogn.checkpoint import unwrap_state_dict
from videogn.models.spec import MODELS
from videogn.models.weights import INFLATED_LAYOUT, LAYOUTS, detect_layout, models_for

__all__ = ["InflationReport", "inflate_from_2d", "names_2d"]

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
_CLASSIFIER_PREFIXES = ("fc.",)


@dataclass
class InflationReport:
    """What :func:`inflate_from_2d` did.

    Attributes:
        matched: 3-D keys filled from the checkpoint.
        inflated: the subset of ``matched`` whose 2-D kernel was repeated over time.
        missing: 3-D keys the checkpoint does not provide (left as initialised).
        unexpected: checkpoint keys with no place in the 3-D model.
        mismatched: "3-D key <- 2-D key: shapes" for pairs whose shapes cannot be inflated.
        dropped_running_stats: checkpoint BN statistics the target norm has no place for.
        skipped: classifier keys left out because ``skip_classifier`` was set.
    """

    matched: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    dropped_running_stats: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [
            f"inflate_from_2d: {len(self.matched)} matched ({len(self.inflated)} kernels inflated), "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} mismatched, {len(self.dropped_running_stats)} running stats dropped, "
            f"{len(self.skipped)} classifier keys skipped"
        ]
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("mismatched", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                lines.append(f"  {title}: {shown}")
        return "\n".join(lines)


def names_2d(model3d: nn.Module) -> dict[str, str]:
    """Map each state-dict key of ``model3d`` to the 2-D ResNet key it is loaded from.

    Modules translate their children's names through a ``names_2d`` class attribute (videogn's
    stem maps ``stem.conv``/``stem.norm`` to ``conv1``/``bn1``, blocks map ``norm1``/``last_norm``
    to ``bn1``/``bn3``, downsample ``conv``/``norm`` to ``0``/``1``); an empty name drops the level.
    Modules without the attribute keep their names, so a 3-D model already named like torchvision
    maps one to one.
    """
    mapping: dict[str, str] = {}
    for key in model3d.state_dict():
        parts = key.split(".")
        module: nn.Module = model3d
        out: list[str] = []
        for part in parts[:-1]:
            renamed = getattr(type(module), "names_2d", {}).get(part, part)
            if renamed:
                out.append(renamed)
            module = getattr(module, part)
        out.append(parts[-1])
        mapping[key] = ".".join(out)
    return mapping


def _check_2d_layout(source: Mapping[str, Tensor], name: Optional[str]) -> None:
    """Refuse a video checkpoint (it loads as it is, with its own geometry) and a target model
    that does not declare the 2-D layout."""
    layout = detect_layout(source)
    if layout is not None and layout != INFLATED_LAYOUT:
        into = " or ".join(repr(n) for n in models_for(source)) or "the model of its layout"
        raise ValueError(
            f"state_dict_2d has the {LAYOUTS[layout]} layout, not a 2-D ResNet's: it is a video checkpoint; "
            f"load it as it is (model.weights=PATH or videogn.models.load_weights) into {into}"
        )
    declared = MODELS.get(name).layouts if name is not None and name in MODELS else ()
    if declared and INFLATED_LAYOUT not in declared:
        targets = [n for n in MODELS.names() if INFLATED_LAYOUT in MODELS.get(n).layouts]
        raise ValueError(
            f"{name!r} does not take an inflated 2-D ResNet (its layouts: {', '.join(declared)}); "
            f"inflate into one of {', '.join(targets)}"
        )


def _inflate_tensor(source: Tensor, target: Tensor) -> Optional[Tensor]:
    """``source`` in ``target``'s shape, repeating a 2-D kernel over time; None if impossible."""
    if source.shape == target.shape:
        return source
    if (
        source.dim() == 4
        and target.dim() == 5
        and source.shape[:2] == target.shape[:2]
        and source.shape[2:] == target.shape[3:]
    ):
        kt = target.shape[2]
        # (O, I, kh, kw) -> (O, I, kt, kh, kw); dividing by kt keeps a static clip's response.
        return source.unsqueeze(2).expand(-1, -1, kt, -1, -1) / kt
    return None


def inflate_from_2d(
    model3d: nn.Module,
    state_dict_2d: Mapping[str, Tensor],
    *,
    skip_classifier: bool = True,
    strict: bool = False,
    name: Optional[str] = None,
) -> InflationReport:
    """Load a 2-D ResNet state dict into a 3-D ResNet, inflating conv kernels over time. In place.

    Accepts torchvision's naming (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
    ``fc``) and timm's (the same names; ``resnet50_gn`` has GroupNorm γ/β under ``bnX``). Wrappers
    and prefixes are removed by :func:`videogn.checkpoint.unwrap_state_dict`. A video checkpoint
    (any other layout of :data:`videogn.models.weights.LAYOUTS`) is refused.

    Exactness on a clip of one repeated frame (eval mode): with ``temporal_padding="replicate"``
    the clip stays constant in time through every layer, so features and logits equal the 2-D
    network's for every norm. With zero temporal padding (the standard) the border frames see
    zeros; per-channel affine norms (frozen BN, BN in eval) still give the 2-D result on frames
    whose temporal receptive field lies inside the clip, but GroupNorm pools its statistics over
    all of T, border frames included, so with GN no frame is exact (close, not equal).

    Args:
        model3d: the video model (any model whose modules map to 2-D names via :func:`names_2d`).
        state_dict_2d: the 2-D checkpoint.
        skip_classifier: leave ``fc`` as initialised (the usual case: a new number of classes).
        strict: raise ValueError, before changing anything, if a key is missing, unexpected or
            has a shape that cannot be inflated.
        name: the registered model ``model3d`` was built as; it must declare the 2-D layout
            (``ModelSpec.layouts``), else the error names the models that do.

    Returns:
        An :class:`InflationReport`.
    """
    if not isinstance(model3d, nn.Module):
        raise TypeError(f"model3d must be an nn.Module, got {type(model3d).__name__}")
    if not isinstance(state_dict_2d, Mapping):
        raise TypeError(f"state_dict_2d must be a mapping of names to tensors, got {type(state_dict_2d).__name__}")
    source, _ = unwrap_state_dict(state_dict_2d, "state_dict_2d")
    _check_2d_layout(source, name)
    target = model3d.state_dict()
    report = InflationReport()
    plan: list[tuple[str, Tensor]] = []
    used: set[str] = set()

    for key3d, key2d in names_2d(model3d).items():
        if skip_classifier and key2d.startswith(_CLASSIFIER_PREFIXES):
            continue
        if key2d not in source:
            report.missing.append(key3d)
            continue
        used.add(key2d)
        value = _inflate_tensor(source[key2d], target[key3d])
        if value is None:
            report.mismatched.append(
                f"{key3d} <- {key2d}: {tuple(target[key3d].shape)} vs {tuple(source[key2d].shape)}"
            )
            continue
        plan.append((key3d, value))
        report.matched.append(key3d)
        if value is not source[key2d]:
            report.inflated.append(key3d)

    for key2d in source:
        if key2d in used:
            continue
        if skip_classifier and key2d.startswith(_CLASSIFIER_PREFIXES):
            report.skipped.append(key2d)
        elif key2d.rsplit(".", 1)[-1] in _RUNNING_STATS:
            report.dropped_running_stats.append(key2d)
        else:
            report.unexpected.append(key2d)

    if strict and not report.ok:
        raise ValueError(f"inflate_from_2d(strict=True) found problems:\n{report}")

    with torch.no_grad():
        for key3d, value in plan:
            target[key3d].copy_(value)  # state_dict tensors share storage with the model's
    dropped_stats = [k for k in report.dropped_running_stats if not k.endswith("num_batches_tracked")]
    if dropped_stats:
        warnings.warn(
            f"inflate_from_2d: dropped {len(dropped_stats)} BatchNorm running statistics "
            f"(e.g. {dropped_stats[0]!r}): the target norm keeps none (GroupNorm normalises with "
            "each clip's own statistics); γ/β were copied",
            UserWarning,
            stacklevel=2,
        )
    return report

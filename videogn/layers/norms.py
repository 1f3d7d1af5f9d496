"""Norm factory (strings, classes or partials → ``norm_layer(C)``), frozen BN and BN→GN conversion."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from videogn.layers.group_norm3d import GroupNorm3d
from videogn.layers.surgery import replace_children
from videogn.registry import Registry

__all__ = [
    "NORMS",
    "NORM_NAMES",
    "FrozenBatchNorm",
    "NormChange",
    "create_norm",
    "resolve_norm",
    "convert_norm",
    "format_norm_report",
]

logger = logging.getLogger(__name__)

NormSpec = Union[str, Callable[..., nn.Module]]


class FrozenBatchNorm(nn.Module):
    """BatchNorm as a fixed per-channel affine (the GN paper's BN* baseline), for (N, C, *) inputs.

    Holds ``weight``, ``bias``, ``running_mean`` and ``running_var`` as buffers, so a BatchNorm
    state dict loads into it and nothing in it trains; ``momentum``/``affine``/
    ``track_running_stats`` are accepted for drop-in use and ignored.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, **_bn_only: Any) -> None:
        super().__init__()
        unknown = set(_bn_only) - {"momentum", "affine", "track_running_stats", "device", "dtype"}
        if unknown:
            raise TypeError(f"FrozenBatchNorm got unexpected keyword arguments {sorted(unknown)}")
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        if _bn_only.get("device") is not None or _bn_only.get("dtype") is not None:
            self.to(device=_bn_only.get("device"), dtype=_bn_only.get("dtype"))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        state_dict.pop(prefix + "num_batches_tracked", None)  # BN's counter means nothing here
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"FrozenBatchNorm expected input of shape (N, {self.num_features}, *), "
                f"got {tuple(x.shape)}"
            )
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        bshape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.view(bshape).to(x.dtype), x, scale.view(bshape).to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class _NoNorm(nn.Identity):
    """``norm="none"``: identity that accepts a norm's constructor arguments."""

    def __init__(self, num_channels: int, *args: Any, **kwargs: Any) -> None:
        super().__init__()


def _instance_norm(num_channels: int, **kw: Any) -> GroupNorm3d:
    if "num_groups" in kw or "group_size" in kw:
        raise ValueError('norm "in" fixes num_groups = num_channels; do not pass num_groups/group_size')
    return GroupNorm3d(num_channels, num_groups=num_channels, **kw)


def _layer_norm(num_channels: int, **kw: Any) -> GroupNorm3d:
    if "num_groups" in kw or "group_size" in kw:
        raise ValueError('norm "ln" fixes num_groups = 1; do not pass num_groups/group_size')
    return GroupNorm3d(num_channels, num_groups=1, **kw)


NORMS: Registry[Callable[..., nn.Module]] = Registry("norm", lowercase=True)
for _name, _factory in (
    ("gn", GroupNorm3d),
    ("bn", nn.BatchNorm3d),
    ("syncbn", nn.SyncBatchNorm),
    ("frozen_bn", FrozenBatchNorm),
    ("ln", _layer_norm),
    ("in", _instance_norm),
    ("none", _NoNorm),
):
    NORMS.register(_name, _factory)
NORM_NAMES = NORMS.names()  # a snapshot for importers; NORMS itself also sees later registrations


def resolve_norm(norm: NormSpec, **kwargs: Any) -> Callable[[int], nn.Module]:
    """Turn a norm spec into a channel-first constructor ``norm_layer(num_channels)``.

    Args:
        norm: a name in :data:`NORMS` ("gn", "bn", "syncbn", "frozen_bn", "ln", "in", "none"),
            a class, or any callable such as ``functools.partial(GroupNorm3d, num_groups=16)``.
        **kwargs: settings bound to the constructor (e.g. ``num_groups=16``, ``eps=1e-3``).
    """
    if isinstance(norm, str):
        factory = NORMS.get(norm)
    elif callable(norm):
        factory = norm
    else:
        raise TypeError(
            f"norm must be a name ({', '.join(NORMS.names())}) or a callable, got {type(norm).__name__}"
        )
    return functools.partial(factory, **kwargs) if kwargs else factory


def create_norm(norm: NormSpec, num_channels: int, **kwargs: Any) -> nn.Module:
    """Build one norm layer for ``num_channels`` channels, e.g. ``create_norm("gn", 256, num_groups=16)``."""
    return resolve_norm(norm, **kwargs)(num_channels)


@dataclass(frozen=True)
class NormChange:
    """One layer replaced by :func:`convert_norm`."""

    name: str
    source: str
    target: str
    num_channels: int
    detail: str = ""


def _bn_class_like(bn: _BatchNorm) -> type:
    if isinstance(bn, nn.SyncBatchNorm):
        return nn.SyncBatchNorm
    return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}.get(
        _bn_spatial_dims(bn), nn.BatchNorm3d
    )


def _bn_spatial_dims(bn: _BatchNorm) -> int:
    for cls, dims in ((nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2), (nn.BatchNorm3d, 3)):
        if isinstance(bn, cls):
            return dims
    return 3


def _convert_one(bn: _BatchNorm, to: NormSpec, kwargs: dict[str, Any]) -> nn.Module:
    kw = dict(kwargs)
    if isinstance(to, str) and to.lower() in ("bn",):
        new = _bn_class_like(bn)(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                                 track_running_stats=bn.track_running_stats, **kw)
    elif isinstance(to, str) and to.lower() == "frozen_bn":
        new = FrozenBatchNorm(bn.num_features, eps=kw.pop("eps", bn.eps), **kw)
    else:
        if isinstance(to, str) and to.lower() in ("gn", "ln", "in"):
            kw.setdefault("affine", bn.affine)
            kw.setdefault("eps", bn.eps)
        new = resolve_norm(to, **kw)(bn.num_features)

    with torch.no_grad():
        src_w = bn.weight if bn.affine else None
        src_b = bn.bias if bn.affine else None
        if isinstance(new, FrozenBatchNorm):
            if src_w is not None:
                new.weight.copy_(src_w)
                new.bias.copy_(src_b)
            if bn.running_mean is not None:
                new.running_mean.copy_(bn.running_mean)
                new.running_var.copy_(bn.running_var)
        else:
            for attr, src in (("weight", src_w), ("bias", src_b)):
                dst = getattr(new, attr, None)
                if src is not None and isinstance(dst, Tensor) and dst.shape == src.shape:
                    dst.copy_(src)
            if isinstance(new, _BatchNorm) and bn.running_mean is not None and new.running_mean is not None:
                new.running_mean.copy_(bn.running_mean)
                new.running_var.copy_(bn.running_var)
                new.num_batches_tracked.copy_(bn.num_batches_tracked)
    ref = next(iter(bn.parameters()), None)
    if ref is None:
        ref = next(iter(bn.buffers()), None)
    if ref is not None:
        new = new.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    new.train(bn.training)
    return new


def convert_norm(
    model: nn.Module,
    to: NormSpec = "gn",
    *,
    return_report: bool = False,
    **kwargs: Any,
) -> Union[nn.Module, tuple[nn.Module, list[NormChange]]]:
    """Replace every BatchNorm1d/2d/3d and SyncBatchNorm in ``model`` by another norm, in place.

    γ/β are carried over (and running statistics, for ``to="frozen_bn"`` or ``"bn"``); GN targets
    keep the source's ``eps`` and ``affine`` unless given. Channel counts that ``num_groups`` does
    not divide follow :func:`resolve_num_groups`; the report says which layers were adjusted.

    Args:
        model: any module (a BatchNorm itself is returned converted).
        to: a norm spec as in :func:`resolve_norm`; default "gn" (GroupNorm3d, G=32).
        return_report: also return the list of :class:`NormChange`.
        **kwargs: settings for the new norm (``num_groups=16``, ``group_size=16``, ...).

    Returns:
        The converted model, or ``(model, changes)`` when ``return_report`` is true.
    """
    resolve_norm(to, **kwargs)  # validate the spec once, before touching the model
    changes: list[NormChange] = []

    def convert(module: nn.Module, path: str) -> Optional[nn.Module]:
        if not isinstance(module, _BatchNorm):
            return None
        new = _convert_one(module, to, kwargs)
        detail = ""
        if isinstance(new, GroupNorm3d):
            detail = f"groups={new.num_groups}"
            if new.requested_num_groups not in (None, new.num_groups):
                detail += f" (requested {new.requested_num_groups})"
        changes.append(NormChange(path or "<root>", type(module).__name__, type(new).__name__,
                                  module.num_features, detail))
        return new

    root = convert(model, "")  # a BatchNorm given on its own comes back converted
    if root is not None:
        model = root
    else:
        replace_children(model, convert)
    adjusted = [c for c in changes if "requested" in c.detail]
    logger.info(
        "convert_norm: replaced %d layer(s) with %s%s", len(changes),
        changes[0].target if changes else to,
        f"; {len(adjusted)} with adjusted group counts" if adjusted else "",
    )
    return (model, changes) if return_report else model


def format_norm_report(changes: list[NormChange]) -> str:
    """A readable table of a :func:`convert_norm` report."""
    if not changes:
        return "no norm layers converted"
    width = max(len(c.name) for c in changes)
    lines = [f"{'layer':<{width}}  {'from':<15} {'to':<16} {'C':>5}  detail"]
    for c in changes:
        lines.append(f"{c.name:<{width}}  {c.source:<15} {c.target:<16} {c.num_channels:>5}  {c.detail}")
    return "\n".join(lines)

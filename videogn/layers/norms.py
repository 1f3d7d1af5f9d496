"""Norm factory (strings, classes or partials → ``norm_layer(C)``), frozen BN and BN→GN conversion.

Every norm declares whether its parameters take weight decay: a :data:`NORMS` entry is a
:class:`NormEntry` (built by :func:`register_norm`), and torch's own norm classes, which foreign
models contain, are declared in :data:`TORCH_NORMS`. The optimizer reads the declaration
(:func:`norm_weight_decay`); an entry without one is refused when it is registered.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from videogn.checks import check_int
from videogn.layers.group_norm3d import GroupNorm3d
from videogn.layers.surgery import replace_children
from videogn.registry import Registry

__all__ = [
    "NORMS",
    "NORM_NAMES",
    "TORCH_NORMS",
    "FrozenBatchNorm",
    "NormChange",
    "NormEntry",
    "register_norm",
    "norm_weight_decay",
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
        check_int("num_features", num_features)
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


@dataclass(frozen=True)
class NormEntry:
    """One registered norm: how it is built and how training treats its parameters.

    Attributes:
        factory: the channel-first constructor, ``factory(num_channels, **kwargs)``.
        weight_decay: whether the parameters of the modules it builds take weight decay (False
            for every built-in norm: their γ/β are kept out of the decayed group).
        modules: the module classes ``factory`` builds (subclasses are covered too).
    """

    factory: Callable[..., nn.Module]
    weight_decay: bool
    modules: tuple[type[nn.Module], ...]

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise TypeError(f"NormEntry.factory must be callable, got {self.factory!r}")
        if not isinstance(self.weight_decay, bool):
            raise TypeError(f"NormEntry.weight_decay must be True or False, got {self.weight_decay!r}")
        modules = tuple(self.modules) if isinstance(self.modules, (list, tuple)) else ()
        if not modules or not all(isinstance(m, type) and issubclass(m, nn.Module) for m in modules):
            raise TypeError(f"NormEntry.modules must be nn.Module classes (at least one), got {self.modules!r}")
        object.__setattr__(self, "modules", modules)  # frozen: a tuple, as isinstance() needs


# Torch's own norm classes, which foreign (torchvision, pytorchvideo, timm) models contain; subclasses
# (timm's LayerNorm2d) inherit the declaration, and the private bases cover the lazy variants
# (LazyBatchNorm3d is no BatchNorm3d). No weight decay on any of them.
TORCH_NORMS: Mapping[type[nn.Module], bool] = {
    cls: False
    for cls in (
        nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, _BatchNorm, nn.GroupNorm, nn.LayerNorm,
        nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, _InstanceNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d,
        *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
    )
}


def _declared_classes() -> dict[type[nn.Module], bool]:
    declared = dict(TORCH_NORMS)
    for name in NORMS:
        entry = NORMS.get(name)
        declared.update(dict.fromkeys(entry.modules, entry.weight_decay))
    return declared


def norm_weight_decay(module: nn.Module) -> Optional[bool]:
    """Whether ``module``'s parameters take weight decay, as its norm declares (the nearest declared
    class in its MRO: a :data:`NORMS` entry's ``modules`` or :data:`TORCH_NORMS`); None when
    ``module`` is not a declared norm."""
    declared = _declared_classes()
    for cls in type(module).__mro__:
        if cls in declared:
            return declared[cls]
    return None


def _check_entry(name: str, entry: object) -> None:
    if not isinstance(entry, NormEntry):
        raise TypeError(
            f"norm {name!r}: a NORMS entry must declare whether its parameters take weight decay; got "
            f"{entry!r}. Register it with register_norm({name!r}, factory, weight_decay=False) "
            f"(or NORMS.register({name!r}, NormEntry(factory, weight_decay=..., modules=(...))))"
        )
    declared = _declared_classes()
    for cls in entry.modules:
        if declared.get(cls, entry.weight_decay) != entry.weight_decay:
            raise ValueError(
                f"norm {name!r} declares weight_decay={entry.weight_decay} for {cls.__name__}, which is "
                f"already declared weight_decay={declared[cls]}; one class has one declaration"
            )


NORMS: Registry[NormEntry] = Registry("norm", lowercase=True, check=_check_entry)


def register_norm(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    weight_decay: bool,
    modules: Optional[Sequence[type[nn.Module]]] = None,
) -> NormEntry:
    """Add a norm to :data:`NORMS` (then usable as ``norm=name`` in :func:`resolve_norm`, the model
    zoo and the configs).

    Args:
        name: the registry key (case-insensitive).
        factory: a channel-first constructor, ``factory(num_channels, **kwargs)``.
        weight_decay: whether its parameters take weight decay (the optimizer reads this).
        modules: the classes ``factory`` builds; default ``(factory,)`` when it is a class.
    """
    if modules is None:
        if not isinstance(factory, type):
            raise TypeError(
                f"norm {name!r}: factory {factory!r} is not a class; say which classes it builds (modules=...)"
            )
        modules = (factory,)
    return NORMS.register(name, NormEntry(factory, weight_decay, tuple(modules)))


register_norm("gn", GroupNorm3d, weight_decay=False)
register_norm("bn", nn.BatchNorm3d, weight_decay=False)
register_norm("syncbn", nn.SyncBatchNorm, weight_decay=False)
register_norm("frozen_bn", FrozenBatchNorm, weight_decay=False)  # buffers only: nothing to decay
register_norm("ln", _layer_norm, weight_decay=False, modules=(GroupNorm3d,))
register_norm("in", _instance_norm, weight_decay=False, modules=(GroupNorm3d,))
register_norm("none", _NoNorm, weight_decay=False)  # no parameters
NORM_NAMES = NORMS.names()  # a snapshot for importers; NORMS itself also sees later registrations


def resolve_norm(norm: NormSpec, **kwargs: Any) -> Callable[[int], nn.Module]:
    """Turn a norm spec into a channel-first constructor ``norm_layer(num_channels)``.

    Args:
        norm: a name in :data:`NORMS` ("gn", "bn", "syncbn", "frozen_bn", "ln", "in", "none"),
            a class, or any callable such as ``functools.partial(GroupNorm3d, num_groups=16)``.
        **kwargs: settings bound to the constructor (e.g. ``num_groups=16``, ``eps=1e-3``).
    """
    if isinstance(norm, str):
        factory = NORMS.get(norm).factory
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

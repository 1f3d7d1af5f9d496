"""Normalisation layers: GroupNorm3d, the norm and activation registries, converters, WS convs, zero-γ init,
and the submodule swap they share."""

from videogn.layers.activations import ACTS, ActSpec, create_norm_act, fused_act_name, resolve_act

from videogn.layers.group_norm3d import DEFAULT_NUM_GROUPS, MIN_GROUP_SIZE, GroupNorm3d, resolve_num_groups
from videogn.layers.init import last_norm_of_block, zero_init_last_norm
from videogn.layers.norms import (
    NORM_NAMES,
    NORMS,
    TORCH_NORMS,
    NormSpec,
    FrozenBatchNorm,
    NormChange,
    NormEntry,
    convert_norm,
    create_norm,
    format_norm_report,
    norm_weight_decay,
    register_norm,
    resolve_norm,
)
from videogn.layers.surgery import replace_children
from videogn.layers.weight_std import WSConv3d, standardize_convs, standardize_weight

__all__ = [
    "ACTS",
    "ActSpec",
    "create_norm_act",
    "fused_act_name",
    "resolve_act",
    "NORMS",
    "TORCH_NORMS",
    "NormSpec",
    "NormEntry",
    "register_norm",
    "norm_weight_decay",
    "DEFAULT_NUM_GROUPS",
    "MIN_GROUP_SIZE",
    "GroupNorm3d",
    "resolve_num_groups",
    "NORM_NAMES",
    "FrozenBatchNorm",
    "NormChange",
    "convert_norm",
    "create_norm",
    "format_norm_report",
    "resolve_norm",
    "replace_children",
    "WSConv3d",
    "standardize_convs",
    "standardize_weight",
    "last_norm_of_block",
    "zero_init_last_norm",
]

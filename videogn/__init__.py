"""videogn: Group Normalization for spatiotemporal networks.

    import videogn
    norm = videogn.GroupNorm3d(256)                      # GN over (C/G, T, H, W), G=32
    model = videogn.convert_norm(model, to="gn")         # BatchNorm -> GroupNorm3d, γ/β carried
"""

from videogn import functional, ops  # ops: registers the custom ops for torch.export.load
from videogn.layers import (
    NORM_NAMES,
    FrozenBatchNorm,
    GroupNorm3d,
    WSConv3d,
    convert_norm,
    create_norm,
    resolve_norm,
    standardize_convs,
    zero_init_last_norm,
)

__version__ = "0.1.0"

__all__ = [
    "functional",
    "NORM_NAMES",
    "FrozenBatchNorm",
    "GroupNorm3d",
    "WSConv3d",
    "standardize_convs",
    "convert_norm",
    "create_norm",
    "resolve_norm",
    "zero_init_last_norm",
    "__version__",
]

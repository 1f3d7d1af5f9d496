"""Zero-γ init of the last norm in each residual block (Goyal et al.; the GN paper does it for GN too)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import torch
from torch import nn

__all__ = ["zero_init_last_norm", "last_norm_of_block"]


def last_norm_of_block(block: nn.Module) -> Optional[nn.Module]:
    """The norm closing the residual branch of ``block``, for the block types videogn knows.

    Only for models built outside the model zoo (a user's torchvision or pytorchvideo network):
    registered models declare their blocks (``ModelSpec.residual_blocks``), nothing is guessed.
    videogn blocks name it ``last_norm``; torchvision's 2-D blocks ``bn3``/``bn2``; torchvision's
    video blocks end ``conv3``/``conv2`` in a (conv, norm) Sequential; pytorchvideo's
    BottleneckBlock calls it ``norm_c``.
    """
    for attr in ("last_norm", "norm_c", "bn3"):
        norm = getattr(block, attr, None)
        if isinstance(norm, nn.Module):
            return norm
    cls = type(block)
    if cls.__name__ == "BasicBlock" and isinstance(getattr(block, "bn2", None), nn.Module):
        return block.bn2
    if cls.__module__.startswith("torchvision.models.video"):
        branch = getattr(block, "conv3", None) if cls.__name__ == "Bottleneck" else getattr(block, "conv2", None)
        if isinstance(branch, nn.Sequential) and len(branch) > 1:
            return branch[-1]
    return None


def zero_init_last_norm(
    model: nn.Module, blocks: Optional[Iterable[tuple[nn.Module, Optional[nn.Module]]]] = None
) -> int:
    """Set γ = 0 in the last norm of every residual block of ``model``; return how many were set.

    Each residual block then starts as the identity. Works for GN and BN alike; norms without a
    trainable weight (frozen BN, affine=False) are left alone.

    Args:
        model: the network.
        blocks: its (block, last norm) pairs as the model family declares them
            (``ModelSpec.residual_blocks(model)``; a None norm is a block without a residual
            branch). Without it, blocks are recognised by :func:`last_norm_of_block`.
    """
    if blocks is None:
        blocks = ((m, last_norm_of_block(m)) for m in model.modules())
    count = 0
    seen: set[int] = set()
    for block, norm in blocks:
        if norm is None or id(norm) in seen or norm is block:
            continue
        weight = getattr(norm, "weight", None)
        if isinstance(weight, nn.Parameter):
            with torch.no_grad():
                weight.zero_()
            seen.add(id(norm))
            count += 1
    return count

"""Small models and a one-line memory measurement shared by the budget tests."""

from __future__ import annotations

from torch import nn

from videogn.budget import measure_step_memory
from videogn.layers import GroupNorm3d

MiB = 2**20


def small_gn_net() -> nn.Module:
    """conv3d + GroupNorm3d + ReLU, twice, global pooling, linear: (N, 3, T, H, W) -> (N, 5)."""
    return nn.Sequential(
        nn.Conv3d(3, 16, 3, padding=1, bias=False), GroupNorm3d(16, 4), nn.ReLU(),
        nn.Conv3d(16, 32, 3, stride=2, padding=1, bias=False), GroupNorm3d(32, 8), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(32, 5),
    )


def mem(t: int, s: int, b: int, model="i3d_tiny", **kw) -> int:
    """Peak bytes of one CPU training step of ``model`` on (b, 3, t, s, s) clips, 5 classes."""
    m = measure_step_memory(model, t, s, b, num_classes=5, device="cpu", **kw)
    assert m.method in ("alloc", "rss") and m.device == "cpu"
    return m.peak_bytes

"""Fast kernels. Importing this registers the ``videogn::`` custom ops (triton loads on first use)."""

from videogn.ops import group_norm  # noqa: F401  (registers torch.ops.videogn.*)

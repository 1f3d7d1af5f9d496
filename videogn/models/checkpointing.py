"""Activation checkpointing of a registered model: recompute blocks in backward instead of storing
their activations (``trainer.activation_checkpointing``).

    from videogn.models import create_model
    from videogn.models.checkpointing import apply_activation_checkpointing
    model = create_model("i3d_r50", 400)
    apply_activation_checkpointing(model, "i3d_r50", "full")  # every residual block and the stem

The modules to wrap are the ones the model's :class:`~videogn.models.ModelSpec` declares
(``residual_blocks``, ``stem``). Each keeps its class and its place in the tree: only its
``forward`` is replaced, on the instance, by one that runs the class's forward under
:func:`torch.utils.checkpoint.checkpoint` (non-reentrant). No wrapper module is added, so
state-dict keys stay plain and checkpoints move freely between runs with and without it.

- The random state is restored before recomputing (torch's default), so dropout inside a block
  draws the same mask twice.
- BatchNorm: the recomputation normalises with batch statistics, as the first forward did, and its
  running statistics are put back afterwards, so they are updated once per step, as without
  checkpointing.
- Under ``torch.no_grad()`` (evaluation) blocks run plainly: there is nothing to recompute.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from videogn.models.spec import ModelSpec, get_model_spec

__all__ = [
    "CHECKPOINT_MODES", "apply_activation_checkpointing", "check_checkpointing_mode", "checkpointed_modules",
    "is_checkpointed",
]

# none: store every activation; blocks: recompute every declared residual block; full: blocks and the stem
CHECKPOINT_MODES = ("none", "blocks", "full")

_FLAG = "_videogn_checkpointed"  # an instance attribute, not a buffer: invisible to state_dict


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Around a recomputation of ``module``: put its BatchNorms' running statistics (and
    ``num_batches_tracked``) back as they were. The recomputation normalises with batch statistics,
    as the first forward did, and must not count the step twice. (Turning ``track_running_stats``
    off instead would change which tensors batch_norm saves, which checkpoint's recomputation
    check refuses.)"""
    buffers = [
        b for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
        for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None
    ]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, old in zip(buffers, saved):
                b.copy_(old)


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """Bound to a module as its ``forward``: the class's forward, recomputed in backward."""
    plain = types.MethodType(type(self).forward, self)
    if not torch.is_grad_enabled():
        return plain(*args, **kwargs)

    def forward(*inputs: Any, **kw: Any) -> Any:
        # a fresh list per call: some blocks write into their input list (pytorchvideo's
        # MultiPathWayWithFuse, inplace=True), which would feed the recomputation its own outputs
        return plain(*(list(a) if isinstance(a, list) else a for a in inputs), **kw)

    def contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        # first forward: as usual (running statistics updated once); recomputation: put back
        return contextlib.nullcontext(), _running_stats_kept(self)

    return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)


def check_checkpointing_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`CHECKPOINT_MODES`; a ValueError naming the valid ones otherwise."""
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"activation_checkpointing must be one of {CHECKPOINT_MODES}, got {mode!r}")
    return mode


def checkpointed_modules(model: nn.Module, spec: Union[str, ModelSpec], mode: str) -> list[nn.Module]:
    """The modules ``mode`` recomputes: every block ``spec.residual_blocks`` declares (``blocks``),
    plus ``spec.stem`` (``full``); none for ``none``.

    Raises:
        ValueError: an unknown mode, or a spec that does not declare what the mode needs.
    """
    check_checkpointing_mode(mode)
    spec = get_model_spec(spec) if isinstance(spec, str) else spec
    if mode == "none":
        return []
    if spec.residual_blocks is None:
        raise ValueError(
            f"activation_checkpointing={mode!r}: model {spec.name!r} declares no residual blocks; "
            "declare them in its ModelSpec (residual_blocks=...) or use 'none'"
        )
    modules = [block for block, _ in spec.residual_blocks(model)]
    if mode == "full":
        if spec.stem is None:
            raise ValueError(
                f"activation_checkpointing='full': model {spec.name!r} declares no stem; declare it in its "
                "ModelSpec (stem=...) or use 'blocks'"
            )
        modules.insert(0, spec.stem(model))
    return modules


def apply_activation_checkpointing(model: nn.Module, spec: Union[str, ModelSpec], mode: str) -> int:
    """Make ``model`` recompute the modules of ``mode`` in backward, in place (see the module docstring).

    Idempotent; ``mode="none"`` restores plain forwards everywhere in ``model``. State-dict keys,
    parameters and outputs are unchanged.

    Args:
        model: a model built by :func:`videogn.models.create_model` for ``spec`` (unwrapped from DDP).
        spec: its registry name or :class:`~videogn.models.ModelSpec`.
        mode: one of :data:`CHECKPOINT_MODES`.

    Returns:
        how many modules are recomputed now.
    """
    wanted = checkpointed_modules(model, spec, mode)
    keep = {id(m) for m in wanted}
    for m in model.modules():  # undo what another mode wrapped
        if is_checkpointed(m) and id(m) not in keep:
            del m.forward
            delattr(m, _FLAG)
    for m in wanted:
        if not is_checkpointed(m):
            # an instance attribute shadows the class's forward; deepcopy rebinds it to the copy
            m.forward = types.MethodType(_checkpointed_forward, m)  # type: ignore[method-assign]
            setattr(m, _FLAG, True)
    return len(wanted)


def is_checkpointed(module: nn.Module) -> bool:
    """Whether :func:`apply_activation_checkpointing` made ``module`` recompute in backward."""
    return bool(module.__dict__.get(_FLAG, False))

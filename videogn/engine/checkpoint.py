"""Atomic, ``weights_only``-loadable checkpoints and the RNG state they carry.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts — nothing pickled — so
``torch.load(path, weights_only=True)`` reads it. It is written to a temporary file in the same
folder, flushed to disk, then renamed over the final name with ``os.replace``: a crash while
writing leaves at most a stray ``*.tmp`` file and every earlier checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "checkpoint_path",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{9})\.pt$")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """``<directory>/step_<step:09d>.pt`` (zero-padded, so names sort by step)."""
    return Path(directory) / f"step_{step:09d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    # Persist the rename itself (the directory entry) before anyone deletes older checkpoints.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code runs on load).

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: the file is truncated or not a checkpoint (the message names the path).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, ...
        raise RuntimeError(f"checkpoint {str(path)!r} is unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise RuntimeError(f"checkpoint {str(path)!r} is not a videogn checkpoint (no 'model' entry)")
    return state


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Step checkpoints in ``directory``, newest (highest step) first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)  # type: ignore[union-attr]


def find_latest_checkpoint(directory: str | Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint in ``directory`` that loads, with its state; damaged ones are skipped
    (with a warning). None if there is none."""
    for path in list_checkpoints(directory):
        try:
            return path, load_checkpoint(path)
        except RuntimeError as e:
            logger.warning("skipping damaged checkpoint: %s", e)
    return None


def prune_checkpoints(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest step checkpoints; returns the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep!r}")
    doomed = list_checkpoints(directory)[keep:]
    for p in doomed:
        _unlink_quietly(p)
    return doomed


# ------------------------------------------------------------------------------------------
# RNG state as tensors (weights_only-safe)
# ------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states as tensors and numbers."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python_version": int(version),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": float("nan") if gauss is None else float(gauss),
        "python_has_gauss": gauss is not None,
        "numpy_name": str(np_name),
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    gauss = state["python_gauss"] if state["python_has_gauss"] else None
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), gauss))
    np.random.set_state(
        (
            state["numpy_name"],
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])

"""The checkpoint format, and the one place that writes, reads, version-checks and unwraps it.

A videogn checkpoint is a plain dict of tensors, numbers, strings, lists and dicts — nothing
pickled — so ``torch.load(path, weights_only=True)`` reads it. :func:`make_checkpoint` builds it,
:func:`save_checkpoint` writes it atomically (a temporary file in the same folder, flushed to disk,
then renamed over the final name with ``os.replace``: a crash while writing leaves at most a stray
``*.tmp`` file and every earlier checkpoint intact), :func:`load_checkpoint` reads it back checked
and migrated to :data:`FORMAT_VERSION`. :func:`read_weights` reads *any* weights file — a videogn
checkpoint or a foreign one (pytorchvideo, Lightning, timm, torchvision, DDP) — by one rule set,
:func:`unwrap_state_dict`. Every refusal is a :class:`CheckpointError` naming the file and the cause.

Format history (``"version"``; a reader migrates every older version, one step per version, and
refuses a newer one):

1. videogn 0.1.0: ``format``, ``version``, ``model``, ``optimizer``, ``scheduler``, ``scaler``,
   ``step``, ``sampler``, ``sampler_setup``, ``nonfinite_streak``, ``skipped_steps``, ``rng`` (one
   entry per rank), ``world_size``, ``class_names``, ``config`` (the training config as YAML).
2. adds ``videogn_version``: the release that wrote the file (migrated version-1 files get
   ``"0.1.0"``, the only release that wrote version 1), so a refusal can say which videogn to use.

This module imports only torch, NumPy and the standard library: models, engine and the command
line tools all depend on it, never the other way round.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RESUME_KEYS",
    "STATE_DICT_WRAPPERS",
    "CheckpointError",
    "Weights",
    "capture_rng_state",
    "checkpoint_path",
    "find_latest_checkpoint",
    "is_videogn_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "make_checkpoint",
    "prune_checkpoints",
    "read_weights",
    "restore_rng_state",
    "save_checkpoint",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

FORMAT = "videogn-checkpoint"
FORMAT_VERSION = 2

# What make_checkpoint always writes; a file without these is not a (complete) videogn checkpoint.
_REQUIRED_KEYS = ("model", "step", "class_names", "config")
# What the trainer needs on top of the weights to continue a run.
RESUME_KEYS = (
    "optimizer", "scheduler", "scaler", "sampler", "sampler_setup", "nonfinite_streak", "skipped_steps",
    "rng", "world_size",
)
# Keys a foreign file keeps its state dict under, tried in this order: pytorchvideo's hub files,
# Lightning / mmaction / timm training checkpoints, DeiT-style {"model": ...}, a saved DDP wrapper.
STATE_DICT_WRAPPERS = ("model_state", "state_dict", "model", "module")
# Prefixes every key carries when a wrapped module was saved: DDP/DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_NAME = re.compile(r"^step_(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used; the message names the file and the cause.

    ``reason`` is one of ``"missing"``, ``"damaged"`` (truncated, not a torch file, or pickled
    objects), ``"not_videogn"``, ``"newer"``, ``"incomplete"`` (keys missing) or ``"no_state_dict"``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------


def make_checkpoint(
    *, model_state: Mapping[str, Tensor], step: int, class_names: list[str], config: str, **training_state: Any
) -> dict[str, Any]:
    """A checkpoint of the current format: the weights, the step, the class order and the training
    config (YAML), plus whatever training state a resume needs (:data:`RESUME_KEYS`, as keywords)."""
    import videogn  # the package, fully imported by the time anyone saves

    clash = sorted(set(training_state) & {"format", "version", "videogn_version", *_REQUIRED_KEYS})
    if clash:
        raise ValueError(f"make_checkpoint: {clash} are set by the format, not passed as training state")
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "videogn_version": videogn.__version__,
        "model": dict(model_state),
        "step": int(step),
        "class_names": list(class_names),
        "config": config,
        **training_state,
    }


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


# ------------------------------------------------------------------------------------------
# reading: the file, the version check, migrations
# ------------------------------------------------------------------------------------------


def _read_file(path: Path, map_location: Any) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into a CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} not found", reason="missing")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file", reason="missing")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch reports a bad file by many exception types
        if isinstance(e, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            # A complete torch.save file holding Python objects (an argparse Namespace, a whole
            # nn.Module, ...): weights_only refuses to run their code, and so do we.
            lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
            why = lines[0].split(" was not ")[0] if lines else type(e).__name__
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds pickled Python objects that a weights-only load refuses ({why}); "
                "re-save only the tensors, e.g. torch.save(model.state_dict(), path)",
                reason="damaged",
            ) from e
        # A cut-off zip gives "OSError: [Errno 22] Invalid argument" or a PytorchStreamReader error,
        # a file that is no torch.save output an UnpicklingError or EOFError.
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or damaged ({path.stat().st_size} bytes; "
            f"{type(e).__name__}: {_first_line(e)}); use an earlier checkpoint or copy the file again",
            reason="damaged",
        ) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "no details"


def is_videogn_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` (a loaded file) carries the videogn checkpoint marker, of any version."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def _v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    state.setdefault("videogn_version", "0.1.0")  # the only release that wrote version 1
    return state


# version N -> the migration that turns an N checkpoint into an N+1 one
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def _checked(obj: Any, source: str) -> dict[str, Any]:
    """A loaded videogn checkpoint, version-checked and migrated to FORMAT_VERSION."""
    if not is_videogn_checkpoint(obj):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"checkpoint {source} is not a videogn checkpoint (no 'format': {FORMAT!r} entry; it holds {keys}); "
            "to start from foreign weights use model.weights=PATH",
            reason="not_videogn",
        )
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint {source} has an invalid format version {version!r}", reason="damaged")
    if version > FORMAT_VERSION:
        writer = obj.get("videogn_version")
        by = f"videogn {writer}, " if isinstance(writer, str) else ""
        raise CheckpointError(
            f"checkpoint {source} was written by a newer videogn ({by}format version {version} > {FORMAT_VERSION}); "
            "upgrade videogn",
            reason="newer",
        )
    state = dict(obj)
    while state["version"] < FORMAT_VERSION:
        old = state["version"]
        state = _MIGRATIONS[old](state)
        state["version"] = old + 1
    if version < FORMAT_VERSION:
        logger.debug("checkpoint %s: migrated from format version %d to %d", source, version, FORMAT_VERSION)
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing or not isinstance(state["model"], Mapping):
        raise CheckpointError(
            f"checkpoint {source} is incomplete: no {missing or ['model state dict']}", reason="incomplete"
        )
    return state


def load_checkpoint(path: str | Path, map_location: Any = "cpu", *, resume: bool = False) -> dict[str, Any]:
    """Load a videogn checkpoint (``weights_only``: no code runs), checked and migrated to
    :data:`FORMAT_VERSION`.

    Args:
        path: a ``.pt`` file written by :func:`save_checkpoint`.
        map_location: as for ``torch.load``.
        resume: also require the training state a resume needs (:data:`RESUME_KEYS`).

    Raises:
        CheckpointError: missing, truncated or damaged, not a videogn checkpoint, written by a newer
            videogn, or (``resume``) without training state.
    """
    path = Path(path)
    state = _checked(_read_file(path, map_location), repr(str(path)))
    if resume:
        missing = [k for k in RESUME_KEYS if k not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds weights but no training state ({missing}) and cannot be resumed; "
                "start a new run from its weights with model.weights=PATH",
                reason="incomplete",
            )
    return state


# ------------------------------------------------------------------------------------------
# weights of any origin
# ------------------------------------------------------------------------------------------


@dataclass
class Weights:
    """A state dict read by :func:`read_weights`, and where it came from."""

    state_dict: dict[str, Tensor]
    checkpoint: Optional[dict[str, Any]]  # the migrated videogn checkpoint; None for a foreign file
    wrapper: Optional[str]  # the key the state dict was found under (e.g. "model_state"); None if bare


def unwrap_state_dict(obj: Any, source: str = "weights") -> tuple[dict[str, Tensor], Optional[str]]:
    """The state dict inside a loaded checkpoint object, and the key it was found under.

    One rule set for every format:

    1. a videogn checkpoint (any version): its ``"model"``;
    2. otherwise, while the mapping has one of :data:`STATE_DICT_WRAPPERS` (``model_state``,
       ``state_dict``, ``model``, ``module``, tried in that order) holding a mapping, descend into it
       (nested wrappers are reported joined by dots, e.g. ``"state_dict.module"``);
    3. entries that are not tensors (an ``epoch`` counter beside the weights) are dropped; none left
       is an error;
    4. a ``module.`` (DDP/DataParallel) or ``_orig_mod.`` (``torch.compile``) prefix that *every*
       key carries is removed.

    Raises:
        CheckpointError: ``obj`` holds no tensors where a state dict should be.
    """
    path: list[str] = []
    if is_videogn_checkpoint(obj) and isinstance(obj.get("model"), Mapping):
        obj, path = obj["model"], ["model"]
    while isinstance(obj, Mapping) and len(path) < 4:
        key = next((k for k in STATE_DICT_WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj = obj[key]
        path.append(key)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} holds no state dict: expected a mapping of names to tensors, got {type(obj).__name__}",
            reason="no_state_dict",
        )
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(
            f"{source} holds no state dict: no tensors in {sorted(map(str, obj))[:8]} — expected a mapping of names "
            f"to tensors, a videogn checkpoint, or a dict with one of {list(STATE_DICT_WRAPPERS)}",
            reason="no_state_dict",
        )
    for prefix in _WRAPPER_PREFIXES * 2:  # twice: a compiled model inside DDP nests both
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, ".".join(path) or None


def read_weights(path_or_obj: Union[str, Path, Mapping[str, Any]], map_location: Any = "cpu") -> Weights:
    """The weights in a file (or an already loaded object) of any supported format.

    A videogn checkpoint is version-checked and migrated (:func:`load_checkpoint`'s rules); anything
    else is unwrapped by :func:`unwrap_state_dict`.

    Raises:
        CheckpointError: the file is missing or damaged, a videogn checkpoint from a newer videogn,
            or holds no state dict.
    """
    if isinstance(path_or_obj, (str, Path)):
        source = repr(str(path_or_obj))
        obj = _read_file(Path(path_or_obj), map_location)
    else:
        source, obj = "weights", path_or_obj
    checkpoint = _checked(obj, source) if is_videogn_checkpoint(obj) else None
    state, wrapper = unwrap_state_dict(checkpoint if checkpoint is not None else obj, source)
    return Weights(state_dict=state, checkpoint=checkpoint, wrapper=wrapper)


# ------------------------------------------------------------------------------------------
# a run's checkpoint folder
# ------------------------------------------------------------------------------------------


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Step checkpoints in ``directory``, newest (highest step) first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)  # type: ignore[union-attr]


def find_latest_checkpoint(directory: str | Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint in ``directory`` that loads, with its (migrated) state; damaged ones are
    skipped with a warning. None if there is none.

    Raises:
        CheckpointError: the newest readable checkpoint was written by a newer videogn (skipping it
            would silently resume from an older step).
    """
    for path in list_checkpoints(directory):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            if e.reason not in ("damaged", "not_videogn", "incomplete"):
                raise
            logger.warning("skipping unusable checkpoint: %s", e)
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

"""CPU thread policy: intra-op threads and loader workers chosen together, OpenMP that sleeps.

Measured on a 2-core Xeon (docs/benchmarks/main_job.md): the main job took 57 s with 2 intra-op
threads + 1 loader worker and 37 s with 1 + 1; two jobs side by side took 324 s each with 2 + 1.
A busy worker and spinning OpenMP threads fight over the cores, so the plan gives the process at
most one busy thread per core it may use, and OpenMP threads wait passively (``OMP_WAIT_POLICY``).

A leaf module (stdlib only): the console scripts' launcher (``_videogn_launch``) runs
:func:`ensure_passive_openmp` from this file before torch loads. Importing videogn changes nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

__all__ = ["available_cores", "ensure_passive_openmp", "plan_threads"]

log = logging.getLogger(__name__)

WAIT_POLICY_VAR = "OMP_WAIT_POLICY"
_REEXEC_MARK = "_VIDEOGN_OMP_REEXEC"  # set on the re-executed process: never loop


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, shared among the ranks of a torchrun job
    on this machine (``LOCAL_WORLD_SIZE``); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        cores = os.cpu_count() or 1
    try:
        local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_world = 1
    return max(1, cores // local_world)


def _check_int(name: str, value: object, low: int) -> int:
    """videogn.checks.check_int's rule and message, here because this module must not import videogn."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def plan_threads(num_workers: int, requested_threads: Optional[int], cores: Optional[int] = None) -> tuple[int, int]:
    """Intra-op threads and loader workers that together fit the cores.

    With ``requested_threads`` given both values are kept as asked (the user decided). Otherwise
    the loader workers keep one core each, at most ``cores - 1`` of them so the training process
    keeps a core, and the intra-op threads take the rest (at least 1).

    Args:
        num_workers: the loader workers asked for (``data.num_workers``, "auto" already resolved).
        requested_threads: ``trainer.num_threads``; None to plan.
        cores: the cores to plan for (default: :func:`available_cores`).

    Returns:
        ``(threads, workers)``.
    """
    # stdlib only (loaded by the launcher before torch): videogn.checks would import the package
    _check_int("data.num_workers", num_workers, 0)
    if requested_threads is not None:
        _check_int("trainer.num_threads", requested_threads, 1)
    cores = _check_int("cores", available_cores() if cores is None else cores, 1)
    if requested_threads is not None:
        return requested_threads, num_workers
    workers = min(num_workers, cores - 1)
    if workers < num_workers:
        log.info("data.num_workers %d -> %d: %d core(s) for this process, one kept for training",
                 num_workers, workers, cores)
    return max(1, cores - workers), workers


def ensure_passive_openmp() -> None:
    """Make OpenMP threads sleep, not spin, between parallel regions (``OMP_WAIT_POLICY=PASSIVE``,
    unless the user set the variable), re-executing this process when OpenMP is already loaded.

    libgomp reads the variable once, when it is loaded (``import torch``), not at its first
    parallel region: setting it later has no effect (checked with ``OMP_DISPLAY_ENV=VERBOSE``,
    which shows ``GOMP_SPINCOUNT``). The console scripts call this before torch loads (the
    launcher ``_videogn_launch``), so it only sets the variable; ``python -m videogn.train`` has
    loaded torch with the package, so its ``__main__`` block re-executes the process with the same
    interpreter and arguments (``sys.orig_argv``), same pid, which torchrun accepts.
    """
    if WAIT_POLICY_VAR in os.environ or os.environ.get(_REEXEC_MARK):
        return
    os.environ[WAIT_POLICY_VAR] = "PASSIVE"
    if not _openmp_loaded():
        return  # read when OpenMP loads
    os.environ[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    os.execv(sys.executable, [sys.executable, *argv[1:]])


def _openmp_loaded() -> bool:
    """Whether an OpenMP runtime is mapped into this process (Linux; elsewhere assume it is)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return True
    return any(name in maps for name in ("libgomp", "libiomp", "libomp"))

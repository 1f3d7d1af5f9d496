"""Process-group setup for ``torchrun`` (DDP) and the few collectives the engine needs.

A job launched by ``torchrun`` has ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment; the
process group then uses NCCL on CUDA and gloo on the CPU. A plain ``python`` run is a world of one
and touches no process group, so every helper here also works without ``torch.distributed``.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from videogn.runtime import env_rank

__all__ = [
    "DistInfo",
    "PeerWatch",
    "RankFailure",
    "all_gather_objects",
    "collective_device",
    "broadcast_object",
    "init_distributed",
    "shutdown_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but no CUDA device is available")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: str = "auto", backend: str = "auto", timeout_s: float = 300.0) -> DistInfo:
    """Join the torchrun process group if launched by torchrun, and pick this process's device.

    Args:
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda`` (``cuda:LOCAL_RANK``).
        backend: ``auto`` (nccl on CUDA, gloo on CPU), ``gloo`` or ``nccl``.
        timeout_s: how long a collective waits for a stuck rank before the job fails
            (``trainer.dist_timeout_s``; torch's own default is 30 minutes).
    """
    if backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"backend must be 'auto', 'gloo' or 'nccl', got {backend!r}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = env_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend == "nccl" and dev.type != "cuda":
            raise ValueError("backend='nccl' needs CUDA devices; use backend='gloo' on the CPU")
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(
            backend=backend,
            timeout=timeout,
            device_id=dev if dev.type == "cuda" else None,
            **_attempt_store(rank, world_size, timeout),
        )
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def _attempt_store(rank: int, world_size: int, timeout: datetime.timedelta) -> dict[str, Any]:
    """Under ``torchrun --max-restarts``, a store namespace of this attempt's own.

    Seen with torch 2.14 + gloo: after a restart, workers sometimes read the previous attempt's
    addresses from torchrun's store and fail to connect ("Connection refused") or hang in
    ``init_process_group`` (2 of 4 restarts here; 0 of 6 with a per-attempt prefix).
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return {}  # not torchrun: torch's env:// rendezvous
    host_is_agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=rank == 0 and not host_is_agent, timeout=timeout,
    )
    return {"store": dist.PrefixStore(f"videogn/attempt_{attempt}", store), "rank": rank, "world_size": world_size}


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device() -> torch.device:
    """Where a collective's tensors must live: CUDA for NCCL, the CPU for gloo."""
    # NCCL collectives need CUDA tensors; gloo works on CPU tensors.
    if _active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; for small things like paths)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (pickled; for per-rank results such as predictions)."""
    if not _active():
        return [obj]
    out: list[Optional[Any]] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class RankFailure(RuntimeError):
    """A collective failed because other ranks died or stopped responding (they are named)."""


class PeerWatch:
    """Liveness of the job's ranks, so a failed collective can name the rank that died.

    Each rank bumps a counter in the job's rendezvous store (``MASTER_ADDR:MASTER_PORT``: the
    torchrun agent's store, or rank 0's) every ``interval_s`` from a daemon thread. After a
    collective fails, :meth:`unresponsive_ranks` watches the counters for a few intervals: the
    ranks whose counter did not move are gone or stuck. A no-op outside a multi-process job.
    """

    _PREFIX = "videogn/alive/"

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._store: Optional[dist.Store] = None
        self._stop = threading.Event()
        if not _active():
            return
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._address = f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '29500')}"
        self._store = self._connect()
        threading.Thread(target=self._beat, name="videogn-peer-watch", daemon=True).start()

    def _connect(self) -> dist.Store:
        host, port = self._address.rsplit(":", 1)
        return dist.TCPStore(host, int(port), is_master=False, timeout=datetime.timedelta(seconds=10),
                             wait_for_workers=False)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._store.add(f"{self._PREFIX}{self.rank}", 1)  # type: ignore[union-attr]
            except Exception:  # the store is gone: the failure is reported by whoever looks
                return

    def close(self) -> None:
        self._stop.set()

    def unresponsive_ranks(self) -> Optional[list[int]]:
        """Ranks whose heartbeat stopped (never this one); None when the store itself is unreachable."""
        if self._store is None:
            return []
        others = [r for r in range(self.world_size) if r != self.rank]
        try:
            store = self._connect()  # a fresh client: the beating thread's may be mid-call
            before = [store.add(f"{self._PREFIX}{r}", 0) for r in others]
            time.sleep(3 * self.interval_s)
            after = [store.add(f"{self._PREFIX}{r}", 0) for r in others]
        except Exception:
            return None
        return [r for r, a, b in zip(others, before, after) if a == b]

    def explain(self, error: BaseException) -> Optional[RankFailure]:
        """A :class:`RankFailure` naming the lost ranks if ``error`` came with some, else None."""
        lost = self.unresponsive_ranks()
        if lost == []:
            return None
        who = (f"rank(s) {', '.join(map(str, lost))} stopped responding (died or hung)" if lost
               else f"the job's rendezvous store at {self._address} is unreachable (rank 0 or the launcher died)")
        return RankFailure(f"rank {self.rank}: a collective failed because {who}: {type(error).__name__}: {error}")

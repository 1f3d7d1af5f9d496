"""Stop a run cleanly when the cluster asks: SIGTERM (any scheduler, torchrun) or SIGUSR1 (SLURM's
usual warning before the kill, with ``--signal=USR1@<seconds>``).

The handler only records the signal. The trainer looks at it after each optimizer step, agrees
with every rank (a rank that got no signal stops at the same step as one that did), writes a
checkpoint and exits with :data:`EXIT_PREEMPTED`, so ``trainer.resume=auto`` continues from there.
Loader workers ignore both signals: a scheduler signals the whole process group, and a worker that
died on it would turn a clean stop into a loader crash; the main process shuts them down.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Optional

__all__ = ["EXIT_PREEMPTED", "STOP_SIGNALS", "StopSignals", "TrainingPreempted", "ignore_stop_signals"]

logger = logging.getLogger(__name__)

# sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry" — a requeue, not an error
EXIT_PREEMPTED = 75
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)


class TrainingPreempted(RuntimeError):
    """The run stopped on a signal after checkpointing; resume with ``trainer.resume=auto``."""

    def __init__(self, signal_name: str, step: int, checkpoint: Optional[str]) -> None:
        super().__init__(f"stopped by {signal_name} after step {step}; checkpoint {checkpoint}")
        self.signal_name = signal_name
        self.step = step
        self.checkpoint = checkpoint


class StopSignals:
    """Context manager: while inside, SIGTERM/SIGUSR1 set :attr:`received` instead of killing.

    Outside the main thread (where Python cannot install handlers) it does nothing. The previous
    handlers are restored on exit.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: Optional[str] = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            logger.warning("got %s: finishing the current step, then checkpointing and stopping", name)
        self.received = self.received or name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


def ignore_stop_signals() -> None:
    """For loader worker processes: leave stopping to the main process."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)

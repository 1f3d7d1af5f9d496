"""What a training run reports as it goes: ``metrics.csv`` (every step, with the step's clip shape
T, S, B), ``val_metrics.csv`` (every validation during training), TensorBoard (train scalars every
``log_every`` steps, ``validation/*`` at each validation; the final evaluation's metrics and
confusion matrix after it), the log line every ``log_every`` steps and a progress bar when stderr
is a terminal.

Rank 0 writes; other ranks get a log that records nothing. While the bar is shown, log records
are routed through tqdm's writer so a log line never lands in the middle of the bar, and the
bar's postfix is set before it advances, so bar and log show the same step's loss.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, Sequence

__all__ = ["CSV_FIELDS", "VAL_CSV_FIELDS", "TrainLog", "log_eval_to_tensorboard"]

logger = logging.getLogger("videogn.engine.trainer")

# T, S, B: the step's clip shape (frames, crop size, clips per micro-batch and process), so a budget
# schedule can be checked against what was trained
CSV_FIELDS = ("step", "epoch", "loss", "lr", "T", "S", "B", "clips_per_s", "skipped", "time_s")
# validation during training; best: 1 when it wrote checkpoints/best.pt
VAL_CSV_FIELDS = ("step", "epoch", "val_top1", "val_top5", "val_loss", "num_videos", "best")
_TB_VAL_KEYS = {"val_top1": "top1", "val_top5": "top5", "val_loss": "loss"}
_TB_TRAIN_KEYS = ("loss", "lr", "clips_per_s")
_TB_EVAL_KEYS = ("top1", "top5", "mean_class_accuracy", "loss")


class TrainLog:
    """Context manager over one ``fit``: open the files on enter, close them on exit.

    Args:
        out: the run directory (None on ranks > 0: nothing is written).
        total_steps: the run's length (the bar's total).
        first_step: steps already done (a resumed run keeps the CSV rows up to it).
        log_every: steps between log lines and TensorBoard points.
        tensorboard: write ``<out>/tensorboard``.
        progress_bar: show a bar (None: only when stderr is a terminal).
        config_yaml: written to ``<out>/config.yaml``.
    """

    def __init__(
        self, out: Optional[Path], *, total_steps: int, first_step: int, log_every: int, tensorboard: bool,
        progress_bar: Optional[bool], config_yaml: str = "",
    ) -> None:
        self.out = out
        self.total_steps = total_steps
        self.first_step = first_step
        self.log_every = log_every
        self.use_tensorboard = tensorboard
        self.show_bar = (progress_bar if progress_bar is not None else sys.stderr.isatty()) and out is not None
        self.config_yaml = config_yaml
        self._csv_file: Any = None
        self._val_file: Any = None
        self._tb: Any = None
        self._bar: Any = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "TrainLog":
        if self.out is None:
            return self
        (self.out / "config.yaml").write_text(self.config_yaml)
        self._csv_file, self._csv = self._open_csv(self.out / "metrics.csv", CSV_FIELDS)
        if (self.out / "val_metrics.csv").exists():  # a resumed run's: keep it up to the resumed step
            self._val_file, self._val_csv = self._open_csv(self.out / "val_metrics.csv", VAL_CSV_FIELDS)
        if self.use_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.out / "tensorboard"))
        if self.show_bar:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=self.total_steps, initial=self.first_step, desc="train", unit="step", dynamic_ncols=True)
            self._stack.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self._stack.close()
        if self._bar is not None:
            self._bar.close()
        for f in (self._csv_file, self._val_file):
            if f is not None:
                f.close()
        if self._tb is not None:
            self._tb.close()

    def _open_csv(self, path: Path, fields: Sequence[str]) -> tuple[Any, csv.DictWriter]:
        kept: list[dict[str, str]] = []
        if path.exists():  # keep history up to the resumed step, drop what the crash lost
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= self.first_step]
        file = open(path, "w", newline="")
        # rows written by an older release lack the newer columns: left empty
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        file.flush()
        return file, writer

    def step(self, row: dict[str, Any]) -> None:
        """Record one optimizer step (a row with :data:`CSV_FIELDS`)."""
        if self.out is None:
            return
        self._csv.writerow(row)
        self._csv_file.flush()
        step, last = row["step"], row["step"] == self.total_steps
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", refresh=False)
            self._bar.update(1)
        if step % self.log_every and not last:
            return
        logger.info("step %d/%d epoch %d loss %.4f lr %.3e clip T=%s S=%s B=%s", step, self.total_steps, row["epoch"],
                    row["loss"], row["lr"], row.get("T"), row.get("S"), row.get("B"))
        if self._tb is not None:
            for key in _TB_TRAIN_KEYS:
                if math.isfinite(row[key]):
                    self._tb.add_scalar(f"train/{key}", row[key], step)

    def validation(self, row: dict[str, Any]) -> None:
        """Record one validation during training (a row with :data:`VAL_CSV_FIELDS`): the log line,
        ``val_metrics.csv`` and TensorBoard's ``validation/top1``, ``/top5``, ``/loss``."""
        if self.out is None:
            return
        logger.info(
            "validation at step %d (epoch %d): top-1 %.2f%%  top-5 %.2f%%  loss %.4f  (%d videos)%s",
            row["step"], row["epoch"], 100 * row["val_top1"], 100 * row["val_top5"], row["val_loss"],
            row["num_videos"], "  new best" if row["best"] else "",
        )
        if self._val_file is None:
            self._val_file, self._val_csv = self._open_csv(self.out / "val_metrics.csv", VAL_CSV_FIELDS)
        self._val_csv.writerow(row)
        self._val_file.flush()
        if self._tb is not None:
            for key, name in _TB_VAL_KEYS.items():
                if math.isfinite(row[key]):
                    self._tb.add_scalar(f"validation/{name}", row[key], row["step"])


def log_eval_to_tensorboard(out: Path, report: dict[str, Any], step: int, class_names: Sequence[str]) -> None:
    """Validation headline numbers and the confusion matrix into ``<out>/tensorboard`` at ``step``."""
    from torch.utils.tensorboard import SummaryWriter

    from videogn.engine.metrics import confusion_matrix_figure

    split = report.get("split", "val")
    with contextlib.closing(SummaryWriter(log_dir=str(out / "tensorboard"))) as tb:
        for key in _TB_EVAL_KEYS:
            value = report.get(key)
            if isinstance(value, float) and math.isfinite(value):
                tb.add_scalar(f"{split}/{key}", value, step)
        tb.add_figure(f"{split}/confusion_matrix", confusion_matrix_figure(report["confusion_matrix"], class_names), step)

"""The training loop: DDP-ready, resumable to the exact step, preemption-safe, with AMP and
gradient accumulation.

One optimizer step consumes ``trainer.accumulate`` micro-batches on each process, each of the clip
shape the budget's schedule gives that batch (one shape per batch: fixed, constant memory or
multigrid; see :mod:`videogn.budget`). The step itself is :mod:`videogn.runtime`'s, the one the
memory planner and the benchmarks measure.

Learning rate: ``optim.lr x schedule(step) x`` :func:`videogn.budget.batch_lr_scale` — the linear
scaling rule applied per step to the clips this step trained on (summed over its micro-batches and
processes), so a schedule whose batch size changes from batch to batch gets a rate proportional to
each batch. With ``optim.reference_batch_size=null`` the rate is ``optim.lr x schedule(step)``.

Gradient accumulation is exact for batch-independent normalization: micro-batch ``i`` contributes
its mean loss weighted by ``B_i / sum(B)``, so the accumulated gradient is the gradient of the mean
loss over all the window's clips — the large batch's gradient for GN/LN/IN/frozen-BN models (up to
float rounding), *not* for BN (each micro-batch is normalized with its own statistics).

Exact resume: a checkpoint holds model, optimizer, schedule, scaler, the step, the sampler position
(epoch and micro-batches consumed) and every rank's RNG. The batch order is a pure function of
(seed, epoch, rank) and the resumed epoch skips the consumed prefix without loading it, so with
``data.num_workers=0`` a resumed run repeats the uninterrupted one bit for bit (with workers, the
augmentation of the resumed epoch's remaining clips is drawn afresh).

Non-finite values: a step whose loss or any gradient is NaN/inf on any rank is skipped on every
rank (the update is never applied); ``trainer.max_nonfinite_steps`` skips in a row abort the run
with :class:`NonFiniteLossError`.

On the CPU, denormal floats are flushed to zero (``torch.set_flush_denormal``) for the run.

Preemption: on SIGTERM or SIGUSR1 every rank finishes the current optimizer step, rank 0 writes a
checkpoint, and :meth:`Trainer.fit` raises :class:`~videogn.engine.preemption.TrainingPreempted`
(``videogn-train`` exits with status 75); ``trainer.resume=auto`` continues from there.

Validation during training (``trainer.val_every`` epochs or steps, ``trainer.val_unit``): the
evaluation entry point (:func:`~videogn.engine.evaluator.evaluate_split`) on the val split with the
``eval`` protocol (``trainer.val_num_clips`` clips per video when set), on ``trainer.val_subset``
videos (a fixed subset drawn once from ``trainer.seed``), writing no per-video files. Its top-1,
top-5 and loss go to ``val_metrics.csv``, TensorBoard (``validation/*``) and the log; the best
weights by ``trainer.best_metric`` are kept in ``checkpoints/best.pt`` (a full checkpoint, written
atomically, outside the ``step_*.pt`` rotation: never pruned, never taken by ``resume=auto``), and
the best value so far travels in every periodic checkpoint, so a resumed run keeps comparing against
it. Every RNG is restored after a validation: the training that follows is the one a run without
validation would do.

Compilation (``trainer.compile``): the model is compiled in place (``nn.Module.compile``: plain
state-dict keys), static or dynamic in the clip shape (``trainer.compile_dynamic``), with a
recompile limit that covers every clip shape of the budget's schedule. :class:`CompileWatch`
counts the compilations (logged at each epoch end where they changed and at the end; the summary's
``compile``) and warns once if the model fell back to eager. Validation runs eagerly, so it
neither compiles graphs of its own nor evicts the training graph.

Bad videos: a clip that fails to decode is replaced by the dataset; the batch says which video and
why (``replaced``), and rank 0 logs each newly bad video once — from every rank — and appends it to
``bad_videos.log``. The summary counts distinct videos (``bad_videos``) and replacements
(``bad_video_replacements``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from videogn import checkpoint as ckpt
from videogn.budget import batch_lr_scale, build_batch_sampler
from videogn.config.schema import BEST_METRICS, ConfigError, TrainConfig
from videogn.data.transforms import normalize_batch
from videogn.engine.build import build_dataset, build_model, build_optimizer, report_missing_videos, resolve_data
from videogn.engine.distributed import (
    DistInfo, PeerWatch, all_gather_objects, broadcast_object, collective_device, init_distributed,
)
from videogn.optim import LRSchedule
from videogn.engine.preemption import StopSignals, TrainingPreempted, ignore_stop_signals
from videogn.engine.train_log import TrainLog
from videogn.models.checkpointing import apply_activation_checkpointing
from videogn.threads import plan_threads
from videogn.runtime import check_training_precision, forward_backward, optimizer_step, seed_everything, unwrap

if TYPE_CHECKING:
    from videogn.engine.evaluator import EvalTarget

__all__ = ["BEST_CHECKPOINT", "BAD_VIDEO_LOG", "CompileWatch", "NonFiniteLossError", "TrainState", "Trainer"]

logger = logging.getLogger(__name__)

BEST_CHECKPOINT = "best.pt"  # in checkpoints/: the best validation so far (trainer.best_metric)
BAD_VIDEO_LOG = "bad_videos.log"  # in the run dir: one "path<TAB>cause" line per distinct bad video


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient was NaN/inf for ``trainer.max_nonfinite_steps`` optimizer steps in a row."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    nonfinite_streak: int = 0
    skipped_steps: int = 0


@dataclass
class _Window:
    """The micro-batches of one optimizer step, as they accumulate."""

    micro: int = 0
    clips: int = 0
    shape: tuple[int, int, int] = (0, 0, 0)  # (T, S, B) of the last micro-batch (one shape per batch)
    replaced: int = 0  # bad videos replaced by other clips in this window (this rank)
    loss_sum: Any = 0.0  # sum over micro-batches of mean loss x clips (this rank; a tensor once added to)


def _config_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)


def _worker_init(base: Callable[[int], None]) -> Callable[[int], None]:
    def init(worker_id: int) -> None:
        ignore_stop_signals()
        base(worker_id)

    return init


class Trainer:
    """Builds everything a run needs from ``cfg`` and trains it (:meth:`fit`).

    Args:
        cfg: the validated training config.
        output_dir: the run directory (checkpoints, logs, reports); written by rank 0 only.
        dist_info: this process's place in the job (default: from the torchrun environment).
    """

    def __init__(self, cfg: TrainConfig, output_dir: str | Path, dist_info: Optional[DistInfo] = None) -> None:
        self.cfg = cfg
        tc = cfg.trainer
        self.dist = dist_info or init_distributed(tc.device, tc.dist_backend, tc.dist_timeout_s)
        self.device = self.dist.device
        self.out = Path(output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        _check_trainable_precision(tc.precision, self.device)
        # intra-op threads and loader workers planned together from the cores this process may use
        threads, self.num_workers = plan_threads(cfg.data.num_workers, tc.num_threads)
        torch.set_num_threads(threads)
        if self.device.type == "cpu":
            # GN gradients that shrink toward zero turn denormal and slow CPU steps 5-15x; flushing
            # them to zero changes nothing a float32 update could represent
            torch.set_flush_denormal(True)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        seed_everything(tc.seed + self.dist.rank)
        self._build_data()
        self._build_optimization()
        self.state = TrainState()
        self.best: Optional[dict[str, Any]] = None  # {"metric", "value", "step"} of checkpoints/best.pt
        self.bad_videos: dict[str, str] = {}  # path -> cause: every rank's bad videos (rank 0 hears of all)
        self.bad_video_replacements = 0  # clips drawn in place of a bad video, all ranks
        self._bad_seen_here: set[str] = set()  # this rank's, so a video is gathered once
        self._bad_new: list[tuple[str, str]] = []  # this rank's new ones, gathered at the step's end
        self._val_set: Any = None  # the val split's test-mode dataset, built at the first validation
        self._val_positions: Optional[list[int]] = None
        self.resumed_from: Optional[Path] = None
        self.saved_step: Optional[int] = None  # the step of the newest checkpoint of this run
        self._maybe_resume()
        self._start_bad_video_log()

    def _build_data(self) -> None:
        cfg, tc = self.cfg, self.cfg.trainer
        self.sources = resolve_data(cfg.data)
        # written by rank 0's main process from every rank's batches (see _record_bad_videos)
        self.bad_video_log = self.out / BAD_VIDEO_LOG if self.dist.is_main else None
        self.train_set = build_dataset(cfg.data, cfg.budget, self.sources, "train", mode="train")
        report_missing_videos(self.train_set, self.out / "missing_videos.txt" if self.dist.is_main else None, "train")
        self.class_names: list[str] = list(self.sources.classes or self.train_set.classes)
        if cfg.model.num_classes is not None and cfg.model.num_classes != len(self.class_names):
            raise ConfigError(
                f"model.num_classes must match the dataset's {len(self.class_names)} classes (or be null), "
                f"got {cfg.model.num_classes!r}"
            )
        try:
            self.batch_sampler = build_batch_sampler(
                self.train_set, cfg.budget, rank=self.dist.rank, world_size=self.dist.world_size,
                seed=tc.seed, epochs=tc.epochs,
            )
        except ValueError as e:
            raise ConfigError(f"budget: {e}") from None
        epochs = tc.epochs if tc.max_steps is None else 1
        self.steps_in_epoch = [self.micro_batches_in(e) // tc.accumulate for e in range(epochs)]  # type: ignore[arg-type]
        self.total_steps = tc.max_steps if tc.max_steps is not None else sum(self.steps_in_epoch)

    def _build_optimization(self) -> None:
        cfg = self.cfg
        tc = cfg.trainer
        model = build_model(cfg.model, cfg.norm, len(self.class_names))
        # recomputes blocks in backward; the modules keep their names, so checkpoints stay plain
        apply_activation_checkpointing(model, cfg.model.name, tc.activation_checkpointing)
        self.memory_format = torch.channels_last_3d if tc.channels_last else torch.contiguous_format
        model = model.to(self.device, memory_format=self.memory_format)
        self.compile_watch: Optional[CompileWatch] = None
        if tc.compile:
            self.compile_watch = _compile_in_place(
                model, self.device, dynamic=tc.compile_dynamic, num_shapes=len(self.batch_sampler.schedule.shapes),
            )
        if self.dist.distributed:
            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model
        oc, sc = cfg.optim, cfg.sched
        self.optimizer = build_optimizer(oc, unwrap(model))
        self.schedule = LRSchedule(
            sc.name, self.total_steps, warmup_fraction=sc.warmup_fraction,
            warmup_start_factor=sc.warmup_start_factor, milestones=sc.milestones, gamma=sc.gamma,
            min_lr_factor=sc.min_lr_factor,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.trainer.precision == "fp16")

    def micro_batches_in(self, epoch: int) -> int:
        """Micro-batches of ``epoch`` trained on: its batches rounded down to whole accumulation
        windows (the rest of the epoch is skipped)."""
        accum = self.cfg.trainer.accumulate
        n = self.batch_sampler.num_batches(epoch)
        if n < accum:
            raise ConfigError(
                f"trainer.accumulate must be <= the {n} batches of epoch {epoch} "
                f"(budget.batch_size={self.cfg.budget.batch_size}, schedule {self.cfg.budget.schedule!r}, "
                f"x {self.dist.world_size} process(es) over {len(self.train_set)} clips), got {accum}"
            )
        return (n // accum) * accum

    @property
    def unwrapped_model(self) -> nn.Module:
        return unwrap(self.model)

    def evaluation_target(self) -> EvalTarget:
        """What :func:`~videogn.engine.evaluator.evaluate_split` needs from this run: the network
        (unwrapped from DDP), its class order, the data and budget, and the ``eval`` protocol."""
        from videogn.engine.evaluator import EvalTarget

        return EvalTarget(model=unwrap(self.model), class_names=list(self.class_names), data=self.cfg.data,
                          budget=self.cfg.budget, sources=self.sources, protocol=self.cfg.eval)

    # ------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------

    def fit(self, until_step: Optional[int] = None) -> dict[str, Any]:
        """Train to the end of the schedule (or only until ``until_step``) and return a summary.

        Every ``trainer.checkpoint_every`` steps, when it stops, and when a stop signal arrives,
        a checkpoint is written; every ``trainer.val_every`` epochs or steps the model is
        validated (:meth:`validate`) first.

        Raises:
            TrainingPreempted: a SIGTERM/SIGUSR1 stopped the run (after checkpointing).
            NonFiniteLossError: too many non-finite steps in a row.
            RankFailure: another rank died or hung (named); within ``trainer.dist_timeout_s``.
        """
        tc, s = self.cfg.trainer, self.state
        stop_at = self.total_steps if until_step is None else min(until_step, self.total_steps)
        self._announce()
        log = TrainLog(
            self.out if self.dist.is_main else None, total_steps=self.total_steps, first_step=s.step,
            log_every=tc.log_every, tensorboard=tc.tensorboard, progress_bar=tc.progress_bar,
            config_yaml=_config_yaml(self.cfg),
        )
        self.model.train()
        self._t0 = self._t_step = time.perf_counter()
        self.last_loss = math.nan
        self.stopped_by: Optional[str] = None  # the signal (or "another rank's") that stops the run
        peers = PeerWatch()
        try:
            with StopSignals() as signals, log:
                while s.step < stop_at and self.stopped_by is None:
                    self._train_epoch(stop_at, log, signals)
                if self.compile_watch is not None:
                    self.compile_watch.report("end of training", always=True)
                self._sync_buffers()
                if s.step > 0 and self.saved_step != s.step:
                    self.save_checkpoint()
        except (NonFiniteLossError, ConfigError):
            raise
        except RuntimeError as e:  # a collective that failed names the rank that died
            failure = peers.explain(e) if self.dist.distributed else None
            if failure is None:
                raise
            logger.error("%s", failure)
            raise failure from e
        finally:
            peers.close()
        if self.stopped_by is not None:
            raise TrainingPreempted(self.stopped_by, s.step, str(ckpt.checkpoint_path(self.ckpt_dir, s.step)))
        return self._summary()

    def _train_epoch(self, stop_at: int, log: TrainLog, signals: StopSignals) -> None:
        """Steps of the current epoch until it ends, ``stop_at`` is reached or a stop is agreed."""
        s, accum = self.state, self.cfg.trainer.accumulate
        self.batch_sampler.set_epoch(s.epoch, skip=s.batch_in_epoch)
        micro_in_epoch = self.micro_batches_in(s.epoch)
        window = _Window()
        for batch in self._loader():
            self._micro_step(batch, window, sync=window.micro + 1 == accum)
            if window.micro < accum:
                continue
            applied, lr = self._optimizer_step(window)
            self._end_of_step(window, applied, lr, micro_in_epoch, stop_at, log, signals)
            window = _Window()
            if s.step >= stop_at or s.batch_in_epoch == 0 or self.stopped_by is not None:
                return  # done, next epoch (a new loader, reshuffled), or stopping
        # the sampler ran out early: drop any partial accumulation, next epoch
        self.optimizer.zero_grad(set_to_none=True)
        s.epoch, s.batch_in_epoch = s.epoch + 1, 0

    def _micro_step(self, batch: dict[str, Any], window: _Window, *, sync: bool) -> None:
        # uint8 (N, 3, T, H, W) crosses to the device; float conversion and normalisation happen there
        # in the model's layout (the loader's uint8 clips are C-innermost: as they are for channels_last),
        # set while converting: no copy of the float batch
        x = normalize_batch(batch["video"].to(self.device, non_blocking=True), self.train_set.mean, self.train_set.std,
                            memory_format=self.memory_format)
        y = batch["label"].to(self.device, non_blocking=True)
        # DDP all-reduces gradients only on the window's last micro-batch
        no_sync = self.model.no_sync() if (self.dist.distributed and not sync) else contextlib.nullcontext()
        with no_sync:
            # weighted by N here, divided by the window's clips at the step: exact for any sizes
            loss = forward_backward(self.model, x, y, precision=self.cfg.trainer.precision,
                                    loss_weight=x.shape[0], scaler=self.scaler if self.scaler.is_enabled() else None,
                                    label_smoothing=self.cfg.optim.label_smoothing)
        window.micro += 1
        window.clips += x.shape[0]
        window.shape = (x.shape[2], x.shape[-1], x.shape[0])  # x: (B, 3, T, S, S)
        for path, cause in batch.get("replaced", ()):
            window.replaced += 1
            if path not in self._bad_seen_here:
                self._bad_seen_here.add(path)
                self._bad_new.append((path, cause))
        window.loss_sum = window.loss_sum + loss * x.shape[0]  # a tensor: read once per step, not per micro-batch
        self.state.batch_in_epoch += 1

    def _optimizer_step(self, window: _Window) -> tuple[bool, float]:
        """Apply the window's gradients unless the loss or a gradient is non-finite on any rank."""
        lr = self.schedule.apply(
            self.optimizer, self.state.step,
            batch_lr_scale(window.clips, self.dist.world_size, self.cfg.optim.reference_batch_size),
        )
        applied = optimizer_step(
            self.model, self.optimizer, scaler=self.scaler if self.scaler.is_enabled() else None,
            divide_by=window.clips, grad_clip_norm=self.cfg.optim.grad_clip_norm,
            finite=math.isfinite(float(window.loss_sum)),
        )
        return applied, lr

    def _end_of_step(
        self, window: _Window, applied: bool, lr: float, micro_in_epoch: int, stop_at: int, log: TrainLog,
        signals: StopSignals,
    ) -> None:
        s, tc = self.state, self.cfg.trainer
        if applied:
            s.nonfinite_streak = 0
        else:
            s.nonfinite_streak += 1
            s.skipped_steps += 1
            logger.warning("non-finite loss or gradient at step %d: step skipped on every rank (%d in a row)",
                           s.step + 1, s.nonfinite_streak)
            if s.nonfinite_streak >= tc.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"the loss or gradients were non-finite (NaN/inf) for {s.nonfinite_streak} consecutive steps "
                    f"(up to step {s.step + 1}; trainer.max_nonfinite_steps={tc.max_nonfinite_steps}); "
                    f"the run diverged — lower optim.lr (now {self.cfg.optim.lr}), add warmup "
                    f"(sched.warmup_fraction) or set optim.grad_clip_norm"
                )
        s.step += 1
        epoch_ended = s.batch_in_epoch >= micro_in_epoch
        if epoch_ended:
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        self.last_loss = self._agree_on_step(window, applied, signals)
        now = time.perf_counter()
        t, size, b = window.shape
        log.step({
            "step": s.step, "epoch": s.epoch, "loss": self.last_loss, "lr": lr, "T": t, "S": size, "B": b,
            "clips_per_s": window.clips * self.dist.world_size / max(now - self._t_step, 1e-9),
            "skipped": int(not applied), "time_s": round(now - self._t0, 3),
        })
        if self.compile_watch is not None:
            self.compile_watch.check_fallback()  # every step: a fall-back to eager is announced when it happens
            if epoch_ended:
                self.compile_watch.report(f"end of epoch {s.epoch - 1}")
        if self._validation_due(epoch_ended):
            self.validate(log)  # before the checkpoint of this step, so it holds the best value so far
        self._t_step = time.perf_counter()  # validation time is not training throughput
        if s.step % tc.checkpoint_every == 0 or s.step == stop_at:
            self.save_checkpoint()

    def _agree_on_step(self, window: _Window, applied: bool, signals: StopSignals) -> float:
        """The step's loss over every rank's clips (NaN when skipped), and whether any rank got a stop
        signal (then :attr:`stopped_by` is set on every rank at this same step): one all-reduce."""
        loss_sum, clips, stop = float(window.loss_sum), float(window.clips), signals.received is not None
        replaced, new_bad = window.replaced, len(self._bad_new)
        if self.dist.distributed:
            t = torch.tensor([loss_sum, clips, float(stop), float(replaced), float(new_bad)], dtype=torch.float64,
                             device=collective_device())
            dist.all_reduce(t)
            loss_sum, clips, stop = float(t[0]), float(t[1]), bool(t[2] > 0)
            replaced, new_bad = int(t[3]), int(t[4])
        self.bad_video_replacements += replaced
        if new_bad:  # a gather only on the (rare) steps that met a new bad video on some rank
            found = all_gather_objects(self._bad_new) if self.dist.distributed else [self._bad_new]
            self._bad_new = []
            self._record_bad_videos([item for part in found for item in part])
        if stop and self.stopped_by is None:
            self.stopped_by = signals.received or "a stop signal on another rank"
        return loss_sum / clips if applied else math.nan

    def _sync_buffers(self) -> None:
        # BN running statistics drift apart per rank after the last forward: make every rank hold
        # rank 0's (the checkpointed model) before anyone evaluates
        if self.dist.distributed:
            for buf in unwrap(self.model).buffers():
                dist.broadcast(buf, src=0)

    def _loader(self) -> DataLoader:
        from videogn.data import collate_clips, make_worker_init_fn

        tc, nw = self.cfg.trainer, self.num_workers
        # An explicit generator keeps the global RNG untouched by the loader and makes the
        # workers' seeds a function of (seed, epoch, rank).
        g = torch.Generator().manual_seed(((tc.seed * 1_000_003 + self.state.epoch) * 4099 + self.dist.rank) % 2**63)
        init = _worker_init(make_worker_init_fn(tc.seed + 7919 * self.state.epoch, self.dist.rank)) if nw else None
        return DataLoader(
            self.train_set, batch_sampler=self.batch_sampler, num_workers=nw, collate_fn=collate_clips,
            worker_init_fn=init, generator=g, pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if nw else None,
        )

    def _announce(self) -> None:
        if not self.dist.is_main:
            return
        per_epoch = set(self.steps_in_epoch)
        if self.cfg.trainer.max_steps is not None or len(per_epoch) == 1:
            shape = f"{self.steps_in_epoch[0]} per epoch"
        else:  # schedules whose epochs differ (multigrid)
            shape = f"{len(self.steps_in_epoch)} epochs of {', '.join(map(str, self.steps_in_epoch))} steps"
        logger.info(
            "training %s (%s) for %d steps (%s) on %d process(es), device %s; run dir %s",
            self.cfg.model.name, self.cfg.norm.name, self.total_steps, shape, self.dist.world_size, self.device, self.out,
        )

    def _summary(self) -> dict[str, Any]:
        s = self.state
        summary = {
            "steps": s.step,
            "total_steps": self.total_steps,
            "epochs_completed": s.epoch,
            "final_loss": self.last_loss,
            "skipped_steps": s.skipped_steps,
            "wall_s": round(time.perf_counter() - self._t0, 3),
            "bad_videos": self.bad_video_count(),
            "bad_video_replacements": self.bad_video_replacements,
            "best": dict(self.best) if self.best else None,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "compile": self.compile_watch.stats() if self.compile_watch is not None else None,
            "state": asdict(s),
        }
        if self.dist.is_main:
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def bad_video_count(self) -> int:
        """Distinct videos that failed to decode during training (on any rank) and were replaced."""
        return len(self.bad_videos)

    def _start_bad_video_log(self) -> None:
        # A resumed run continues its list (those videos are not announced again); a new run starts one.
        if self.bad_video_log is None:
            return
        if self.resumed_from is None:
            self.bad_video_log.unlink(missing_ok=True)
            return
        if self.bad_video_log.is_file():
            for line in self.bad_video_log.read_text(encoding="utf-8", errors="replace").splitlines():
                path, _, cause = line.partition("\t")
                if path.strip():
                    self.bad_videos.setdefault(path, cause)
            self._bad_seen_here.update(self.bad_videos)

    def _record_bad_videos(self, found: list[tuple[str, str]]) -> None:
        """Every rank's newly bad videos of this step: rank 0 logs each once and appends it to the log."""
        lines = []
        for path, cause in found:
            if path in self.bad_videos:
                continue
            self.bad_videos[path] = cause
            if self.dist.is_main:
                logger.warning("bad video, replaced by another clip (step %d): %s: %s", self.state.step, path, cause)
                lines.append(f"{path}\t{cause}\n")
        if lines and self.bad_video_log is not None:
            with open(self.bad_video_log, "a", encoding="utf-8") as f:
                f.writelines(lines)

    # ------------------------------------------------------------------------------------
    # validation during training
    # ------------------------------------------------------------------------------------

    def _validation_due(self, epoch_ended: bool) -> bool:
        tc = self.cfg.trainer
        if tc.val_every is None:
            return False
        if tc.val_unit == "step":
            return self.state.step % tc.val_every == 0
        return epoch_ended and self.state.epoch % tc.val_every == 0

    def _val_target(self) -> EvalTarget:
        """:meth:`evaluation_target` with ``trainer.val_num_clips`` clips per video when set."""
        import dataclasses

        target = self.evaluation_target()
        if self.cfg.trainer.val_num_clips is not None:
            target.protocol = dataclasses.replace(target.protocol, num_clips=self.cfg.trainer.val_num_clips)
        return target

    def _val_dataset(self) -> Any:
        """The val split as :func:`~videogn.engine.evaluator.evaluate_split` evaluates it, built once:
        every validation evaluates the same videos."""
        if self._val_set is None:
            from videogn.engine.evaluator import build_eval_dataset

            self._val_set = build_eval_dataset(self._val_target(), "val")
        return self._val_set

    def _val_subset(self) -> Optional[list[int]]:
        """``trainer.val_subset`` positions of the val split, drawn once from ``trainer.seed`` (a
        private RNG: the training streams are untouched); None: every video."""
        want = self.cfg.trainer.val_subset
        if want is None:
            return None
        if self._val_positions is None:
            import random

            n = len(self._val_dataset())
            self._val_positions = sorted(random.Random(self.cfg.trainer.seed).sample(range(n), min(want, n)))
        return self._val_positions

    def validate(self, log: Optional[TrainLog] = None) -> dict[str, float]:
        """Evaluate on the val split now (every rank must call it), update ``checkpoints/best.pt``.

        The evaluation is :func:`~videogn.engine.evaluator.evaluate_split`'s, with the ``eval``
        protocol (``trainer.val_num_clips`` clips when set) on ``trainer.val_subset`` videos; it
        writes no per-video file. Every RNG is restored afterwards.

        Returns:
            ``{"val_top1", "val_top5", "val_loss"}``.

        Raises:
            NoReadableVideosError: not one validation video could be read.
        """
        from videogn.engine.evaluator import EvalOptions, evaluate_split

        tc, s = self.cfg.trainer, self.state
        self._sync_buffers()  # evaluate rank 0's model, the one best.pt will hold (BN statistics)
        rng = ckpt.capture_rng_state()  # the loader's workers draw their seeds from the global RNG
        # eval mode, no_grad and another batch shape would each add a compiled graph under
        # trainer.compile, counting toward the training graph's recompile limit: validate eagerly
        try:
            # (set_stance takes effect when made: made in the with statement, undone by its exit)
            with torch.compiler.set_stance("force_eager") if self.compile_watch is not None else contextlib.nullcontext():
                result = evaluate_split(self._val_target(), EvalOptions(
                    split="val", device=self.device, precision=tc.precision, num_workers=self.num_workers,
                    dist_info=self.dist, progress=False, output_dir=None, subset=self._val_subset(),
                    extra={"step": s.step},
                ), dataset=self._val_dataset())
        finally:
            ckpt.restore_rng_state(rng)
        metrics = {"val_top1": result.top1, "val_top5": result.top5, "val_loss": result.loss}
        improved = self._update_best(metrics[tc.best_metric])
        if log is not None:
            log.validation({"step": s.step, "epoch": s.epoch, **metrics,
                            "num_videos": int(result.report["num_videos"]), "best": int(improved)})
        if improved:
            self._save_best()
        return metrics

    def _update_best(self, value: float) -> bool:
        metric = self.cfg.trainer.best_metric
        if not math.isfinite(value):
            return False
        if self.best is not None and self.best.get("metric") == metric:
            old = float(self.best["value"])
            if not (value > old if BEST_METRICS[metric] == "max" else value < old):
                return False
        self.best = {"metric": metric, "value": float(value), "step": self.state.step}
        return True

    def _save_best(self) -> None:
        state = self._checkpoint_state()  # collective: all ranks take part
        if not self.dist.is_main:
            return
        path = ckpt.save_checkpoint(state, self.ckpt_dir / BEST_CHECKPOINT)
        logger.info("saved %s (best %s so far)", path, self.cfg.trainer.best_metric)

    # ------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------

    def _checkpoint_state(self) -> dict[str, Any]:
        # Every rank's RNG, so each rank resumes its own dropout/augmentation stream.
        rng_all = all_gather_objects(ckpt.capture_rng_state())
        s = self.state
        return ckpt.make_checkpoint(
            model_state=unwrap(self.model).state_dict(),
            step=s.step,
            class_names=list(self.class_names),
            config=_config_yaml(self.cfg),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.schedule.state_dict(),
            scaler=self.scaler.state_dict(),
            sampler={"epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch, "seed": self.cfg.trainer.seed},
            sampler_setup=self.batch_sampler.state_dict(),
            nonfinite_streak=s.nonfinite_streak,
            skipped_steps=s.skipped_steps,
            rng=rng_all,
            world_size=self.dist.world_size,
            best=dict(self.best) if self.best else None,  # resumed runs keep comparing against it
            bad_video_replacements=self.bad_video_replacements,
        )

    def save_checkpoint(self) -> Optional[Path]:
        """Write ``checkpoints/step_<step>.pt`` (rank 0; every rank must call it) and prune old ones."""
        state = self._checkpoint_state()  # collective: all ranks take part
        path = ckpt.checkpoint_path(self.ckpt_dir, self.state.step)
        self.saved_step = self.state.step
        if not self.dist.is_main:
            return None
        ckpt.save_checkpoint(state, path)
        logger.info("saved checkpoint %s", path)
        removed = ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.trainer.keep_checkpoints)
        if removed:
            logger.info("removed older checkpoint(s) %s (trainer.keep_checkpoints=%d)",
                        ", ".join(p.name for p in removed), self.cfg.trainer.keep_checkpoints)
        return path

    def _maybe_resume(self) -> None:
        resume = self.cfg.trainer.resume
        if resume == "never":
            return
        if resume == "auto":
            found, refusal = None, None
            if self.dist.is_main:
                try:
                    hit = ckpt.find_latest_checkpoint(self.ckpt_dir)
                    found = str(hit[0]) if hit else None
                except ckpt.CheckpointError as e:  # e.g. written by a newer videogn: never skip it silently
                    refusal = str(e)
            found, refusal = broadcast_object((found, refusal))  # every rank stops, not only rank 0
            if refusal is not None:
                raise ConfigError(f"trainer.resume=auto: {refusal}")
            if found is None:
                return
            path = Path(found)
        else:
            path = Path(resume).expanduser()
            if not path.is_file():
                raise ConfigError(f"trainer.resume must be 'auto', 'never' or an existing checkpoint, got {resume!r}")
        try:
            self.load_checkpoint(path)
        except ckpt.CheckpointError as e:
            raise ConfigError(f"trainer.resume: {e}") from None

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the full training state from ``path`` (any format version :mod:`videogn.checkpoint` reads).

        Raises:
            CheckpointError: the file is missing, damaged, not a videogn checkpoint, from a newer
                videogn, or holds no training state.
        """
        state = ckpt.load_checkpoint(path, map_location="cpu", resume=True)
        try:
            self.batch_sampler.check_resumable(state.get("sampler_setup") or {})
        except ValueError as e:
            raise ConfigError(
                f"trainer.resume: {path} was written with another batch schedule ({e}); the resumed "
                f"batches would not continue the run — start a new run directory or restore the budget/seed settings"
            ) from None
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if state["scheduler"] != self.schedule.state_dict():
            logger.warning(
                "the schedule of %s differs from this run's (%s vs %s); using this run's",
                path, state["scheduler"], self.schedule.state_dict(),
            )
        sampler = state["sampler"]
        self.state = TrainState(
            step=int(state["step"]),
            epoch=int(sampler["epoch"]),
            batch_in_epoch=int(sampler["batch_in_epoch"]),
            nonfinite_streak=int(state["nonfinite_streak"]),
            skipped_steps=int(state["skipped_steps"]),
        )
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            ckpt.restore_rng_state(rngs[self.dist.rank])
        else:
            logger.warning(
                "checkpoint was written by %d process(es), this run has %d: RNG streams restart from rank 0's",
                len(rngs), self.dist.world_size,
            )
            ckpt.restore_rng_state(rngs[0])
        best = state.get("best")  # absent in checkpoints of runs without validation, or older ones
        if isinstance(best, dict) and best.get("metric") == self.cfg.trainer.best_metric:
            self.best = {"metric": str(best["metric"]), "value": float(best["value"]), "step": int(best["step"])}
        elif isinstance(best, dict):
            logger.info("the checkpoint's best %s is not this run's trainer.best_metric=%s: best.pt starts over",
                        best.get("metric"), self.cfg.trainer.best_metric)
        self.bad_video_replacements = int(state.get("bad_video_replacements", 0))
        self.resumed_from = Path(path)
        self.saved_step = self.state.step
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.state.step, self.state.epoch, self.state.batch_in_epoch)


class CompileWatch:
    """How often ``trainer.compile`` compiled the model, from dynamo's process-wide counters
    (``torch._dynamo.utils.counters``, read as differences from when the watch was made).

    A frame whose compilation fails (the recompile limit reached, most often: a new clip shape or
    a guard that keeps failing) runs eagerly from then on; dynamo says so only in its own log, so
    :meth:`check_fallback` turns it into one warning of this run that names the fix.

    Args:
        recompile_limit: the limit the model was compiled with (named in the warning).
        dynamic: ``trainer.compile_dynamic`` (named in the warning).
    """

    def __init__(self, recompile_limit: int, dynamic: Optional[bool]) -> None:
        from torch._dynamo.utils import counters

        self._counters = counters
        self.recompile_limit = recompile_limit
        self.dynamic = dynamic
        self._start = self._read()
        self._limit_hits_start = self._limit_hits()
        self._reported: Optional[int] = None
        self._warned = False

    def _read(self) -> tuple[int, int, int]:
        frames = self._counters["frames"]
        return frames["ok"], frames["total"] - frames["ok"], self._counters["stats"]["unique_graphs"]

    def _limit_hits(self) -> int:
        # dynamo's "Dynamo recompile limit exceeded" graph-break records, one per hit
        return sum(n for msg, n in self._counters["unimplemented"].items() if "recompile limit" in msg.lower())

    def stats(self) -> dict[str, Any]:
        """``compiles`` (frames compiled; the model is one frame: it has no graph break),
        ``recompiles`` (``compiles - 1``), ``graphs`` (FX graphs handed to the backend),
        ``eager_fallbacks`` (compilations that failed, each leaving a frame eager) and the
        ``recompile_limit`` the model was compiled with."""
        # max(0, ...): torch._dynamo.reset() in between clears the counters
        ok, failed, graphs = (max(0, now - then) for now, then in zip(self._read(), self._start))
        return {"compiles": ok, "recompiles": max(0, ok - 1), "graphs": graphs, "eager_fallbacks": failed,
                "recompile_limit": self.recompile_limit}

    def report(self, when: str, always: bool = False) -> None:
        """Log the compile count at ``when`` if it changed since the last report (or ``always``)."""
        st = self.stats()
        if always or st["compiles"] != self._reported:
            self._reported = st["compiles"]
            logger.info("torch.compile at %s: %d compilation(s) of the model (%d recompile(s), %d graph(s))",
                        when, st["compiles"], st["recompiles"], st["graphs"])
        self.check_fallback()

    def check_fallback(self) -> bool:
        """Warn (once) if a compilation failed and the model now runs eagerly; whether it did."""
        st = self.stats()
        if st["eager_fallbacks"] == 0:
            return False
        if not self._warned:
            self._warned = True
            if self._limit_hits() > self._limit_hits_start:
                cause = (f"torch's recompile limit ({self.recompile_limit} compilations of the model) was reached, "
                         f"after {st['compiles']} compilation(s)")
            else:
                cause = f"a compilation failed (see torch._dynamo's log above; {st['compiles']} succeeded)"
            fix = ("set trainer.compile_dynamic=true (one graph for every clip shape) or raise "
                   "torch._dynamo.config.recompile_limit" if self.dynamic is not True
                   else "raise torch._dynamo.config.recompile_limit or set trainer.compile=false")
            logger.warning("trainer.compile: %s, so the model now runs eagerly (uncompiled) for inputs its "
                           "compiled graphs do not cover; %s", cause, fix)
        return True


def compile_recompile_limit(num_shapes: int) -> int:
    """The recompile limit ``trainer.compile`` gives the model: torch's (8), or more when the budget
    schedule has more clip shapes than that. Static shapes compile once per shape; the one spare
    covers a specialisation (e.g. a time axis pooled down to 1 frame) in dynamic mode."""
    return max(int(torch._dynamo.config.recompile_limit), num_shapes + 1)


def _compile_in_place(model: nn.Module, device: torch.device, *, dynamic: Optional[bool], num_shapes: int) -> CompileWatch:
    """``trainer.compile``: ``nn.Module.compile`` compiles the module's call in place, so its
    parameters, state-dict keys (no ``_orig_mod.``) and optimizer stay those of the eager model.
    The recompile limit covers every clip shape of the budget's schedule (``num_shapes``), so a
    multigrid run does not fall back to eager."""
    if device.type == "cpu":
        # docs/benchmarks.md "torch.compile (CPU)": 2-core EPYC, 1 thread, 8x112^2, B=2
        logger.warning(
            "trainer.compile=true on the CPU: measured, compiled training steps gain little there (i3d_r50 GN "
            "1.03x the eager step time, i3d_tiny GN 0.87x, with static shapes; 2.65x with "
            "trainer.compile_dynamic=true) and cost 1-4 min of compilation per clip shape, which a short run "
            "does not earn back; set trainer.compile=false unless you have measured otherwise"
        )
    limit = compile_recompile_limit(num_shapes)
    model.compile(dynamic=dynamic, recompile_limit=limit)
    return CompileWatch(limit, dynamic)


def _check_trainable_precision(precision: str, device: torch.device) -> None:
    try:
        check_training_precision(precision, device)
    except ValueError as e:
        raise ConfigError(str(e)) from None

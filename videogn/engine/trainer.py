"""The training loop: DDP-ready, resumable to the exact step, with AMP and gradient accumulation.

One optimizer step consumes ``trainer.accumulate`` micro-batches on each process: of
``budget.batch_size`` clips (``budget.sampler=fixed``), or of the shapes a clip-shape schedule
gives batch by batch (``budget.sampler=shape``: constant memory, multigrid), one shape per batch.

Learning rate, one rule for every sampler: ``optim.lr x schedule(step) x global_batch /
optim.reference_batch_size``, where ``global_batch`` is the clips this step actually trained on
(summed over its micro-batches and processes) — the linear scaling rule, applied per step, so a
schedule whose batch size changes from batch to batch gets a rate proportional to each batch
(equal to the shapes' ``lr_scale`` for constant-memory and multigrid long-cycle shapes). With
``optim.reference_batch_size=null`` the rate is ``optim.lr x schedule(step)`` whatever the batch.
The schedule's length is the sum of the optimizer steps of every epoch, which a sampler whose
epochs differ (multigrid) reports through ``num_batches(epoch)``.

Gradient accumulation is exact for batch-independent normalization: micro-batch ``i`` of an
accumulation window contributes its mean loss weighted by ``B_i / sum(B)`` (not ``1/k``), so the
accumulated gradient equals the gradient of the mean loss over all the window's clips — exactly
the large batch's gradient for GN/LN/IN/frozen-BN models (up to float rounding). It is *not*
the large batch's gradient for BN: each micro-batch is normalized with its own statistics (and
the running statistics are updated once per micro-batch).

Exact resume: a checkpoint holds model, optimizer, schedule, scaler, the step, the sampler position
(epoch and micro-batches consumed) and every RNG (Python, NumPy, torch CPU/CUDA, per rank). The
batch order is a pure function of (seed, epoch, rank) and the resumed epoch skips the consumed
prefix without loading it, so with ``data.num_workers=0`` a resumed run repeats the uninterrupted
one bit for bit. With workers, each worker's RNG is seeded from (seed, epoch, rank, worker) at the
start of the epoch, so the order is still exact but the augmentation of the resumed epoch's
remaining clips is drawn afresh (the epochs after it are exact again).

A non-finite loss on any rank skips the whole step on every rank (the flag is all-reduced with the
loss); ``trainer.max_nonfinite_steps`` consecutive skips abort the run with
:class:`NonFiniteLossError`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from videogn.config.schema import ConfigError, TrainConfig
from videogn.engine import checkpoint as ckpt
from videogn.engine.build import build_dataset, build_model, resolve_data
from videogn.engine.distributed import DistInfo, all_gather_objects, broadcast_object, init_distributed
from videogn.engine.optim import LRSchedule, build_sgd
from videogn.engine.samplers import SkipBatches, build_batch_sampler, epoch_batches

__all__ = ["NonFiniteLossError", "TrainState", "Trainer", "autocast_context", "seed_everything"]

logger = logging.getLogger(__name__)

CSV_FIELDS = ("step", "epoch", "loss", "lr", "clips_per_s", "skipped", "time_s")


class NonFiniteLossError(RuntimeError):
    """The loss was NaN/inf for ``trainer.max_nonfinite_steps`` optimizer steps in a row."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    nonfinite_streak: int = 0
    skipped_steps: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for bf16/fp16, a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _config_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


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
        self.dist = dist_info or init_distributed(tc.device, tc.dist_backend)
        self.device = self.dist.device
        self.out = Path(output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        if tc.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"trainer.precision must be 'fp32' or 'bf16' on the CPU, got {tc.precision!r}")
        if tc.num_threads is not None:
            torch.set_num_threads(tc.num_threads)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        seed_everything(tc.seed + self.dist.rank)

        # --- data -----------------------------------------------------------------------
        self.sources = resolve_data(cfg.data)
        self.bad_video_log = self.out / "bad_videos.log" if self.dist.is_main else None
        self.train_set = build_dataset(
            cfg.data, cfg.budget, self.sources, "train", mode="train", bad_video_log=self.bad_video_log
        )
        self.class_names: list[str] = list(self.sources.classes or self.train_set.classes)
        num_classes = len(self.class_names)
        if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
            raise ConfigError(
                f"model.num_classes must match the dataset's {num_classes} classes (or be null), "
                f"got {cfg.model.num_classes!r}"
            )
        try:
            self.batch_sampler = build_batch_sampler(
                cfg.budget.sampler, self.train_set, cfg.budget,
                rank=self.dist.rank, world_size=self.dist.world_size, seed=tc.seed, epochs=tc.epochs,
            )
        except ValueError as e:
            raise ConfigError(f"budget: {e}") from None
        self.micro_per_epoch = self.micro_batches_in(0)
        self.steps_per_epoch = self.micro_per_epoch // tc.accumulate
        if tc.max_steps is not None:
            self.total_steps = tc.max_steps
        else:  # epochs may differ in length (multigrid): count each one
            self.total_steps = sum(self.micro_batches_in(e) // tc.accumulate for e in range(tc.epochs))  # type: ignore[arg-type]

        # --- model and optimization ----------------------------------------------------
        model = build_model(cfg.model, cfg.norm, num_classes).to(self.device)
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        self.model = model
        oc = cfg.optim
        self.optimizer = build_sgd(
            _unwrap(model), oc.lr, momentum=oc.momentum, nesterov=oc.nesterov,
            weight_decay=oc.weight_decay, norm_weight_decay=oc.norm_weight_decay,
        )
        sc = cfg.sched
        self.schedule = LRSchedule(
            sc.name, self.total_steps, warmup_fraction=sc.warmup_fraction,
            warmup_start_factor=sc.warmup_start_factor, milestones=sc.milestones, gamma=sc.gamma,
            min_lr_factor=sc.min_lr_factor,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=tc.precision == "fp16")
        self.state = TrainState()
        self.resumed_from: Optional[Path] = None
        self._maybe_resume()

    def micro_batches_in(self, epoch: int) -> int:
        """Micro-batches of ``epoch`` trained on: its batches rounded down to whole accumulation
        windows (the rest of the epoch is skipped)."""
        accum = self.cfg.trainer.accumulate
        n = epoch_batches(self.batch_sampler, epoch)
        if n < accum:
            raise ConfigError(
                f"trainer.accumulate must be <= the {n} batches of epoch {epoch} "
                f"(budget.batch_size={self.cfg.budget.batch_size}, sampler {self.cfg.budget.sampler!r}, "
                f"x {self.dist.world_size} process(es) over {len(self.train_set)} clips), got {accum}"
            )
        return (n // accum) * accum

    # ------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------

    def _checkpoint_state(self) -> dict[str, Any]:
        # Every rank's RNG, so each rank resumes its own dropout/augmentation stream.
        rng_all = all_gather_objects(ckpt.capture_rng_state())
        s = self.state
        return {
            "format": "videogn-checkpoint",
            "version": 1,
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": s.step,
            "sampler": {"epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch, "seed": self.cfg.trainer.seed},
            "sampler_setup": self._sampler_setup(),
            "nonfinite_streak": s.nonfinite_streak,
            "skipped_steps": s.skipped_steps,
            "rng": rng_all,
            "world_size": self.dist.world_size,
            "class_names": list(self.class_names),
            "config": _config_yaml(self.cfg),
        }

    def _sampler_setup(self) -> Optional[dict[str, Any]]:
        """What fixes the sampler's batches besides (epoch, position) — seed, ranks, dataset size,
        schedule — for samplers that report it (``state_dict``); None otherwise."""
        state_dict = getattr(self.batch_sampler, "state_dict", None)
        if not callable(state_dict):
            return None
        return {k: v for k, v in state_dict(consumed=0).items() if k not in ("epoch", "consumed")}

    def save_checkpoint(self) -> Optional[Path]:
        """Write ``checkpoints/step_<step>.pt`` (rank 0; every rank must call it) and prune old ones."""
        state = self._checkpoint_state()  # collective: all ranks take part
        if not self.dist.is_main:
            return None
        path = ckpt.save_checkpoint(state, ckpt.checkpoint_path(self.ckpt_dir, self.state.step))
        ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.trainer.keep_checkpoints)
        logger.info("saved checkpoint %s", path)
        return path

    def _maybe_resume(self) -> None:
        resume = self.cfg.trainer.resume
        if resume == "never":
            return
        if resume == "auto":
            found = None
            if self.dist.is_main:
                hit = ckpt.find_latest_checkpoint(self.ckpt_dir)
                found = str(hit[0]) if hit else None
            found = broadcast_object(found)
            if found is None:
                return
            path = Path(found)
        else:
            path = Path(resume).expanduser()
            if not path.is_file():
                raise ConfigError(f"trainer.resume must be 'auto', 'never' or an existing checkpoint, got {resume!r}")
        self.load_checkpoint(path)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the full training state from ``path``."""
        state = ckpt.load_checkpoint(path, map_location="cpu")
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if state["scheduler"] != self.schedule.state_dict():
            logger.warning(
                "the schedule of %s differs from this run's (%s vs %s); using this run's",
                path, state["scheduler"], self.schedule.state_dict(),
            )
        saved_setup, setup = state.get("sampler_setup"), self._sampler_setup()
        if saved_setup is not None and setup is not None and saved_setup != setup:
            diff = sorted(k for k in setup if saved_setup.get(k) != setup[k])
            raise ConfigError(
                f"trainer.resume: {path} was written with another batch schedule (differs in {diff}); "
                f"the resumed batches would not continue the run — start a new run directory or "
                f"restore the budget/seed settings"
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
        self.resumed_from = Path(path)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.state.step, self.state.epoch, self.state.batch_in_epoch)

    # ------------------------------------------------------------------------------------
    # logging
    # ------------------------------------------------------------------------------------

    def _open_logs(self) -> None:
        self._csv_file = None
        self._tb = None
        if not self.dist.is_main:
            return
        (self.out / "config.yaml").write_text(_config_yaml(self.cfg))
        csv_path = self.out / "metrics.csv"
        kept: list[dict[str, str]] = []
        if csv_path.exists():  # keep history up to the resumed step, drop what the crash lost
            with open(csv_path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= self.state.step]
        self._csv_file = open(csv_path, "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_FIELDS)
        self._csv.writeheader()
        self._csv.writerows(kept)
        self._csv_file.flush()
        if self.cfg.trainer.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.out / "tensorboard"))

    def _close_logs(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
        if self._tb is not None:
            self._tb.close()

    def _log_step(self, row: dict[str, Any]) -> None:
        if self._csv_file is None:
            return
        self._csv.writerow(row)
        self._csv_file.flush()
        if self._tb is not None and (row["step"] % self.cfg.trainer.log_every == 0 or row["step"] == self.total_steps):
            for key in ("loss", "lr", "clips_per_s"):
                if math.isfinite(row[key]):
                    self._tb.add_scalar(f"train/{key}", row[key], row["step"])

    # ------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------

    def _loader(self, sampler: SkipBatches) -> DataLoader:
        from videogn.data import collate_clips, make_worker_init_fn

        tc, nw = self.cfg.trainer, self.cfg.data.num_workers
        # An explicit generator keeps the global RNG untouched by the loader and makes the
        # workers' seeds a function of (seed, epoch, rank).
        g = torch.Generator().manual_seed(((tc.seed * 1_000_003 + self.state.epoch) * 4099 + self.dist.rank) % 2**63)
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=nw,
            collate_fn=collate_clips,
            worker_init_fn=make_worker_init_fn(tc.seed + 7919 * self.state.epoch, self.dist.rank) if nw else None,
            generator=g,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if nw else None,
        )

    def _nonfinite_dummy_backward(self) -> None:
        # DDP expects a backward after a synchronised forward; feed it zeros (the step is
        # discarded anyway) so every rank's reducer stays in step.
        params = [p for p in self.model.parameters() if p.requires_grad]
        torch.stack([p.sum() for p in params]).sum().mul(0.0).backward()

    def fit(self, until_step: Optional[int] = None) -> dict[str, Any]:
        """Train to the end of the schedule (or only until ``until_step``) and return a summary.

        Every ``trainer.checkpoint_every`` steps, and when it stops, a checkpoint is written.
        """
        tc = self.cfg.trainer
        stop = self.total_steps if until_step is None else min(until_step, self.total_steps)
        accum, world = tc.accumulate, self.dist.world_size
        ref = self.cfg.optim.reference_batch_size
        s = self.state
        self._open_logs()
        show = tc.progress_bar if tc.progress_bar is not None else sys.stderr.isatty()
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=s.step, desc="train", unit="step", disable=not (show and self.dist.is_main), dynamic_ncols=True)
        if self.dist.is_main:
            logger.info(
                "training %s (%s) for %d steps (%d per epoch) on %d process(es), device %s; run dir %s",
                self.cfg.model.name, self.cfg.norm.name, self.total_steps, self.steps_per_epoch, world, self.device, self.out,
            )
        self.model.train()
        sampler = SkipBatches(self.batch_sampler)
        last_saved = s.step if self.resumed_from is not None else -1
        t0 = time.perf_counter()
        t_step = t0
        last_loss = math.nan
        try:
            while s.step < stop:
                sampler.set_epoch(s.epoch, skip=s.batch_in_epoch)
                micro_in_epoch = self.micro_batches_in(s.epoch)
                micro, clips, loss_sum, bad = 0, 0, 0.0, False
                for batch in self._loader(sampler):
                    x = batch["video"].to(self.device, non_blocking=True)  # (N, 3, T, H, W)
                    y = batch["label"].to(self.device, non_blocking=True)
                    sync = micro == accum - 1
                    no_sync = self.model.no_sync() if (self.dist.distributed and not sync) else contextlib.nullcontext()
                    with no_sync:
                        with autocast_context(self.device, tc.precision):
                            logits = self.model(x)
                        loss = F.cross_entropy(logits.float(), y)
                        # one collective per micro-batch: summed loss and "non-finite anywhere"
                        finite = bool(torch.isfinite(loss))
                        stats = torch.tensor([loss.item() if finite else 0.0, 0.0 if finite else 1.0], dtype=torch.float64)
                        if self.dist.distributed:
                            stats = stats.to(self.device)
                            dist.all_reduce(stats)
                            stats = stats.cpu()
                        bad = bad or bool(stats[1] > 0)
                        if not bad:
                            # summed over the window's clips here, divided by their count at the
                            # step: micro-batch i weighs B_i / sum(B), exact for any batch sizes
                            self.scaler.scale(loss * x.shape[0]).backward()
                        elif self.dist.distributed:
                            self._nonfinite_dummy_backward()
                    loss_sum += float(stats[0]) / world * x.shape[0]
                    micro += 1
                    clips += x.shape[0]
                    s.batch_in_epoch += 1
                    if micro < accum:
                        continue

                    # --- optimizer step ---------------------------------------------------
                    batch_scale = clips * world / ref if ref else 1.0
                    lr = self.schedule.apply(self.optimizer, s.step, batch_scale)
                    if bad:
                        self.optimizer.zero_grad(set_to_none=True)
                        s.nonfinite_streak += 1
                        s.skipped_steps += 1
                        logger.warning("non-finite loss at step %d: step skipped on every rank (%d in a row)", s.step + 1, s.nonfinite_streak)
                        if s.nonfinite_streak >= tc.max_nonfinite_steps:
                            raise NonFiniteLossError(
                                f"the loss was non-finite (NaN/inf) for {s.nonfinite_streak} consecutive steps "
                                f"(up to step {s.step + 1}; trainer.max_nonfinite_steps={tc.max_nonfinite_steps}); "
                                f"the run diverged — lower optim.lr (now {self.cfg.optim.lr}), add warmup "
                                f"(sched.warmup_fraction) or set optim.grad_clip_norm"
                            )
                    else:
                        s.nonfinite_streak = 0
                        for p in self.model.parameters():
                            if p.grad is not None:
                                p.grad.div_(clips)
                        if self.cfg.optim.grad_clip_norm is not None:
                            self.scaler.unscale_(self.optimizer)
                            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip_norm)
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                        self.optimizer.zero_grad(set_to_none=True)
                    s.step += 1
                    if s.batch_in_epoch >= micro_in_epoch:
                        s.epoch, s.batch_in_epoch = s.epoch + 1, 0
                    now = time.perf_counter()
                    last_loss = math.nan if bad else loss_sum / clips
                    self._log_step(
                        {
                            "step": s.step, "epoch": s.epoch, "loss": last_loss, "lr": lr,
                            "clips_per_s": clips * world / max(now - t_step, 1e-9),
                            "skipped": int(bad), "time_s": round(now - t0, 3),
                        }
                    )
                    t_step = now
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                    if self.dist.is_main and (s.step % tc.log_every == 0 or s.step == stop):
                        logger.info("step %d/%d epoch %d loss %.4f lr %.3e", s.step, self.total_steps, s.epoch, last_loss, lr)
                    if s.step % tc.checkpoint_every == 0 or s.step == stop:
                        self.save_checkpoint()
                        last_saved = s.step
                    micro, clips, loss_sum, bad = 0, 0, 0.0, False
                    if s.step >= stop or s.batch_in_epoch == 0:
                        break  # next epoch (or done): a new loader, reshuffled
                else:  # the sampler ran out early: drop any partial accumulation, next epoch
                    self.optimizer.zero_grad(set_to_none=True)
                    s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            if self.dist.distributed:
                # BN running statistics drift apart per rank after the last forward: make every
                # rank hold rank 0's (the checkpointed model) before anyone evaluates
                for buf in _unwrap(self.model).buffers():
                    dist.broadcast(buf, src=0)
            if last_saved != s.step:
                self.save_checkpoint()
        finally:
            bar.close()
            self._close_logs()
        summary = {
            "steps": s.step,
            "total_steps": self.total_steps,
            "epochs_completed": s.epoch,
            "final_loss": last_loss,
            "skipped_steps": s.skipped_steps,
            "wall_s": round(time.perf_counter() - t0, 3),
            "bad_videos": self.bad_video_count(),
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "state": asdict(s),
        }
        if self.dist.is_main:
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def bad_video_count(self) -> int:
        """Videos that failed to decode during training and were replaced (rank 0's log)."""
        if self.bad_video_log is None or not self.bad_video_log.exists():
            return 0
        return sum(1 for line in self.bad_video_log.read_text().splitlines() if line.strip())

    @property
    def unwrapped_model(self) -> nn.Module:
        return _unwrap(self.model)

"""``videogn-train``: train a video model (Hydra config ``configs/train.yaml``), then evaluate it.

With no arguments it runs the main job: a small I3D-GN on the built-in synthetic dataset (generated
on first use), then multi-view evaluation; everything lands in the run directory
``outputs/<date>/<time>/`` (``report.json``, ``metrics.csv``, ``checkpoints/``, ``tensorboard/``).

    videogn-train                                              # the main job, CPU, minutes
    videogn-train experiment=tiny                              # a seconds-long try (the tests' config)
    videogn-train budget.batch_size=8 optim.lr=0.2 trainer.epochs=4   # any value, typed and checked
    videogn-train experiment=k400_i3d_r50_gn_32x8 data.root=/data/k400 \\
        data.train_annotation=/data/k400/annotations/train.csv data.val_annotation=/data/k400/annotations/validate.csv
    # 8 GPUs on one machine (DDP, NCCL); the run dir is rank 0's
    torchrun --standalone --nproc_per_node=8 -m videogn.train experiment=k400_i3d_r50_gn_32x8 ...
    # 2 nodes x 8 GPUs: run on each node (same run dir on a shared filesystem)
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK --rdzv_backend=c10d \\
        --rdzv_endpoint=$MASTER_HOST:29500 --rdzv_id=k400 -m videogn.train experiment=... hydra.run.dir=/shared/runs/k400
    videogn-train trainer.resume=auto hydra.run.dir=outputs/2026-01-01/12-00-00   # continue a run

On SIGTERM or SIGUSR1 (SLURM: ``#SBATCH --signal=USR1@120``) the run finishes its step, writes a
checkpoint and exits with status 75 (EX_TEMPFAIL); the same command with ``trainer.resume=auto`` and
the same ``hydra.run.dir`` continues it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from videogn.cli import hydra_entry, job_context
from videogn.config import TrainConfig, validate

__all__ = ["main", "run"]

logger = logging.getLogger("videogn.train")


def _preflight(conf: TrainConfig, info: Any, out: Path) -> None:
    """Rank 0 checks everything the run will need (:func:`~videogn.engine.preflight.check_training_run`)
    and every rank gets the verdict, so the whole job stops at once and rank 0 alone says why.

    Raises:
        PreflightError: (rank 0) every problem found; other ranks raise a ConfigError pointing to it.
    """
    from videogn.config import ConfigError
    from videogn.engine.distributed import broadcast_object
    from videogn.engine.preflight import check_training_run

    error: Optional[ConfigError] = None
    if info.is_main:
        try:
            check_training_run(conf, output_dir=out)
        except ConfigError as e:
            error = e
    refused = broadcast_object(error is not None)
    if error is not None:
        raise error
    if refused:
        raise ConfigError(f"rank {info.rank}: the run was refused at start-up; rank 0 logged why")


def run(cfg: DictConfig | TrainConfig, output_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Validate ``cfg``, check what the run needs (:func:`~videogn.engine.preflight.check_training_run`,
    before any model is built or file written), train (validating every ``trainer.val_every``
    epochs/steps when set), then (``trainer.eval_after_train``) evaluate on the val split with the
    ``eval`` protocol (:func:`videogn.engine.evaluator.evaluate_split`, as ``videogn-eval`` does).

    Args:
        cfg: a composed ``train`` config.
        output_dir: the run directory (default: Hydra's; under torchrun, rank 0's).

    Returns:
        ``{"train": summary, "eval": report or None, "output_dir": str}``.
    """
    import contextlib

    import torch

    from videogn.engine.train_log import log_eval_to_tensorboard
    from videogn.engine.trainer import Trainer

    conf: TrainConfig = validate(cfg)
    t = conf.trainer
    report = None
    with job_context(t.device, t.dist_backend, output_dir, "train.log", t.dist_timeout_s,
                     check=lambda info, out: _preflight(conf, info, out)) as (info, out):
        trainer = Trainer(conf, out, info)
        summary = trainer.fit()
        if t.eval_after_train:
            # eager, as validation during training: the evaluation's eval-mode, no_grad batches of
            # views would each compile graphs of their own (minutes on a CPU) for one pass
            eager = torch.compiler.set_stance("force_eager") if t.compile else contextlib.nullcontext()
            with eager:
                report = _final_evaluation(trainer, conf, info, out, summary)
            if info.is_main and t.tensorboard:
                log_eval_to_tensorboard(out, report, summary["steps"], report["classes"])
        if info.is_main:
            _log_results(out, report, summary)
    return {"train": summary, "eval": report, "output_dir": str(out)}


def _final_evaluation(trainer: Any, conf: TrainConfig, info: Any, out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The trained model on the val split, with the run's ``eval`` protocol, written into the run dir."""
    from videogn.engine.evaluator import EvalOptions, evaluate_split

    t = conf.trainer
    return evaluate_split(trainer.evaluation_target(), EvalOptions(
        split="val", device=info.device, precision=t.precision, dist_info=info, progress=t.progress_bar,
        output_dir=out,
        extra={"name": conf.name, "model": conf.model.name, "norm": conf.norm.name, "step": summary["steps"],
               "bad_videos_during_training": summary["bad_videos"],  # distinct videos
               "bad_video_replacements_during_training": summary["bad_video_replacements"],
               "best_during_training": summary["best"]},
    )).report


def _log_results(out: Path, report: Optional[dict[str, Any]], summary: dict[str, Any]) -> None:
    """The run's last lines: where its results are."""
    from videogn.engine.trainer import BAD_VIDEO_LOG, BEST_CHECKPOINT

    if summary["bad_videos"]:
        logger.warning("%d bad video(s) were replaced during training (%d times): listed in %s",
                       summary["bad_videos"], summary["bad_video_replacements"], out / BAD_VIDEO_LOG)
    best = out / "checkpoints" / BEST_CHECKPOINT
    if summary["best"] and best.is_file():
        b = summary["best"]
        logger.info("best checkpoint: %s (%s %.4f at step %d)", best, b["metric"], b["value"], b["step"])
    if report is not None:
        files = report.get("files", {})
        logger.info("evaluation report: %s; confusion matrix: %s", out / files.get("report", "report.json"),
                    out / files.get("confusion_matrix", "report_confusion_matrix.png"))
    logger.info("run dir: %s (metrics.csv, checkpoints/, train.log)", out)


main = hydra_entry("train", run)  # console script videogn-train

if __name__ == "__main__":
    from videogn.threads import ensure_passive_openmp

    ensure_passive_openmp()  # torch is loaded by now (python -m imports the package): re-executes once
    main()

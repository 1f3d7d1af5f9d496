"""``videogn-train``: train a video model (Hydra config ``configs/train.yaml``), then evaluate it.

With no arguments it runs the main job: a small I3D-GN on the built-in synthetic dataset (generated
on first use), then multi-view evaluation; everything lands in the run directory
``outputs/<date>/<time>/`` (``report.json``, ``metrics.csv``, ``checkpoints/``, ``tensorboard/``).

    videogn-train                                              # the main job, CPU, minutes
    videogn-train budget.batch_size=8 optim.lr=0.2 trainer.epochs=4   # any value, typed and checked
    videogn-train experiment=k400_i3d_r50_gn_32x8 data.root=/data/k400 \\
        data.train_annotation=/data/k400/annotations/train.csv data.val_annotation=/data/k400/annotations/validate.csv
    # 8 GPUs on one machine (DDP, NCCL); the run dir is rank 0's
    torchrun --standalone --nproc_per_node=8 -m videogn.train experiment=k400_i3d_r50_gn_32x8 ...
    # 2 nodes x 8 GPUs: run on each node (same run dir on a shared filesystem)
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK --rdzv_backend=c10d \\
        --rdzv_endpoint=$MASTER_HOST:29500 --rdzv_id=k400 -m videogn.train experiment=... hydra.run.dir=/shared/runs/k400
    videogn-train trainer.resume=auto hydra.run.dir=outputs/2026-01-01/12-00-00   # continue a run
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from videogn.config import ConfigError, register_configs, validate

__all__ = ["CONFIG_DIR", "add_log_file", "main", "release_scratch_dir", "run"]

logger = logging.getLogger("videogn.train")

# configs/ sits beside the package in the source tree (editable installs and checkouts)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

register_configs()


def add_log_file(path: Path) -> logging.Handler:
    """Also log to ``path`` (rank 0 only, so the ranks of a job never write one file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def release_scratch_dir(run_dir: Path) -> None:
    """Ranks > 0 of a torchrun job were given an empty scratch dir by Hydra (they use rank 0's
    run dir): remove it, so they leave nothing behind."""
    if not HydraConfig.initialized():
        return
    own = Path(HydraConfig.get().runtime.output_dir)
    if own.resolve() != run_dir.resolve():
        try:
            own.rmdir()  # only if empty: never deletes anything written
        except OSError:
            pass


def run(cfg: DictConfig, output_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Validate ``cfg``, train, then (``trainer.eval_after_train``) evaluate on the val split.

    Args:
        cfg: a composed ``train`` config.
        output_dir: the run directory (default: Hydra's; under torchrun, rank 0's).

    Returns:
        ``{"train": summary, "eval": report or None, "output_dir": str}``.
    """
    from videogn.engine.distributed import broadcast_object, init_distributed, shutdown_distributed
    from videogn.engine.evaluator import evaluate_split, write_report
    from videogn.engine.trainer import Trainer

    conf = validate(cfg)
    info = init_distributed(conf.trainer.device, conf.trainer.dist_backend)
    if output_dir is None:
        output_dir = HydraConfig.get().runtime.output_dir
    out = Path(broadcast_object(str(output_dir)))
    release_scratch_dir(out)
    handler = add_log_file(out / "train.log") if info.is_main else None
    report = None
    try:
        trainer = Trainer(conf, out, info)
        summary = trainer.fit()
        if conf.trainer.eval_after_train:
            report = evaluate_split(
                trainer.unwrapped_model, conf, trainer.sources, trainer.class_names, split="val",
                batch_size=conf.trainer.eval_batch_size, device=info.device, precision=conf.trainer.precision,
                dist_info=info, progress=conf.trainer.progress_bar,
                extra={"name": conf.name, "model": conf.model.name, "norm": conf.norm.name, "step": summary["steps"],
                       "bad_videos_during_training": summary["bad_videos"]},
            )
            if info.is_main:
                write_report(report, out)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        shutdown_distributed()
    return {"train": summary, "eval": report, "output_dir": str(out)}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as e:
        logger.error("config error: %s", e)
        sys.exit(2)


def main() -> None:
    """Console script ``videogn-train``."""
    _hydra_main()


if __name__ == "__main__":
    main()

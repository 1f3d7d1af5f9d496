"""``videogn-eval checkpoint=PATH``: multi-view testing of a trained checkpoint (``configs/eval.yaml``).

Model, data and test protocol come from the checkpoint's own training config unless given:

    videogn-eval checkpoint=outputs/2026-01-01/12-00-00           # a run dir: its newest checkpoint
    videogn-eval checkpoint=run/checkpoints/step_000000400.pt num_clips=10 num_crops=3
    videogn-eval checkpoint=k400.pt data=kinetics400 data.root=/data/k400 \\
        data.train_annotation=/data/k400/annotations/train.csv data.val_annotation=/data/k400/annotations/validate.csv
    torchrun --standalone --nproc_per_node=8 -m videogn.evaluate checkpoint=k400.pt   # videos sharded over GPUs

Writes ``report.json`` (top1, top5, mean_class_accuracy, per-class accuracy, protocol, unreadable
videos, per-video top-5) and ``report_confusion_matrix.png`` into the run dir (or ``output_dir``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from videogn.cli import hydra_entry, job_context
from videogn.config import ConfigError, EvalConfig, TrainConfig, validate

__all__ = ["main", "resolve_checkpoint", "run"]

logger = logging.getLogger("videogn.evaluate")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run dir / checkpoints dir: its newest intact checkpoint."""
    from videogn.engine.checkpoint import find_latest_checkpoint

    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for d in (p / "checkpoints", p):
            hit = find_latest_checkpoint(d)
            if hit is not None:
                logger.info("checkpoint: %s (the newest intact checkpoint in %s)", hit[0], d)
                return hit[0]
        raise ConfigError(f"checkpoint must be a checkpoint file or a run dir holding one, got {str(path)!r} (no intact checkpoint in it)")
    raise ConfigError(f"checkpoint must be an existing file or run dir, got {str(path)!r}")


def run(cfg: DictConfig | EvalConfig, output_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Evaluate ``cfg.checkpoint``; rank 0 writes the report. Returns the report."""
    from videogn.engine.build import build_model, resolve_data
    from videogn.engine.evaluator import evaluate_split, write_report
    from videogn.models import load_weights

    ec: EvalConfig = validate(cfg)
    path = resolve_checkpoint(ec.checkpoint)
    state, train_cfg = _checkpoint_and_config(path, ec)
    if ec.precision == "fp16" and ec.device == "cpu":
        raise ConfigError("precision must be 'fp32' or 'bf16' on the CPU, got 'fp16'")
    with job_context(ec.device, ec.dist_backend, output_dir or ec.output_dir, "eval.log") as (info, out):
        if state is not None:
            class_names = list(state["class_names"])
            model = build_model(train_cfg.model, train_cfg.norm, len(class_names), load_weights=False)
            model.load_state_dict(state["model"])
        else:
            class_names = _class_names(train_cfg.data)
            model = build_model(train_cfg.model, train_cfg.norm, len(class_names), load_weights=False)
            load_weights(model, path, name=train_cfg.model.name, strict=True)
        model.to(info.device)
        data = ec.data or train_cfg.data
        sources = resolve_data(data)
        report = evaluate_split(
            model, train_cfg, sources, class_names, split=ec.split, data=data,
            num_clips=ec.num_clips, num_crops=ec.num_crops, batch_size=ec.batch_size, num_workers=ec.num_workers,
            device=info.device, precision=ec.precision, dist_info=info, progress=ec.progress_bar, output_dir=out,
            extra={"checkpoint": str(path), "step": int(state["step"]) if state is not None else None, "name": train_cfg.name,
                   "model": train_cfg.model.name, "norm": train_cfg.norm.name},
        )
        if info.is_main:
            write_report(report, out)
    return report


def _checkpoint_and_config(path: Path, ec: EvalConfig) -> tuple[Optional[dict[str, Any]], TrainConfig]:
    """A videogn checkpoint and its training config (``ec.model`` must be null), or, for a foreign
    state dict (no ``config`` entry), None and a config made of ``ec.model``/``norm``/``data``."""
    import dataclasses

    import torch

    from videogn.config import NormConfig

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, ...
        raise ConfigError(f"checkpoint {str(path)!r} is unreadable: {type(e).__name__}: {e}") from e
    schema = OmegaConf.structured(TrainConfig)
    if isinstance(obj, dict) and "config" in obj and "model" in obj:
        for key, value in (("model", ec.model), ("norm", ec.norm)):
            if value is not None:
                raise ConfigError(f"{key} must stay null for a videogn checkpoint ({str(path)!r} has its own), got {value.name!r}")
        train_cfg: TrainConfig = validate(OmegaConf.merge(schema, OmegaConf.create(obj["config"])))
    else:
        if ec.model is None or ec.data is None:
            raise ConfigError(
                f"model and data must be set for {str(path)!r}, a checkpoint without a videogn training config "
                "(e.g. model=x3d_s norm=bn data=kinetics400 ...)"
            )
        train_cfg = validate(OmegaConf.merge(schema, {"model": OmegaConf.structured(ec.model),
                                                      "norm": OmegaConf.structured(ec.norm or NormConfig()),
                                                      "data": OmegaConf.structured(ec.data)}))
        obj = None
    budget = dataclasses.replace(
        train_cfg.budget,
        num_frames=ec.num_frames or train_cfg.budget.num_frames,
        stride=ec.stride or train_cfg.budget.stride,
    )
    return obj, dataclasses.replace(train_cfg, budget=budget)


def _class_names(data) -> list[str]:
    """Class order of a foreign checkpoint: the built-in data's, else the training CSV's labels, sorted."""
    from videogn.data.annotations import read_kinetics_csv
    from videogn.engine.build import resolve_data

    sources = resolve_data(data)
    if sources.classes is not None:
        return list(sources.classes)
    return sorted({row["label"] for row in read_kinetics_csv(sources.train_annotation, data.train_split)})


main = hydra_entry("eval", run)  # console script videogn-eval

if __name__ == "__main__":
    main()

"""Multi-view testing (``num_clips`` x ``num_crops`` views per video, softmax averaged) and its
report: a JSON file with the numbers, the protocol, every video's top-5 prediction and the list of
unreadable videos, plus a confusion-matrix PNG.

Unreadable videos (``valid=False`` from the test-mode loader, which never replaces them) get no
prediction: the headline ``top1``/``top5``/``mean_class_accuracy`` count them as misses, and
``readable`` holds the same numbers over the readable videos only.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from videogn.engine.distributed import DistInfo, all_gather_objects
from videogn.engine.metrics import classification_metrics, topk_predictions
from videogn.data.transforms import normalize_batch
from videogn.runtime import autocast_context

__all__ = ["Predictions", "confusion_matrix_figure", "evaluate", "evaluate_split", "predict", "save_confusion_matrix", "write_report"]

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-video results in dataset order."""

    scores: Tensor  # (N, C) softmax averaged over views; zeros for unreadable videos
    labels: Tensor  # (N,)
    valid: Tensor  # (N,) bool
    indices: Tensor  # (N,)
    paths: list[str]
    errors: list[str]


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    dist_info: Optional[DistInfo] = None,
    progress: Optional[bool] = None,
) -> Predictions:
    """Average the softmax over every view of every video of a test-mode dataset.

    Under DDP each rank takes every ``world_size``-th video and rank 0's result is the union
    (every rank returns it). ``progress``: a progress bar (None: when stderr is a terminal).
    """
    from tqdm.auto import tqdm

    from videogn.data import collate_clips

    info = dist_info or DistInfo()
    device = torch.device(device)
    shard = Subset(dataset, list(range(info.rank, len(dataset), info.world_size)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_clips,
                        pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    show = progress if progress is not None else sys.stderr.isatty()
    scores, labels, valid, indices, paths, errors = [], [], [], [], [], []
    try:
        for batch in tqdm(loader, desc="eval", unit="batch", disable=not (show and info.is_main), dynamic_ncols=True):
            video, ok = batch["video"], batch["valid"]  # (B, V, 3, T, H, W), (B,)
            b, v = video.shape[:2]
            out: Optional[Tensor] = None
            if ok.any():
                x = video[ok].flatten(0, 1).to(device, non_blocking=True)  # (B' * V, 3, T, H, W)
                if x.dtype == torch.uint8:  # raw pixels: normalised on the device
                    x = normalize_batch(x, dataset.mean, dataset.std)
                with autocast_context(device, precision):
                    logits = model(x)
                probs = F.softmax(logits.float(), dim=1).view(int(ok.sum()), v, -1).mean(dim=1)  # (B', C)
                out = torch.zeros(b, probs.shape[1])
                out[ok] = probs.cpu()
            scores.append(out)
            labels.append(batch["label"])
            valid.append(ok)
            indices.append(batch["index"])
            paths += batch["path"]
            errors += batch["error"]
    finally:
        model.train(was_training)
    local = {
        "scores": scores,  # per batch: (B, C) or None when no video of the batch was readable
        "sizes": [len(lab) for lab in labels],
        "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        "valid": torch.cat(valid) if valid else torch.zeros(0, dtype=torch.bool),
        "indices": torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
        "paths": paths,
        "errors": errors,
    }
    parts = all_gather_objects(local)
    c = next((s.shape[1] for p in parts for s in p["scores"] if s is not None), None)
    if c is None:  # no readable video anywhere: the classifier's size
        c = _num_outputs(model)
    all_scores = [s if s is not None else torch.zeros(n, c) for p in parts for s, n in zip(p["scores"], p["sizes"])]
    all_indices = torch.cat([p["indices"] for p in parts])
    order = torch.argsort(all_indices)
    all_paths = [x for p in parts for x in p["paths"]]
    all_errors = [x for p in parts for x in p["errors"]]
    return Predictions(
        scores=(torch.cat(all_scores) if all_scores else torch.zeros(0, c))[order],
        labels=torch.cat([p["labels"] for p in parts])[order],
        valid=torch.cat([p["valid"] for p in parts])[order],
        indices=all_indices[order],
        paths=[all_paths[i] for i in order.tolist()],
        errors=[all_errors[i] for i in order.tolist()],
    )


def _num_outputs(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise RuntimeError("cannot tell the number of classes: no readable video and no nn.Linear classifier")
    return last[-1].out_features


def evaluate(
    model: nn.Module,
    dataset: Any,
    class_names: Sequence[str],
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    dist_info: Optional[DistInfo] = None,
    progress: Optional[bool] = None,
    extra: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Run :func:`predict` and build the report (see :func:`classification_metrics`).

    The report's ``protocol`` records the views (clips x crops, frames, stride, scales) and
    ``predictions`` holds each video's label, readability and top-5 classes with probabilities,
    from which every number can be recomputed. ``extra`` entries are added at the top level.
    """
    preds = predict(model, dataset, batch_size=batch_size, num_workers=num_workers, device=device,
                    precision=precision, dist_info=dist_info, progress=progress)
    report: dict[str, Any] = dict(extra or {})
    report.update(classification_metrics(preds.scores, preds.labels, preds.valid, list(class_names)))
    report["protocol"] = {
        "num_clips": dataset.num_clips,
        "num_crops": dataset.num_crops,
        "views_per_video": dataset.num_clips * dataset.num_crops,
        "num_frames": dataset.num_frames,
        "stride": dataset.stride,
        "target_fps": dataset.target_fps,
        "test_scale": dataset.test_scale,
        "crop_size": dataset.crop_size,
        "aggregation": "mean of per-view softmax",
        "unreadable_videos": "counted as misses in top1/top5/mean_class_accuracy; see 'readable' for readable-only",
    }
    report["classes"] = list(class_names)
    report["unreadable"] = [
        {"index": int(i), "path": p, "error": e}
        for i, p, e, ok in zip(preds.indices.tolist(), preds.paths, preds.errors, preds.valid.tolist())
        if not ok
    ]
    report["dataset"] = {k: v for k, v in dataset.summary.items() if k != "missing"}
    k = min(5, preds.scores.shape[1])
    top = topk_predictions(preds.scores, k)
    top_p = preds.scores.gather(1, top)
    report["predictions"] = [
        {
            "index": int(i), "path": p, "label": int(y), "valid": bool(ok),
            "top5": t if ok else [], "top5_prob": [round(float(x), 6) for x in tp] if ok else [],
        }
        for i, p, y, ok, t, tp in zip(preds.indices.tolist(), preds.paths, preds.labels.tolist(),
                                     preds.valid.tolist(), top.tolist(), top_p.tolist())
    ]
    return report


def confusion_matrix_figure(cm: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "") -> Any:
    """Row-normalised confusion matrix (rows true, columns predicted) as a matplotlib figure (Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = torch.tensor(cm, dtype=torch.float64)
    rows = m.sum(dim=1, keepdim=True).clamp_min(1)
    norm = (m / rows).numpy()
    n = len(class_names)
    size = min(4 + 0.45 * n, 40)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    if n <= 40:  # label the axes only when the names stay readable
        ax.set_xticks(range(n), labels=list(class_names), rotation=90)
        ax.set_yticks(range(n), labels=list(class_names))
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if m[i, j] > 0:
                        ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def save_confusion_matrix(cm: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """:func:`confusion_matrix_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = confusion_matrix_figure(cm, class_names, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], output_dir: str | Path, name: str = "report") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>_confusion_matrix.png`` into ``output_dir`` and log the headline."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(_finite(report), indent=1) + "\n")
    top1 = report.get("top1", math.nan)
    title = f"top-1 {100 * top1:.1f}% of {report.get('num_videos', '?')} videos"
    if report.get("num_unreadable"):
        title += f" ({report['num_unreadable']} unreadable: not in the matrix)"
    png = save_confusion_matrix(report["confusion_matrix"], report["classes"], out / f"{name}_confusion_matrix.png",
                                title=title)
    logger.info(
        "%s top-1 %.2f%%  top-5 %.2f%%  mean class accuracy %.2f%%  (%d videos, %d unreadable) -> %s",
        report.get("split", "val"), 100 * top1, 100 * report["top5"], 100 * report["mean_class_accuracy"],
        report["num_videos"], report["num_unreadable"], json_path,
    )
    return json_path, png


def _finite(x: Any) -> Any:
    # JSON has no NaN: write null instead (e.g. mean class accuracy of an empty set)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def evaluate_split(
    model: nn.Module,
    train_cfg: Any,
    sources: Any,
    class_names: Sequence[str],
    *,
    split: str = "val",
    data: Any = None,
    num_clips: Optional[int] = None,
    num_crops: Optional[int] = None,
    batch_size: int = 1,
    num_workers: Optional[int] = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    dist_info: Optional[DistInfo] = None,
    progress: Optional[bool] = None,
    extra: Optional[dict[str, Any]] = None,
    output_dir: Optional[str | Path] = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``split`` of a run's dataset with its test protocol.

    Args:
        train_cfg: the run's :class:`~videogn.config.TrainConfig` (clip length and stride come
            from its budget; the data settings from ``data`` if given, else from it).
        sources: the run's :class:`~videogn.engine.build.DataSources`.
        num_clips / num_crops / num_workers: override the data config's values.
        output_dir: the run dir; annotated videos with no file are listed in
            ``missing_videos_<split>.txt`` there (and logged).
    """
    from videogn.engine.build import build_dataset, report_missing_videos

    data = data if data is not None else train_cfg.data
    dataset = build_dataset(
        data, train_cfg.budget, sources, split, mode="test",
        class_index={name: i for i, name in enumerate(class_names)},
        num_clips=num_clips, num_crops=num_crops,
    )
    info = dist_info or DistInfo()
    if info.is_main and output_dir is not None:
        report_missing_videos(dataset, Path(output_dir) / f"missing_videos_{split}.txt", split)
    if info.is_main:
        logger.info(
            "evaluating %d %s videos, %d clips x %d crops of %d frames (stride %d), crop %d",
            len(dataset), split, dataset.num_clips, dataset.num_crops, dataset.num_frames, dataset.stride, dataset.crop_size,
        )
    return evaluate(
        model, dataset, class_names, batch_size=batch_size,
        num_workers=data.num_workers if num_workers is None else num_workers,
        device=device, precision=precision, dist_info=info, progress=progress,
        extra={"split": split, **(extra or {})},
    )

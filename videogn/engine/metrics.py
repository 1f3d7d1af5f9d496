"""Classification metrics over videos: top-k, confusion matrix, per-class and mean class accuracy,
the held-out loss, and the confusion-matrix figure (the report's PNG and TensorBoard's image).

Unreadable videos (the loader's ``valid=False``) have no prediction. The headline numbers count
them as misses, so a damaged file can never quietly shrink what was evaluated; the same numbers
over the readable videos only are reported beside them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "classification_metrics",
    "confusion_matrix",
    "confusion_matrix_figure",
    "mean_cross_entropy",
    "per_class_accuracy",
    "save_confusion_matrix",
    "topk_predictions",
]


def topk_predictions(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores per row, best first: (N, C) -> (N, min(k, C))."""
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (N, num_classes), got {tuple(scores.shape)}")
    return scores.topk(min(k, scores.shape[1]), dim=1).indices


def confusion_matrix(labels: Tensor, preds: Tensor, num_classes: int) -> Tensor:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted class."""
    if labels.shape != preds.shape:
        raise ValueError(f"labels and preds must have the same shape, got {tuple(labels.shape)} and {tuple(preds.shape)}")
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(labels: Tensor, correct: Tensor, num_classes: int) -> list[Optional[float]]:
    """Fraction correct per true class (None for a class with no videos)."""
    total = torch.bincount(labels.long(), minlength=num_classes)
    hits = torch.bincount(labels.long(), weights=correct.double(), minlength=num_classes)
    return [float(h / t) if t > 0 else None for h, t in zip(hits.tolist(), total.tolist())]


def mean_cross_entropy(scores: Tensor, labels: Tensor, valid: Tensor) -> float:
    """Mean of ``-log p[label]`` over the readable videos, ``scores`` being (N, C) class
    probabilities (averaged over views); NaN when no video is readable. A probability that
    underflowed to 0 counts as 1e-12 (a loss of 27.6), so one video cannot make the mean infinite."""
    valid = valid.bool()
    if not bool(valid.any()):
        return math.nan
    p = scores[valid].double().gather(1, labels[valid].long()[:, None]).squeeze(1)  # (N',)
    return float(-p.clamp_min(1e-12).log().mean())


def _mean(values: Sequence[Optional[float]]) -> float:
    present = [v for v in values if v is not None]
    return float(sum(present) / len(present)) if present else math.nan


def classification_metrics(
    scores: Tensor, labels: Tensor, valid: Tensor, class_names: Sequence[str], topk: Sequence[int] = (1, 5)
) -> dict[str, Any]:
    """All numbers of an evaluation report.

    Args:
        scores: (N, C) averaged class probabilities (rows of unreadable videos are ignored).
        labels: (N,) true classes. valid: (N,) bool, False for videos that could not be decoded.
        class_names: C names. topk: which top-k accuracies to report.

    Returns:
        ``top1``, ``top5``, ``mean_class_accuracy``, ``per_class_accuracy`` (headline: unreadable =
        miss), ``readable`` (the same over readable videos), counts and the confusion matrix of the
        readable videos (rows true, columns predicted).
    """
    n, c = scores.shape
    if labels.shape != (n,) or valid.shape != (n,):
        raise ValueError(f"labels and valid must have shape ({n},), got {tuple(labels.shape)} and {tuple(valid.shape)}")
    if len(class_names) != c:
        raise ValueError(f"class_names has {len(class_names)} names but scores have {c} columns")
    if 1 not in topk or any(k < 1 for k in topk):
        raise ValueError(f"topk must contain 1 and only positive values, got {list(topk)}")
    labels, valid = labels.long(), valid.bool()
    ranked = topk_predictions(scores.float(), max(topk))  # (N, k)
    hits_at = {k: (ranked[:, :k] == labels[:, None]).any(dim=1) & valid for k in topk}
    top1_correct = hits_at[1]
    out: dict[str, Any] = {
        "num_videos": n,
        "num_readable": int(valid.sum()),
        "num_unreadable": int((~valid).sum()),
    }
    for k, hits in hits_at.items():
        out[f"top{k}"] = float(hits.double().mean()) if n else math.nan
    pcs = per_class_accuracy(labels, top1_correct, c)
    out["mean_class_accuracy"] = _mean(pcs)
    out["per_class_accuracy"] = {name: acc for name, acc in zip(class_names, pcs)}

    readable: dict[str, Any] = {}
    m = int(valid.sum())
    for k, hits in hits_at.items():
        readable[f"top{k}"] = float(hits[valid].double().mean()) if m else math.nan
    pcs_r = per_class_accuracy(labels[valid], top1_correct[valid], c)
    readable["mean_class_accuracy"] = _mean(pcs_r)
    readable["per_class_accuracy"] = {name: acc for name, acc in zip(class_names, pcs_r)}
    out["readable"] = readable
    out["confusion_matrix"] = confusion_matrix(labels[valid], ranked[valid, 0], c).tolist()
    return out


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
    """:func:`confusion_matrix_figure` as a PNG at ``path`` (parent folders created)."""
    import matplotlib.pyplot as plt

    fig = confusion_matrix_figure(cm, class_names, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

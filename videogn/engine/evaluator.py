"""Multi-view testing, the one entry point of every evaluation: :func:`evaluate_split`.

``videogn-train``'s final evaluation and ``videogn-eval`` both call it (validation during training
and prediction build on it): ``eval.num_clips`` x ``eval.num_crops`` views per video, the softmax
averaged over the views (:class:`~videogn.config.EvalProtocolConfig` owns the protocol).

Unreadable videos (missing files, failed decodes: ``valid=False`` from the test-mode loader, which
never replaces them) get no prediction: the headline ``top1``/``top5``/``mean_class_accuracy`` count
them as misses, ``readable`` holds the same numbers over the readable videos only. An evaluation in
which no video is readable raises :class:`NoReadableVideosError` instead of reporting 0 %.

Files written into ``EvalOptions.output_dir`` (nothing when it is None):

``predictions.jsonl``
    One JSON object per video, appended and flushed after every batch, so a long evaluation's
    finished videos are on disk as it goes (under DDP each rank writes
    ``predictions.rank<r>.jsonl``; at the end rank 0 rewrites ``predictions.jsonl`` atomically with
    every video in dataset order, resumed ones included, and removes the shards). Keys: ``index``
    (position in the split), ``path``, ``label`` (class name; null for an unlabelled video),
    ``valid``, ``error`` (why it is unreadable, else ""), ``probs`` (the averaged class
    probabilities in the order of the report's ``classes``, 6 decimals; [] when unreadable), and
    with ``eval.save_view_logits`` ``view_logits``: the network's logits of every view, one row of
    classes per view in view order, clip-major (clip 0's crops, then clip 1's, ...; crops start,
    centre, end along the longer side), 6 decimals ([] when unreadable): ``probs`` is the mean of
    their softmax. Off by default: num_views x num_classes floats (~10.5 bytes each) per video.
``report.json``
    ``schema_version`` (:data:`REPORT_SCHEMA_VERSION`, 1), ``split``, the caller's entries (e.g.
    ``name``, ``model``, ``norm``, ``step``, ``checkpoint``), ``num_videos``, ``num_readable``,
    ``num_unreadable``, ``num_missing`` (unreadable because the file does not exist; null for a
    subset), ``top1``, ``top5``, ``mean_class_accuracy``, ``per_class_accuracy`` ({class name:
    accuracy or null}), ``readable`` (the same four over readable videos), ``loss`` (mean
    cross-entropy of the averaged probabilities over readable videos), ``confusion_matrix``
    (readable videos; rows true, columns predicted, in ``classes`` order), ``classes``,
    ``protocol`` (views, clip length, stride, scales, aggregation), ``unreadable`` ([{index, path,
    error}]), ``dataset`` (the split's summary), ``predictions`` ([{index, path, label, valid,
    top5, top5_prob}], classes by name), ``files`` (the names of the files written beside it).
``report_confusion_matrix.png``
    The row-normalised confusion matrix of the readable videos.
``eval_fingerprint.json``
    What the saved predictions were made with (:data:`FINGERPRINT_FILE`): a SHA-256 of the model's
    state, the split, class names, protocol, precision, the data's root and annotation (path, size,
    mtime), the subset and ``save_view_logits`` (only when on), plus the dataset summary that
    :func:`rebuild_report` needs.
``missing_videos_<split>.txt``
    The annotated videos that have no file (an empty file when none is missing).

Resume (``EvalOptions.resume``, on by default): an evaluation killed at any point (SIGKILL
included) and rerun into the same ``output_dir`` redoes no finished video. Every rank reads every
predictions file there (``predictions.jsonl`` and all ``predictions.rank<r>.jsonl``, whatever world
size wrote them; a torn last line is ignored), evaluates only the videos not in them and appends to
its own file; the report covers the saved and the new predictions alike. Saved predictions are reused
only when :data:`FINGERPRINT_FILE` matches this evaluation; otherwise they are moved aside (renamed
``*.stale``) and the evaluation starts fresh, saying so in the log. Turning ``eval.save_view_logits``
on or off is such a change: every line of one file has the field or none has.

A report is rebuilt from a run's saved predictions alone with :func:`rebuild_report`, and several
runs' predictions are ensembled (probabilities averaged) with :func:`ensemble_predictions`; the
command for both is ``python scripts/ensemble_predictions.py RUN_DIR [RUN_DIR ...] --output DIR``.
A rebuilt ``predictions.jsonl`` keeps the run's lines as they are (view logits included); an
ensemble's has none (its runs' views are of other networks, maybe other protocols).
"""

from __future__ import annotations

import hashlib
import json
import os
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from videogn.config.schema import ConfigError
from videogn.data.transforms import normalize_batch
from videogn.engine.distributed import DistInfo, all_gather_objects
from videogn.engine.metrics import classification_metrics, mean_cross_entropy, save_confusion_matrix, topk_predictions
from videogn.runtime import autocast_context

if TYPE_CHECKING:
    from videogn.config.schema import BudgetConfig, DataConfig, EvalProtocolConfig
    from videogn.engine.build import DataSources

__all__ = [
    "FINGERPRINT_FILE",
    "PREDICTIONS_FILE",
    "REPORT_SCHEMA_VERSION",
    "EvalOptions",
    "EvalResult",
    "EvalTarget",
    "NoReadableVideosError",
    "Predictions",
    "build_eval_dataset",
    "build_report",
    "ensemble_predictions",
    "evaluate_dataset",
    "evaluate_split",
    "predict",
    "protocol_of",
    "read_predictions",
    "rebuild_report",
    "write_report",
]

logger = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1  # report.json's "schema_version": raise it when a key changes meaning or goes
PREDICTIONS_FILE = "predictions.jsonl"
FINGERPRINT_FILE = "eval_fingerprint.json"  # what the saved predictions were made with (resume)
FINGERPRINT_VERSION = 1


class NoReadableVideosError(ConfigError):
    """Not one video of an evaluation could be read: there is nothing to report (exit status 2)."""


@dataclass
class EvalTarget:
    """What is evaluated: a network, its class order and the data and protocol of its run
    (:meth:`videogn.engine.trainer.Trainer.evaluation_target`, or rebuilt from a checkpoint)."""

    model: nn.Module  # unwrapped (no DDP): each rank evaluates its own share of the videos
    class_names: list[str]  # the classifier's output order
    data: DataConfig
    budget: BudgetConfig  # the training clip length and stride: the protocol's default
    sources: DataSources
    protocol: EvalProtocolConfig


@dataclass
class EvalOptions:
    """How and where an evaluation runs."""

    split: str = "val"
    device: torch.device | str = "cpu"
    precision: str = "fp32"
    num_workers: Optional[int] = None  # loader workers; None: data.num_workers
    dist_info: Optional[DistInfo] = None  # None: one process
    progress: Optional[bool] = None  # a progress bar (None: when stderr is a terminal)
    output_dir: Optional[Path] = None  # None: write no file (e.g. validation during training)
    subset: Optional[Sequence[int]] = None  # evaluate only these videos of the split (positions)
    extra: dict[str, Any] = field(default_factory=dict)  # top-level report entries (name, step, ...)
    report_name: str = "report"  # <report_name>.json and <report_name>_confusion_matrix.png
    resume: bool = True  # reuse output_dir's saved predictions when their fingerprint matches


@dataclass
class EvalResult:
    """The report (see the module docstring) and its headline numbers."""

    report: dict[str, Any]

    @property
    def top1(self) -> float:
        return float(self.report["top1"])

    @property
    def top5(self) -> float:
        return float(self.report["top5"])

    @property
    def loss(self) -> float:
        """Mean cross-entropy of the averaged probabilities over the readable videos."""
        return float(self.report["loss"])


@dataclass
class Predictions:
    """Per-video results in dataset order."""

    scores: Tensor  # (N, C) softmax averaged over views; zeros for unreadable videos
    labels: Tensor  # (N,)
    valid: Tensor  # (N,) bool
    indices: Tensor  # (N,)
    paths: list[str]
    errors: list[str]
    view_logits: Optional[Tensor] = None  # (N, V, C) when predict(view_logits=True); zeros for unreadable videos


# (scores (B, C), the collated batch, logits (B, V, C) of every view; zero rows for unreadable videos)
BatchCallback = Callable[[Tensor, dict[str, Any], Tensor], None]


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    dist_info: Optional[DistInfo] = None,
    progress: Optional[bool] = None,
    subset: Optional[Sequence[int]] = None,
    on_batch: Optional[BatchCallback] = None,
    view_logits: bool = False,
) -> Predictions:
    """Average the softmax over every view of every video of a test-mode dataset.

    Under DDP each rank takes every ``world_size``-th video (of ``subset`` when given) and every
    rank returns the union, in dataset order. ``on_batch(scores, batch, logits)`` is called on each
    rank after each of its batches (scores (B, C), logits (B, V, C) in view order; zero rows for
    unreadable videos). ``view_logits``: also return every view's logits (``Predictions.view_logits``,
    gathered like the scores: N x V x C floats in memory, so off for a large evaluation, whose
    writer takes them per batch from ``on_batch``).
    """
    from tqdm.auto import tqdm

    from videogn.data import collate_clips

    info = dist_info or DistInfo()
    device = torch.device(device)
    positions = list(range(len(dataset))) if subset is None else [int(i) for i in subset]
    shard = Subset(dataset, positions[info.rank::info.world_size])
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_clips,
                        pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    show = progress if progress is not None else sys.stderr.isatty()
    c = _num_outputs(model)
    scores, labels, valid, indices, paths, errors, views = [], [], [], [], [], [], []
    try:
        for batch in tqdm(loader, desc="eval", unit="batch", disable=not (show and info.is_main), dynamic_ncols=True):
            video, ok = batch["video"], batch["valid"]  # (B, V, 3, T, H, W), (B,)
            b, v = video.shape[:2]
            out = torch.zeros(b, c) if c is not None else None
            per_view = torch.zeros(b, v, c) if c is not None else None
            if ok.any():
                x = video[ok].flatten(0, 1).to(device, non_blocking=True)  # (B' * V, 3, T, H, W)
                if x.dtype == torch.uint8:  # raw pixels: normalised on the device
                    x = normalize_batch(x, dataset.mean, dataset.std)  # type: ignore[attr-defined]
                with autocast_context(device, precision):
                    logits = model(x).float()  # (B' * V, C), video-major: each video's views in view order
                probs = F.softmax(logits, dim=1).view(int(ok.sum()), v, -1).mean(dim=1)  # (B', C)
                out = torch.zeros(b, probs.shape[1])
                out[ok] = probs.cpu()
                per_view = torch.zeros(b, v, probs.shape[1])
                per_view[ok] = logits.view(int(ok.sum()), v, -1).cpu()  # (B', V, C)
            if out is None or per_view is None:  # no classifier found, nothing readable yet: sized once a batch reads
                out, per_view = torch.zeros(b, 0), torch.zeros(b, v, 0)
            scores.append(out)
            if view_logits:
                views.append(per_view)
            labels.append(batch["label"])
            valid.append(ok)
            indices.append(batch["index"])
            paths += batch["path"]
            errors += batch["error"]
            if on_batch is not None:
                on_batch(out, batch, per_view)
    finally:
        model.train(was_training)
    local = {
        "scores": scores,
        "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        "valid": torch.cat(valid) if valid else torch.zeros(0, dtype=torch.bool),
        "indices": torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
        "paths": paths,
        "errors": errors,
        "views": views,
    }
    parts = all_gather_objects(local)
    width = max([s.shape[1] for p in parts for s in p["scores"]] + [c or 0])
    all_scores = [s if s.shape[1] == width else torch.zeros(s.shape[0], width) for p in parts for s in p["scores"]]
    all_views = [s if s.shape[2] == width else torch.zeros(*s.shape[:2], width) for p in parts for s in p["views"]]
    all_indices = torch.cat([p["indices"] for p in parts])
    order = torch.argsort(all_indices)
    all_paths = [x for p in parts for x in p["paths"]]
    all_errors = [x for p in parts for x in p["errors"]]
    return Predictions(
        scores=(torch.cat(all_scores) if all_scores else torch.zeros(0, width))[order],
        labels=torch.cat([p["labels"] for p in parts])[order],
        valid=torch.cat([p["valid"] for p in parts])[order],
        indices=all_indices[order],
        paths=[all_paths[i] for i in order.tolist()],
        errors=[all_errors[i] for i in order.tolist()],
        view_logits=((torch.cat(all_views) if all_views else torch.zeros(0, 0, width))[order] if view_logits
                     else None),
    )


def _num_outputs(model: nn.Module) -> Optional[int]:
    """The classifier's width (the last nn.Linear), or None when the model has none."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


def protocol_of(dataset: Any) -> dict[str, Any]:
    """The test protocol of a test-mode dataset, as the report states it."""
    return {
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


def build_report(
    preds: Predictions, dataset: Any, class_names: Sequence[str], *, extra: Optional[dict[str, Any]] = None,
    num_missing: Optional[int] = None, protocol: Optional[dict[str, Any]] = None,
    summary: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The report of :func:`predict`'s results (keys: the module docstring); ``dataset`` gives the
    protocol and summary (or, with ``dataset=None``, ``protocol`` and ``summary`` do: a report
    rebuilt from saved predictions), ``extra`` entries are added at the top level."""
    names = list(class_names)
    report: dict[str, Any] = {"schema_version": REPORT_SCHEMA_VERSION, **(extra or {})}
    report.update(classification_metrics(preds.scores, preds.labels, preds.valid, names))
    report["num_missing"] = num_missing
    report["loss"] = mean_cross_entropy(preds.scores, preds.labels, preds.valid)
    report["protocol"] = protocol_of(dataset) if dataset is not None else dict(protocol or {})
    report["classes"] = names
    report["unreadable"] = [
        {"index": int(i), "path": p, "error": e}
        for i, p, e, ok in zip(preds.indices.tolist(), preds.paths, preds.errors, preds.valid.tolist())
        if not ok
    ]
    source = dataset.summary if dataset is not None else (summary or {})
    report["dataset"] = {k: v for k, v in source.items() if k != "missing"}
    k = min(5, preds.scores.shape[1])
    top = topk_predictions(preds.scores, k)
    top_p = preds.scores.gather(1, top)
    report["predictions"] = [
        {
            "index": int(i), "path": p, "label": _name(names, y), "valid": bool(ok),
            "top5": [names[j] for j in t] if ok else [], "top5_prob": [round(float(x), 6) for x in tp] if ok else [],
        }
        for i, p, y, ok, t, tp in zip(preds.indices.tolist(), preds.paths, preds.labels.tolist(),
                                     preds.valid.tolist(), top.tolist(), top_p.tolist())
    ]
    return report


def _name(names: Sequence[str], label: int) -> Optional[str]:
    return names[label] if 0 <= label < len(names) else None


# ----------------------------------------------------------------------------------------------
# saved predictions: written per batch, read back to resume, rebuild or ensemble


def _shard_name(rank: int) -> str:
    return f"predictions.rank{rank}.jsonl"


def _prediction_files(out: Path) -> list[Path]:
    """Every predictions file in ``out``: the merged one and any rank's shard (of any world size)."""
    files = [out / PREDICTIONS_FILE] if (out / PREDICTIONS_FILE).is_file() else []
    return files + sorted(out.glob("predictions.rank*.jsonl"))


def _source_files(source: Path) -> list[Path]:
    """The predictions files of a run dir (:func:`_prediction_files`) or the one file given."""
    return _prediction_files(source) if source.is_dir() else ([source] if source.is_file() else [])


def _scan_lines(path: Path) -> Iterator[tuple[dict[str, Any], int, int]]:
    """Each complete line of a predictions file: (its object, its first byte, the byte after its
    newline). A line the writer was killed in the middle of (no newline yet, or not JSON) ends the
    file there. One line is in memory at a time (lines with view logits are large)."""
    start = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):  # torn
                return
            try:
                row = json.loads(line)
            except ValueError:
                return
            yield row, start, start + len(line)
            start += len(line)


def read_predictions(source: str | Path, *, view_logits: bool = True) -> list[dict[str, Any]]:
    """The saved per-video lines of a run dir (every predictions file in it) or of one
    ``predictions*.jsonl`` file, one per video (by ``index``), in index order; torn lines are skipped.
    ``view_logits=False`` drops each line's ``view_logits`` as it is read (what a caller of the
    probabilities alone wants: they are num_views x num_classes floats per video).

    Raises:
        FileNotFoundError: no predictions file there.
    """
    p = Path(source)
    files = _source_files(p)
    if not files:
        raise FileNotFoundError(f"no {PREDICTIONS_FILE} (or predictions.rank<r>.jsonl) in {str(p)!r}")
    rows: dict[int, dict[str, Any]] = {}
    for f in files:
        for r, _, _ in _scan_lines(f):
            if not view_logits:
                r.pop("view_logits", None)
            rows[int(r["index"])] = r
    return [rows[i] for i in sorted(rows)]


def _merge_lines(files: Sequence[Path], indices: Sequence[int], out: Path) -> Path:
    """``out/predictions.jsonl`` holding the saved line of each of ``indices``, in that order, copied
    byte for byte from ``files`` (a later file's line wins, as in :func:`read_predictions`) and
    replaced atomically (a kill leaves the old file complete). Lines are copied one at a time, so
    view logits never gather in memory."""
    spans: dict[int, tuple[int, int, int]] = {}  # index -> (file, first byte, end)
    for k, f in enumerate(files):
        for row, start, end in _scan_lines(f):
            spans[int(row["index"])] = (k, start, end)
    lost = [i for i in indices if i not in spans]
    if lost:  # a bug: every prediction of a run is written before it is merged
        raise RuntimeError(f"{len(lost)} predicted videos (e.g. index {lost[0]}) have no saved line in "
                           f"{[str(f) for f in files]}")
    out.mkdir(parents=True, exist_ok=True)
    final = out / PREDICTIONS_FILE
    tmp = final.with_name(final.name + ".tmp")
    handles = [open(f, "rb") for f in files]
    try:
        with open(tmp, "wb") as dst:
            for i in indices:
                k, start, end = spans[i]
                handles[k].seek(start)
                dst.write(handles[k].read(end - start))
    finally:
        for h in handles:
            h.close()
    os.replace(tmp, final)
    return final


def _rows_to_predictions(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> Predictions:
    """Saved lines -> :class:`Predictions` (labels by name: a name outside ``class_names`` is an error)."""
    names = list(class_names)
    lookup = {n: i for i, n in enumerate(names)}
    scores = torch.zeros(len(rows), len(names))
    labels = []
    for k, r in enumerate(rows):
        if r["label"] is not None and r["label"] not in lookup:
            raise ValueError(f"label {r['label']!r} of {r['path']!r} is not one of the {len(names)} class names")
        labels.append(lookup[r["label"]] if r["label"] is not None else -1)
        if r["valid"]:
            if len(r["probs"]) != len(names):
                raise ValueError(f"{r['path']!r} has {len(r['probs'])} probabilities for {len(names)} class names")
            scores[k] = torch.tensor(r["probs"], dtype=torch.float32)
    return Predictions(
        scores=scores,
        labels=torch.tensor(labels, dtype=torch.long),
        valid=torch.tensor([bool(r["valid"]) for r in rows], dtype=torch.bool),
        indices=torch.tensor([int(r["index"]) for r in rows], dtype=torch.long),
        paths=[str(r["path"]) for r in rows],
        errors=[str(r.get("error", "")) for r in rows],
    )


def _concat(a: Predictions, b: Predictions) -> Predictions:
    """Both sets of videos, in dataset (index) order."""
    width = max(a.scores.shape[1], b.scores.shape[1])
    pad = [torch.zeros(0, width) if s.shape[0] == 0 else s for s in (a.scores, b.scores)]  # an empty side may be unsized
    indices = torch.cat([a.indices, b.indices])
    order = torch.argsort(indices).tolist()
    paths, errors = a.paths + b.paths, a.errors + b.errors
    return Predictions(
        scores=torch.cat(pad)[order], labels=torch.cat([a.labels, b.labels])[order],
        valid=torch.cat([a.valid, b.valid])[order], indices=indices[order],
        paths=[paths[i] for i in order], errors=[errors[i] for i in order],
    )


def _state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes): the weights' identity."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fingerprint(
    model: nn.Module, dataset: Any, class_names: Sequence[str], options: EvalOptions, save_view_logits: bool,
) -> dict[str, Any]:
    """What decides the saved predictions (compared on resume; ``info`` is kept, not compared)."""
    summary = dict(getattr(dataset, "summary", {}) or {})
    annotation = summary.get("annotation")
    stat = Path(annotation).stat() if annotation and Path(annotation).is_file() else None
    subset = None if options.subset is None else hashlib.sha256(
        ",".join(str(int(i)) for i in options.subset).encode()).hexdigest()
    fingerprint: dict[str, Any] = {
        "version": FINGERPRINT_VERSION,
        "model_sha256": _state_digest(model),
        "split": options.split,
        "classes": list(class_names),
        "precision": options.precision,
        "protocol": protocol_of(dataset),
        "data": {
            "num_videos": len(dataset), "root": summary.get("root"), "annotation": annotation,
            "annotation_size": stat.st_size if stat else None, "annotation_mtime_ns": stat.st_mtime_ns if stat else None,
            "csv_split": summary.get("split"),
        },
        "subset_sha256": subset,
        "info": {"dataset": {k: v for k, v in summary.items() if k != "missing"},
                 "num_missing": len(dataset.missing) if options.subset is None and hasattr(dataset, "missing") else None},
    }
    if save_view_logits:  # absent when off: fingerprints written before the option existed still match
        fingerprint["save_view_logits"] = True
    return fingerprint


def _prepare_output(out: Path, fingerprint: dict[str, Any], resume: bool) -> None:
    """Rank 0, before any rank reads: keep the saved predictions if they were made with this
    fingerprint (and ``resume``), else move them aside; then record the fingerprint."""
    out.mkdir(parents=True, exist_ok=True)
    files = _prediction_files(out)
    fp_path = out / FINGERPRINT_FILE
    if files:
        why = "eval resume is off" if not resume else _fingerprint_mismatch(fp_path, fingerprint)
        if why:
            for f in files + ([fp_path] if fp_path.is_file() else []):
                os.replace(f, f.with_name(f.name + ".stale"))
            logger.warning("not reusing the saved predictions in %s (%s): starting fresh; the old files are renamed "
                           "*.stale", out, why)
    tmp = fp_path.with_name(fp_path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(fingerprint), indent=1) + "\n")
    os.replace(tmp, fp_path)


def _fingerprint_mismatch(path: Path, fingerprint: dict[str, Any]) -> str:
    """Why the saved predictions beside ``path`` cannot be reused ("" when they can)."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return f"no {path.name} says what they were made with"
    except ValueError:
        return f"{path.name} is damaged"
    now = json.loads(json.dumps(_finite(fingerprint)))  # as it would be read back
    # both sides' keys: a key only one side has (save_view_logits) is a change too
    changed = [k for k in [*now, *(k for k in saved if k not in now)] if k != "info" and saved.get(k) != now.get(k)]
    return "made with another " + ", ".join(changed) if changed else ""


class _PredictionWriter:
    """Appends one JSON line per video to this rank's file (``predictions.jsonl`` in a single
    process) and flushes it after every batch; a torn last line (a killed run) is cut off first.
    ``view_logits``: each line also carries its video's per-view logits."""

    def __init__(self, out: Path, info: DistInfo, class_names: Sequence[str], view_logits: bool = False) -> None:
        self.out, self.info, self.names, self.view_logits = out, info, list(class_names), view_logits
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / (PREDICTIONS_FILE if info.world_size == 1 else _shard_name(info.rank))
        if self.path.is_file():
            end = 0
            for _, _, end in _scan_lines(self.path):
                pass
            with open(self.path, "r+b") as f:
                f.truncate(end)
        self._file = open(self.path, "a", encoding="utf-8")

    def __call__(self, scores: Tensor, batch: dict[str, Any], logits: Tensor) -> None:
        views: list[Optional[list[list[float]]]] = logits.tolist() if self.view_logits else [None] * len(scores)
        for row, i, y, ok, p, e, v in zip(scores.tolist(), batch["index"].tolist(), batch["label"].tolist(),
                                          batch["valid"].tolist(), batch["path"], batch["error"], views):
            self._file.write(_jsonl_line(self.names, i, p, y, ok, e, row, v))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def merge(self, preds: Predictions) -> Path:
        """Rank 0, after every rank finished: every video's saved line (its probabilities, and view
        logits when written) in one file in dataset order, written atomically (a kill leaves the old
        files complete), then the shards removed."""
        final = _merge_lines(_prediction_files(self.out), preds.indices.tolist(), self.out)
        for shard in self.out.glob("predictions.rank*.jsonl"):
            shard.unlink(missing_ok=True)
        return final


def _write_predictions(out: Path, preds: Predictions, names: Sequence[str]) -> Path:
    """``out/predictions.jsonl`` holding ``preds`` in their order, replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    final = out / PREDICTIONS_FILE
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row, i, y, ok, p, e in zip(preds.scores.tolist(), preds.indices.tolist(), preds.labels.tolist(),
                                       preds.valid.tolist(), preds.paths, preds.errors):
            f.write(_jsonl_line(names, i, p, y, ok, e, row))
    os.replace(tmp, final)
    return final


def _jsonl_line(
    names: Sequence[str], index: int, path: str, label: int, ok: bool, error: str, row: list[float],
    views: Optional[list[list[float]]] = None,
) -> str:
    """One video's line of ``predictions.jsonl`` (keys: the module docstring); ``views``: its
    per-view logits (V rows of C), written as ``view_logits`` when given."""
    line: dict[str, Any] = {"index": index, "path": path, "label": _name(names, label), "valid": ok, "error": error,
                            "probs": [round(x, 6) for x in row] if ok else []}
    if views is not None:
        line["view_logits"] = [[round(x, 6) for x in view] for view in views] if ok else []
    return json.dumps(line) + "\n"


def evaluate_dataset(
    model: nn.Module, dataset: Any, class_names: Sequence[str], options: EvalOptions, *, batch_size: int = 1,
    num_workers: int = 0, save_view_logits: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on a test-mode dataset (``num_clips`` x ``num_crops`` views per item) and
    write the files of the module docstring when ``options.output_dir`` is set (rank 0 writes the
    merged ones). With ``options.resume`` the videos already predicted in ``output_dir`` by an
    evaluation with the same fingerprint are not evaluated again (module docstring).
    ``save_view_logits`` (``eval.save_view_logits``): each line of ``predictions.jsonl`` also holds
    the video's per-view logits. :func:`evaluate_split` builds the dataset from a run's config and
    calls this.

    Raises:
        NoReadableVideosError: not one video (of ``options.subset``) could be read.
    """
    info = options.dist_info or DistInfo()
    out = Path(options.output_dir) if options.output_dir is not None else None
    positions = list(range(len(dataset))) if options.subset is None else [int(i) for i in options.subset]
    saved = Predictions(torch.zeros(0, len(class_names)), torch.zeros(0, dtype=torch.long),
                        torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long), [], [])
    todo: Optional[list[int]] = None if options.subset is None else positions
    if out is not None:
        fingerprint = _fingerprint(model, dataset, class_names, options, save_view_logits)
        if info.is_main:
            _prepare_output(out, fingerprint, options.resume)
        all_gather_objects(None)  # a barrier: no rank reads before rank 0 has moved stale files aside
        wanted = set(positions)
        rows = {int(r["index"]): r for r in (read_predictions(out, view_logits=False) if _prediction_files(out) else [])
                if int(r["index"]) in wanted}
        # the videos every rank found saved (one list for all: each rank then takes the same share)
        done = set.intersection(*map(set, all_gather_objects(sorted(rows))))
        if done:
            saved = _rows_to_predictions([rows[i] for i in sorted(done)], class_names)
            todo = [i for i in positions if i not in done]
            if info.is_main:
                logger.info("resuming: %d of %d videos already predicted in %s, %d to go",
                            len(done), len(positions), out, len(todo))
    writer = _PredictionWriter(out, info, class_names, save_view_logits) if out is not None else None
    try:
        preds = predict(
            model, dataset, batch_size=batch_size, num_workers=num_workers, device=options.device,
            precision=options.precision, dist_info=info, progress=options.progress, subset=todo,
            on_batch=writer,
        )
    finally:
        if writer is not None:
            writer.close()
    if len(saved.paths):
        preds = _concat(saved, preds)
    num_missing = len(dataset.missing) if options.subset is None and hasattr(dataset, "missing") else None
    if not bool(preds.valid.any()):
        raise NoReadableVideosError(_nothing_readable(preds, options.split, num_missing))
    report = build_report(preds, dataset, class_names, extra={"split": options.split, **options.extra},
                          num_missing=num_missing)
    if out is not None and info.is_main:
        assert writer is not None
        writer.merge(preds)
        write_report(report, out, options.report_name)
    return EvalResult(report)


def _run_fingerprint(source: Path) -> dict[str, Any]:
    """The fingerprint saved beside a run's predictions ({} when there is none)."""
    path = (source if source.is_dir() else source.parent) / FINGERPRINT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _load_run(source: str | Path, class_names: Optional[Sequence[str]]) -> tuple[Predictions, list[str], dict[str, Any]]:
    """A run's saved predictions, its class names (given, else its fingerprint's) and fingerprint."""
    p = Path(source)
    rows = read_predictions(p, view_logits=False)
    fingerprint = _run_fingerprint(p)
    names = list(class_names) if class_names is not None else fingerprint.get("classes")
    if not names:
        raise ValueError(f"{str(p)!r} has no {FINGERPRINT_FILE} naming its classes: pass class_names (the "
                         "classifier's output order, e.g. the report.json's 'classes')")
    return _rows_to_predictions(rows, names), list(names), fingerprint


def rebuild_report(
    source: str | Path, class_names: Optional[Sequence[str]] = None, *, output_dir: Optional[str | Path] = None,
    extra: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The report of a run's saved predictions alone (a run dir, or a ``predictions*.jsonl`` file;
    all of a killed run's shards are read), without the model or the videos.

    Args:
        class_names: the probabilities' class order; None: the run's :data:`FINGERPRINT_FILE`'s.
        output_dir: when given, ``predictions.jsonl`` (the run's lines merged in index order, view
            logits included) and the report files are written there.

    Raises:
        FileNotFoundError: no predictions there. ValueError: class names missing or not matching.
    """
    preds, names, fingerprint = _load_run(source, class_names)
    info = fingerprint.get("info", {})
    report = build_report(
        preds, None, names, extra={"split": fingerprint.get("split"), "rebuilt_from": str(source), **(extra or {})},
        num_missing=info.get("num_missing"), protocol=fingerprint.get("protocol"), summary=info.get("dataset"),
    )
    if output_dir is not None:
        _merge_lines(_source_files(Path(source)), preds.indices.tolist(), Path(output_dir))
        write_report(report, output_dir)
    return report


def ensemble_predictions(
    sources: Sequence[str | Path], class_names: Optional[Sequence[str]] = None, *,
    output_dir: Optional[str | Path] = None,
) -> dict[str, Any]:
    """The report of several runs' predictions on one split, their class probabilities averaged
    video by video (a video one run could not read is averaged over the runs that read it).

    Every run must hold the same videos (by index and path) and the same labels; class columns are
    matched by name (the first run's order, or ``class_names``). Saved view logits are ignored (the
    runs' views are other networks' logits, maybe of other protocols): the ensemble's
    ``predictions.jsonl`` has none. ``output_dir``: as :func:`rebuild_report` (the ensemble's
    ``predictions.jsonl`` and report).

    Raises:
        ValueError: fewer than one source, or runs that disagree on videos, labels or class names.
    """
    if not sources:
        raise ValueError("ensemble_predictions needs at least one run dir or predictions file, got none")
    runs = [_load_run(s, class_names) for s in sources]
    names = runs[0][1]
    first = runs[0][0]
    total, count = torch.zeros(len(first.paths), len(names)), torch.zeros(len(first.paths), 1)
    ensemble_labels: Optional[Tensor] = None
    for src, (preds, run_names, _) in zip(sources, runs):
        if sorted(run_names) != sorted(names):
            raise ValueError(f"{str(src)!r} has classes {run_names[:5]}... ({len(run_names)}), not the ensemble's "
                             f"{names[:5]}... ({len(names)})")
        if preds.indices.tolist() != first.indices.tolist() or preds.paths != first.paths:
            raise ValueError(f"{str(src)!r} holds other videos than {str(sources[0])!r}: ensemble runs on the same "
                             "split with the same annotation")
        column = [run_names.index(n) for n in names]  # this run's column of each ensemble class
        labels = torch.tensor([names.index(run_names[y]) if y >= 0 else -1 for y in preds.labels.tolist()],
                              dtype=torch.long)
        if ensemble_labels is None:
            ensemble_labels = labels
        elif not torch.equal(labels, ensemble_labels):
            raise ValueError(f"{str(src)!r} gives other labels than {str(sources[0])!r} for the same videos")
        ok = preds.valid[:, None].float()
        total += preds.scores[:, column] * ok
        count += ok
    valid = count[:, 0] > 0
    assert ensemble_labels is not None  # at least one run
    merged = Predictions(scores=total / count.clamp(min=1), labels=ensemble_labels, valid=valid,
                         indices=first.indices, paths=first.paths,
                         errors=["" if v else e for v, e in zip(valid.tolist(), first.errors)])
    protocol = {"aggregation": f"mean of {len(sources)} runs' averaged class probabilities",
                "runs": [{"source": str(s), "protocol": fp.get("protocol")} for s, (_, _, fp) in zip(sources, runs)]}
    fp0 = runs[0][2]
    report = build_report(
        merged, None, names, extra={"split": fp0.get("split"), "ensemble_of": [str(s) for s in sources]},
        num_missing=fp0.get("info", {}).get("num_missing"), protocol=protocol, summary=fp0.get("info", {}).get("dataset"),
    )
    if output_dir is not None:
        _write_predictions(Path(output_dir), merged, names)
        write_report(report, output_dir)
    return report


def _nothing_readable(preds: Predictions, split: str, num_missing: Optional[int]) -> str:
    n = len(preds.paths)
    if n == 0:
        return f"the {split} split has no videos to evaluate; check data.{split}_annotation and data.{split}_split"
    missing = f"{num_missing} file(s) missing, " if num_missing else ""
    return (
        f"not one of the {n} videos of the {split} split could be read ({missing}e.g. {preds.paths[0]}: "
        f"{preds.errors[0]}); check data.root, data.{split}_dir and the paths in data.{split}_annotation "
        "(and data.backend for decode errors)"
    )


def build_eval_dataset(target: EvalTarget, split: str) -> Any:
    """The test-mode dataset :func:`evaluate_split` evaluates: ``split`` of ``target``'s data with
    its protocol, labelled in ``target.class_names``' order."""
    from videogn.engine.build import build_dataset

    return build_dataset(
        target.data, target.budget, target.sources, split, mode="test", protocol=target.protocol,
        class_index={name: i for i, name in enumerate(target.class_names)},
    )


def evaluate_split(target: EvalTarget, options: Optional[EvalOptions] = None, *, dataset: Any = None) -> EvalResult:
    """The evaluation entry point: ``target.model`` on ``options.split`` of its run's data with
    ``target.protocol`` (clip length and stride default to the training budget's).

    Every rank must call it; each evaluates its share and every rank returns the whole result.
    ``dataset``: :func:`build_eval_dataset`'s result for this target and split, when the caller
    keeps one for repeated evaluations (validation during training); built here otherwise.

    Raises:
        NoReadableVideosError: not one video could be read (missing files count as unreadable).
    """
    from videogn.engine.build import report_missing_videos

    options = options or EvalOptions()
    info = options.dist_info or DistInfo()
    if dataset is None:
        dataset = build_eval_dataset(target, options.split)
    if info.is_main and options.output_dir is not None:
        report_missing_videos(dataset, Path(options.output_dir) / f"missing_videos_{options.split}.txt", options.split)
    if info.is_main:
        n = len(dataset) if options.subset is None else len(options.subset)
        logger.info(
            "evaluating %d %s videos, %d clips x %d crops of %d frames (stride %d), crop %d",
            n, options.split, dataset.num_clips, dataset.num_crops, dataset.num_frames, dataset.stride, dataset.crop_size,
        )
    workers = target.data.num_workers if options.num_workers is None else options.num_workers
    return evaluate_dataset(target.model, dataset, target.class_names, options,
                            batch_size=target.protocol.batch_size, num_workers=int(workers),
                            save_view_logits=target.protocol.save_view_logits)


def write_report(report: dict[str, Any], output_dir: str | Path, name: str = "report") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>_confusion_matrix.png`` into ``output_dir`` and log the
    headline (unreadable videos counted and said to be misses)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    png_path = out / f"{name}_confusion_matrix.png"
    files = {"report": json_path.name, "confusion_matrix": png_path.name}
    if (out / PREDICTIONS_FILE).is_file():
        files["predictions"] = PREDICTIONS_FILE
    report["files"] = files
    json_path.write_text(json.dumps(_finite(report), indent=1) + "\n")
    top1 = report.get("top1", math.nan)
    bad = int(report.get("num_unreadable") or 0)
    title = f"top-1 {100 * top1:.1f}% of {report.get('num_videos', '?')} videos"
    if bad:
        title += f" ({bad} unreadable: misses, not in the matrix)"
    save_confusion_matrix(report["confusion_matrix"], report["classes"], png_path, title=title)
    unreadable = "0 unreadable"
    if bad:
        missing = report.get("num_missing")
        detail = f": {missing} file(s) missing, {bad - missing} failed to decode" if missing is not None else ""
        unreadable = f"{bad} unreadable{detail}; counted as misses, listed in the report"
    logger.info(
        "%s top-1 %.2f%%  top-5 %.2f%%  mean class accuracy %.2f%%  loss %.4f  (%d videos, %s) -> %s",
        report.get("split", "val"), 100 * top1, 100 * report["top5"], 100 * report["mean_class_accuracy"],
        report.get("loss", math.nan), report["num_videos"], unreadable, ", ".join(str(out / f) for f in files.values()),
    )
    return json_path, png_path


def _finite(x: Any) -> Any:
    # JSON has no NaN: write null instead (e.g. mean class accuracy of an empty set)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x

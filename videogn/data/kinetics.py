"""Kinetics annotations (official CSVs, list files, folder-per-class trees) and the clip dataset.

Layouts understood for ``root`` with an official CSV: any tree under ``root`` (``split/label/file``,
``label/file`` or flat) -- files are matched by name (``filename_pattern``, any video extension),
found by one recursive scan. List files hold ``relative/path.mp4 label_index`` lines.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from videogn.data.decode import VideoDecodeError, VideoReader
from videogn.data.sampling import SHORT_VIDEO_RULES, clip_step, eval_clip_indices, train_clip_indices
from videogn.data.transforms import eval_transform, train_transform

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoRecord",
    "read_kinetics_csv",
    "read_list_file",
    "scan_class_folders",
    "find_videos",
    "load_class_index",
    "write_class_index",
    "resolve_csv_records",
    "build_kinetics_index",
    "KineticsDataset",
    "collate_clips",
    "make_worker_init_fn",
]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
SPLIT_ALIASES = {"val": "validate", "validation": "validate", "valid": "validate"}


@dataclass
class VideoRecord:
    """One annotated video. ``path`` is None when the file was not found; ``label`` is -1 when
    the annotation has none (Kinetics test CSVs)."""

    key: str
    path: Path | None
    label: int
    label_name: str | None = None


# ----------------------------------------------------------------------------------------------
# annotation parsing


def read_kinetics_csv(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of an official Kinetics-400/600/700 CSV (``label,youtube_id,time_start,time_end,split``
    [,``is_cc``]; test CSVs may lack ``label``).

    Args:
        split: keep rows whose ``split`` column matches (``"val"`` == ``"validate"``).

    Returns:
        dicts with keys label (str or None), youtube_id, time_start, time_end (int), split.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or [])
        need = {"youtube_id", "time_start", "time_end"}
        if not need <= fields:
            raise ValueError(f"{path}: not a Kinetics CSV, columns {sorted(fields)} lack {sorted(need - fields)}")
        want = SPLIT_ALIASES.get(split, split) if split else None
        rows = []
        for n, row in enumerate(reader, start=2):
            try:
                rec = {
                    "label": row["label"].strip() if row.get("label") else None,
                    "youtube_id": row["youtube_id"].strip(),
                    "time_start": int(float(row["time_start"])),
                    "time_end": int(float(row["time_end"])),
                    "split": (row.get("split") or "").strip(),
                }
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: bad row {row} ({e})") from e
            if want and SPLIT_ALIASES.get(rec["split"], rec["split"]) != want:
                continue
            rows.append(rec)
    return rows


def read_list_file(path: str | Path) -> list[tuple[str, int]]:
    """``relative/path.mp4 label_index`` lines (blank lines and ``#`` comments skipped; the path
    may contain spaces, the label is the last field)."""
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'relative/path label_index', got {line!r}")
        try:
            label = int(parts[1])
        except ValueError as e:
            raise ValueError(f"{path}:{n}: label must be an integer, got {parts[1]!r}") from e
        out.append((parts[0], label))
    return out


def scan_class_folders(root: str | Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """Folder-per-class tree ``root/<class>/**/<video>``.

    Returns:
        (sorted class names, [(video path, class name)] sorted by path).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root {str(root)!r} is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    items = []
    for c in classes:
        for dirpath, _, files in os.walk(root / c):
            for name in files:
                if name.lower().endswith(VIDEO_EXTENSIONS):
                    items.append((Path(dirpath) / name, c))
    items.sort(key=lambda t: str(t[0]))
    return classes, items


def find_videos(root: str | Path) -> dict[str, Path]:
    """Map file stem -> path for every video under ``root`` (one recursive scan). When a stem occurs
    twice, the first in sorted path order wins (deterministic)."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in sorted(files):
            if name.lower().endswith(VIDEO_EXTENSIONS):
                found.setdefault(os.path.splitext(name)[0], Path(dirpath) / name)
    return found


def load_class_index(spec: str | Path | Mapping[str, int]) -> dict[str, int]:
    """A class-index JSON file (``{"name": idx}``) or mapping, validated (indices 0..K-1, unique)."""
    if isinstance(spec, Mapping):
        mapping = dict(spec)
    else:
        mapping = json.loads(Path(spec).read_text(encoding="utf-8"))
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise ValueError(f"class_index must map class names to ints, got {type(mapping).__name__}")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise ValueError(f"class_index values must be 0..{len(mapping) - 1} without gaps or repeats")
    return mapping


def write_class_index(path: str | Path, classes: Sequence[str]) -> Path:
    """Write ``{"name": idx}`` (sorted by index) as JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps({c: i for i, c in enumerate(classes)}, indent=1) + "\n", encoding="utf-8")
    return path


def _default_class_index_path(annotation: Path | None, root: Path) -> Path:
    if annotation is None:
        return root / "classes.json"
    return annotation.parent / "classes.json"


def resolve_csv_records(
    rows: Sequence[Mapping[str, Any]],
    root: str | Path,
    class_to_idx: Mapping[str, int],
    filename_pattern: str = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
    videos: Mapping[str, Path] | None = None,
) -> list[VideoRecord]:
    """Attach files under ``root`` to CSV rows. A file matches by stem, any video extension."""
    videos = find_videos(root) if videos is None else videos
    out = []
    for row in rows:
        name = filename_pattern.format(**row)
        stem = os.path.splitext(name)[0]
        label_name = row.get("label")
        if label_name is not None and label_name not in class_to_idx:
            raise ValueError(f"label {label_name!r} is not in the class index ({len(class_to_idx)} classes)")
        label = class_to_idx[label_name] if label_name is not None else -1
        out.append(VideoRecord(key=name, path=videos.get(stem), label=label, label_name=label_name))
    return out


def build_kinetics_index(
    csv_paths: Sequence[str | Path],
    root: str | Path,
    out_dir: str | Path,
    *,
    filename_pattern: str = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
    class_index: str | Path | Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Turn official Kinetics CSVs and a video folder into list files the dataset loads fast.

    Writes into ``out_dir``: ``classes.json`` (sorted union of the CSV labels unless
    ``class_index`` is given), and per CSV ``<stem>.txt`` (``relative/path label_index``, label -1
    for unlabelled test rows) and ``<stem>_missing.txt`` (expected file names not found).

    Returns:
        summary: {csv stem: {"rows", "found", "missing"}} plus "num_classes" and "class_index".
    """
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"root {str(root)!r} is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {Path(p).stem: read_kinetics_csv(p) for p in csv_paths}
    if class_index is not None:
        class_to_idx = load_class_index(class_index)
    else:
        labels = sorted({r["label"] for rows in tables.values() for r in rows if r["label"] is not None})
        class_to_idx = {c: i for i, c in enumerate(labels)}
    classes_path = write_class_index(out_dir / "classes.json", sorted(class_to_idx, key=class_to_idx.__getitem__))
    videos = find_videos(root)
    summary: dict[str, Any] = {
        "num_classes": len(class_to_idx), "class_index": str(classes_path), "num_files": len(videos)
    }
    for stem, rows in tables.items():
        recs = resolve_csv_records(rows, root, class_to_idx, filename_pattern, videos)
        found = [r for r in recs if r.path is not None]
        missing = [r.key for r in recs if r.path is None]
        (out_dir / f"{stem}.txt").write_text(
            "".join(f"{r.path.relative_to(root).as_posix()} {r.label}\n" for r in found), encoding="utf-8"
        )
        (out_dir / f"{stem}_missing.txt").write_text("".join(f"{k}\n" for k in missing), encoding="utf-8")
        summary[stem] = {"rows": len(recs), "found": len(found), "missing": len(missing)}
    return summary


# ----------------------------------------------------------------------------------------------
# dataset


def _parse_index(item: Any) -> tuple[int, int | None, int | None]:
    if isinstance(item, (tuple, list)):
        if not 1 <= len(item) <= 3:
            raise ValueError(f"index must be int or (index, num_frames[, crop_size]), got {item!r}")
        idx = int(item[0])
        t = int(item[1]) if len(item) > 1 and item[1] is not None else None
        c = int(item[2]) if len(item) > 2 and item[2] is not None else None
        return idx, t, c
    return int(item), None, None


class KineticsDataset(torch.utils.data.Dataset):
    """Map-style Kinetics clip dataset (works with ``DistributedSampler`` and batch samplers that
    yield ``(index, num_frames[, crop_size])`` tuples).

    Args:
        root: folder holding the videos (any layout for CSVs; paths in list files are relative to it).
        annotation: official Kinetics CSV, list file (``rel/path label_idx``), or None for a
            folder-per-class tree under ``root``.
        split: keep only this split of the CSV (``"train"``, ``"val"``/``"validate"``, ``"test"``).
        mode: ``"train"`` (one random clip, jittered crop) or ``"test"`` (``num_clips`` x
            ``num_crops`` views, deterministic).
        num_frames, stride, target_fps: clip length T and step (``target_fps`` overrides ``stride``:
            step = video fps / target_fps).
        num_clips, num_crops: test views (V = num_clips * num_crops).
        train_scale, crop_size, test_scale, flip, mean, std, channels_last: see
            :mod:`videogn.data.transforms`.
        class_index: JSON path or mapping; default: ``classes.json`` beside the annotation (or in
            ``root``) if it exists, else built sorted and written there when writable.
        filename_pattern: CSV row -> file name.
        backend: decoding backend for :class:`VideoReader`.
        bad_video_log: train mode: file to which every bad video is appended (path + error).
        max_retries: train mode: consecutive bad videos tolerated before a ``RuntimeError``.
        short_video: clip rule for videos shorter than a clip (``"loop"`` or ``"repeat_last"``).
        keep_missing: keep annotated-but-missing files as samples (they come back ``valid=False``);
            default: True in test mode (so evaluation counts them), False in train mode.

    Items: ``dict(video, label, index, path, valid, error)``; ``video`` is float (3, T, H, W) in
    train mode, (V, 3, T, H, W) in test mode. A bad video is replaced in train mode (logged) and
    never in test mode (zeros, ``valid=False``, ``error`` says why).
    """

    def __init__(
        self,
        root: str | Path,
        annotation: str | Path | None = None,
        *,
        split: str | None = None,
        mode: str = "train",
        num_frames: int = 8,
        stride: int = 2,
        target_fps: float | None = None,
        num_clips: int = 10,
        num_crops: int = 1,
        train_scale: tuple[int, int] = (256, 320),
        crop_size: int = 224,
        test_scale: int = 256,
        flip: bool = True,
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        channels_last: bool = False,
        class_index: str | Path | Mapping[str, int] | None = None,
        filename_pattern: str = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
        backend: str = "auto",
        bad_video_log: str | Path | None = None,
        max_retries: int = 10,
        short_video: str = "loop",
        keep_missing: bool | None = None,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
        clip_step(stride)  # validates stride
        if target_fps is not None and not target_fps > 0:
            raise ValueError(f"target_fps must be > 0 or None, got {target_fps!r}")
        if not isinstance(num_clips, int) or num_clips < 1:
            raise ValueError(f"num_clips must be an int >= 1, got {num_clips!r}")
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops!r}")
        if short_video not in SHORT_VIDEO_RULES:
            raise ValueError(f"short_video must be one of {SHORT_VIDEO_RULES}, got {short_video!r}")
        if backend not in ("auto", "decord", "pyav"):
            raise ValueError(f"backend must be 'auto', 'decord' or 'pyav', got {backend!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root {str(self.root)!r} is not a directory")
        self.annotation = Path(annotation) if annotation is not None else None
        if self.annotation is not None and not self.annotation.is_file():
            raise FileNotFoundError(f"annotation {str(self.annotation)!r} not found")
        self.split, self.mode = split, mode
        self.num_frames, self.stride, self.target_fps = num_frames, stride, target_fps
        self.num_clips, self.num_crops = num_clips, num_crops
        self.train_scale, self.crop_size, self.test_scale = tuple(train_scale), crop_size, test_scale
        self.flip, self.mean, self.std, self.channels_last = flip, tuple(mean), tuple(std), channels_last
        self.filename_pattern, self.backend = filename_pattern, backend
        self.bad_video_log = Path(bad_video_log) if bad_video_log is not None else None
        self.max_retries, self.short_video = max_retries, short_video
        keep_missing = (mode == "test") if keep_missing is None else keep_missing
        self.keep_missing = keep_missing

        records, classes_from_data = self._load_records(class_index)
        self.missing = [r.key for r in records if r.path is None]
        self.records = records if keep_missing else [r for r in records if r.path is not None]
        self.class_to_idx = self._class_to_idx
        self.classes = [c for c, _ in sorted(self.class_to_idx.items(), key=lambda kv: kv[1])] or classes_from_data

    # -- annotation ---------------------------------------------------------------------------
    def _resolve_class_index(self, spec: Any, labels: Sequence[str]) -> dict[str, int]:
        if spec is not None:
            mapping = load_class_index(spec)
            self.class_index_path = None if isinstance(spec, Mapping) else Path(spec)
            return mapping
        path = _default_class_index_path(self.annotation, self.root)
        self.class_index_path = path
        if path.is_file():
            return load_class_index(path)
        classes = sorted(set(labels))
        if not classes:  # unlabelled annotation (a Kinetics test CSV): nothing worth writing
            self.class_index_path = None
            return {}
        try:
            write_class_index(path, classes)
        except OSError:
            self.class_index_path = None  # read-only location: the map stays in memory
        return {c: i for i, c in enumerate(classes)}

    def _load_records(self, class_index: Any) -> tuple[list[VideoRecord], list[str]]:
        ann = self.annotation
        if ann is None:
            classes, items = scan_class_folders(self.root)
            self._class_to_idx = self._resolve_class_index(class_index, classes)
            unknown = sorted(set(classes) - set(self._class_to_idx))
            if unknown:
                raise ValueError(f"class folders {unknown[:5]} are not in the class index")
            recs = [VideoRecord(str(p.relative_to(self.root)), p, self._class_to_idx[c], c) for p, c in items]
            return recs, classes
        if ann.suffix.lower() == ".csv":
            rows = read_kinetics_csv(ann, self.split)
            labels = [r["label"] for r in rows if r["label"] is not None]
            self._class_to_idx = self._resolve_class_index(class_index, labels)
            return resolve_csv_records(rows, self.root, self._class_to_idx, self.filename_pattern), []
        if self.split is not None:
            raise ValueError(f"split={self.split!r} needs a Kinetics CSV annotation, got {str(ann)!r}")
        pairs = read_list_file(ann)
        if class_index is not None:
            self._class_to_idx = load_class_index(class_index)
            self.class_index_path = None if isinstance(class_index, Mapping) else Path(class_index)
        else:
            beside = ann.parent / "classes.json"
            if beside.is_file():
                self._class_to_idx = load_class_index(beside)
                self.class_index_path = beside
            else:  # list files carry indices only: name the classes by their index
                k = max((lab for _, lab in pairs), default=-1) + 1
                self._class_to_idx = {str(i): i for i in range(k)}
                self.class_index_path = None
        num = len(self._class_to_idx)
        recs = []
        for rel, lab in pairs:
            if not -1 <= lab < num:
                raise ValueError(f"{ann}: label {lab} of {rel!r} is outside 0..{num - 1}")
            p = self.root / rel
            recs.append(VideoRecord(rel, p if p.is_file() else None, lab))
        return recs, []

    # -- info -----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_views(self) -> int:
        """Views per video in test mode (clips x crops)."""
        return self.num_clips * self.num_crops

    def __len__(self) -> int:
        return len(self.records)

    @property
    def summary(self) -> dict[str, Any]:
        """Counts for logs and results: videos, missing files (listed), classes, settings."""
        return {
            "root": str(self.root),
            "annotation": str(self.annotation) if self.annotation else None,
            "split": self.split,
            "mode": self.mode,
            "num_videos": len(self.records),
            "num_annotated": len(self.records) + (0 if self.keep_missing else len(self.missing)),
            "num_missing": len(self.missing),
            "missing": list(self.missing),
            "num_classes": self.num_classes,
            "class_index": str(self.class_index_path) if getattr(self, "class_index_path", None) else None,
            "num_frames": self.num_frames,
            "stride": self.stride,
            "target_fps": self.target_fps,
            "views": self.num_views if self.mode == "test" else 1,
        }

    # -- items ----------------------------------------------------------------------------------
    def __getitem__(self, item: Any) -> dict[str, Any]:
        index, t, crop = _parse_index(item)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} videos")
        index %= len(self)
        t = self.num_frames if t is None else t
        crop = self.crop_size if crop is None else crop
        if self.mode == "test":
            return self._test_item(index, t, crop)
        return self._train_item(index, t, crop)

    def _path_of(self, rec: VideoRecord) -> str:
        return str(rec.path) if rec.path is not None else str(self.root / rec.key)

    def _decode(
        self, rec: VideoRecord, indices_fn: Callable[[int, float], np.ndarray]
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Decode the distinct frames ``indices_fn(num_video_frames, step)`` asks for.

        Returns:
            (frames uint8 (U, H, W, 3), positions into them with the shape of the indices)."""
        if rec.path is None:
            raise VideoDecodeError(self.root / rec.key, "file not found (listed in the annotation)")
        with VideoReader(rec.path, backend=self.backend) as vr:
            step = clip_step(self.stride, vr.fps, self.target_fps)
            idx = indices_fn(len(vr), step)
            uniq, inverse = np.unique(idx.reshape(-1), return_inverse=True)  # decode each frame once
            frames = vr.get_frames(uniq)  # (U, H, W, 3)
        return frames, inverse.reshape(idx.shape)

    def _train_item(self, index: int, t: int, crop: int) -> dict[str, Any]:
        errors = []
        for attempt in range(self.max_retries + 1):
            rec = self.records[index]
            try:
                frames, inv = self._decode(
                    rec, lambda n, step: train_clip_indices(n, t, step, short_video=self.short_video)
                )
                # (T, H, W, 3); distinct sorted indices (the usual case) need no gather copy
                clip = frames if np.array_equal(inv, np.arange(len(inv))) else frames[torch.from_numpy(inv)]
                video = train_transform(clip, scale=self.train_scale, crop_size=crop, flip=self.flip,
                                        mean=self.mean, std=self.std, channels_last=self.channels_last)
                return {"video": video, "label": rec.label, "index": index, "path": self._path_of(rec),
                        "valid": True, "error": ""}
            except VideoDecodeError as e:
                errors.append(str(e))
                self._log_bad(self._path_of(rec), str(e))
                index = random.randrange(len(self))  # python RNG: seeded per worker
        raise RuntimeError(
            f"{self.max_retries + 1} consecutive videos failed to decode (max_retries={self.max_retries}); "
            f"is the dataset readable? last errors: {errors[-3:]}"
        )

    def _test_item(self, index: int, t: int, crop: int) -> dict[str, Any]:
        rec = self.records[index]
        try:
            frames, inv = self._decode(
                rec, lambda n, step: eval_clip_indices(n, t, step, self.num_clips, short_video=self.short_video)
            )
            views = []
            for k in range(self.num_clips):
                clip = frames[torch.from_numpy(inv[k])]  # (T, H, W, 3)
                views.append(eval_transform(clip, scale=self.test_scale, crop_size=crop, num_crops=self.num_crops,
                                            mean=self.mean, std=self.std, channels_last=self.channels_last))
            video = torch.cat(views)  # (V, 3, T, crop, crop), clip-major
            if self.channels_last:  # torch.cat returns a contiguous tensor; put C innermost again
                video = video.movedim(1, -1).contiguous().movedim(-1, 1)
            valid, error = True, ""
        except VideoDecodeError as e:
            video = torch.zeros(self.num_views, 3, t, crop, crop)
            valid, error = False, str(e)
        return {"video": video, "label": rec.label, "index": index, "path": self._path_of(rec),
                "valid": valid, "error": error}

    def _log_bad(self, path: str, error: str) -> None:
        if self.bad_video_log is None:
            return
        line = f"{path}\t{' '.join(error.split())}\n"
        self.bad_video_log.parent.mkdir(parents=True, exist_ok=True)
        # one short O_APPEND write per line: lines from several workers do not interleave
        fd = os.open(self.bad_video_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------------------------
# loader helpers


def collate_clips(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack dataset items: ``video`` (N, 3, T, H, W) or (N, V, 3, T, H, W), ``label``/``index``
    int64, ``valid`` bool tensors; ``path`` and ``error`` lists. Channels-last clips give a
    ``channels_last_3d`` batch.

    Raises:
        ValueError: empty batch, or clips of different shapes in one batch.
    """
    if len(batch) == 0:
        raise ValueError("collate_clips got an empty batch")
    videos = [b["video"] for b in batch]
    shapes = {tuple(v.shape) for v in videos}
    if len(shapes) != 1:
        raise ValueError(f"clips in one batch must share a shape (one clip length per batch), got {sorted(shapes)}")
    c_dim = videos[0].dim() - 4  # channel dim of a sample: 0 for (3,T,H,W), 1 for (V,3,T,H,W)
    channels_last = videos[0].stride(c_dim) == 1 and videos[0].shape[c_dim] > 1
    if channels_last:  # stack as (N, ..., T, H, W, C), then move C back as a view: C stays innermost
        videos = [v.movedim(c_dim, -1) for v in videos]
    out = None
    if torch.utils.data.get_worker_info() is not None:
        # In a DataLoader worker, stack straight into shared memory: the batch then crosses to the
        # main process without the extra copy tensor pickling would make (as default_collate does).
        numel = len(videos) * videos[0].numel()
        storage = videos[0].untyped_storage()._new_shared(numel * videos[0].element_size())
        out = videos[0].new(storage).resize_(len(videos), *videos[0].shape)
    video = torch.stack(videos, out=out)
    if channels_last:
        video = video.movedim(-1, c_dim + 1)
    return {
        "video": video,
        "label": torch.tensor([int(b["label"]) for b in batch], dtype=torch.int64),
        "index": torch.tensor([int(b["index"]) for b in batch], dtype=torch.int64),
        "valid": torch.tensor([bool(b["valid"]) for b in batch], dtype=torch.bool),
        "path": [b["path"] for b in batch],
        "error": [b["error"] for b in batch],
    }


def make_worker_init_fn(base_seed: int, rank: int = 0) -> Callable[[int], None]:
    """``worker_init_fn`` seeding python, numpy and torch from (base_seed, rank, worker_id, and the
    per-epoch seed DataLoader gives the worker), so ranks and workers never share augmentations and
    epochs differ, yet a run with the same seeds repeats exactly."""
    if not isinstance(base_seed, int) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"base_seed must be an int and rank an int >= 0, got {base_seed!r}, {rank!r}")

    def init(worker_id: int) -> None:
        # torch.initial_seed() in a worker = loader base seed (drawn per epoch) + worker_id
        key = f"{base_seed}:{rank}:{worker_id}:{torch.initial_seed()}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed % 2**63)

    return init

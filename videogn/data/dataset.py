"""The clip dataset over annotated videos (:class:`KineticsDataset`: official Kinetics CSVs, list
files, folder-per-class trees, and the built-in synthetic set, which is written in the Kinetics
layout), the batch collate function and the DataLoader worker seeding. Annotation parsing lives in
:mod:`videogn.data.annotations`.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from videogn.data.annotations import DEFAULT_FILENAME_PATTERN, MissingVideo, VideoRecord, load_annotations
from videogn.data.decode import VideoDecodeError, VideoReader
from videogn.data.video_backends import BACKENDS
from videogn.data.sampling import SHORT_VIDEO_RULES, clip_step, eval_clip_indices, train_clip_indices
from videogn.data.transforms import KINETICS_MEAN, KINETICS_STD, apply_train_crop, eval_transform, sample_train_crop

__all__ = ["KineticsDataset", "collate_clips", "make_worker_init_fn"]


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
        class_index: JSON path or mapping; default: see the class-index policy of
            :func:`~videogn.data.annotations.load_annotations` (the dataset never writes it: use
            ``write_class_index(path, dataset.classes)``).
        filename_pattern: CSV row -> file name.
        backend: decoding backend for :class:`VideoReader`.
        bad_video_log: train mode: file to which every bad video is appended (path + error).
        max_retries: train mode: consecutive bad videos tolerated before a ``RuntimeError``.
        short_video: clip rule for videos shorter than a clip (``"loop"`` or ``"repeat_last"``).
        keep_missing: keep annotated-but-missing files as samples (they come back ``valid=False``);
            default: True in test mode (so evaluation counts them), False in train mode.
        dtype: ``"float32"`` (normalised clips) or ``"uint8"`` (raw pixels after the geometry; the
            caller normalises on the training device with :func:`~videogn.data.transforms.normalize_batch`
            and the same ``mean``/``std``: 4x fewer bytes from workers and to the device).

    Attributes: ``records``, ``classes``, ``class_to_idx``, ``class_index_path``, ``missing``
    (:class:`~videogn.data.annotations.MissingVideo` for each annotated video without a file; in
    train mode they are left out of the samples, in test mode kept as ``valid=False`` items).

    Items: ``dict(video, label, index, path, valid, error)``; ``video`` is float (uint8 with
    ``dtype="uint8"``) (3, T, H, W) in train mode, (V, 3, T, H, W) in test mode. A bad video is replaced in train mode (logged) and
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
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        channels_last: bool = False,
        class_index: str | Path | Mapping[str, int] | None = None,
        filename_pattern: str = DEFAULT_FILENAME_PATTERN,
        backend: str = "auto",
        bad_video_log: str | Path | None = None,
        max_retries: int = 10,
        short_video: str = "loop",
        keep_missing: bool | None = None,
        dtype: str = "float32",
    ) -> None:
        if dtype not in ("float32", "uint8"):
            raise ValueError(f"dtype must be 'float32' or 'uint8', got {dtype!r}")
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
        if backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        ann = load_annotations(root, annotation, split=split, class_index=class_index,
                               filename_pattern=filename_pattern)
        self.root = Path(root)
        self.annotation = Path(annotation) if annotation is not None else None
        self.split, self.mode = split, mode
        self.num_frames, self.stride, self.target_fps = num_frames, stride, target_fps
        self.num_clips, self.num_crops = num_clips, num_crops
        self.train_scale, self.crop_size, self.test_scale = tuple(train_scale), crop_size, test_scale
        self.flip, self.mean, self.std, self.channels_last = flip, tuple(mean), tuple(std), channels_last
        self.filename_pattern, self.backend = filename_pattern, backend
        self.bad_video_log = Path(bad_video_log) if bad_video_log is not None else None
        self.max_retries, self.short_video = max_retries, short_video
        self.dtype = dtype
        keep_missing = (mode == "test") if keep_missing is None else keep_missing
        self.keep_missing = keep_missing

        self.class_to_idx: dict[str, int] = ann.class_to_idx
        self.classes: list[str] = ann.classes
        self.class_index_path: Path | None = ann.class_index_path
        # annotated videos without a file: named, so a run can report them (write_missing_videos)
        self.missing: list[MissingVideo] = ann.missing
        self.records = ann.records if keep_missing else [r for r in ann.records if r.path is not None]

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
            "missing": [m.key for m in self.missing],
            "num_classes": self.num_classes,
            "class_index": str(self.class_index_path) if self.class_index_path else None,
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

    def _open(self, rec: VideoRecord) -> VideoReader:
        if rec.path is None:
            raise VideoDecodeError(self.root / rec.key, "file not found (listed in the annotation)")
        return VideoReader(rec.path, backend=self.backend)

    def _step(self, vr: VideoReader) -> float:
        return clip_step(self.stride, vr.fps, self.target_fps)

    @staticmethod
    def _read(
        vr: VideoReader, idx: np.ndarray, window: tuple[int, int, int, int] | None = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Decode the distinct frames of ``idx`` once each (only ``window`` of each, when given).

        Returns:
            (frames uint8 (U, H, W, 3), positions into them with the shape of ``idx``)."""
        uniq, inverse = np.unique(idx.reshape(-1), return_inverse=True)
        return vr.get_frames(uniq, window=window), inverse.reshape(idx.shape)

    def _train_clip(self, rec: VideoRecord, t: int, crop_size: int) -> torch.Tensor:
        """One random training clip (3, T, crop, crop)."""
        with self._open(rec) as vr:
            idx = train_clip_indices(len(vr), t, self._step(vr), short_video=self.short_video)
            # drawn after the start, in train_transform's order: the same seed gives the same clip
            crop = sample_train_crop(*vr.frame_size, scale=self.train_scale, crop_size=crop_size, flip=self.flip)
            # decode only the crop box: less to copy, and the resize gets a contiguous input
            frames, inv = self._read(vr, idx, window=crop.box)
        # (T, h, w, 3); distinct sorted indices (the usual case) need no gather copy
        clip = frames if np.array_equal(inv, np.arange(len(inv))) else frames[torch.from_numpy(inv)]
        return apply_train_crop(clip, crop, crop_size=crop_size, mean=self.mean, std=self.std,
                                channels_last=self.channels_last, normalized=self.dtype == "float32")

    def _train_item(self, index: int, t: int, crop: int) -> dict[str, Any]:
        errors = []
        for attempt in range(self.max_retries + 1):
            rec = self.records[index]
            try:
                video = self._train_clip(rec, t, crop)
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
            with self._open(rec) as vr:
                idx = eval_clip_indices(len(vr), t, self._step(vr), self.num_clips, short_video=self.short_video)
                frames, inv = self._read(vr, idx)
            views = []
            for k in range(self.num_clips):
                clip = frames[torch.from_numpy(inv[k])]  # (T, H, W, 3)
                views.append(eval_transform(clip, scale=self.test_scale, crop_size=crop, num_crops=self.num_crops,
                                            mean=self.mean, std=self.std, channels_last=self.channels_last,
                                            normalized=self.dtype == "float32"))
            video = torch.cat(views)  # (V, 3, T, crop, crop), clip-major
            if self.channels_last:  # torch.cat returns a contiguous tensor; put C innermost again
                video = video.movedim(1, -1).contiguous().movedim(-1, 1)
            valid, error = True, ""
        except VideoDecodeError as e:
            video = torch.zeros(self.num_views, 3, t, crop, crop, dtype=getattr(torch, self.dtype))
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

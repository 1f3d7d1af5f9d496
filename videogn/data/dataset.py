"""The clip dataset over annotated videos (:class:`KineticsDataset`: official Kinetics CSVs, list
files, folder-per-class trees, and the built-in synthetic set, which is written in the Kinetics
layout), the batch collate function and the DataLoader worker seeding. Annotation parsing lives in
:mod:`videogn.data.annotations`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from pathlib import Path
from typing import AbstractSet, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from videogn.data.annotations import DEFAULT_FILENAME_PATTERN, VideoRecord, load_annotations
from videogn.data.decode import VideoDecodeError, VideoReader
from videogn.data.index import MissingVideos, RecordIndex
from videogn.data.video_backends import BACKENDS
from videogn.data.sampling import (SHORT_VIDEO_RULES, clip_step, eval_clip_indices, train_clip_indices,
                                   train_clips_indices)
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
        bad_video_log: train mode: file to which every bad video is appended (path + error), by
            the process that decoded it (each replacement is also in the item's ``replaced``).
        max_retries: train mode: consecutive bad videos tolerated before a ``RuntimeError``.
        short_video: clip rule for videos shorter than a clip (``"loop"`` or ``"repeat_last"``).
        keep_missing: keep annotated-but-missing files as samples (they come back ``valid=False``);
            default: True in test mode (so evaluation counts them), False in train mode.
        clips_per_decode: train mode: K training clips from one decoded span of each video
            (:func:`~videogn.data.sampling.train_clips_indices`: a span of 1.5 clip spans, each
            clip with its own temporal offset in it, crop, scale and flip); the item's ``video`` is
            then (K, 3, T, H, W) and :func:`collate_clips` gives each clip its own batch row. A
            batch sampler over the dataset takes it from here (:class:`~videogn.budget.ShapeBatchSampler`).
        dtype: ``"float32"`` (normalised clips) or ``"uint8"`` (raw pixels after the geometry; the
            caller normalises on the training device with :func:`~videogn.data.transforms.normalize_batch`
            and the same ``mean``/``std``: 4x fewer bytes from workers and to the device).
        exclude: real absolute paths of videos to leave out of the samples in either mode (e.g.
            :func:`~videogn.data.annotations.read_exclude_list` of a ``scan.py`` report); how many
            were left out is ``excluded``. Annotated videos without a file are not affected.

    Attributes: ``records``, ``classes``, ``class_to_idx``, ``class_index_path``, ``missing``
    (:class:`~videogn.data.annotations.MissingVideo` for each annotated video without a file; in
    train mode they are left out of the samples, unless ``keep_missing``, in test mode kept as
    ``valid=False`` items). ``records`` is a :class:`~videogn.data.index.RecordIndex`: a read-only
    sequence of :class:`~videogn.data.annotations.VideoRecord` stored as flat arrays, so DataLoader
    workers share it with the parent instead of copying it page by page (any start method).

    Items: ``dict(video, label, index, path, valid, error, replaced)``; ``video`` is float (uint8 with
    ``dtype="uint8"``) (3, T, H, W) in train mode, (V, 3, T, H, W) in test mode; with
    ``clips_per_decode`` K > 1, (K, 3, T, H, W) and ``clips=K``. A bad video is replaced in train mode (logged) and
    never in test mode (zeros, ``valid=False``, ``error`` says why). ``replaced`` lists the
    ``(path, cause)`` of the bad videos this item was drawn in place of (train mode; else empty), so
    the training process hears of every bad video, whichever loader worker met it.

    In a DataLoader worker, decoding runs with file descriptor 2 pointed at ``/dev/null``: decord's
    C++ code prints its own error lines there (``video_reader.cc:86: ERROR opening ...``) even at
    its quietest log level, beside the :class:`VideoDecodeError` that says the same. A worker runs
    nothing but the dataset, so only what the decode itself prints is dropped; in the main process
    (``num_workers=0``), where other threads may be writing, stderr is left alone.
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
        clips_per_decode: int = 1,
        exclude: AbstractSet[str] | None = None,
    ) -> None:
        if dtype not in ("float32", "uint8"):
            raise ValueError(f"dtype must be 'float32' or 'uint8', got {dtype!r}")
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if isinstance(clips_per_decode, bool) or not isinstance(clips_per_decode, int) or clips_per_decode < 1:
            raise ValueError(f"clips_per_decode must be an int >= 1, got {clips_per_decode!r}")
        if mode == "test" and clips_per_decode != 1:
            raise ValueError(f"clips_per_decode is for train mode (test views are num_clips x num_crops), "
                             f"got {clips_per_decode} with mode='test'")
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
        self.clips_per_decode = clips_per_decode
        keep_missing = (mode == "test") if keep_missing is None else keep_missing
        self.keep_missing = keep_missing

        self.class_to_idx: dict[str, int] = ann.class_to_idx
        self.classes: list[str] = ann.classes
        self.class_index_path: Path | None = ann.class_index_path
        # annotated videos without a file: named, so a run can report them (write_missing_videos)
        # one index for both when the missing are samples; else each holds only its own rows
        found = ann.records.found
        self.records: RecordIndex = ann.records if keep_missing else ann.records.take(found)
        self.missing: MissingVideos = ann.missing if keep_missing else MissingVideos(ann.records.take(~found))
        self.excluded = 0  # videos left out because ``exclude`` lists them
        if exclude:
            keep = ~_listed(self.records, exclude)
            self.excluded = int((~keep).sum())
            if self.excluded:
                self.records = self.records.take(keep)
                if keep_missing:  # the missing are samples: the same index serves both
                    self.missing = MissingVideos(self.records)

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
            "num_excluded": self.excluded,
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

    # data.cache_decoded: a videogn.data.clip_cache.DecodedCache that readers come from first
    # (set by clip_cache.attach_decoded_cache; a video it lacks is decoded as usual)
    frame_cache: Any = None

    def _open(self, rec: VideoRecord) -> VideoReader:
        if rec.path is None:
            raise VideoDecodeError(self.root / rec.key, "file not found (listed in the annotation)")
        if self.frame_cache is not None:
            cached = self.frame_cache.reader(rec.path)
            if cached is not None:
                return cached
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

    def _train_clips(self, rec: VideoRecord, t: int, crop_size: int, k: int) -> torch.Tensor:
        """``k`` random training clips of one decoded span, (k, 3, T, crop, crop); drawn from the
        same RNG as one clip: the span's start and the k offsets, then each clip's crop."""
        with self._open(rec) as vr:
            idx = train_clips_indices(len(vr), t, self._step(vr), k, short_video=self.short_video)  # (k, T)
            crops = [sample_train_crop(*vr.frame_size, scale=self.train_scale, crop_size=crop_size, flip=self.flip)
                     for _ in range(k)]
            # one decode for all k: every frame any clip takes, inside the box holding every crop
            top, left = min(c.top for c in crops), min(c.left for c in crops)
            bottom, right = max(c.top + c.height for c in crops), max(c.left + c.width for c in crops)
            frames, inv = self._read(vr, idx, window=(top, left, bottom - top, right - left))
        normalized = self.dtype == "float32"
        # uint8: each clip is resized straight into its place in the item (C innermost, as one clip)
        item = None if normalized else torch.empty((k, t, crop_size, crop_size, 3), dtype=torch.uint8)
        clips = []
        for i, (crop, pos) in enumerate(zip(crops, inv)):
            y, x = crop.top - top, crop.left - left
            box = frames[:, y : y + crop.height, x : x + crop.width]
            # (T, h, w, 3): the clip's frames of its own box; on the shared lattice they are consecutive
            # in the decoded frames, a view (the resize reads it directly), else a gather
            if len(pos) and np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos))):
                window = box[int(pos[0]) : int(pos[0]) + len(pos)]
            else:
                window = box.index_select(0, torch.from_numpy(pos))
            clips.append(apply_train_crop(window, crop, crop_size=crop_size, mean=self.mean, std=self.std,
                                          channels_last=self.channels_last, normalized=normalized,
                                          out=None if item is None else item[i]))
        if item is not None:
            return item.permute(0, 4, 1, 2, 3)  # (k, 3, T, crop, crop), C innermost
        if clips[0].stride(0) == 1:  # C innermost (float, channels_last): keep it so in the stack
            return torch.stack([c.movedim(0, -1) for c in clips]).movedim(-1, 1)  # (k, 3, T, crop, crop)
        return torch.stack(clips)  # (k, 3, T, crop, crop)

    def _train_item(self, index: int, t: int, crop: int) -> dict[str, Any]:
        errors: list[str] = []
        replaced: list[tuple[str, str]] = []
        for attempt in range(self.max_retries + 1):
            rec = self.records[index]
            try:
                with _native_stderr_quieted():
                    k = self.clips_per_decode
                    video = self._train_clip(rec, t, crop) if k == 1 else self._train_clips(rec, t, crop, k)
                item = {"video": video, "label": rec.label, "index": index, "path": self._path_of(rec),
                        "valid": True, "error": "", "replaced": replaced}
                if k > 1:
                    item["clips"] = k  # collate_clips: one batch row per clip
                return item
            except VideoDecodeError as e:
                errors.append(str(e))
                replaced.append((self._path_of(rec), " ".join(str(e).split())))
                self._log_bad(self._path_of(rec), str(e))
                index = random.randrange(len(self))  # python RNG: seeded per worker
        raise RuntimeError(
            f"{self.max_retries + 1} consecutive videos failed to decode (max_retries={self.max_retries}); "
            f"is the dataset readable? last errors: {errors[-3:]}"
        )

    def _test_item(self, index: int, t: int, crop: int) -> dict[str, Any]:
        rec = self.records[index]
        try:
            with _native_stderr_quieted(), self._open(rec) as vr:
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
                "valid": valid, "error": error, "replaced": []}

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


def _listed(records: RecordIndex, paths: AbstractSet[str]) -> np.ndarray:
    """Per record: whether its file's real path is in ``paths`` (bool). The root is resolved once
    (its prefix swapped for the real one), not every file: a 240k-video split stays fast."""
    prefix = records.root if records.root.endswith(os.sep) else records.root + os.sep
    real_prefix = os.path.join(os.path.realpath(records.root), "")
    out = np.zeros(len(records), dtype=bool)
    for i in np.flatnonzero(records.found):
        p = str(records.path(int(i)))
        real = real_prefix + p[len(prefix):] if p.startswith(prefix) else os.path.realpath(p)
        out[i] = real in paths
    return out


@contextlib.contextmanager
def _native_stderr_quieted() -> Iterator[None]:
    """In a DataLoader worker: fd 2 -> /dev/null for the block (decoders' C++ prints; see the class
    docstring). Elsewhere: nothing, since another thread of the process may be writing to stderr."""
    if torch.utils.data.get_worker_info() is None:
        yield
        return
    import sys

    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# ----------------------------------------------------------------------------------------------
# loader helpers


def collate_clips(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack dataset items: ``video`` (N, 3, T, H, W) or (N, V, 3, T, H, W), ``label``/``index``
    int64, ``valid`` bool tensors; ``path`` and ``error`` lists; ``replaced``: the ``(path, cause)``
    of every bad video the batch's items replaced. Channels-last clips give a ``channels_last_3d`` batch.
    Training items of K clips (``clips=K``: ``clips_per_decode``) give K rows each, consecutive, with
    the item's label, index, path, valid and error repeated: N = items x K.

    Raises:
        ValueError: empty batch, clips of different shapes in one batch, or items of different
            clip counts.
    """
    if len(batch) == 0:
        raise ValueError("collate_clips got an empty batch")
    counts = sorted({int(b.get("clips", 1)) for b in batch})
    if len(counts) != 1:
        raise ValueError(f"items in one batch must hold the same number of clips, got clips={counts}")
    items = batch
    if counts[0] > 1:  # (K, 3, T, H, W) per item -> K rows (3, T, H, W), views
        batch = [{**b, "video": v} for b in items for v in b["video"].unbind(0)]
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
        "replaced": [tuple(r) for b in items for r in b.get("replaced", ())],  # once per item, not per clip
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

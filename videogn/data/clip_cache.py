"""Decoded videos cached on disk and memory-mapped (``data.cache_decoded=true``): a dataset's videos
are decoded once, into one uint8 file, and every later epoch, run and DataLoader worker reads its
frames from the page cache instead of decoding them again.

Made for small videos read many times (the built-in dataset, a sweep of many short runs): the file
holds every frame at full decoded size (T x H x W x 3 bytes per video), so it is no option for
Kinetics-sized data. Clips are identical with and without the cache: frames are stored exactly as
the decoder returned them, and the dataset's sampling, crop and flip run on them unchanged.

    cache = DecodedCache.build(paths, backend="pyav")     # decodes once; later calls reuse the file
    dataset.frame_cache = cache                           # KineticsDataset reads through it

The cache lives in ``<cache_dir>/decoded-<key>/`` (``frames.u8`` + ``index.json``), where the key
hashes the videos' paths, sizes and modification times and the decoder backend, so a changed video
gets a new cache. Building is safe when several processes start at once (a file lock) and atomic
(a temporary folder renamed into place). A video that fails to decode is left out of the cache and
read the usual way, so its error surfaces exactly as without the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from videogn.data.decode import VideoDecodeError, VideoReader
from videogn.data.video_backends import as_index_array, check_window, window_slices

__all__ = ["CachedVideoReader", "DecodedCache", "attach_decoded_cache"]

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1  # part of the key: bump when the files change


class CachedVideoReader:
    """The part of :class:`~videogn.data.decode.VideoReader` the dataset uses (``len``, ``fps``,
    ``frame_size``, ``get_frames(indices, window)``, a context manager), over cached frames."""

    def __init__(self, path: str | Path, frames: np.ndarray, fps: float) -> None:
        self.path, self._frames, self._fps = Path(path), frames, float(fps)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self._frames.shape[1]), int(self._frames.shape[2])

    @property
    def backend(self) -> str:
        return "cache"

    def __len__(self) -> int:
        return int(self._frames.shape[0])

    def get_frames(self, indices: Any, window: Optional[Sequence[int]] = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) frames at ``indices`` (only ``window`` = (top, left, height, width))."""
        idx = as_index_array(indices, len(self), self.path, self.backend)
        rows, cols = window_slices(check_window(window, self.frame_size, self.path))
        return torch.from_numpy(np.ascontiguousarray(self._frames[idx][:, rows, cols]))

    def close(self) -> None:
        pass

    def __enter__(self) -> "CachedVideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class DecodedCache:
    """Every decodable video of a list, decoded once into ``<folder>/frames.u8`` (memory-mapped
    lazily in each process, so pickling it to a DataLoader worker copies no frames)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text())
        # path -> (byte offset, frames, height, width, fps)
        self._index: dict[str, tuple[int, int, int, int, float]] = {k: tuple(v) for k, v in index["videos"].items()}
        self._mmap: Optional[np.memmap] = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "_index": self._index, "_mmap": None}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, path: object) -> bool:
        return str(path) in self._index

    def reader(self, path: str | Path) -> Optional[CachedVideoReader]:
        """A reader over ``path``'s cached frames, or None when it is not cached (e.g. it failed)."""
        entry = self._index.get(str(path))
        if entry is None:
            return None
        if self._mmap is None:
            size = (self.folder / "frames.u8").stat().st_size
            self._mmap = np.memmap(self.folder / "frames.u8", dtype=np.uint8, mode="r", shape=(max(size, 1),))
        offset, t, h, w, fps = entry
        frames = self._mmap[offset: offset + t * h * w * 3].reshape(t, h, w, 3)
        return CachedVideoReader(path, frames, fps)

    @staticmethod
    def key(paths: Iterable[str | Path], backend: str) -> str:
        """Hash of the videos (path, size, modification time) and the backend."""
        h = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}:{backend}".encode())
        for p in sorted(str(p) for p in paths):
            st = os.stat(p) if os.path.exists(p) else None
            h.update(f"\n{p}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
        return h.hexdigest()[:16]

    @classmethod
    def build(cls, paths: Sequence[str | Path], *, backend: str = "auto",
              cache_dir: Optional[str | Path] = None) -> "DecodedCache":
        """Decode ``paths`` (once; a cache of the same videos is reused) and return the cache.

        Args:
            paths: the videos; duplicates are stored once.
            backend: the decoder (as :class:`VideoReader`'s); part of the key.
            cache_dir: where caches live (default: ``<videogn cache>/decoded``, i.e.
                ``$VIDEOGN_CACHE/decoded`` or ``~/.cache/videogn/decoded``).
        """
        from videogn.data.synthetic import _file_lock, default_cache_dir

        paths = sorted({str(p) for p in paths})
        base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "decoded"
        key = cls.key(paths, backend)
        folder = base / f"decoded-{key}"
        if (folder / "index.json").is_file():
            return cls(folder)
        with _file_lock(base / f".decoded-{key}.lock"):
            if (folder / "index.json").is_file():
                return cls(folder)
            logger.info("decoding %d videos once into %s (data.cache_decoded)", len(paths), folder)
            tmp = Path(tempfile.mkdtemp(prefix=f".decoded-{key}-", dir=base))
            try:
                index: dict[str, list] = {}
                failed = 0
                offset = 0
                with open(tmp / "frames.u8", "wb") as f:
                    for p in paths:
                        try:
                            with VideoReader(p, backend=backend) as vr:
                                frames = vr.get_frames(np.arange(len(vr))).numpy()
                                fps = vr.fps
                        except VideoDecodeError:
                            failed += 1  # read (and reported) the usual way at its turn
                            continue
                        f.write(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
                        index[p] = [offset, *(int(v) for v in frames.shape[:3]), float(fps)]
                        offset += frames.size
                (tmp / "index.json").write_text(json.dumps({"videos": index, "failed": failed}))
                os.replace(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return cls(folder)


def attach_decoded_cache(dataset: Any, cache_dir: Optional[str | Path] = None) -> DecodedCache:
    """Build (or reuse) the decoded cache of a :class:`~videogn.data.KineticsDataset`'s videos and
    make the dataset read through it (``dataset.frame_cache``)."""
    paths = [rec.path for rec in dataset.records if rec.path is not None]
    cache = DecodedCache.build(paths, backend=dataset.backend, cache_dir=cache_dir)
    dataset.frame_cache = cache
    return cache

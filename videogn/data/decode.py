"""Frame-accurate video decoding with PyAV, decord (decord2) and torchcodec (optional).

``VideoReader(path)`` gives ``len()``, ``fps``, ``frame_size`` and ``get_frames(indices) -> (T, H, W, 3)
uint8`` (or a window of each frame). Frame ``i`` is always the ``i``-th frame of a full, in-order PyAV
decode (presentation order), on every backend; only the frames the indices need are decoded.

Decisions (verified by ``tests/data/test_video_decode.py`` and ``test_video_decode_fastpath.py`` against
full PyAV decodes):

* How each backend reads exactly (PyAV's pts matching, decord's fast path and its failure
  modes): :mod:`videogn.data.video_backends`.
* Unreadable input of any kind raises :class:`VideoDecodeError` (path + cause): missing, empty,
  not a video, no video stream, zero frames, truncated or corrupt data.
* PyAV converts only the needed frames to RGB, on the reader's thread budget (``num_threads``):
  swscale otherwise starts a thread per core for every frame, and on a loaded machine each reader
  then waits on helper threads competing with the other workers (measured: 64 ms wall for 35 ms of
  CPU per clip).
* ``backend="auto"`` uses PyAV and falls back to decord for a file PyAV cannot open or decode; the
  error names both causes when both fail. Rule, from measurement (``scripts/bench_loader.py``,
  docs/benchmarks/loader.md; 32 frames at stride 2 from 300-frame 340x256 H.264): pick decord for a
  file only where its fast path applies *and* it loads clips faster than PyAV. It does not: on
  in-order video with 32-frame GOPs (what ``datasets/kinetics/resize.py`` writes) the PyAV reader
  took 29 ms per clip (29 ms CPU) against 36 ms (41 ms CPU: decord runs a second thread) for
  decord's fast path, and the full KineticsDataset loader did 15.2 against 11.7 clips/s with one
  worker and about 15.5 against 14.4 with two, with half the worker memory (0.5 against 0.95 GiB).
  On streams with reordering decord must decode from frame 0 and is slower still (78 against 43 ms).
  So ``auto`` is PyAV for every file; ``backend="decord"`` remains for users who want it, exact
  everywhere and fast on in-order files.
* ``backend="torchcodec"`` (optional) is exact where it opens a file and refuses containers
  without per-frame pts; measured slower than the PyAV reader per clip (17.3 against 20.8 clips/s
  on in-order 340x256 H.264, docs/benchmarks/loader.md), so ``auto`` does not pick it. Its use is
  ``device="cuda"``: NVDEC decoding straight into GPU memory. Without FFmpeg's shared libraries
  it is unavailable and asking for it raises :class:`VideoDecodeError` saying what to install.
* Which backends exist, which ``auto`` tries and in what order: the registry in
  :mod:`videogn.data.video_backends` (:data:`~videogn.data.video_backends.BACKENDS`,
  :data:`~videogn.data.video_backends.AUTO_ORDER`); this module only asks it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, NoReturn, Sequence

import numpy as np
import torch

from videogn.checks import check_int
import videogn.data.torchcodec_backend  # noqa: F401  (registers the torchcodec backend)
from videogn.data.video_backends import (
    AUTO_ORDER, BACKENDS, VideoBackend, VideoDecodeError, as_index_array, auto_backends, available_backends, check_file,
    check_window, probe_frame_order, unavailable_backends,
)

__all__ = [
    "VideoDecodeError", "VideoReader", "available_backends", "check_video", "probe_frame_order",
    "unavailable_backends",
]

log = logging.getLogger(__name__)

_LOGGED_FALLBACKS: set[tuple[str | None, str, str]] = set()


def _log_fallback(err: VideoDecodeError, used: str) -> None:
    """One log line per distinct cause of an ``auto`` fallback (not one per file): the cause with
    its numbers masked (frame sizes, indices) is the key."""
    key = (err.backend, re.sub(r"\d+", "N", err.cause), used)
    if key not in _LOGGED_FALLBACKS:
        _LOGGED_FALLBACKS.add(key)
        log.warning("video decoding: %s failed (%s) on '%s'; using %s for such files (logged once per cause)",
                    err.backend, err.cause, err.path, used)


class VideoReader:
    """Random access to the frames of one video.

    Args:
        path: video file.
        backend: ``"auto"`` (the backends of ``AUTO_ORDER`` in turn, per file: PyAV, then decord)
            or a name registered in ``video_backends.BACKENDS``: ``"pyav"``, ``"decord"``, ``"torchcodec"``.
        num_threads: decoder threads; keep 1 inside DataLoader workers (parallelism comes from workers).
        device: ``"cpu"``, or ``"cuda"``/``"cuda:N"`` to decode with NVDEC (torchcodec only; the
            frames then come back on that device).

    Raises:
        VideoDecodeError: the backend asked for cannot be used on this machine (the cause says why
            and what to install), or the file is missing, empty, not a video, has no video stream or
            no frames, or is truncated/corrupt (may also be raised by :meth:`get_frames`).

    Example:
        >>> with VideoReader("clip.mp4") as vr:
        ...     frames = vr.get_frames([0, 2, 4])  # (3, H, W, 3) uint8
    """

    def __init__(
        self, path: str | os.PathLike, backend: str = "auto", num_threads: int = 1, device: str = "cpu"
    ) -> None:
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {backend!r}")
        check_int("num_threads (0 = codec default)", num_threads, 0)
        dev = torch.device(device)
        if dev.type != "cpu" and (backend == "auto" or dev.type not in BACKENDS.get(backend).devices):
            able = " or ".join(repr(n) for n in BACKENDS if dev.type in BACKENDS.get(n).devices)
            raise ValueError(f"device={device!r} needs backend={able or '(none registered)'}; got backend={backend!r}")
        self.path = Path(path)
        self.num_threads = num_threads
        self.device = str(dev)
        if backend == "auto":
            self._order = auto_backends()
            if not self._order:
                whys = "; ".join(f"{n}: {unavailable_backends()[n]}" for n in AUTO_ORDER)
                raise VideoDecodeError(self.path, f"no backend available ({whys})", backend)
        else:
            why = BACKENDS.get(backend).unavailable_reason()
            if why is not None:
                raise VideoDecodeError(self.path, f"backend unavailable: {why}", backend)
            self._order = [backend]
        self._errors: list[VideoDecodeError] = []
        self._impl = self._open_next()

    def _open_next(self) -> VideoBackend:
        while self._order:
            name = self._order.pop(0)
            try:
                check_file(self.path, name)
                impl: VideoBackend = BACKENDS.get(name)(self.path, self.num_threads, device=self.device)
            except VideoDecodeError as e:
                self._errors.append(e)
                if not self._order or e.cause in ("file not found", "empty file (0 bytes)", "not a regular file"):
                    break
                continue
            if self._errors:
                _log_fallback(self._errors[-1], name)
            return impl
        self._raise_collected()

    def _raise_collected(self) -> NoReturn:
        errs = self._errors
        if len(errs) == 1:
            raise errs[0]
        cause = "; ".join(f"{e.backend}: {e.cause}" for e in errs)
        raise VideoDecodeError(self.path, cause, "+".join(str(e.backend) for e in errs))

    @property
    def backend(self) -> str:
        """Name of the backend in use (``"pyav"``, ``"decord"`` or ``"torchcodec"``)."""
        return self._impl.name

    @property
    def reordered(self) -> bool:
        """True when the stream stores frames out of display order (B-frames) or PyAV could not
        demux it to prove otherwise; detected at open. The decord backend then decodes
        sequentially from frame 0 instead of seeking."""
        return self._impl.reordered

    @property
    def fps(self) -> float:
        """Average frame rate (frames per second)."""
        return self._impl.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return tuple(self._impl.frame_shape[:2])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self._impl.num_frames

    def get_frames(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor, window: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Decode the frames at ``indices`` (any order, repeats allowed).

        Args:
            window: ``(top, left, height, width)``: return only this region of each frame. The
                frames are decoded whole either way; the PyAV backend copies just the region out of
                each converted frame (cheaper than cropping afterwards, and the result is contiguous).

        Returns:
            uint8 tensor (T, H, W, 3) (H, W = the window's height and width when given), RGB,
            T = len(indices); on ``device``.

        Raises:
            ValueError: ``window`` is not inside the frame.
        """
        idx = as_index_array(indices, len(self), self.path, self.backend)
        while True:
            try:
                frames = self._impl.get(idx, check_window(window, self.frame_size, self.path))
                if isinstance(frames, torch.Tensor):  # torchcodec: already a tensor, maybe on the GPU
                    return frames.contiguous()
                return torch.from_numpy(np.ascontiguousarray(frames))
            except VideoDecodeError as e:
                self._errors.append(e)
                if not self._order:
                    self._raise_collected()
                self._impl.close()
                # fall back to the next backend for this file (auto mode only)
                self._impl = self._open_next()
                idx = as_index_array(indices, len(self), self.path, self.backend)

    def close(self) -> None:
        """Release the decoder (also done on garbage collection)."""
        impl = getattr(self, "_impl", None)
        if impl is not None:
            impl.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"VideoReader('{self.path}', backend={self.backend!r}, frames={len(self)}, fps={self.fps:.3f})"


def check_video(path: str | os.PathLike, backend: str = "pyav", *, full: bool = False) -> dict[str, Any]:
    """Probe one video: open it and decode its first, middle and last frame (``full``: every frame).

    Returns:
        dict(path, ok, error, frames, fps, backend); never raises for unreadable videos.
    """
    info: dict[str, Any] = {"path": str(path), "ok": False, "error": "", "frames": 0, "fps": 0.0, "backend": backend}
    try:
        with VideoReader(path, backend=backend) as vr:
            n = len(vr)
            info.update(frames=n, fps=vr.fps)
            idx = np.arange(n) if full else np.unique([0, n // 2, n - 1])
            for chunk in np.array_split(idx, max(1, len(idx) // 64)):
                vr.get_frames(chunk)
        info["ok"] = True
    except VideoDecodeError as e:
        info["error"] = str(e)
    return info

"""The decoders behind :class:`~videogn.data.decode.VideoReader`: PyAV, decord (decord2) and
torchcodec (optional: ``pip install videogn[torchcodec]``, needs FFmpeg's shared libraries).

* PyAV backend: the packets are demuxed once at open (no decoding) to index the frames by
  presentation timestamp and to find keyframes. ``get_frames`` seeks to the keyframe at or before
  each target (or keeps decoding forward when that is cheaper) and matches decoded frames to
  indices by their pts, so B-frame reordering and open GOPs cannot shift frames.
* Frame reordering: a stream stores its frames out of display order when it has B-frames (x264's
  default, HEVC, MPEG-4 with B-frames). It is detected when a reader opens, from a demux of every
  packet (no decoding, about 3 ms for a 10 s 256p clip): the stream is *in order* when every packet
  has a pts, the pts rise strictly in decode (packet) order, no packet is discarded (edit lists) and
  the codec reports no B-frame delay (``has_b_frames``). All packets are checked because encoders
  may place B-frames only in some scenes. The result is cached on the reader
  (:attr:`VideoReader.reordered`).
* decord backend: decord2 (3.4) returns wrong frames from ``get_batch``/``seek``/``seek_accurate``
  on streams with frame reordering -- its keyframe table holds decode-order positions, so after a
  seek it counts from the wrong frame (measured: frame 10 came back as 15, 12 as 17; about 3 of 4
  random batches wrong on such files). On those streams this backend decodes from the start in
  order (``seek(0)`` then ``next()``; ``skip_frames`` is wrong too), which is exact on every file
  tested. On in-order streams (H.264 without B-frames, intra-only codecs, MPEG-4 without B-frames,
  VP9) decode order equals display order, decord's seeks are exact, and the backend uses
  ``get_batch`` on the sorted unique indices (the fast path), provided decord counts as many frames
  as the demux.
* decord failures are caught when a decord reader opens: it reads frame 0 through the path it will
  use (``get_batch`` or ``next``) and checks the result against the stream's (H, W, 3) from the PyAV
  demux; every later read is checked again. Why: decord copies FFmpeg's RGB frame into its array
  assuming rows of exactly ``W * 3`` bytes, but FFmpeg pads rows to the CPU's SIMD alignment
  (``av_cpu_max_align``: 64 bytes with AVX-512, 32 with AVX2), and where the padded row is a whole
  multiple of the width decord evidently takes it for more bytes per pixel. Measured on an AVX-512
  Xeon with decord2 3.4 (H.264 and MPEG-4): at widths 16, 24, 32, 48, 96 and 144 (any height)
  ``get_batch`` fails with "DECORDArrayCopyFromTo: The size must exactly match (24576 vs. 18432)"
  (64x96 frame: 384-byte padded rows = 96 x 4 bytes) and ``next()`` silently returns (H, W, 4)
  arrays; widths 64, 170 and 340 read exactly. Which widths fail depends on the CPU and decord's
  FFmpeg, so it is detected per file, never predicted. A failing decord reader raises
  :class:`VideoDecodeError` naming the cause; ``backend="auto"`` reads such files with PyAV (its
  first choice anyway) and logs one line per distinct cause whenever it falls back.
* torchcodec backend: ``seek_mode="exact"`` scans the file once at open and indexes the frames by
  presentation time, so its frame i is PyAV's frame i on reordered streams too. The backend
  checks its frame count against the PyAV demux at open (a file where they disagree, e.g. edit
  lists, raises :class:`VideoDecodeError`). ``device="cuda"`` decodes on the GPU with NVDEC
  (torchcodec's CUDA build and an NVIDIA driver; not exercised by the CPU test suite).
  torchcodec imports without FFmpeg but loads its native library (which links FFmpeg's shared
  libraries) at first use: it counts as available only when that load succeeds
  (:mod:`videogn.data.torchcodec_backend`).
* The interface: every backend subclasses :class:`VideoBackend` and is registered in
  :data:`BACKENDS`; :data:`AUTO_ORDER` (what ``backend="auto"`` tries, in order) and
  :data:`NOT_IN_AUTO` (why the others are left out) name every registered backend between them
  (tests/data/test_video_decode_backends.py checks both).
"""

from __future__ import annotations

import abc
import bisect
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from videogn.registry import Registry

__all__ = [
    "AUTO_ORDER", "BACKENDS", "NOT_IN_AUTO", "VideoBackend", "VideoDecodeError", "auto_backends",
    "available_backends", "probe_frame_order", "unavailable_backends",
]

log = logging.getLogger("videogn.data.decode")

# Containers that store per-frame presentation timestamps: PyAV's seek + pts matching is exact there.
_SEEK_SAFE_FORMATS = ("mov", "mp4", "matroska", "webm")


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded.

    Attributes:
        path: the video file.
        cause: why (human readable).
        backend: the backend that failed (``"pyav"``, ``"decord"`` or ``"pyav+decord"`` when both failed).
    """

    def __init__(self, path: str | os.PathLike, cause: str, backend: str | None = None) -> None:
        self.path = str(path)
        self.cause = cause
        self.backend = backend
        where = f" [{backend}]" if backend else ""
        super().__init__(f"cannot decode video '{self.path}'{where}: {cause}")

    def __reduce__(self) -> tuple:  # picklable across DataLoader workers
        return (type(self), (self.path, self.cause, self.backend))


Window = tuple[int, int, int, int]  # (top, left, height, width) of a frame region, in pixels


class VideoBackend(abc.ABC):
    """One decoder behind :class:`~videogn.data.decode.VideoReader`: the hooks it calls.

    A backend is a class: constructing it opens the file (``__init__``, the open hook), ``get``
    reads frames, ``close`` releases the decoder. An open backend has ``num_frames``, ``fps``,
    ``frame_shape`` ``(H, W, 3)`` and ``reordered`` (frames stored out of display order).
    Frame ``i`` is always the ``i``-th frame of a full in-order PyAV decode. Register a new
    backend in :data:`BACKENDS` and name it in :data:`AUTO_ORDER` or :data:`NOT_IN_AUTO`.
    """

    name: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # torch device types it decodes into

    num_frames: int
    fps: float
    frame_shape: tuple[int, int, int]
    reordered: bool

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot be used on this machine, with the fix (None when it can).
        Checked once per process; cheap after the first call."""

    @abc.abstractmethod
    def __init__(self, path: Path, num_threads: int, device: str = "cpu") -> None:
        """Open ``path`` (``num_threads`` decoder threads) or raise :class:`VideoDecodeError`."""

    @abc.abstractmethod
    def get(self, idx: np.ndarray, window: Window | None = None) -> np.ndarray | torch.Tensor:
        """(T, H, W, 3) uint8 frames at ``idx`` (only ``window`` of each, when given)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the decoder (the backend is not used afterwards)."""


BACKENDS: Registry[type[VideoBackend]] = Registry("video backend")
"""Every video backend, by name. pyav and decord register below, torchcodec in
:mod:`videogn.data.torchcodec_backend` (imported by :mod:`videogn.data.decode`, hence by
``import videogn.data``)."""

AUTO_ORDER: tuple[str, ...] = ("pyav", "decord")
"""What ``backend="auto"`` tries for each file, in order, skipping unavailable ones: PyAV first
(measured faster, see :mod:`videogn.data.decode`), decord when PyAV cannot read a file."""

NOT_IN_AUTO: dict[str, str] = {
    "torchcodec": "measured slower than PyAV per clip on the CPU (docs/benchmarks/loader.md); "
                  "its use is device='cuda' (NVDEC), which has to be asked for",
}
"""Registered backends that ``auto`` never picks, with the reason."""


def auto_backends() -> list[str]:
    """The backends ``backend="auto"`` tries on this machine, in order."""
    return [name for name in AUTO_ORDER if BACKENDS.get(name).unavailable_reason() is None]


def available_backends() -> list[str]:
    """Backends usable on this machine: the ``auto`` order first, then the ones ``auto`` skips."""
    return auto_backends() + [name for name in NOT_IN_AUTO if BACKENDS.get(name).unavailable_reason() is None]


def unavailable_backends() -> dict[str, str]:
    """Registered backends that cannot be used on this machine, with the reason and the fix."""
    reasons = {name: BACKENDS.get(name).unavailable_reason() for name in BACKENDS}
    return {name: why for name, why in reasons.items() if why is not None}


@functools.lru_cache(maxsize=None)
def _import_error(module: str) -> str | None:
    """``"Type: first line"`` of the error importing ``module`` (None when it imports); cached."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception as e:  # a broken native library is as good as absent
        return f"{type(e).__name__}: {short_error(e)}"
    return None


def check_file(path: Path, backend: str) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "file not found", backend)
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file", backend)
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)", backend)


def as_index_array(indices: Any, length: int, path: Path, backend: str) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim == 0:
        idx = idx[None]
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(idx.shape)}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= length):
        bad = int(idx[(idx < 0) | (idx >= length)][0])
        raise IndexError(f"frame index {bad} out of range for '{path}' with {length} frames")
    return idx


def check_window(window: Any, frame_size: tuple[int, int], path: Path) -> Window | None:
    """``window`` as four ints, checked to lie inside a ``(height, width)`` frame (None: whole frames)."""
    if window is None:
        return None
    top, left, height, width = (int(v) for v in window)
    if not (top >= 0 and left >= 0 and height >= 1 and width >= 1
            and top + height <= frame_size[0] and left + width <= frame_size[1]):
        raise ValueError(f"window (top, left, height, width) = {tuple(window)} is not inside the "
                         f"{frame_size[1]}x{frame_size[0]} frames of '{path}'")
    return top, left, height, width


def window_slices(window: Window | None) -> tuple[slice, slice]:
    """(rows, columns) of ``window`` for indexing (H, W, ...) arrays; everything when None."""
    if window is None:
        return slice(None), slice(None)
    top, left, height, width = window
    return slice(top, top + height), slice(left, left + width)


class _OrderCheck:
    """Accumulates demuxed packets (in decode order) and tells whether decode order equals display
    order, i.e. whether the stream is free of frame reordering (see the module docstring)."""

    def __init__(self, has_b_frames: bool) -> None:
        self.in_order = not has_b_frames
        self.num_frames = 0  # packets that give a frame in a full decode
        self._last_pts: int | None = None

    def feed(self, packet: Any) -> None:
        if packet.is_discard or packet.pts is None:
            self.in_order = False  # no trustworthy display position for this packet
            return
        self.num_frames += 1
        if self._last_pts is not None and packet.pts <= self._last_pts:
            self.in_order = False
        self._last_pts = packet.pts


def probe_frame_order(path: str | os.PathLike) -> tuple[bool, int]:
    """Demux every video packet of ``path`` with PyAV (no decoding) and check frame reordering.

    Returns:
        ``(in_order, num_frames)``: ``in_order`` is True when decode order equals display order
        (no B-frames or other reordering); ``num_frames`` counts the packets that carry a frame.

    Raises:
        VideoDecodeError: PyAV cannot open or demux the file, or it has no video stream.
    """
    in_order, num_frames, _ = _probe_stream(path)
    return in_order, num_frames


def _probe_stream(path: str | os.PathLike) -> tuple[bool, int, tuple[int, int]]:
    """:func:`probe_frame_order` plus the stream's ``(height, width)``."""
    order, size, _ = _demux(path)
    return order.in_order and order.num_frames > 0, order.num_frames, size


def _demux(path: str | os.PathLike) -> tuple[_OrderCheck, tuple[int, int], bool]:
    """Demux every video packet: the order check, ``(height, width)``, and whether every frame has
    its own presentation timestamp in a container that stores them (what pts-indexed seeking needs)."""
    import av

    path = Path(path)
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream", "pyav")
            stream = container.streams.video[0]
            size = (stream.codec_context.height, stream.codec_context.width)
            order = _OrderCheck(bool(stream.codec_context.has_b_frames))
            pts: list[int] = []
            for packet in container.demux(stream):
                if packet.size:
                    order.feed(packet)
                    pts.append(packet.pts)
            fmt = (container.format.name or "").split(",")
    except (av.FFmpegError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise VideoDecodeError(path, f"cannot demux ({e})", "pyav") from e
    timestamped = (any(name in fmt for name in _SEEK_SAFE_FORMATS) and None not in pts
                   and len(set(pts)) == len(pts))
    return order, size, timestamped


class _PyAVBackend(VideoBackend):
    name = "pyav"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        err = _import_error("av")
        return None if err is None else f"PyAV does not import ({err}); pip install av"

    def __init__(self, path: Path, num_threads: int, device: str = "cpu") -> None:
        import av

        self._av = av
        self.path = path
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
            raise VideoDecodeError(path, f"not a readable media file ({e})", self.name) from e
        try:
            self._open_stream(num_threads)
        except BaseException:
            self.close()
            raise

    def _open_stream(self, num_threads: int) -> None:
        av, path = self._av, self.path
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams}) or ["none"]
            raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})", self.name)
        self.stream = self.container.streams.video[0]
        self.stream.codec_context.thread_count = num_threads
        # swscale's RGB conversion picks its own thread count (all cores) unless told: keep it to
        # the reader's budget, or each reader waits on helper threads that compete with other workers
        self.convert_threads = num_threads
        if num_threads > 1:
            self.stream.thread_type = "AUTO"
        fmt = self.container.format.name or ""
        self.seek_safe = any(name in fmt.split(",") for name in _SEEK_SAFE_FORMATS)
        declared = self.stream.frames or 0

        # Index frames by pts from the packets (no decoding). Discarded packets (edit lists) yield
        # no frame in a full decode, so they get no index.
        pts_list: list[int] = []
        key_pts: list[int] = []
        n_packets = 0
        order = _OrderCheck(bool(self.stream.codec_context.has_b_frames))
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0:
                    continue  # flush packet
                n_packets += 1
                order.feed(packet)
                if packet.pts is None or packet.is_discard:
                    continue
                pts_list.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.append(packet.pts)
        except (av.FFmpegError, EOFError) as e:
            raise VideoDecodeError(path, f"corrupt or truncated stream while indexing ({e})", self.name) from e
        if n_packets == 0:
            raise VideoDecodeError(path, "video stream has zero frames", self.name)
        if declared and n_packets < declared:
            raise VideoDecodeError(
                path, f"truncated: the header declares {declared} frames, only {n_packets} are present", self.name
            )
        self.reordered = not order.in_order
        if self.seek_safe and len(pts_list) and len(set(pts_list)) == len(pts_list) and key_pts:
            self.pts = sorted(pts_list)
            self.key_pts = sorted(key_pts)
            self.pts_to_index = {p: i for i, p in enumerate(self.pts)}
            self.num_frames = len(self.pts)
        else:
            # No trustworthy per-frame pts: count by decoding once, then always decode in order.
            self.seek_safe = False
            self.num_frames = sum(1 for _ in self._decode_from_start())
            if self.num_frames == 0:
                raise VideoDecodeError(path, "video stream has zero decodable frames", self.name)
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        if rate:
            self.fps = float(rate)
        elif self.stream.duration and self.stream.time_base:
            self.fps = self.num_frames / float(self.stream.duration * self.stream.time_base)
        else:
            raise VideoDecodeError(path, "frame rate unknown", self.name)
        self.height = self.stream.codec_context.height
        self.width = self.stream.codec_context.width
        self.frame_shape = (self.height, self.width, 3)
        self._iter: Iterator[Any] | None = None
        self._last: int | None = None  # index of the last frame handed out by self._iter

    def _decode_from_start(self) -> Iterator[Any]:
        self.container.seek(0, stream=self.stream, backward=True, any_frame=False)
        return self.container.decode(self.stream)

    def _seek_to_index(self, target: int) -> None:
        tpts = self.pts[target]
        k = bisect.bisect_right(self.key_pts, tpts) - 1
        key = self.key_pts[max(k, 0)]
        self.container.seek(key, stream=self.stream, backward=True, any_frame=False)
        self._iter = self.container.decode(self.stream)
        self._last = None

    def get(self, idx: np.ndarray, window: Window | None = None) -> np.ndarray:
        av = self._av
        region = window_slices(window)
        height, width = (window[2], window[3]) if window else (self.height, self.width)
        out = np.empty((len(idx), height, width, 3), dtype=np.uint8)
        if len(idx) == 0:
            return out
        want: dict[int, list[int]] = {}
        for pos, i in enumerate(idx.tolist()):
            want.setdefault(i, []).append(pos)
        try:
            if self.seek_safe:
                try:
                    self._get_seek({i: list(p) for i, p in want.items()}, out, region)
                except VideoDecodeError:
                    # frames did not come back with the indexed pts (a codec that drops or rewrites
                    # time stamps): count frames in decode-output order from now on, which is the
                    # definition of frame i anyway
                    self.seek_safe = False
                    self._iter = None
                    self._get_sequential(want, out, region)
            else:
                self._get_sequential(want, out, region)
        except av.FFmpegError as e:
            self._iter = None
            raise VideoDecodeError(self.path, f"decoding failed ({e})", self.name) from e
        return out

    def _store(self, frame: Any, positions: list[int], out: np.ndarray, region: tuple[slice, slice]) -> None:
        arr = frame.to_ndarray(format="rgb24", threads=self.convert_threads)
        if arr.shape != self.frame_shape:
            raise VideoDecodeError(
                self.path, f"frame size changed mid-stream ({arr.shape[1]}x{arr.shape[0]})", self.name
            )
        out[positions] = arr[region]  # only the requested region: a window copies less

    def _get_seek(self, want: dict[int, list[int]], out: np.ndarray, region: tuple[slice, slice]) -> None:
        for target in sorted(want):
            if not want[target]:
                continue  # already decoded on the way to an earlier target
            # Keep decoding forward when the target's keyframe is not past the current position.
            key_index = self.pts_to_index[self.key_pts[max(bisect.bisect_right(self.key_pts, self.pts[target]) - 1, 0)]]
            if self._iter is None or self._last is None or self._last >= target or key_index > self._last + 1:
                self._seek_to_index(target)
            assert self._iter is not None
            while True:
                frame = next(self._iter, None)
                if frame is None:
                    self._iter = None
                    raise VideoDecodeError(
                        self.path, f"stream ended before frame {target} (truncated or corrupt data)", self.name
                    )
                i = self.pts_to_index.get(frame.pts)
                if i is None:
                    continue
                self._last = i
                if i in want and want[i]:
                    self._store(frame, want[i], out, region)
                    want[i] = []
                if i >= target:
                    break
        missing = [i for i, p in want.items() if p]
        if missing:
            raise VideoDecodeError(self.path, f"frames {missing[:5]} were not produced by the decoder", self.name)

    def _get_sequential(self, want: dict[int, list[int]], out: np.ndarray, region: tuple[slice, slice]) -> None:
        last = max(want)
        for i, frame in enumerate(self._decode_from_start()):
            if i in want:
                self._store(frame, want[i], out, region)
            if i >= last:
                return
        raise VideoDecodeError(self.path, f"stream ended before frame {last} (truncated or corrupt data)", self.name)

    def close(self) -> None:
        self._iter = None
        container = getattr(self, "container", None)
        if container is not None:
            container.close()
            self.container = None


class _DecordBackend(VideoBackend):
    name = "decord"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        err = _import_error("decord")
        return None if err is None else f"decord does not import ({err}); pip install decord2"

    def __init__(self, path: Path, num_threads: int, device: str = "cpu",
                 in_order: tuple[bool, int] | None = None) -> None:
        """``in_order``: a :func:`probe_frame_order` result when the caller has one already (the
        frame size is then taken from decord's first frame instead of the PyAV demux)."""
        import decord

        self.path = path
        decord.logging.set_level(decord.logging.QUIET)
        try:
            self.vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
            self.num_frames = len(self.vr)
            self.fps = float(self.vr.get_avg_fps())
        except Exception as e:  # DECORDError derives from Exception only
            raise VideoDecodeError(path, f"cannot open ({short_error(e)})", self.name) from e
        if self.num_frames <= 0:
            raise VideoDecodeError(path, "video stream has zero frames", self.name)
        size: tuple[int, int] | None = None
        if in_order is None:
            try:
                ordered, count, size = _probe_stream(path)
                in_order = (ordered, count)
            except VideoDecodeError:
                in_order = (False, 0)  # PyAV cannot demux it: no proof of order, decode sequentially
        # decord's frame count must agree with the demux, or its frame i may not be PyAV's frame i
        self.reordered = not in_order[0]
        self.random_access = in_order[0] and in_order[1] == self.num_frames
        self.frame_shape: tuple[int, int, int] | None = (size[0], size[1], 3) if size else None
        self._check_first_read()

    def _check_first_read(self) -> None:
        # decord's failures depend on the frame size and the CPU (row padding, see the module
        # docstring): read frame 0 through the path get() will use, so they surface at open.
        try:
            first = self._get_random_access(np.zeros(1, np.int64)) if self.random_access else self._read_from_start(1)
        except VideoDecodeError:
            raise
        except Exception as e:
            msg = short_error(e)
            if "DECORDArrayCopyFromTo" in msg:  # the row-padding failure
                msg += "; decord cannot copy FFmpeg's padded frame rows at this frame width on this CPU"
            raise VideoDecodeError(self.path, f"cannot read frames ({msg})", self.name) from e
        if self.frame_shape is None:
            self.frame_shape = tuple(first.shape[1:])  # type: ignore[assignment]
        self._check_shape(first)

    def _check_shape(self, frames: np.ndarray) -> np.ndarray:
        if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != self.frame_shape:
            h, w = (self.frame_shape or (0, 0))[:2]
            raise VideoDecodeError(
                self.path,
                f"decoded frames have shape {tuple(frames.shape[1:])} {frames.dtype}, the stream is {h}x{w}x3 uint8",
                self.name,
            )
        return frames

    def get(self, idx: np.ndarray, window: Window | None = None) -> np.ndarray:
        """(T, H, W, 3) frames, or a view of their ``window`` (decord always returns whole frames)."""
        rows, cols = window_slices(window)
        if len(idx) == 0:
            return np.empty((0, *(self.frame_shape or (0, 0, 3))), dtype=np.uint8)[:, rows, cols]
        try:
            frames = self._get_random_access(idx) if self.random_access else self._get_sequential(idx)
            return self._check_shape(frames)[:, rows, cols]
        except VideoDecodeError:
            raise
        except Exception as e:
            raise VideoDecodeError(self.path, f"decoding failed ({short_error(e)})", self.name) from e

    def _get_random_access(self, idx: np.ndarray) -> np.ndarray:
        # In-order stream: decord's keyframe seeks land on the right frame. Ask for each frame once,
        # ascending, so decord decodes forward instead of seeking back for repeats or reversed indices.
        uniq = np.unique(idx)
        frames = self.vr.get_batch(uniq.tolist()).asnumpy()  # (len(uniq), H, W, 3)
        return frames[np.searchsorted(uniq, idx)]

    def _get_sequential(self, idx: np.ndarray) -> np.ndarray:
        # In-order decode from frame 0 with next(): exact, unlike decord's seeks and its
        # skip_frames (which also returns wrong frames on reordered streams).
        frames: dict[int, np.ndarray] = {}
        self.vr.seek(0)
        pos = 0
        for target in sorted(set(idx.tolist())):
            for _ in range(target - pos):
                self.vr.next()
            frames[target] = self.vr.next().asnumpy()
            pos = target + 1
        return np.stack([frames[i] for i in idx.tolist()])

    def _read_from_start(self, n: int) -> np.ndarray:
        self.vr.seek(0)
        return np.stack([self.vr.next().asnumpy() for _ in range(n)])

    def close(self) -> None:
        self.vr = None


_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ")


def short_error(e: BaseException) -> str:
    """An exception's message on one line, for a VideoDecodeError cause."""
    # decord errors carry "[hh:mm:ss] file.cc:line:" prefixes and a C++ stack trace; keep the message
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("[bt]")]
    msg = _DECORD_PREFIX.sub("", lines[0]) if lines else type(e).__name__
    return msg if len(msg) < 300 else msg[:297] + "..."


BACKENDS.register(_PyAVBackend.name, _PyAVBackend)
BACKENDS.register(_DecordBackend.name, _DecordBackend)

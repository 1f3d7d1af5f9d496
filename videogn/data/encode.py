"""Write real video files from uint8 frames with PyAV (FFmpeg).

Used to make test videos, the synthetic dataset and re-encoded (resized) Kinetics copies. H.264
(``libx264``) and MPEG-4 Part 2 (``mpeg4``) are supported; B-frames can be forced on to exercise
decoders on out-of-order (decode order != presentation order) streams.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from videogn.checks import check_int

__all__ = ["PARTIAL_MARK", "SUPPORTED_CODECS", "partial_path", "resize_video", "write_video"]

SUPPORTED_CODECS = ("libx264", "mpeg4")
# Pixel formats whose chroma planes are subsampled horizontally (h) / vertically (v): such formats
# need even widths / heights, which libx264 and mpeg4 refuse otherwise.
_SUBSAMPLED = {"yuv420p": (True, True), "yuvj420p": (True, True), "yuv422p": (True, False), "yuv444p": (False, False)}


def _as_uint8_frames(frames: Any) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8, got dtype {frames.dtype}")
        arr = frames.detach().cpu().numpy()
    else:
        arr = np.asarray(frames)
        if arr.dtype != np.uint8:
            raise TypeError(f"frames must be uint8, got dtype {arr.dtype}")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError("frames must contain at least one frame, got T=0")
    return np.ascontiguousarray(arr)


def write_video(
    path: str | Path,
    frames: Any,
    fps: float = 25,
    codec: str = "libx264",
    *,
    bframes: int = 0,
    gop: int | None = None,
    pix_fmt: str = "yuv420p",
    crf: int | None = None,
    audio: bool = False,
) -> Path:
    """Encode ``frames`` into a video file (container chosen by the file suffix, e.g. ``.mp4``).

    Args:
        path: output file; parent folders are created.
        frames: uint8 array or tensor of shape (T, H, W, 3), RGB.
        fps: frame rate (may be fractional, e.g. 29.97 is stored as 30000/1001).
        codec: ``"libx264"`` (H.264) or ``"mpeg4"``.
        bframes: number of consecutive B-frames (0 = none). With libx264 adaptive B-frame placement
            is turned off so the stream really contains them.
        gop: keyframe interval in frames (default: the encoder's).
        pix_fmt: pixel format; ``yuv420p`` (default, what real videos use) needs even H and W.
        crf: libx264 constant rate factor (0 = lossless luma path, default 23); for mpeg4 it is
            mapped to a fixed quantiser (crf // 8 + 1, i.e. 2..7).
        audio: also write a short sine AAC audio track (to test that tools drop/ignore audio).

    The same frames and arguments give byte-identical files (one encoder thread, no macroblock
    tree, no time stamps from the clock).

    Returns:
        The path written.

    Raises:
        ValueError: bad shape, codec, size incompatible with ``pix_fmt`` or bad option values.
    """
    arr = _as_uint8_frames(frames)
    t, h, w, _ = arr.shape
    if codec not in SUPPORTED_CODECS:
        raise ValueError(f"codec must be one of {SUPPORTED_CODECS}, got {codec!r}")
    if pix_fmt not in _SUBSAMPLED:
        raise ValueError(f"pix_fmt must be one of {tuple(_SUBSAMPLED)}, got {pix_fmt!r}")
    need_even_w, need_even_h = _SUBSAMPLED[pix_fmt]
    if (need_even_w and w % 2) or (need_even_h and h % 2):
        raise ValueError(
            f"frame size {w}x{h} (WxH) is odd, which pix_fmt={pix_fmt!r} cannot store; crop/pad to an "
            f"even size or use pix_fmt='yuv444p'"
        )
    if codec == "mpeg4" and pix_fmt != "yuv420p":
        raise ValueError(f"codec 'mpeg4' only supports pix_fmt='yuv420p', got {pix_fmt!r}")
    if not (isinstance(fps, (int, float, Fraction)) and math.isfinite(float(fps)) and float(fps) > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if not isinstance(bframes, int) or bframes < 0 or bframes > 16:
        raise ValueError(f"bframes must be an int in [0, 16], got {bframes!r}")
    if gop is not None and (not isinstance(gop, int) or gop < 1):
        raise ValueError(f"gop must be a positive int or None, got {gop!r}")
    if crf is not None and (not isinstance(crf, int) or not 0 <= crf <= 51):
        raise ValueError(f"crf must be an int in [0, 51] or None, got {crf!r}")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = _frame_rate(fps)

    options: dict[str, str] = {}
    if codec == "libx264":
        # "medium" keeps B-frame support (ultrafast forces bframes=0); b-adapt=0 makes x264 use
        # exactly `bframes` B-frames instead of deciding per scene.
        options["preset"] = "medium"
        # mbtree=0: x264's macroblock-tree rate control made the output differ from run to run for
        # the same frames (measured: 2..95 of 120 synthetic 20-frame clips re-encoded in one process
        # on a loaded machine; never with mbtree=0). It reads the lookahead at the end of the
        # stream, which for clips shorter than the lookahead (40 frames) is all of it, and evidently
        # depends on memory left by earlier work. Identical bytes for identical frames matter more
        # here (built-in dataset, test videos) than the few percent of size mbtree saves.
        x264 = [f"bframes={bframes}", "mbtree=0"]
        if bframes > 0:
            x264 += ["b-adapt=0", "b-pyramid=none"]
        options["x264-params"] = ":".join(x264)
        options["crf"] = str(23 if crf is None else crf)
    else:
        options["qscale"] = str(2 if crf is None else crf // 8 + 1)  # consumed below, not an AVOption

    with av.open(str(path), mode="w") as container:
        qscale = options.pop("qscale", None)
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width = w
        stream.height = h
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = 1  # deterministic output (frame threads reorder work)
        if codec == "mpeg4":
            stream.codec_context.max_b_frames = bframes
            # fixed quantiser instead of the encoder's default (very low) bit rate
            stream.codec_context.qscale = True
            stream.codec_context.global_quality = int(qscale) * 118  # FF_QP2LAMBDA
        if gop is not None:
            stream.codec_context.gop_size = gop
        astream = container.add_stream("aac", rate=16000) if audio else None

        for i in range(t):
            frame = av.VideoFrame.from_ndarray(arr[i], format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1) / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

        if astream is not None:
            _write_sine_audio(container, astream, seconds=t / float(rate))
    return path


def _frame_rate(fps: float | Fraction) -> Fraction:
    """Exact rational frame rate; NTSC-style rates given as floats (29.97, 59.94, 23.976) become
    n*1000/1001 as real cameras record them."""
    if isinstance(fps, Fraction):
        return fps
    f = float(fps)
    if f.is_integer():
        return Fraction(int(f))
    ntsc = round(f * 1.001)
    if abs(ntsc / 1.001 - f) < 5e-3:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(f).limit_denominator(1001)


def _write_sine_audio(container: Any, astream: Any, seconds: float) -> None:
    rate = astream.codec_context.sample_rate
    n = max(1, int(round(seconds * rate)))
    chunk = astream.codec_context.frame_size or 1024
    tone = (0.2 * np.sin(2 * np.pi * 440.0 * np.arange(n) / rate)).astype(np.float32)
    for start in range(0, n, chunk):
        part = tone[start : start + chunk]
        if part.size < chunk:
            part = np.pad(part, (0, chunk - part.size))
        frame = av.AudioFrame.from_ndarray(part[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        for packet in astream.encode(frame):
            container.mux(packet)
    for packet in astream.encode():
        container.mux(packet)


PARTIAL_MARK = ".partial"  # in the temporary name of an output being written


def partial_path(dst: str | Path) -> Path:
    """The temporary name :func:`resize_video` writes ``dst`` under until it is complete
    (``.<stem>.partial<suffix>`` beside it; a killed run can leave one behind)."""
    dst = Path(dst)
    return dst.with_name(f".{dst.stem}{PARTIAL_MARK}{dst.suffix}")


def resize_video(
    src: str | Path,
    dst: str | Path,
    short_side: int = 256,
    *,
    codec: str = "libx264",
    crf: int = 23,
    upscale: bool = False,
    bframes: int = 0,
    gop: int | None = 32,
) -> Path:
    """Re-encode ``src`` with its short side scaled to ``short_side`` (even sizes, aspect kept),
    dropping audio and every other stream. Written to a temporary name and renamed on success, so
    an interrupted run never leaves a half-written ``dst``.

    Args:
        upscale: also enlarge videos whose short side is below ``short_side``; by default they
            are re-encoded at their own size (enlarging adds bytes and decode time, no detail).
        bframes: B-frames between references. 0 (default) stores frames in display order, which
            lets ``VideoReader(backend="decord")`` seek instead of decoding from frame 0.
        gop: keyframe interval in frames (default 32: a seek decodes at most 31 extra frames);
            None keeps the encoder's (x264: 250).

    Raises:
        VideoDecodeError: ``src`` cannot be read.
    """
    from videogn.data.decode import VideoDecodeError

    src, dst = Path(src), Path(dst)
    check_int("short_side", short_side, 2)
    if codec not in SUPPORTED_CODECS:
        raise ValueError(f"codec must be one of {SUPPORTED_CODECS}, got {codec!r}")
    if not isinstance(bframes, int) or not 0 <= bframes <= 16:
        raise ValueError(f"bframes must be an int in [0, 16], got {bframes!r}")
    if gop is not None and (not isinstance(gop, int) or gop < 1):
        raise ValueError(f"gop must be a positive int or None, got {gop!r}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dst)
    try:
        with av.open(str(src), metadata_errors="ignore") as inp:
            if not inp.streams.video:
                raise VideoDecodeError(src, "no video stream")
            ist = inp.streams.video[0]
            ist.codec_context.thread_count = 1
            rate = ist.average_rate or ist.guessed_rate or Fraction(25)
            w, h = ist.codec_context.width, ist.codec_context.height
            if not w or not h:
                raise VideoDecodeError(src, "video stream has no frame size")
            scale = short_side / min(w, h)
            if scale > 1 and not upscale:
                scale = 1.0
            # even sizes: yuv420p needs them
            nw, nh = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
            n = 0
            with av.open(str(tmp), mode="w") as out:
                options: dict[str, str] = {}
                if codec == "libx264":
                    # b-adapt=0: exactly `bframes` B-frames, so bframes=0 guarantees display order
                    x264 = [f"bframes={bframes}", "b-adapt=0"]
                    if gop is not None:
                        x264.append(f"keyint={gop}")
                    options = {"crf": str(crf), "x264-params": ":".join(x264)}
                ost = out.add_stream(codec, rate=rate, options=options)
                ost.width, ost.height, ost.pix_fmt = nw, nh, "yuv420p"
                ost.codec_context.thread_count = 1
                if codec == "mpeg4":
                    ost.codec_context.max_b_frames = bframes
                if gop is not None:
                    ost.codec_context.gop_size = gop
                for frame in inp.decode(ist):
                    small = frame.reformat(width=nw, height=nh, format="yuv420p",
                                           interpolation="AREA" if scale < 1 else "BICUBIC")
                    small.pts, small.time_base = n, Fraction(1) / rate
                    n += 1
                    for packet in ost.encode(small):
                        out.mux(packet)
                for packet in ost.encode():
                    out.mux(packet)
            if n == 0:
                raise VideoDecodeError(src, "video stream has zero frames")
        os.replace(tmp, dst)
    except av.FFmpegError as e:
        raise VideoDecodeError(src, f"re-encoding failed ({e})") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst

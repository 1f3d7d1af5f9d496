"""Make small real test videos (and damaged ones) with PyAV.

Frames carry their own index: a coarse block code plus smooth moving gradients, so two different
frames never look alike and a decoder that returns frame 25 for frame 30 is caught.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videogn.data.encode import write_video
from videogn.data.video_backends import AUTO_ORDER, BACKENDS

# how a decord reader that refuses a file says why (video_backends.py, _DecordBackend._check_first_read)
DECORD_REFUSALS = ("cannot read frames", "decoded frames have shape")

# CI's second step sets it, after installing FFmpeg: there a torchcodec test that skips means a
# broken install, so it fails instead
REQUIRE_TORCHCODEC_ENV = "VIDEOGN_REQUIRE_TORCHCODEC"


def backend_params(*extra: str) -> list:
    """Every registered backend as a ``backend`` parameter (the auto order first), plus ``extra``.
    torchcodec's carries the ``torchcodec`` marker (CI selects those with ``-m torchcodec``); an
    unavailable backend's cases skip, saying why (conftest.py calls :func:`require_backend`)."""
    names = [*AUTO_ORDER, *(n for n in BACKENDS if n not in AUTO_ORDER)]
    return [pytest.param(n, marks=pytest.mark.torchcodec) if n == "torchcodec" else n for n in names] + list(extra)


def require_backend(name: str) -> None:
    """Skip the running test when backend ``name`` cannot be used on this machine, with the reason;
    for torchcodec with ``VIDEOGN_REQUIRE_TORCHCODEC=1``, fail instead."""
    why = BACKENDS.get(name).unavailable_reason()
    if why is None:
        return
    if name == "torchcodec" and os.environ.get(REQUIRE_TORCHCODEC_ENV) == "1":
        pytest.fail(f"{REQUIRE_TORCHCODEC_ENV}=1 but the torchcodec backend is unavailable: {why}", pytrace=False)
    pytest.skip(f"{name} backend unavailable: {why}")


def pattern_frames(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames, each visibly different from every other."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    r = (x * 3 + t * 9) % 256
    g = (y * 4 + t * 5 + 0 * x) % 256
    b = ((x + y) * 2 + 0 * t) % 256
    frames = np.stack(np.broadcast_arrays(r, g, b), -1).astype(np.int32)
    # an 8-bit block code of the frame index along the top row (8 px blocks)
    bw = max(width // 8, 1)
    for bit in range(8):
        on = ((np.arange(num_frames) >> bit) & 1).astype(bool)
        frames[on, : max(height // 6, 2), bit * bw : (bit + 1) * bw] = 255
        frames[~on, : max(height // 6, 2), bit * bw : (bit + 1) * bw] = 0
    frames += rng.integers(-6, 7, frames.shape)
    return frames.clip(0, 255).astype(np.uint8)


def make_video(path: Path, num_frames: int = 24, height: int = 48, width: int = 64, fps: float = 25,
               codec: str = "libx264", bframes: int = 0, gop: int | None = None, audio: bool = False,
               seed: int = 0) -> Path:
    return write_video(path, pattern_frames(num_frames, height, width, seed), fps=fps, codec=codec,
                       bframes=bframes, gop=gop, audio=audio)


def make_custom(path: Path, num_frames: int = 48, height: int = 64, width: int = 80, fps: float = 30,
                codec: str = "libx264",
                options: dict[str, str] | None = None,
                container_options: dict[str, str] | None = None,
                pts_step: int = 1) -> Path:
    """Encode with options write_video does not expose (x264 B-pyramid/open GOP, faststart, VP9,
    HEVC). ``pts_step`` > 1 leaves gaps in the time stamps (time base 1/(fps*pts_step))."""
    frames = pattern_frames(num_frames, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    if options is None and codec == "libx264":
        options = {"preset": "medium", "x264-params": "bframes=8:b-pyramid=normal:open-gop=1:keyint=12:min-keyint=4"}
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=rate, options=options or {})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.time_base = 1 / (rate * pts_step)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i * pts_step
            vf.time_base = s.codec_context.time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_x264_custom(path: Path, num_frames: int = 48, movflags: str | None = None, **kw) -> Path:
    """H.264 with 8 B-frames, B-pyramid and open GOPs every 12 frames (optionally faststart)."""
    return make_custom(path, num_frames, container_options={"movflags": movflags} if movflags else None, **kw)


def make_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        tone = (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32)
        for start in range(0, 16000, 1024):
            part = np.zeros(1024, np.float32)
            chunk = tone[start : start + 1024]
            part[: len(chunk)] = chunk
            fr = av.AudioFrame.from_ndarray(part[None], format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, start
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_zero_frames(path: Path) -> Path:
    """A container (MKV: it keeps an empty track, MP4 drops it) with a video stream of no frames
    next to an audio stream with data."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        for start in range(0, 8192, 1024):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, start
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
        for p in v.encode():
            c.mux(p)
    return path


def make_truncated(path: Path, src: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_damaged_set(folder: Path) -> dict[str, Path]:
    """One file per kind of unreadable input (the names are the kinds)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = make_video(folder / "src_good.mp4", num_frames=30)
    fast = make_x264_custom(folder / "src_fast.mp4", num_frames=40, movflags="faststart")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "not_a_video.mp4").write_bytes(b"this is a text file, not a video\n" * 50)
    rng = np.random.default_rng(0)
    (folder / "random_bytes.mp4").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return {
        "missing": folder / "does_not_exist.mp4",
        "empty": folder / "empty.mp4",
        "not_a_video": folder / "not_a_video.mp4",
        "random_bytes": folder / "random_bytes.mp4",
        "no_video_stream": make_audio_only(folder / "audio_only.m4a"),
        "zero_frames": make_zero_frames(folder / "zero_frames.mkv"),
        "truncated_moov_at_end": make_truncated(folder / "truncated_end.mp4", good, 0.6),
        "truncated_faststart": make_truncated(folder / "truncated_fast.mp4", fast, 0.5),
        "truncated_header": make_truncated(folder / "truncated_head.mp4", fast, 0.02),
    }


# name -> maker(path). Sizes 64x48..160x120, 8..60 frames, several codecs, containers, fps and GOPs.
GOOD_VIDEOS = {
    "h264_nob.mp4": lambda p: make_video(p, 30, 48, 64, fps=25),
    "h264_bframes.mp4": lambda p: make_video(p, 40, 48, 64, fps=25, bframes=6, gop=10),
    "h264_pyramid_opengop.mp4": lambda p: make_x264_custom(p, 60, height=64, width=80),
    "h264_pyramid_opengop.mkv": lambda p: make_x264_custom(p, 48, height=48, width=64),
    "h264_ntsc.mp4": lambda p: make_custom(p, 36, 120, 160, fps=29.97, options={"preset": "fast"}),
    "h264_short.mp4": lambda p: make_video(p, 8, 48, 64, fps=30),
    "mpeg4.mp4": lambda p: make_video(p, 30, 64, 96, fps=24, codec="mpeg4", gop=8),
    "mpeg4_bframes.avi": lambda p: make_video(p, 36, 48, 64, fps=25, codec="mpeg4", bframes=3, gop=9),
    "mpeg4_bframes.mkv": lambda p: make_video(p, 30, 48, 64, fps=25, codec="mpeg4", bframes=2, gop=8),
    "vp9.webm": lambda p: make_custom(p, 24, 48, 64, fps=30, codec="libvpx-vp9",
                                      options={"g": "8", "lag-in-frames": "10", "auto-alt-ref": "1"}),
    "hevc.mp4": lambda p: make_custom(p, 24, 48, 64, fps=30, codec="libx265",
                                      options={"x265-params": "bframes=4:keyint=8:log-level=none"}),
    "audio.mp4": lambda p: make_video(p, 20, 48, 64, fps=25, audio=True),
}

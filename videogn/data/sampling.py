"""Which frames a clip takes: one random clip for training, K uniformly spaced clips for testing.

A clip of T frames at step ``s`` (s = stride, or ``video_fps / target_fps`` for a fixed frame
rate, possibly fractional) spans ``(T - 1) * s + 1`` frames of the video. Frame positions are
``start + round(arange(T) * s)``.

Videos shorter than a clip (the rule is ``short_video``):

* ``"loop"`` (default): the clip starts at frame 0 and wraps around, index ``i mod n`` -- motion
  stays at the sampled speed, the video restarts (mmaction2's ``out_of_bound_opt="loop"``).
* ``"repeat_last"``: the clip starts at frame 0 and indices past the end repeat the last frame
  (PySlowFast's clamping) -- the clip ends on a freeze.

Several training clips per decode (``clips_per_decode`` K > 1, :func:`train_clips_indices`): one
span of :func:`decode_span` frames -- :data:`DECODE_SPAN_FACTOR` (1.5) times a clip's span, clamped
to the video -- starts at a uniformly random frame, and each of the K clips starts at its own
uniformly random offset inside it, on the clips' frame lattice (a multiple of the step: overlapping
clips share their frames), so one decode of the span serves all K.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from videogn.checks import check_int

__all__ = ["DECODE_SPAN_FACTOR", "SHORT_VIDEO_RULES", "clip_step", "clip_span", "decode_span", "train_clip_indices",
           "train_clips_indices", "eval_clip_indices"]

SHORT_VIDEO_RULES = ("loop", "repeat_last")
# The span decoded for K > 1 clips, in clip spans: long enough that the K clips are not near
# copies of one another, short enough that decoding it costs far less than K separate clips.
DECODE_SPAN_FACTOR = 1.5


def clip_step(stride: int, video_fps: float | None = None, target_fps: float | None = None) -> float:
    """Step between sampled frames, in source frames: ``stride``, or ``video_fps / target_fps``."""
    if target_fps is None:
        check_int("stride", stride)
        return float(stride)
    if not target_fps > 0:
        raise ValueError(f"target_fps must be > 0, got {target_fps!r}")
    if video_fps is None or not video_fps > 0 or not math.isfinite(video_fps):
        raise ValueError(f"a positive video fps is needed with target_fps, got video_fps={video_fps!r}")
    return float(video_fps) / float(target_fps)


def clip_span(num_frames: int, step: float) -> int:
    """Number of source frames a clip covers, first to last inclusive."""
    return int(round((num_frames - 1) * step)) + 1


def decode_span(num_frames: int, step: float) -> int:
    """Source frames decoded for several clips of one video: ``ceil(DECODE_SPAN_FACTOR *
    clip_span)`` (95 for 32 frames at step 2), before clamping to the video."""
    return math.ceil(DECODE_SPAN_FACTOR * clip_span(num_frames, step))


def _check(num_video_frames: int, num_frames: int, short_video: str) -> None:
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    check_int("num_frames", num_frames)
    if short_video not in SHORT_VIDEO_RULES:
        raise ValueError(f"short_video must be one of {SHORT_VIDEO_RULES}, got {short_video!r}")


def _indices(start: int, num_frames: int, step: float, n: int, short_video: str) -> np.ndarray:
    idx = start + np.round(np.arange(num_frames) * step).astype(np.int64)
    if short_video == "loop":
        return idx % n
    return np.minimum(idx, n - 1)


def train_clip_indices(
    num_video_frames: int,
    num_frames: int,
    step: float,
    *,
    short_video: str = "loop",
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """One clip at a uniformly random start.

    Args:
        num_video_frames: frames in the video (n).
        num_frames: clip length T.
        step: frames between samples (see :func:`clip_step`).
        short_video: rule when the clip is longer than the video (module docstring).
        generator: torch generator for the start (default: torch's global RNG, which DataLoader
            workers seed).

    Returns:
        int64 array (T,) of frame indices in [0, n).
    """
    _check(num_video_frames, num_frames, short_video)
    slack = num_video_frames - clip_span(num_frames, step)
    start = int(torch.randint(0, slack + 1, (1,), generator=generator)) if slack > 0 else 0
    return _indices(start, num_frames, step, num_video_frames, short_video)


def train_clips_indices(
    num_video_frames: int,
    num_frames: int,
    step: float,
    num_clips: int,
    *,
    short_video: str = "loop",
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """``num_clips`` training clips from one span of ``min(decode_span, n)`` frames: the span at a
    uniformly random start, each clip at its own uniformly random offset inside it, a multiple of
    the step rounded to a frame (drawn in clip order, after the span's start). A video shorter than one clip gives every clip the
    ``short_video`` indices from frame 0.

    Returns:
        int64 array (num_clips, T) of frame indices in [0, n), all inside the span.
    """
    _check(num_video_frames, num_frames, short_video)
    check_int("num_clips", num_clips)
    span = min(decode_span(num_frames, step), num_video_frames)
    slack = num_video_frames - span
    first = int(torch.randint(0, slack + 1, (1,), generator=generator)) if slack > 0 else 0
    room = span - clip_span(num_frames, step)  # < 0: a video shorter than a clip
    # offsets on the clips' own frame lattice (multiples of the step): where clips overlap they take
    # the same frames, which the span's decode converts to RGB and copies once for all of them
    slots = math.floor(room / step) if room > 0 else 0
    starts = [first + int(round(int(torch.randint(0, slots + 1, (1,), generator=generator)) * step)) if slots > 0
              else first for _ in range(num_clips)]
    return np.stack([_indices(s, num_frames, step, num_video_frames, short_video) for s in starts])


def eval_clip_indices(
    num_video_frames: int, num_frames: int, step: float, num_clips: int, *, short_video: str = "loop"
) -> np.ndarray:
    """``num_clips`` clips with starts spaced uniformly from the first to the last possible start
    (one clip: centred). Deterministic.

    Returns:
        int64 array (K, T).
    """
    _check(num_video_frames, num_frames, short_video)
    check_int("num_clips", num_clips)
    slack = max(num_video_frames - clip_span(num_frames, step), 0)
    if num_clips == 1:
        starts = [slack // 2]
    else:
        starts = [int(round(k * slack / (num_clips - 1))) for k in range(num_clips)]
    return np.stack([_indices(s, num_frames, step, num_video_frames, short_video) for s in starts])

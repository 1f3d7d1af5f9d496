"""The built-in dataset: short synthetic mp4 clips whose classes differ only over time.

Every clip shows one object (random shape, colour, size and position, on a random background,
optionally with static distractors and pixel noise) that moves in one of several ways. The class is
the kind of motion — the direction of a translation, growing vs shrinking, clockwise vs
counter-clockwise orbit — so one frame cannot tell the classes apart: translations wrap around the
frame (a torus), which makes the object's position uniform at every time step; each class has a
twin that is the same clip played backwards (right <-> left, grow <-> shrink, cw <-> ccw).

``task="tempo"`` is a variant made for studying clip length: the whole frame is a random smooth
texture that pans along one axis (like a camera pan, wrapping around) and reverses its direction
every R frames; the class is R (``reverse_every_<R>``, R from 2 to 23 frames, spaced
geometrically). Texture, speed, axis, direction and phase are random, so neither a frame nor a pair
of frames carries the class: a clip has to contain reversals, and the longer the clip, the more of
the classes it can separate (a T-frame window sees about T / R reversals), so accuracy rises
smoothly with T instead of jumping from impossible to trivial. (Motion over the whole frame, not a
small object, because a small network learns it within minutes of CPU training.)

``task="blink"`` is made for studying frame density at a fixed time window: a static dim texture
that flashes (the whole frame brightens by ``flash`` for exactly one frame) at times drawn from a
two-state Markov chain per class (:data:`~videogn.defaults.BLINK_PATTERNS`: how often it flashes,
and how often a flash follows a flash). The rate shows at any density, the runs-vs-singles pattern
mostly between neighbouring frames, which a stride-2 clip never sees. Its ideal observer (the best
top-1 and cross-entropy from the frames a clip shows) is :mod:`videogn.data.ceilings`.

The dataset is written as real H.264 ``.mp4`` files named by the Kinetics pattern plus a
Kinetics-style CSV annotation per split, so it goes through :class:`~videogn.data.KineticsDataset`
exactly like Kinetics::

    root = ensure_synthetic_dataset(SyntheticSpec(num_classes=6))   # generated once, then cached
    ds = KineticsDataset(root / "train", root / "annotations" / "train.csv", mode="train")

Generation is deterministic (each clip's random stream is seeded by ``(seed, split, index)``), safe
when several processes start at once (a file lock; the loser waits and reuses the result) and
atomic (written into a temporary folder that is renamed into place at the end).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from videogn.data.annotations import CLASS_INDEX_FILE, write_class_index
from videogn.data.encode import write_video
from videogn.data.ceilings import flash_sequence
from videogn.defaults import (BLINK_CLASSES, BLINK_PATTERNS, MOTIONS, REVERSAL_INTERVALS, TASKS, TEMPO_CLASSES,
                              SyntheticSpec)

__all__ = [
    "BLINK_CLASSES",
    "MOTIONS",
    "REVERSAL_INTERVALS",
    "SPLITS",
    "TASKS",
    "ClipParams",
    "SyntheticSpec",
    "default_cache_dir",
    "ensure_synthetic_dataset",
    "render_clip",
    "sample_clip_params",
    "spec_from_mapping",
]

logger = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("square", "disk", "triangle", "diamond", "cross")
SPLITS: tuple[str, ...] = ("train", "val")
# The class catalogue (MOTIONS, TEMPO_CLASSES, ...) and SyntheticSpec live in videogn.defaults, a leaf
# module, so the config schema derives ``data.synthetic`` from the spec without importing this package.
# Writing different files here? Bump videogn.defaults.SYNTHETIC_FORMAT_VERSION (part of the cache key).


def default_cache_dir() -> Path:
    """``$VIDEOGN_CACHE`` or ``$XDG_CACHE_HOME/videogn`` or ``~/.cache/videogn``."""
    if os.environ.get("VIDEOGN_CACHE"):
        return Path(os.environ["VIDEOGN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "videogn"


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipParams:
    """Everything that decides one clip's pixels (positions in pixels, time in frames)."""

    motion: str  # the class name (a motion, or reverse_every_<R>)
    shape: str
    color: tuple[float, float, float]
    background: tuple[float, float, float]
    x0: float
    y0: float
    radius: float  # object half-size at the middle frame
    velocity: float  # px/frame for translations, rad/frame for orbits, log-size/frame for grow/shrink
    orbit_radius: float
    phase: float
    distractors: tuple[tuple[str, float, float, float, float, float, float], ...]  # shape, x, y, r, rgb
    noise_seed: int
    axis: int = 1  # tempo: the array axis the texture pans along (1: horizontally, 0: vertically)
    direction: float = 1.0  # tempo: +1 or -1, the sign of the first leg
    flashes: tuple[bool, ...] = ()  # blink: whether each frame flashes
    flash: float = 0.0  # blink: brightness added to a flash frame


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _hsv_color(rng: np.random.Generator, value: tuple[float, float]) -> np.ndarray:
    """A random hue and saturation at a brightness drawn from ``value`` (RGB in [0, 1])."""
    h, sat, v = rng.uniform(0, 1), rng.uniform(0.3, 1.0), rng.uniform(*value)
    rgb = np.clip(np.abs((h * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)  # pure hue
    return v * (1 - sat + sat * rgb)


def _background_color(rng: np.random.Generator) -> np.ndarray:
    return _hsv_color(rng, (0.0, 0.4))


def _object_color(rng: np.random.Generator) -> np.ndarray:
    # Objects are always brighter than the background (random hue, saturation and brightness
    # otherwise): a fixed contrast polarity lets a small network learn motion in a few epochs.
    return _hsv_color(rng, (0.65, 1.0))


def sample_clip_params(spec: SyntheticSpec, motion: str, rng: np.random.Generator) -> ClipParams:
    """Draw the random appearance and trajectory of one clip of class ``motion``."""
    if motion in TEMPO_CLASSES:
        return _sample_tempo_params(spec, motion, rng)
    if motion in BLINK_CLASSES:
        return _sample_blink_params(spec, motion, rng)
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS + TEMPO_CLASSES + BLINK_CLASSES}, got {motion!r}")
    s = float(spec.size)
    background = _background_color(rng)
    color = _object_color(rng)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    radius = float(rng.uniform(0.12, 0.22) * s)
    speed = float(rng.uniform(spec.min_speed, spec.max_speed))
    orbit_radius = 0.0
    if motion.startswith("move_"):
        velocity = speed
    elif motion in ("grow", "shrink"):
        # Grow by a factor that a speed-`speed` translation would match at the object's edge:
        # d(radius)/dt ≈ speed / 2, i.e. log-radius rate = speed / (2 * radius).
        velocity = min(speed / (2.0 * radius), math.log(3.0) / spec.frames)
        velocity = max(velocity, math.log(1.8) / spec.frames)
    else:
        orbit_radius = float(rng.uniform(0.15, 0.25) * s)
        velocity = min(speed / orbit_radius, math.pi / spec.frames)  # at most half a turn per clip
    x0, y0 = (float(v) for v in rng.uniform(0.0, s, size=2))
    if motion in ("grow", "shrink") or motion.startswith("orbit_"):
        # keep the (largest) object or the orbit inside the frame
        margin = radius * math.exp(velocity * spec.frames / 2) + orbit_radius
        margin = min(margin, s / 2 - 1)
        x0, y0 = (float(v) for v in rng.uniform(margin, s - margin, size=2))
    distractors = []
    for _ in range(spec.num_distractors):
        dcolor = _object_color(rng)
        distractors.append(
            (
                SHAPES[int(rng.integers(len(SHAPES)))],
                float(rng.uniform(0, s)),
                float(rng.uniform(0, s)),
                float(rng.uniform(0.05, 0.12) * s),
                *(float(c) for c in dcolor),
            )
        )
    return ClipParams(
        motion=motion,
        shape=shape,
        color=tuple(float(c) for c in color),  # type: ignore[arg-type]
        background=tuple(float(c) for c in background),  # type: ignore[arg-type]
        x0=x0,
        y0=y0,
        radius=radius,
        velocity=velocity,
        orbit_radius=orbit_radius,
        phase=float(rng.uniform(0, 2 * math.pi)),
        distractors=tuple(distractors),  # type: ignore[arg-type]
        noise_seed=int(rng.integers(2**31)),
    )


def _sample_tempo_params(spec: SyntheticSpec, motion: str, rng: np.random.Generator) -> ClipParams:
    """A clip of class ``reverse_every_<R>``: random texture (from ``noise_seed``), speed, axis,
    direction and phase; the object fields are unused."""
    interval = REVERSAL_INTERVALS[TEMPO_CLASSES.index(motion)]
    speed = float(rng.uniform(spec.min_speed, spec.max_speed))
    axis = int(rng.integers(2))  # 0: vertical pan, 1: horizontal
    direction = 1.0 if rng.integers(2) else -1.0
    phase = float(rng.uniform(0.0, 2 * interval))  # where in its back-and-forth cycle the clip starts
    return ClipParams(
        motion=motion, shape="texture", color=(0.0, 0.0, 0.0), background=(0.0, 0.0, 0.0),
        x0=0.0, y0=0.0, radius=0.0, velocity=speed, orbit_radius=0.0, phase=phase,
        distractors=(), noise_seed=int(rng.integers(2**31)), axis=axis, direction=direction,
    )


def _sample_blink_params(spec: SyntheticSpec, motion: str, rng: np.random.Generator) -> ClipParams:
    """A clip of a ``blink`` class: which frames flash (the class's Markov chain, the sampler the
    ideal observer assumes) and a random dim texture (from ``noise_seed``)."""
    rate, repeat = BLINK_PATTERNS[motion]
    flashes = flash_sequence(rate, repeat, spec.frames, rng)
    return ClipParams(
        motion=motion, shape="texture", color=(0.0, 0.0, 0.0), background=(0.0, 0.0, 0.0),
        x0=0.0, y0=0.0, radius=0.0, velocity=0.0, orbit_radius=0.0, phase=0.0,
        distractors=(), noise_seed=int(rng.integers(2**31)),
        flashes=tuple(bool(f) for f in flashes), flash=float(spec.flash),
    )


# blink: the texture's brightness range; a flash adds spec.flash (<= 0.6) on top, so it never clips
BLINK_BACKGROUND_MAX = 0.35


def _render_blink(p: ClipParams, frames: int, size: int, noise: float) -> np.ndarray:
    """A blink clip: a static random texture, brightened by ``p.flash`` on every flash frame."""
    if len(p.flashes) < frames:
        raise ValueError(f"blink clip params hold {len(p.flashes)} flash states, fewer than frames={frames}")
    rng = np.random.default_rng(p.noise_seed)
    tex = _smooth_texture(rng, size) * np.float32(BLINK_BACKGROUND_MAX)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        frame = tex + np.float32(p.flash if p.flashes[i] else 0.0)
        if noise > 0:
            frame = frame + rng.normal(0.0, noise, size=frame.shape).astype(np.float32)
        out[i] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def _smooth_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: random colours on a coarse grid (cells of 4 px), blurred
    on the torus so that it tiles (a pan wraps around without a seam)."""
    cells = max(2, size // 4)
    tex = rng.uniform(0.0, 1.0, size=(cells, cells, 3))
    tex = np.repeat(np.repeat(tex, -(-size // cells), 0), -(-size // cells), 1)[:size, :size]
    for axis in (0, 1):
        tex = sum(np.roll(tex, k, axis) for k in (-2, -1, 0, 1, 2)) / 5.0
    return tex.astype(np.float32)


def _render_pan(p: ClipParams, frames: int, size: int, noise: float) -> np.ndarray:
    """A tempo clip: the texture panned by ``direction * speed * triangle(t)`` pixels along ``axis``
    (sub-pixel shifts by linear interpolation between whole-pixel rolls)."""
    interval = REVERSAL_INTERVALS[TEMPO_CLASSES.index(p.motion)]
    rng = np.random.default_rng(p.noise_seed)
    tex = _smooth_texture(rng, size)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        d = p.direction * p.velocity * _triangle(i + p.phase, interval)
        whole = math.floor(d)
        frac = np.float32(d - whole)
        frame = (1 - frac) * np.roll(tex, whole, p.axis) + frac * np.roll(tex, whole + 1, p.axis)
        if noise > 0:
            frame += rng.normal(0.0, noise, size=frame.shape).astype(np.float32)
        out[i] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def _triangle(u: float, period: float) -> float:
    """Distance travelled back and forth: rises at slope 1 for ``period`` frames, then falls."""
    u = u % (2 * period)
    return u if u < period else 2 * period - u


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` of half-size ``r``; dx, dy: pixel offsets from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "square":
        return (ax <= r) & (ay <= r)
    if shape == "disk":
        return dx * dx + dy * dy <= r * r
    if shape == "diamond":
        return ax + ay <= r
    if shape == "cross":
        return ((ax <= r) & (ay <= r / 3)) | ((ay <= r) & (ax <= r / 3))
    if shape == "triangle":  # apex up, base at dy = r
        return (dy <= r) & (dy >= -r) & (ax <= (dy + r) / 2)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def _position(p: ClipParams, t: float, size: int) -> tuple[float, float, float]:
    """Centre (x, y) and half-size of the object at time t (frames from the clip's middle)."""
    x, y, r = p.x0, p.y0, p.radius
    v = p.velocity
    if p.motion == "move_right":
        x = (x + v * t) % size
    elif p.motion == "move_left":
        x = (x - v * t) % size
    elif p.motion == "move_down":
        y = (y + v * t) % size
    elif p.motion == "move_up":
        y = (y - v * t) % size
    elif p.motion == "grow":
        r = r * math.exp(v * t)
    elif p.motion == "shrink":
        r = r * math.exp(-v * t)
    elif p.motion.startswith("orbit_"):
        # image y points down, so increasing angle with y = +sin turns clockwise on screen
        sign = 1.0 if p.motion == "orbit_clockwise" else -1.0
        angle = p.phase + sign * v * t
        x = x + p.orbit_radius * math.cos(angle)
        y = y + p.orbit_radius * math.sin(angle)
    return x, y, r


def render_clip(p: ClipParams, frames: int, size: int, noise: float = 0.0) -> np.ndarray:
    """Render a clip as uint8 frames of shape (T, H, W, 3)."""
    if p.motion in TEMPO_CLASSES:
        return _render_pan(p, frames, size, noise)
    if p.motion in BLINK_CLASSES:
        return _render_blink(p, frames, size, noise)
    coords = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (H, W)
    base = np.empty((size, size, 3), dtype=np.float32)
    base[:] = np.asarray(p.background, dtype=np.float32)
    for shape, dx, dy, dr, *rgb in p.distractors:
        mask = _shape_mask(shape, xx - dx, yy - dy, dr)
        base[mask] = np.asarray(rgb, dtype=np.float32)
    color = np.asarray(p.color, dtype=np.float32)
    noise_rng = np.random.default_rng(p.noise_seed)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    mid = (frames - 1) / 2.0
    for i in range(frames):
        x, y, r = _position(p, i - mid, size)
        # offsets on the torus, so an object leaving one side enters from the other
        dx = (xx - x + size / 2) % size - size / 2
        dy = (yy - y + size / 2) % size - size / 2
        frame = base.copy()
        frame[_shape_mask(p.shape, dx, dy, r)] = color
        if noise > 0:
            frame += noise_rng.normal(0.0, noise, size=frame.shape).astype(np.float32)
        out[i] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# Files on disk
# --------------------------------------------------------------------------------------------


def _video_name(split: str, index: int, duration: int) -> tuple[str, int, int, str]:
    youtube_id = f"syn{split[0]}{index:07d}"  # 11 characters, like a YouTube id
    return youtube_id, 0, duration, f"{youtube_id}_{0:06d}_{duration:06d}.mp4"


def _clip_items(spec: SyntheticSpec, split: str) -> Iterator[tuple[int, str]]:
    # Interleave classes so any prefix of the list is balanced.
    per_class = spec.train_per_class if split == "train" else spec.val_per_class
    for k in range(per_class):
        for c, motion in enumerate(spec.classes):
            yield k * spec.num_classes + c, motion


def _write_split(spec: SyntheticSpec, split: str, root: Path) -> None:
    duration = max(1, math.ceil(spec.frames / spec.fps))
    video_dir = root / split
    video_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, motion in _clip_items(spec, split):
        params = sample_clip_params(spec, motion, _clip_rng(spec.seed, split, index))
        frames = render_clip(params, spec.frames, spec.size, spec.noise)
        youtube_id, start, end, name = _video_name(split, index, duration)
        write_video(video_dir / name, frames, fps=spec.fps)
        rows.append((motion, youtube_id, start, end, split))
    ann = root / "annotations" / f"{split}.csv"
    ann.parent.mkdir(parents=True, exist_ok=True)
    with open(ann, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows(rows)


def _is_complete(root: Path) -> bool:
    return (root / "DONE").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def ensure_synthetic_dataset(spec: SyntheticSpec, cache_dir: Optional[str | Path] = None) -> Path:
    """Return the folder of the dataset described by ``spec``, generating it on first use.

    Layout (Kinetics-style)::

        <cache_dir>/synthetic-<hash>/
            train/<youtube_id>_000000_000001.mp4 ...    val/...
            annotations/train.csv  annotations/val.csv  (label,youtube_id,time_start,time_end,split)
            annotations/classes.json  (class index in spec order, read by KineticsDataset)
            classes.txt  spec.json  DONE

    Args:
        spec: size and difficulty; equal specs share one cache folder.
        cache_dir: where datasets are cached (default :func:`default_cache_dir`).

    Returns:
        The dataset root.
    """
    if not isinstance(spec, SyntheticSpec):
        raise TypeError(f"spec must be a SyntheticSpec, got {type(spec).__name__}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = cache / f"synthetic-{spec.key()}"
    if _is_complete(root):
        return root
    # One process generates; the others (e.g. DDP ranks) block on the lock and then find it done.
    with _file_lock(cache / f".synthetic-{spec.key()}.lock"):
        if _is_complete(root):
            return root
        if root.exists():  # left behind by a crash between rename and DONE (cannot happen) or by hand
            shutil.rmtree(root)
        n = spec.num_videos("train") + spec.num_videos("val")
        logger.info("generating the built-in dataset (%d clips) in %s", n, root)
        tmp = Path(tempfile.mkdtemp(prefix=f".synthetic-{spec.key()}-", dir=cache))
        try:
            for split in SPLITS:
                _write_split(spec, split, tmp)
            (tmp / "classes.txt").write_text("\n".join(spec.classes) + "\n")
            # the class order of the spec (not the sorted labels) for any reader of the CSVs
            write_class_index(tmp / "annotations" / CLASS_INDEX_FILE, spec.classes)
            (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")
            (tmp / "DONE").write_text("")
            os.replace(tmp, root)  # atomic: readers see nothing or everything
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root


def spec_from_mapping(values: dict) -> SyntheticSpec:
    """Build a :class:`SyntheticSpec` from a mapping (e.g. a config node), naming unknown keys."""
    known = {f.name for f in fields(SyntheticSpec)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"synthetic dataset: unknown option(s) {unknown}; valid: {sorted(known)}")
    return SyntheticSpec(**values)

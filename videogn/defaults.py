"""The library's defaults that the config schema shows: one home for each.

The data code and :mod:`videogn.config.schema` both take these values from here; the schema must not
import :mod:`videogn.data` (that package loads every video decoder on import), so they live in this
leaf module, which imports only the standard library (and :mod:`videogn.checks`, another leaf).

- :data:`KINETICS_MEAN` / :data:`KINETICS_STD`: the clip normalisation (``data.mean`` / ``data.std``).
- :data:`DEFAULT_FILENAME_PATTERN`: Kinetics file names (``data.filename_pattern``).
- :class:`SyntheticSpec`: the built-in dataset's settings, defaults and checks (``data.synthetic``;
  the generator is :mod:`videogn.data.synthetic`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from videogn.checks import check_int

__all__ = [
    "BLINK_CLASSES",
    "BLINK_PATTERNS",
    "DEFAULT_FILENAME_PATTERN",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "MOTIONS",
    "REVERSAL_INTERVALS",
    "SYNTHETIC_FORMAT_VERSION",
    "SyntheticSpec",
    "TASKS",
    "TEMPO_CLASSES",
]

# Per-channel RGB mean and std (of x / 255) that the paper's Kinetics models normalise with; the
# default everywhere a clip is normalised
KINETICS_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
KINETICS_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)

# The file names of the Kinetics downloaders (e.g. ``abc123xyz_000010_000020.mp4``), filled from a CSV row
DEFAULT_FILENAME_PATTERN = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"

# -- the built-in (synthetic) dataset --------------------------------------------------------------

# Class catalogue, in class-index order; ``num_classes=N`` uses the first N. Pairs are time
# reverses of each other, so no single frame (or set of frames) separates a pair.
MOTIONS: tuple[str, ...] = (
    "move_right",
    "move_left",
    "move_down",
    "move_up",
    "grow",
    "shrink",
    "orbit_clockwise",
    "orbit_counterclockwise",
)
# task="tempo": frames between direction reversals, one class each (geometric: every class is
# about 1.4x the previous, so each doubling of the clip length separates about two more classes)
REVERSAL_INTERVALS: tuple[int, ...] = (2, 3, 4, 6, 8, 11, 16, 23)
TEMPO_CLASSES: tuple[str, ...] = tuple(f"reverse_every_{r}" for r in REVERSAL_INTERVALS)
# task="blink": one-frame whole-frame flashes whose timing is a two-state Markov chain per class,
# (rate, repeat) = (fraction of frames that flash, P(flash | the previous frame flashed)). Classes
# pair up at one rate with flashes that come more singly (low repeat) or in runs: a stride-2 clip never sees
# two neighbouring frames, so it can only tell a pair apart through lag-2 statistics (the chain's
# lag-k correlation is lambda**k), which is what makes density matter. Ideal observer:
# videogn.data.ceilings (the class catalogue below is tuned against it only, never against trained models).
BLINK_PATTERNS: dict[str, tuple[float, float]] = {
    "blink_sparse_single": (0.15, 0.2),
    "blink_sparse_runs": (0.15, 0.4),
    "blink_dense_single": (0.55, 0.2),
    "blink_dense_runs": (0.55, 0.4),
}
# Tuned (scripts/ideal_observer.py) for frames=32, eval.num_clips=2: top-1 ceilings 66 % at 8@2 and
# 83 % at 16@1 (the same window at twice the density).
BLINK_CLASSES: tuple[str, ...] = tuple(BLINK_PATTERNS)
TASKS: dict[str, tuple[str, ...]] = {"motion": MOTIONS, "tempo": TEMPO_CLASSES, "blink": BLINK_CLASSES}
# Part of every cache key: bump it when the generator (videogn.data.synthetic) writes different
# files, so old caches are not reused (2: reproducible x264, classes.json)
SYNTHETIC_FORMAT_VERSION = 2


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and difficulty of the built-in dataset (every field enters the cache key).

    Args:
        num_classes: number of classes, 2..8 (the first N of the task's catalogue).
        train_per_class / val_per_class: clips per class in each split.
        frames: frames per clip; size: frame height = width in pixels (even).
        fps: frame rate written into the files.
        min_speed / max_speed: translation speed in pixels per frame (orbits and size changes are
            scaled to move comparably).
        num_distractors: static random shapes drawn behind the moving object.
        noise: std of per-pixel Gaussian noise, in units of the 0..255 range divided by 255.
        seed: seed of the whole dataset.
        task: ``"motion"`` (the kind of motion: ``MOTIONS``), ``"tempo"`` (how often the
            motion reverses: ``REVERSAL_INTERVALS``) or ``"blink"`` (the timing of one-frame
            flashes: ``BLINK_PATTERNS``; 4 classes; ideal observer in :mod:`videogn.data.ceilings`).
        flash: ``blink``: brightness added to a flash frame (0..1 of the pixel range): far above
            the x264 error and ``noise``, so a decoded frame shows whether it flashed.
    """

    num_classes: int = 6
    train_per_class: int = 100
    val_per_class: int = 25
    frames: int = 20
    size: int = 32
    fps: int = 25
    min_speed: float = 1.0
    max_speed: float = 2.5
    num_distractors: int = 0
    noise: float = 0.02
    seed: int = 0
    task: str = "motion"
    flash: float = 0.5

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"synthetic dataset: {name} must be {rule}, got {getattr(self, name)!r}")

        lows = {"num_classes": 2, "train_per_class": 1, "val_per_class": 1, "frames": 2, "size": 16, "fps": 1,
                "num_distractors": 0, "seed": 0}
        for name, low in lows.items():
            check_int(f"synthetic dataset: {name}", getattr(self, name), low)
        if self.task not in TASKS:
            raise bad("task", f"one of {sorted(TASKS)}")
        if self.num_classes > len(TASKS[self.task]):
            raise bad("num_classes", f"in [2, {len(TASKS[self.task])}] for task={self.task!r}")
        if self.size % 2:
            raise bad("size", "an even integer >= 16")
        if not (0 < self.min_speed <= self.max_speed):
            raise ValueError(
                f"synthetic dataset: need 0 < min_speed <= max_speed, got min_speed={self.min_speed!r}, "
                f"max_speed={self.max_speed!r}"
            )
        if not 0 <= self.noise <= 1:
            raise bad("noise", "in [0, 1]")
        if not 0.2 <= self.flash <= 0.6:  # below 0.2 x264 and noise blur it; above, the frame saturates
            raise bad("flash", "in [0.2, 0.6]")

    @property
    def classes(self) -> list[str]:
        return list(TASKS[self.task][: self.num_classes])

    def key(self) -> str:
        """Short hash naming the cache folder of this spec."""
        fields_ = asdict(self)
        if self.task != "blink":  # older tasks keep the cache keys they had before `flash` existed
            del fields_["flash"]
        if self.task == "motion":  # the original task keeps the cache key it had before tasks existed
            del fields_["task"]
        payload = json.dumps({"v": SYNTHETIC_FORMAT_VERSION, **fields_}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def num_videos(self, split: str) -> int:
        per_class = self.train_per_class if split == "train" else self.val_per_class
        return per_class * self.num_classes

"""Ideal observers of the built-in ``blink`` task: the best top-1 and the lowest cross-entropy any
classifier can reach from the frames a clip (or the test protocol's views) shows.

The observer is Bayes-optimal under these assumptions, each checked by a test:

* it knows the generative process exactly: the class prior is uniform (the splits are balanced) and
  each class's flashes follow its stationary two-state Markov chain
  (:data:`videogn.defaults.BLINK_PATTERNS`, sampled by :func:`flash_sequence`, the generator's own);
* it sees, for every frame the views contain, whether that frame flashed — exactly (the flash is a
  brightness step far above the x264 error and the pixel noise; the rest of the picture carries no
  information about the class);
* it sees the frames at their true positions in the video, jointly: with several views it uses the
  union of their frames, including any dependence between views (a network that averages the
  views' softmax can only do worse, so this is an upper bound for it too).

A class's likelihood of flash states ``x`` seen at sorted positions ``f`` is
``pi(x_0) * prod_k P^(f_k - f_{k-1})[x_{k-1}, x_k]`` (the chain's gap-step transition). The
ceiling is computed exactly by enumerating every pattern of the seen frames when there are at most
``exact_max_frames`` of them, else by Monte Carlo (patterns drawn from the generator's sampler),
with the standard error stated.

    python scripts/ideal_observer.py     # the table for the sweep's task, and JSON
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from videogn.data.sampling import clip_step, eval_clip_indices
from videogn.defaults import BLINK_PATTERNS, SyntheticSpec

__all__ = [
    "Ceiling",
    "blink_ceiling",
    "blink_ceilings",
    "chain_matrices",
    "flash_sequence",
    "log_likelihoods",
    "seen_positions",
]

EXACT_MAX_FRAMES = 18  # 2**18 patterns x classes: well under a second


def chain_matrices(rate: float, repeat: float) -> tuple[np.ndarray, np.ndarray]:
    """Stationary distribution (2,) and transition matrix (2, 2) (rows: from no-flash, from flash)
    of the chain with flash fraction ``rate`` and ``P(flash | flash before) = repeat``."""
    if not (0 < rate < 1 and 0 <= repeat < 1):
        raise ValueError(f"need 0 < rate < 1 and 0 <= repeat < 1, got rate={rate!r}, repeat={repeat!r}")
    onset = rate * (1 - repeat) / (1 - rate)  # P(flash | no flash before), keeps `rate` stationary
    if onset > 1:
        raise ValueError(f"rate={rate} with repeat={repeat} needs P(flash | no flash) = {onset:.3f} > 1; "
                         f"lower the rate or raise repeat")
    return np.array([1 - rate, rate]), np.array([[1 - onset, onset], [1 - repeat, repeat]])


def flash_sequence(rate: float, repeat: float, frames: int, rng: np.random.Generator) -> np.ndarray:
    """One video's flash states (frames,) bool, from the stationary chain (the generator's sampler)."""
    _, trans = chain_matrices(rate, repeat)
    u = rng.uniform(size=frames)
    out = np.empty(frames, dtype=bool)
    out[0] = u[0] < rate
    for t in range(1, frames):
        out[t] = u[t] < trans[int(out[t - 1]), 1]
    return out


def _flash_sequences(rate: float, repeat: float, frames: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, frames) bool: n independent sequences of the chain (vectorised over n)."""
    _, trans = chain_matrices(rate, repeat)
    u = rng.uniform(size=(n, frames))
    out = np.empty((n, frames), dtype=bool)
    out[:, 0] = u[:, 0] < rate
    for t in range(1, frames):
        out[:, t] = u[:, t] < trans[out[:, t - 1].astype(np.int64), 1]
    return out


def seen_positions(video_frames: int, num_frames: int, stride: int, num_clips: Optional[int]) -> np.ndarray:
    """Sorted distinct frame positions seen: the test protocol's ``num_clips`` views
    (:func:`videogn.data.sampling.eval_clip_indices`, the evaluator's), or with ``num_clips=None``
    one clip (positions ``0, s, ..., (T-1)s``; the chain is stationary, so where it starts does not
    matter)."""
    step = clip_step(stride)
    if num_clips is None:
        return np.unique(np.round(np.arange(num_frames) * step).astype(np.int64))
    return np.unique(eval_clip_indices(video_frames, num_frames, step, num_clips))


def log_likelihoods(states: np.ndarray, positions: np.ndarray, patterns: Sequence[tuple[float, float]]) -> np.ndarray:
    """(N, C) log P(states | class) for flash states (N, n) seen at sorted ``positions`` (n,)."""
    states = np.asarray(states, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    if states.ndim != 2 or states.shape[1] != len(positions):
        raise ValueError(f"states must be (N, {len(positions)}), got {states.shape}")
    gaps = np.diff(positions)
    if np.any(gaps <= 0):
        raise ValueError("positions must be strictly increasing")
    out = np.empty((states.shape[0], len(patterns)))
    for c, (rate, repeat) in enumerate(patterns):
        stat, trans = chain_matrices(rate, repeat)
        ll = np.log(stat)[states[:, 0]]
        for g in np.unique(gaps):
            logp = np.log(np.maximum(np.linalg.matrix_power(trans, int(g)), 1e-300))
            k = np.nonzero(gaps == g)[0]
            ll = ll + logp[states[:, k], states[:, k + 1]].sum(axis=1)
        out[:, c] = ll
    return out


@dataclass(frozen=True)
class Ceiling:
    """The ideal observer's top-1 (fraction) and minimum cross-entropy (nats) for one view."""

    num_frames: int
    stride: int
    num_clips: Optional[int]  # None: one clip (training's view)
    frames_seen: int
    top1: float
    top1_se: float  # 0 when exact
    min_ce: float
    min_ce_se: float
    method: str  # "exact" | "monte_carlo(<samples per class>)"

    def as_dict(self) -> dict:
        return asdict(self)


def _posterior_stats(ll: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: max posterior and -log posterior of the true class (uniform prior)."""
    logpost = ll - np.logaddexp.reduce(ll, axis=1, keepdims=True)
    return np.exp(logpost.max(axis=1)), -logpost[np.arange(len(true)), true]


def blink_ceiling(
    spec: SyntheticSpec,
    num_frames: int,
    stride: int,
    num_clips: Optional[int] = None,
    *,
    samples: int = 20000,
    seed: int = 0,
    exact_max_frames: int = EXACT_MAX_FRAMES,
) -> Ceiling:
    """The ideal observer of ``spec``'s classes (task ``blink``) for clips of ``num_frames`` at
    ``stride``: one clip (``num_clips=None``) or the test protocol's ``num_clips`` views of a
    ``spec.frames``-frame video. Exact when at most ``exact_max_frames`` frames are seen, else
    Monte Carlo with ``samples`` videos per class (top-1 estimated by the mean maximum posterior,
    whose standard error is smaller than that of the hit rate; both are unbiased)."""
    if spec.task != "blink":
        raise ValueError(f"ideal observers exist for task='blink' only, got task={spec.task!r}")
    patterns = [BLINK_PATTERNS[c] for c in spec.classes]
    pos = seen_positions(spec.frames, num_frames, stride, num_clips)
    n, k = len(pos), len(patterns)
    if n <= exact_max_frames:
        states = np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.int64)
        ll = log_likelihoods(states, pos, patterns)  # (2**n, C)
        lik = np.exp(ll)
        logpost = ll - np.logaddexp.reduce(ll, axis=1, keepdims=True)
        top1 = float(lik.max(axis=1).sum() / k)
        min_ce = float(-(lik * logpost).sum() / k)
        return Ceiling(num_frames, stride, num_clips, n, top1, 0.0, min_ce, 0.0, "exact")
    rng = np.random.default_rng(seed)
    maxpost, nll = [], []
    for c, (rate, repeat) in enumerate(patterns):
        seqs = _flash_sequences(rate, repeat, int(pos[-1]) + 1, samples, rng)[:, pos]
        m, l = _posterior_stats(log_likelihoods(seqs, pos, patterns), np.full(samples, c))
        maxpost.append(m)
        nll.append(l)
    # classes are sampled in equal numbers: the sample mean over all is the balanced mean
    mp, nl = np.concatenate(maxpost), np.concatenate(nll)
    se = lambda x: float(math.sqrt(np.mean([np.var(v, ddof=1) for v in np.split(x, k)]) / len(x)))  # noqa: E731
    return Ceiling(num_frames, stride, num_clips, n, float(mp.mean()), se(mp), float(nl.mean()), se(nl),
                   f"monte_carlo({samples})")


def blink_ceilings(
    spec: SyntheticSpec, shapes: Iterable[tuple[int, int]], num_clips: Optional[int], **kwargs
) -> list[Ceiling]:
    """:func:`blink_ceiling` for each (num_frames, stride) of ``shapes``: one clip and, when
    ``num_clips`` is given, the protocol's views too (one clip first)."""
    out = []
    for t, s in shapes:
        out.append(blink_ceiling(spec, t, s, None, **kwargs))
        if num_clips is not None:
            out.append(blink_ceiling(spec, t, s, num_clips, **kwargs))
    return out

"""The blink task's ideal observer (videogn.data.ceilings) against brute force, and the generator's
videos against the observer's assumption that a decoded frame shows whether it flashed."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from videogn.data.ceilings import blink_ceiling, chain_matrices, flash_sequence, seen_positions
from videogn.data.decode import VideoReader
from videogn.data.synthetic import _clip_rng, _video_name, ensure_synthetic_dataset, render_clip, sample_clip_params
from videogn.defaults import BLINK_PATTERNS, SyntheticSpec


def _brute_force(spec: SyntheticSpec, positions: np.ndarray) -> tuple[float, float]:
    """Top-1 and min cross-entropy by definition: every full flash sequence of the video, its
    probability under each class as a product of chain steps, marginalised to the seen frames."""
    patterns = [BLINK_PATTERNS[c] for c in spec.classes]
    seen: dict[tuple, np.ndarray] = {}
    for seq in itertools.product((0, 1), repeat=spec.frames):
        probs = []
        for rate, repeat in patterns:
            stat, trans = chain_matrices(rate, repeat)
            p = stat[seq[0]]
            for a, b in zip(seq, seq[1:]):
                p *= trans[a, b]
            probs.append(p)
        key = tuple(seq[i] for i in positions)
        seen[key] = seen.get(key, 0) + np.array(probs)
    k = len(patterns)
    top1 = sum(lik.max() for lik in seen.values()) / k
    ce = -sum((lik * np.log(lik / lik.sum())).sum() for lik in seen.values()) / k
    return top1, ce


@pytest.mark.parametrize("num_frames,stride,num_clips", [(3, 2, None), (4, 1, None), (3, 2, 2), (2, 3, 3)])
def test_exact_ceiling_matches_brute_force_enumeration(num_frames, stride, num_clips):
    spec = SyntheticSpec(task="blink", num_classes=4, frames=8)
    pos = seen_positions(spec.frames, num_frames, stride, num_clips)
    c = blink_ceiling(spec, num_frames, stride, num_clips)
    assert c.method == "exact" and c.frames_seen == len(pos)
    top1, ce = _brute_force(spec, pos)
    assert c.top1 == pytest.approx(top1, rel=1e-9) and c.min_ce == pytest.approx(ce, rel=1e-9)


def test_monte_carlo_agrees_with_the_exact_value_within_its_standard_error():
    spec = SyntheticSpec(task="blink", num_classes=4, frames=16)
    exact = blink_ceiling(spec, 8, 1, None)
    mc = blink_ceiling(spec, 8, 1, None, exact_max_frames=0, samples=4000, seed=1)
    assert mc.method.startswith("monte_carlo") and mc.top1_se > 0 and mc.min_ce_se > 0
    assert abs(mc.top1 - exact.top1) < 4 * mc.top1_se
    assert abs(mc.min_ce - exact.min_ce) < 4 * mc.min_ce_se


def test_protocol_positions_are_the_evaluators_and_density_raises_the_ceiling():
    spec = SyntheticSpec(task="blink", num_classes=4, frames=32)
    # 8 frames at stride 2, 2 views of a 32-frame video: starts 0 and 17 (eval_clip_indices)
    assert seen_positions(32, 8, 2, 2).tolist() == list(range(0, 15, 2)) + list(range(17, 32, 2))
    sparse, dense = blink_ceiling(spec, 8, 2, None), blink_ceiling(spec, 16, 1, None)
    assert dense.top1 > sparse.top1 + 0.1 and dense.min_ce < sparse.min_ce
    assert 0.25 < sparse.top1 < 1 and sparse.min_ce < np.log(4)


def test_generator_samples_the_chain_the_observer_assumes():
    rate, repeat = BLINK_PATTERNS["blink_dense_runs"]
    seqs = np.stack([flash_sequence(rate, repeat, 40, np.random.default_rng(i)) for i in range(400)])
    assert seqs.mean() == pytest.approx(rate, abs=0.02)
    after_flash = seqs[:, 1:][seqs[:, :-1]]
    assert after_flash.mean() == pytest.approx(repeat, abs=0.03)


def test_decoded_frames_show_exactly_which_frames_flashed(tmp_path):
    spec = SyntheticSpec(task="blink", num_classes=4, frames=24, train_per_class=1, val_per_class=3)
    root = ensure_synthetic_dataset(spec, tmp_path)
    rows = list(csv.DictReader(open(root / "annotations" / "val.csv")))
    flashed_any = False
    for index, row in enumerate(rows):
        params = sample_clip_params(spec, row["label"], _clip_rng(spec.seed, "val", index))
        truth = np.array(params.flashes[: spec.frames])
        flashed_any |= bool(truth.any() and not truth.all())
        name = _video_name("val", index, int(row["time_end"]))[3]
        with VideoReader(root / "val" / name, backend="pyav") as vr:
            assert len(vr) == spec.frames
            decoded = vr.get_frames(np.arange(len(vr))).numpy().astype(np.float64)
        raw = render_clip(params, spec.frames, spec.size, spec.noise).astype(np.float64)
        means = decoded.reshape(spec.frames, -1).mean(axis=1)
        # every frame's brightness within a few levels of what was rendered (x264's error) ...
        assert np.abs(means - raw.reshape(spec.frames, -1).mean(axis=1)).max() < 8
        # ... and a threshold half a flash above the texture recovers every frame's state
        threshold = 255 * (0.35 / 2 + spec.flash / 2)
        assert ((means > threshold) == truth).all()
    assert flashed_any

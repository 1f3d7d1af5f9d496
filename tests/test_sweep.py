"""scripts/sweep_norm_batch.py (the norm sweep) and scripts/sweep_report.py (its statistics)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import sweep_norm_batch as sweep  # noqa: E402
import sweep_report as report  # noqa: E402


def _cell_seeds(runs, norm, t, b):
    return sorted(r["seed"] for r in runs if (r["norm"], r["num_frames"], r["batch_size"]) == (norm, t, b))


def test_cpu_plan_has_the_power_the_design_promises():
    scale = sweep.SCALES["cpu"]
    runs = sweep.plan_runs(scale)
    keys = [r["key"] for r in runs]
    assert len(keys) == len(set(keys))
    t0 = scale["num_frames"]
    for b in scale["batch_sizes"]:
        for norm in ("bn", "gn"):
            assert _cell_seeds(runs, norm, t0, b) == [0, 1, 2, 3, 4]
        for norm in ("ln", "in", "frozen_bn", "gn_ws"):
            assert _cell_seeds(runs, norm, t0, b) == [0, 1, 2]
    ts = [t for t, _ in scale["pairs"]]
    assert max(ts) >= 4 * min(ts) and len({t * b for t, b in scale["pairs"]}) == 1  # constant memory, >= 4x in T
    for t, b in scale["pairs"]:
        assert _cell_seeds(runs, "bn", t, b) == _cell_seeds(runs, "gn", t, b) == [0, 1, 2, 3, 4]
    gt, gb = scale["group_cell"]
    requested = {sweep.VARIANTS[v][1].get("num_groups") for v in scale["group_variants"]} | {8}  # 8: the default GN
    assert {1, 4, 8, 16, 32} <= requested
    assert any("group_size" in sweep.VARIANTS[v][1] for v in scale["group_variants"])
    # every BN* run starts from a BN run planned before it
    position = {k: i for i, k in enumerate(keys)}
    for r in runs:
        if r["norm"] == "frozen_bn":
            assert position[r["init_from"]] < position[r["key"]]


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_data():
    rng = np.random.default_rng(0)
    small = (rng.random((3, 100)) < 0.6).astype(float)
    big = (rng.random((6, 1000)) < 0.6).astype(float)
    for m in (small, big):
        mean, lo, hi = report.bootstrap_mean(m)
        assert lo <= mean <= hi and mean == pytest.approx(100 * m.mean())
    assert np.subtract(*report.bootstrap_mean(big)[2:0:-1]) < np.subtract(*report.bootstrap_mean(small)[2:0:-1])
    assert report.bootstrap_mean(np.ones((2, 50))) == (100.0, 100.0, 100.0)
    d, lo, hi = report.bootstrap_diff(big, big)
    assert d == 0 and lo <= 0 <= hi
    better = big.copy()
    better[:, :300] = 1.0  # a clear improvement on the same videos
    d, lo, hi = report.bootstrap_diff(better, big)
    assert d > 0 and lo > 0
    with pytest.raises(ValueError, match="same videos"):
        report.bootstrap_diff(small, big)


def test_late_drop_tells_a_flat_curve_from_a_falling_one():
    flat = [2.0, 1.2, 1.0, 0.95, 0.93, 0.92, 0.92, 0.92]
    falling = [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3]
    assert sweep.late_drop(flat) < 0.05 < 0.2 < sweep.late_drop(falling)


def test_validation_views_are_the_centre_frames_whole_or_centre_cropped():
    frames = np.arange(2 * 10 * 6 * 8 * 3, dtype=np.uint8).reshape(2, 10, 6, 8, 3)  # (N, F, H, W, 3)
    whole = sweep._val_batch(frames, 0, 2, 4)
    crop = sweep._val_batch(frames, 0, 2, 4, crop=4)
    assert whole.shape == (2, 3, 4, 6, 8) and crop.shape == (2, 3, 4, 4, 4)
    assert np.array_equal(whole.numpy(), frames[:, 3:7].transpose(0, 4, 1, 2, 3))
    assert np.array_equal(crop.numpy(), frames[:, 3:7, 1:5, 2:6].transpose(0, 4, 1, 2, 3))


TINY = {
    "data": {**sweep._TEMPO, "num_classes": 3, "frames": 12, "train_per_class": 4, "val_per_class": 3},
    "model": "i3d_tiny", "model_kwargs": sweep._NO_POOL1, "crop_size": 28, "clips_seen": 8, "lr": 0.1,
    "reference_batch_size": 4, "warmup_fraction": 0.25, "device": "cpu",
    "num_frames": 4, "batch_sizes": [2, 4], "pairs": [[2, 4], [4, 2]],
    "batch_norms": ["bn", "gn", "frozen_bn", "gn_ws"], "pair_norms": ["bn", "gn"],
    "main_seeds": 2, "other_seeds": 1, "group_cell": [4, 2], "group_variants": ["gn_g1"],
}


def test_tiny_sweep_end_to_end_resumes_and_refuses_another_setup(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sweep.SCALES, "quick", TINY)
    out = tmp_path / "sweep"
    args = ["--quick", "--out", str(out), "--cache", str(tmp_path / "cache"), "--jobs", "2"]
    assert sweep.main(args) == 0
    results = json.loads((out / "sweep_results.json").read_text())
    planned = {r["key"] for r in sweep.plan_runs(TINY)}
    assert set(results["runs"]) == planned
    assert results["setup"]["num_val_videos"] == 9 and results["setup"]["num_train_videos"] == 12
    for rec in results["runs"].values():
        assert len(rec["correct"]) == 9 and set(rec["correct"]) <= {"0", "1"}
        assert rec["top1"] == pytest.approx(rec["correct"].count("1") / 9)
        assert len(rec["correct_crop"]) == 9 and rec["top1_crop"] == pytest.approx(rec["correct_crop"].count("1") / 9)
        assert rec["clips_seen"] == 8 and rec["steps"] == 8 // rec["batch_size"]
        assert len(rec["loss_curve"]) == min(sweep.LOSS_POINTS, rec["steps"])
    assert results["runs"]["frozen_bn/T4xB2/seed0"]["init_from"] == "bn/T4xB4/seed0"
    table = (out / "sweep.md").read_text()
    assert "(n=2)" in table and "Resolution:" in table and "G=1" in table
    assert "Convergence:" in table and "Centre-crop view" in table and f"Cost: {len(planned)} runs" in table
    assert results["elapsed_s"] >= max(r["wall_s"] for r in results["runs"].values())
    for name in ("sweep_batch.png", "sweep_length.png", "sweep_loss.png"):
        assert (out / name).stat().st_size > 1000
    capsys.readouterr()
    # resumed: nothing left to do, nothing changed
    before = (out / "sweep_results.json").read_text()
    assert sweep.main(args) == 0
    assert "0 to go" in capsys.readouterr().out
    assert json.loads((out / "sweep_results.json").read_text())["runs"] == json.loads(before)["runs"]
    # another setup in the same dir is refused, the results untouched
    monkeypatch.setitem(sweep.SCALES, "quick", {**TINY, "clips_seen": 16})
    assert sweep.main(args) == 2
    assert "another setup" in capsys.readouterr().err
    assert (out / "sweep_results.json").read_text() == before

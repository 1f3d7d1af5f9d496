"""scripts/bench_loader.py runs end to end and writes its JSON (slow: every configuration is a
fresh process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_loader.py"


@pytest.mark.slow
def test_bench_loader_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--clips", "8", "--num-frames", "8", "--workers", "1",
         "--backends", "pyav", "--pipelines", "raw,videogn", "--cache", str(tmp_path / "videos"), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    kinds = {(r["pipeline"], r["workers"]) for r in data["results"]}
    assert kinds == {("raw", 0), ("raw", 1), ("videogn", 1)}
    assert all(r["clips_per_s"] > 0 and r["peak_rss_main_mb"] > 0 for r in data["results"])
    assert "clips/s" in proc.stdout


@pytest.mark.slow
def test_bench_loader_item_ratio(tmp_path):
    out = tmp_path / "ratio.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--item-ratio", "--quick", "--num-frames", "8", "--rounds", "2", "--per-round", "2",
         "--sets", "nob", "--backends", "pyav", "--cache", str(tmp_path / "videos"), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (res,) = json.loads(out.read_text())["results"]
    assert res["set"] == "nob" and len(res["ratios"]) == len(res["cpu_ratios"]) == 2
    assert res["median_ratio"] > 0 and res["median_cpu_ratio"] > 0


def test_reader_with_k_clips_decodes_their_union_and_counts_k(tmp_path, video_factory, load_script):
    """The decode ceiling of clips_per_decode: the reader pipeline at K decodes what the dataset
    decodes for a K-clip item (the distinct frames of K clips from one span) and counts K clips."""
    import numpy as np
    import torch

    from videogn.data.sampling import train_clips_indices

    bench = load_script("bench_loader")
    path = video_factory.make_video(tmp_path / "v.mp4", num_frames=60, height=32, width=48, fps=30)
    reader = bench.ReaderDecode([str(path)], num_frames=8, stride=2, backend="pyav", k=2)
    state = torch.random.get_rng_state()
    frames = reader[0]
    torch.random.set_rng_state(state)  # the same draw again, through the toolkit's sampler
    union = np.unique(train_clips_indices(60, 8, 2.0, 2))
    assert tuple(frames.shape) == (len(union), 32, 48, 3)
    assert 8 <= len(union) <= 16
    batch = bench.CountClips(2)([frames, frames, frames])
    assert len(batch) == 6 and batch[0] is frames


def test_clips_per_decode_ratios_pair_each_repeat_with_its_own_k1(load_script):
    bench = load_script("bench_loader")
    base = {"set": "nob", "pipeline": "videogn", "backend": "pyav", "workers": 1}
    results = [
        {**base, "clips_per_decode": 1, "repeat": 0},
        {**base, "clips_per_decode": 2, "repeat": 0, "speedup_vs_one_clip_per_decode": 1.5,
         "cpu_speedup_vs_one_clip_per_decode": 1.6},
        {**base, "clips_per_decode": 1, "repeat": 1},
        {**base, "clips_per_decode": 2, "repeat": 1, "speedup_vs_one_clip_per_decode": 1.7,
         "cpu_speedup_vs_one_clip_per_decode": 1.8},
        {**base, "clips_per_decode": 2, "repeat": 2, "speedup_vs_one_clip_per_decode": 2.0,
         "cpu_speedup_vs_one_clip_per_decode": 1.9},
    ]
    (row,) = bench.summarize_clips_per_decode(results)
    assert row["repeats"] == 3 and row["ratios"] == [1.5, 1.7, 2.0]
    assert (row["median"], row["min"], row["max"]) == (1.7, 1.5, 2.0)
    assert (row["cpu_median"], row["cpu_min"], row["cpu_max"]) == (1.8, 1.6, 1.9)


def test_no_repeats_is_refused(load_script, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script("bench_loader").main(["--repeats", "0"])
    assert exit_.value.code == 2
    assert "--repeats must be at least 1, got 0" in capsys.readouterr().err

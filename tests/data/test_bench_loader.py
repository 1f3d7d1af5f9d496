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

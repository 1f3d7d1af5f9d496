"""End to end through the real console entry points: a seconds-long ``videogn-train`` run on a tiny
built-in dataset, then ``videogn-eval`` on its run dir; the report's numbers are recomputed from
its own per-video predictions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

TINY = [
    "trainer=debug", "trainer.max_steps=6", "data.synthetic.num_classes=3", "data.synthetic.train_per_class=4",
    "data.synthetic.val_per_class=2", "data.synthetic.frames=12", "data.synthetic.size=32", "data.train_scale=[32,36]",
    "data.crop_size=28", "data.test_scale=32", "data.num_clips=2", "data.num_workers=0", "budget.num_frames=4",
    "budget.batch_size=2",
]


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _recompute(report: dict) -> dict:
    preds = report["predictions"]
    n = len(preds)
    top1 = sum(p["valid"] and p["top5"][0] == p["label"] for p in preds) / n
    top5 = sum(p["valid"] and p["label"] in p["top5"][:5] for p in preds) / n
    per_class = defaultdict(list)
    for p in preds:
        per_class[p["label"]].append(p["valid"] and p["top5"][0] == p["label"])
    mca = sum(sum(v) / len(v) for v in per_class.values()) / len(per_class)
    return {"top1": top1, "top5": top5, "mean_class_accuracy": mca}


def test_train_then_eval_through_the_cli(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run_dir = tmp_path / "run"
    train = _cli("videogn.train", *TINY, f"data.synthetic.cache_dir={cache}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:] + train.stdout[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    for key in ("top1", "top5", "mean_class_accuracy", "per_class_accuracy", "protocol", "unreadable", "predictions"):
        assert key in report
    assert report["num_videos"] == 6 and report["protocol"]["num_clips"] == 2 and report["step"] == 6
    for key, value in _recompute(report).items():
        assert report[key] == pytest.approx(value), key
    assert (run_dir / "report_confusion_matrix.png").stat().st_size > 1000
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").is_file() and (run_dir / "metrics.csv").is_file()

    # evaluate the run dir's newest checkpoint with another protocol
    out = tmp_path / "eval"
    ev = _cli("videogn.evaluate", f"checkpoint={run_dir}", "num_clips=3", "num_crops=3", f"hydra.run.dir={out}", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:] + ev.stdout[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["views_per_video"] == 9 and report["checkpoint"].endswith("step_000000006.pt")
    for key, value in _recompute(report).items():
        assert report[key] == pytest.approx(value), key


def test_bad_override_stops_with_a_named_error(tmp_path: Path) -> None:
    res = _cli("videogn.train", "optim.lr=-0.1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 2
    assert "optim.lr must be a number in (0.0, 1000.0], got -0.1" in res.stdout + res.stderr
    res = _cli("videogn.evaluate", f"checkpoint={tmp_path / 'missing.pt'}", f"hydra.run.dir={tmp_path / 'ev'}", cwd=tmp_path)
    assert res.returncode == 2 and "missing.pt" in res.stdout + res.stderr

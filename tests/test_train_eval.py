"""End to end through the real entry points: a seconds-long ``videogn-train experiment=tiny`` run,
then ``videogn-eval`` on its run dir with single-field overrides of its data and protocol; the
report's numbers are recomputed from its own per-video predictions (``predictions.jsonl``); an
evaluation with no readable video exits with status 2. Start-up errors (bad values, unknown keys)
exit with status 2 and leave no run dir."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

TINY = ["experiment=tiny", "trainer.max_steps=6"]  # configs/experiment/tiny.yaml, the one tiny test config


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _recompute(run_dir: Path) -> dict:
    """The headline numbers from predictions.jsonl alone (every video's class probabilities)."""
    classes = json.loads((run_dir / "report.json").read_text())["classes"]
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    n = len(preds)
    ranked = [sorted(classes, key=lambda c: -p["probs"][classes.index(c)]) if p["valid"] else [] for p in preds]
    top1 = sum(r[:1] == [p["label"]] for p, r in zip(preds, ranked)) / n
    top5 = sum(p["label"] in r[:5] for p, r in zip(preds, ranked)) / n
    per_class = defaultdict(list)
    for p, r in zip(preds, ranked):
        per_class[p["label"]].append(r[:1] == [p["label"]])
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
    assert report["schema_version"] == 1 and report["loss"] > 0
    for key, value in _recompute(run_dir).items():
        assert report[key] == pytest.approx(value), key
    assert (run_dir / "report_confusion_matrix.png").stat().st_size > 1000
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").is_file() and (run_dir / "metrics.csv").is_file()

    # evaluate the run dir's newest checkpoint with another protocol, its videos moved elsewhere:
    # single fields of the checkpoint's protocol and data config, the rest of both kept
    moved = tmp_path / "moved_cache"
    shutil.move(str(cache), moved)
    out = tmp_path / "eval"
    ev = _cli("videogn.evaluate", f"checkpoint={run_dir}", "eval.num_clips=3", "eval.num_crops=3",
              f"data.synthetic.cache_dir={moved}", "data.num_workers=0", f"hydra.run.dir={out}", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:] + ev.stdout[-3000:]
    assert f"checkpoint: {run_dir / 'checkpoints' / 'step_000000006.pt'}" in ev.stdout + ev.stderr  # says which one
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["views_per_video"] == 9 and report["checkpoint"].endswith("step_000000006.pt")
    assert report["protocol"]["test_scale"] == 32 and report["dataset"]["root"].startswith(str(moved))
    assert not cache.exists()  # read from the moved copy, not regenerated at the old place
    for key, value in _recompute(out).items():
        assert report[key] == pytest.approx(value), key

    # no readable video: an error and exit status 2, never a report of 0 %
    for video in Path(report["dataset"]["root"]).glob("*.mp4"):
        video.write_bytes(b"not a video")
    bad = _cli("videogn.evaluate", f"checkpoint={run_dir}", f"data.synthetic.cache_dir={moved}", "data.num_workers=0",
               f"hydra.run.dir={tmp_path / 'eval_bad'}", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr[-3000:] + bad.stdout[-3000:]
    assert "not one of the 6 videos of the val split could be read" in bad.stdout + bad.stderr
    assert not (tmp_path / "eval_bad" / "report.json").exists()


def test_eval_typo_in_a_data_or_protocol_key_is_refused(tmp_path: Path) -> None:
    for key, near in (("data.rooot=/x", "data.root"), ("eval.num_clip=3", "eval.num_clips")):
        res = _cli("videogn.evaluate", "checkpoint=x.pt", key, cwd=tmp_path)
        assert res.returncode == 2 and f"did you mean {near}?" in res.stderr, res.stderr[-2000:]


def test_bad_override_stops_with_a_named_error(tmp_path: Path) -> None:
    res = _cli("videogn.train", "optim.lr=-0.1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 2
    assert "optim.lr must be a number in (0.0, 1000.0], got -0.1" in res.stdout + res.stderr
    assert not (tmp_path / "run").exists()  # Hydra made it (holding .hydra/ only); start-up failure removes it
    res = _cli("videogn.evaluate", f"checkpoint={tmp_path / 'missing.pt'}", f"hydra.run.dir={tmp_path / 'ev'}", cwd=tmp_path)
    assert res.returncode == 2 and "missing.pt" in res.stdout + res.stderr
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("key", ["trainer.epoch=1", "+trainer.epoch=1"])
def test_unknown_key_names_the_closest_and_runs_nothing(tmp_path: Path, key: str) -> None:
    """A typo must not run the job with the key dropped, with or without Hydra's ``+``."""
    res = _cli("videogn.train", key, cwd=tmp_path)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "trainer.epoch is not a config key; did you mean trainer.epochs?" in res.stderr
    assert "To append to your config" not in res.stdout + res.stderr
    assert not (tmp_path / "outputs").exists()


def test_existing_run_dir_is_kept_on_a_config_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    res = _cli("videogn.train", "optim.lr=-0.1", f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 2 and (run / "checkpoints").is_dir()


def test_eval_help_lists_only_its_own_group(tmp_path: Path) -> None:
    res = _cli("videogn.evaluate", "--help", cwd=tmp_path)
    assert res.returncode == 0 and "data: kinetics400, synthetic" in res.stdout
    assert "model: c2d_r50," in res.stdout and "norm: bn," in res.stdout  # for foreign state dicts
    for group in ("budget:", "optim:", "sched:", "trainer:", "experiment:"):
        assert group not in res.stdout

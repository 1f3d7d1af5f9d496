"""``videogn-predict`` end to end: a tiny trained run predicts a folder holding good videos (one in a
subfolder), a damaged file and a non-video file; its classes and probabilities are the run's own
evaluation's for the same videos, the damaged file is listed and the run still succeeds; a folder
of nothing readable exits with status 2; class names can come from a file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from videogn.predict import PREDICT_FILE, read_class_names, resolve_inputs
from videogn.config import ConfigError


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_cache: Path) -> Path:
    """A tiny run dir (its final evaluation's report.json holds the val videos' top-5)."""
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    train = _cli("videogn.train", "experiment=tiny", "trainer.max_steps=4", f"data.synthetic.cache_dir={synthetic_cache}",
                 f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert train.returncode == 0, train.stderr[-3000:] + train.stdout[-3000:]
    return run_dir


def test_predict_a_folder_with_a_damaged_video(trained: Path, tmp_path: Path) -> None:
    report = json.loads((trained / "report.json").read_text())
    val = [p for p in report["predictions"] if p["valid"]][:3]
    folder = tmp_path / "inputs"
    (folder / "more").mkdir(parents=True)
    copies = {}
    for i, p in enumerate(val):
        dst = (folder / "more" if i == 2 else folder) / Path(p["path"]).name
        shutil.copy(p["path"], dst)
        copies[str(dst)] = p
    (folder / "broken.mp4").write_bytes(b"this is a text file, not a video\n" * 50)
    (folder / "notes.txt").write_text("not a video: skipped\n")

    out = tmp_path / "out"
    pred = _cli("videogn.predict", f"checkpoint={trained}", f"inputs={folder}", "top_k=2", "data.num_workers=0",
                "device=cpu", f"hydra.run.dir={out}", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:] + pred.stdout[-3000:]
    result = json.loads((out / PREDICT_FILE).read_text())
    assert result["num_videos"] == 4 and result["num_predicted"] == 3 and result["num_unreadable"] == 1
    assert result["classes"] == report["classes"] and result["top_k"] == 2
    assert result["protocol"] == report["protocol"]  # the run's own test protocol (2 clips x 3 crops)
    assert [u["path"] for u in result["unreadable"]] == [str(folder / "broken.mp4")]
    assert result["unreadable"][0]["error"]
    assert sorted(p["path"] for p in result["predictions"]) == sorted(copies)
    assert not any("view_logits" in p for p in result["predictions"])  # only with eval.save_view_logits=true
    for p in result["predictions"]:  # what the run's evaluation said about the same video
        want = copies[p["path"]]
        assert [c["class"] for c in p["top_k"]] == want["top5"][:2]
        assert [c["prob"] for c in p["top_k"]] == pytest.approx(want["top5_prob"][:2], abs=1e-5)
    table = pred.stdout
    assert "broken.mp4" in table and "UNREADABLE" in table
    first = result["predictions"][0]
    assert f"{first['top_k'][0]['class']} {100 * first['top_k'][0]['prob']:.1f}%" in table

    # class names from a file (a checkpoint's classes renamed): the same ranking under the new names
    names = tmp_path / "names.json"
    names.write_text(json.dumps([f"class_{c}" for c in report["classes"]]))
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# one path per line\n{Path(first['path']).relative_to(tmp_path)}\n")
    renamed = _cli("videogn.predict", f"checkpoint={trained}", f"inputs={listing}", f"class_names={names}",
                   "data.num_workers=0", "device=cpu", f"hydra.run.dir={tmp_path / 'out2'}", cwd=tmp_path)
    assert renamed.returncode == 0, renamed.stderr[-3000:] + renamed.stdout[-3000:]
    again = json.loads((tmp_path / "out2" / PREDICT_FILE).read_text())
    assert [c["class"] for c in again["predictions"][0]["top_k"]][:2] == [f"class_{c['class']}" for c in first["top_k"]]


def test_view_logits_on_request(trained: Path, tmp_path: Path) -> None:
    """``eval.save_view_logits=true``: every predicted video's num_clips x num_crops views' logits,
    whose softmax averages to its probabilities."""
    import torch

    report = json.loads((trained / "report.json").read_text())
    video = next(p for p in report["predictions"] if p["valid"])
    out = tmp_path / "out"
    pred = _cli("videogn.predict", f"checkpoint={trained}", f"inputs={video['path']}", "eval.save_view_logits=true",
                "data.num_workers=0", "device=cpu", f"hydra.run.dir={out}", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:] + pred.stdout[-3000:]
    result = json.loads((out / PREDICT_FILE).read_text())
    (entry,) = result["predictions"]
    logits = torch.tensor(entry["view_logits"])  # (V, C)
    assert logits.shape == (result["protocol"]["views_per_video"], len(result["classes"]))
    probs = logits.softmax(dim=1).mean(dim=0)
    for c in entry["top_k"]:
        assert float(probs[result["classes"].index(c["class"])]) == pytest.approx(c["prob"], abs=1e-5)


def test_nothing_readable_exits_2(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"")
    (folder / "b.mkv").write_bytes(b"not a video")
    out = tmp_path / "out"
    pred = _cli("videogn.predict", f"checkpoint={trained}", f"inputs={folder}", "data.num_workers=0", "device=cpu",
                f"hydra.run.dir={out}", cwd=tmp_path)
    assert pred.returncode == 2, pred.stderr[-3000:] + pred.stdout[-3000:]
    assert "not one of the 2 input videos could be read" in pred.stdout + pred.stderr
    assert len(json.loads((out / PREDICT_FILE).read_text())["unreadable"]) == 2  # still listed


def test_inputs_and_class_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inputs must be a video file, a folder or a list file"):
        resolve_inputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no video file"):
        resolve_inputs(tmp_path / "empty")
    listing = tmp_path / "list.txt"
    listing.write_text("gone.mp4\n")
    assert resolve_inputs(listing) == [tmp_path / "gone.mp4"]  # kept: reported as unreadable by the run
    index = tmp_path / "classes.json"
    index.write_text(json.dumps({"b": 1, "a": 0}))
    assert read_class_names(index) == ["a", "b"]
    index.write_text(json.dumps({"a": "x"}))
    with pytest.raises(ConfigError, match="class_names="):
        read_class_names(index)


def test_predict_config_composes_and_is_checked(compose) -> None:
    from videogn.cli import check_overrides
    from videogn.config import PredictConfig, validate

    conf = validate(compose("predict", "checkpoint=x.pt", "inputs=clips", "eval.num_clips=3", "top_k=2"))
    assert isinstance(conf, PredictConfig) and conf.top_k == 2 and conf.eval.num_clips == 3
    assert conf.eval.num_crops is None and conf.data.root is None  # not given: the checkpoint's values
    with pytest.raises(ConfigError, match="top_k"):
        validate(compose("predict", "checkpoint=x.pt", "inputs=clips", "top_k=0"))
    with pytest.raises(ConfigError, match="did you mean top_k"):
        check_overrides(["top_kk=3"], PredictConfig)


def test_a_foreign_state_dict_with_a_class_names_file(trained: Path, tmp_path: Path) -> None:
    """A bare state dict (no config, no class names): model=, the clip and class_names= given, the
    same predictions as from the run's own checkpoint."""
    import torch

    state = torch.load(sorted((trained / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    torch.save(state["model"], tmp_path / "bare.pt")
    (tmp_path / "classes.json").write_text(json.dumps({n: i for i, n in enumerate(state["class_names"])}))
    report = json.loads((trained / "report.json").read_text())
    video = next(p for p in report["predictions"] if p["valid"])
    proto = report["protocol"]
    args = [f"model={report['model']}", f"norm={report['norm']}", f"eval.num_frames={proto['num_frames']}",
            f"eval.stride={proto['stride']}", f"eval.num_clips={proto['num_clips']}", f"eval.num_crops={proto['num_crops']}",
            f"eval.test_scale={proto['test_scale']}"]
    out = tmp_path / "out"
    pred = _cli("videogn.predict", f"checkpoint={tmp_path / 'bare.pt'}", f"inputs={video['path']}",
                f"class_names={tmp_path / 'classes.json'}", *args, "data.num_workers=0", "device=cpu",
                f"hydra.run.dir={out}", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:] + pred.stdout[-3000:]
    top = json.loads((out / PREDICT_FILE).read_text())["predictions"][0]["top_k"]
    assert [c["class"] for c in top] == video["top5"][:len(top)]
    assert [c["prob"] for c in top] == pytest.approx(video["top5_prob"][:len(top)], abs=1e-5)

    missing = _cli("videogn.predict", f"checkpoint={tmp_path / 'bare.pt'}", f"inputs={video['path']}", *args,
                   f"hydra.run.dir={tmp_path / 'no_names'}", cwd=tmp_path)
    assert missing.returncode == 2 and "class_names must be given" in missing.stdout + missing.stderr

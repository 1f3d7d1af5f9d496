"""Evaluation at scale: an interrupted evaluation rerun into the same folder evaluates only the
videos it had not finished (a torn last line included), over one process or two gloo ranks and with
the world size changed in between, and ends with the uninterrupted run's report; saved predictions
of another model are never mixed in; a report is rebuilt from the predictions alone and two runs
are ensembled; per-view logits, when saved, go through all of it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from videogn.engine.evaluator import (
    FINGERPRINT_FILE, PREDICTIONS_FILE, EvalOptions, ensemble_predictions, evaluate_dataset, read_predictions,
    rebuild_report,
)

NAMES = ["a", "b", "c"]
N = 9
UNREADABLE = {4}


def _logits(i: int) -> list[list[float]]:
    """Two views' logits of video ``i``: varied, so the classes and probabilities differ per video."""
    g = torch.Generator().manual_seed(i)
    return (torch.randn(2, 3, generator=g) * 2).tolist()


class Videos(torch.utils.data.Dataset):
    """N videos whose pixels carry their views' logits; records which videos were decoded."""

    num_clips, num_crops, num_frames, stride, target_fps, test_scale, crop_size = 2, 1, 2, 1, None, 4, 4
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    summary = {"num_videos": N, "root": "/videos"}
    missing: list = []

    def __init__(self) -> None:
        self.decoded: list[int] = []

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        self.decoded.append(i)
        ok = i not in UNREADABLE
        video = torch.tensor(_logits(i))[:, :, None, None, None].expand(2, 3, 2, 4, 4).clone()  # (V, 3, T, H, W)
        return {"video": video, "label": i % 3, "index": i, "path": f"v{i}.mp4", "valid": ok,
                "error": "" if ok else "moov atom not found"}


class Interrupted(Exception):
    pass


class ViewLogits(nn.Module):
    """logits = scale x the input's channel values; raises on forward call ``fail_at`` (1-based)."""

    def __init__(self, scale: float = 1.0, fail_at: int | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)  # declares the width; its weights are part of the model's identity
        torch.nn.init.constant_(self.fc.weight, 0.5)
        torch.nn.init.constant_(self.fc.bias, 0.0)
        self.register_buffer("scale", torch.tensor(scale))
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, T, H, W) -> (N, 3)
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise Interrupted(f"stopped at forward call {self.calls}")
        return x[:, :, 0, 0, 0] * self.scale


def _run(out: Path, model: nn.Module, dataset: Videos | None = None, save_view_logits: bool = False,
         **options) -> dict:
    return evaluate_dataset(model, dataset or Videos(), NAMES, EvalOptions(output_dir=out, **options), batch_size=2,
                            save_view_logits=save_view_logits).report


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / PREDICTIONS_FILE).read_text().splitlines()]


def assert_same_results(report: dict, reference: dict, out: Path, ref_out: Path) -> None:
    for key in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_unreadable", "per_class_accuracy"):
        assert report[key] == reference[key], key
    assert report["loss"] == pytest.approx(reference["loss"], abs=1e-5)
    assert [p["top5"][:1] for p in report["predictions"]] == [p["top5"][:1] for p in reference["predictions"]]
    got, want = _lines(out), _lines(ref_out)
    assert [x["index"] for x in got] == list(range(N))  # every video once, in dataset order
    for g, w in zip(got, want):
        assert g["valid"] == w["valid"] and g["label"] == w["label"] and g["path"] == w["path"]
        assert g["probs"] == pytest.approx(w["probs"], abs=1e-5)


@pytest.fixture
def reference(tmp_path: Path) -> tuple[dict, Path]:
    out = tmp_path / "uninterrupted"
    return _run(out, ViewLogits()), out


def test_killed_evaluation_redoes_no_finished_video(tmp_path: Path, reference: tuple[dict, Path]) -> None:
    out = tmp_path / "eval"
    with pytest.raises(Interrupted):  # batches of 2: videos 0-3 are written, the third batch (4, 5) dies
        _run(out, ViewLogits(fail_at=3))
    assert [x["index"] for x in _lines(out)] == [0, 1, 2, 3] and not (out / "report.json").exists()
    with open(out / PREDICTIONS_FILE, "a") as f:  # killed while writing video 4's line
        f.write('{"index": 4, "path": "v4.mp4", "lab')

    dataset, model = Videos(), ViewLogits()
    report = _run(out, model, dataset)
    assert sorted(dataset.decoded) == [4, 5, 6, 7, 8]  # only the unfinished videos, the torn one included
    assert model.calls == 3  # batches (4, 5), (6, 7), (8)
    assert_same_results(report, reference[0], out, reference[1])

    again = Videos()  # a rerun of the finished evaluation rebuilds the report without decoding anything
    assert_same_results(_run(out, ViewLogits(), again), reference[0], out, reference[1])
    assert again.decoded == []


def test_saved_predictions_of_other_weights_or_settings_are_never_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "eval"
    with pytest.raises(Interrupted):
        _run(out, ViewLogits(scale=3.0, fail_at=3))
    dataset = Videos()
    with caplog.at_level("WARNING", logger="videogn.engine.evaluator"):
        report = _run(out, ViewLogits(scale=1.0), dataset)  # other weights (the scale buffer)
    assert sorted(dataset.decoded) == list(range(N))  # everything evaluated again
    assert "made with another model_sha256" in caplog.text and "*.stale" in caplog.text
    assert (out / (PREDICTIONS_FILE + ".stale")).is_file() and (out / (FINGERPRINT_FILE + ".stale")).is_file()
    assert_same_results(report, _run(tmp_path / "ref", ViewLogits(scale=1.0)), out, tmp_path / "ref")

    for changed in ({"resume": False}, {"precision": "bf16"}, {"split": "train"}, {"subset": [0, 1, 2]}):
        dataset = Videos()
        _run(out, ViewLogits(scale=1.0), dataset, **changed)
        wanted = changed.get("subset", range(N))
        assert sorted(dataset.decoded) == list(wanted), changed


def test_report_rebuilt_from_predictions_and_two_runs_ensembled(tmp_path: Path, reference: tuple[dict, Path]) -> None:
    report, out = reference
    rebuilt = rebuild_report(out, output_dir=tmp_path / "rebuilt")
    for key in ("top1", "top5", "mean_class_accuracy", "per_class_accuracy", "classes", "protocol", "unreadable",
                "split"):
        assert rebuilt[key] == report[key], key
    assert rebuilt["loss"] == pytest.approx(report["loss"], abs=1e-5)
    assert json.loads((tmp_path / "rebuilt" / "report.json").read_text())["top1"] == report["top1"]

    sharp = tmp_path / "sharp"
    _run(sharp, ViewLogits(scale=4.0))
    ens = ensemble_predictions([out, sharp], output_dir=tmp_path / "ens")
    rows = {r["index"]: r for r in read_predictions(tmp_path / "ens")}
    a, b = read_predictions(out), read_predictions(sharp)
    for ra, rb in zip(a, b):
        if ra["valid"]:
            mean = [(x + y) / 2 for x, y in zip(ra["probs"], rb["probs"])]
            assert rows[ra["index"]]["probs"] == pytest.approx(mean, abs=1e-6)
    labels = torch.tensor([i % 3 for i in range(N)])
    scores = torch.tensor([rows[i]["probs"] or [0.0] * 3 for i in range(N)])
    valid = torch.tensor([i not in UNREADABLE for i in range(N)])
    assert ens["top1"] == pytest.approx(float(((scores.argmax(1) == labels) & valid).float().mean()))
    assert len(ens["ensemble_of"]) == 2 and ens["num_unreadable"] == len(UNREADABLE)

    with pytest.raises(ValueError, match="holds other videos"):
        subset = tmp_path / "subset"
        _run(subset, ViewLogits(), subset=[0, 1, 2])
        ensemble_predictions([out, subset])

    # the documented command: the same ensemble, and exit status 2 for a folder without predictions
    script = Path(__file__).resolve().parents[2] / "scripts" / "ensemble_predictions.py"
    res = subprocess.run([sys.executable, str(script), str(out), str(sharp), "--output", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "cli" / "report.json").read_text())["top1"] == ens["top1"]
    assert json.loads(res.stdout.splitlines()[-1])["top1"] == ens["top1"]
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "nothing"), "--output", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no predictions.jsonl" in res.stderr


def assert_view_logits(out: Path) -> None:
    """Every readable video's line holds its two views' logits, whose softmax averages to its probs."""
    lines = _lines(out)
    assert [x["index"] for x in lines] == list(range(N))
    for line in lines:
        if not line["valid"]:
            assert line["view_logits"] == []
            continue
        logits = torch.tensor(line["view_logits"])  # (V, C)
        assert torch.allclose(logits, torch.tensor(_logits(line["index"])), atol=1e-6)
        assert logits.softmax(dim=1).mean(dim=0).tolist() == pytest.approx(line["probs"], abs=1e-5)


def test_view_logits_are_kept_by_a_resume_and_a_rebuild(tmp_path: Path, reference: tuple[dict, Path]) -> None:
    out = tmp_path / "eval"
    with pytest.raises(Interrupted):  # videos 0-3 written, with their view logits
        _run(out, ViewLogits(fail_at=3), save_view_logits=True)
    assert [x["index"] for x in _lines(out)] == [0, 1, 2, 3] and all(x["view_logits"] for x in _lines(out))
    dataset = Videos()
    report = _run(out, ViewLogits(), dataset, save_view_logits=True)
    assert sorted(dataset.decoded) == [4, 5, 6, 7, 8]  # the saved ones were reused
    assert_same_results(report, reference[0], out, reference[1])  # view logits change no number
    assert_view_logits(out)
    assert json.loads((out / FINGERPRINT_FILE).read_text())["save_view_logits"] is True
    assert "save_view_logits" not in json.loads((reference[1] / FINGERPRINT_FILE).read_text())  # off: as before

    rebuilt = rebuild_report(out, output_dir=tmp_path / "rebuilt")
    assert rebuilt["top1"] == report["top1"] and rebuilt["loss"] == pytest.approx(report["loss"], abs=1e-5)
    assert (tmp_path / "rebuilt" / PREDICTIONS_FILE).read_bytes() == (out / PREDICTIONS_FILE).read_bytes()
    assert not any("view_logits" in r for r in read_predictions(out, view_logits=False))

    # one run with view logits, one without: the probabilities are averaged, the view logits dropped
    ens = ensemble_predictions([out, reference[1]], output_dir=tmp_path / "ens")
    assert ens["top1"] == report["top1"]  # the same weights twice
    assert not any("view_logits" in x for x in _lines(tmp_path / "ens"))


def test_turning_view_logits_on_or_off_starts_fresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every line of a run's predictions has view logits or none has: a changed setting reuses nothing."""
    out = tmp_path / "eval"
    with pytest.raises(Interrupted):
        _run(out, ViewLogits(fail_at=3))  # videos 0-3 saved without view logits
    for views in (True, False):
        dataset = Videos()
        caplog.clear()
        with caplog.at_level("WARNING", logger="videogn.engine.evaluator"):
            _run(out, ViewLogits(), dataset, save_view_logits=views)
        assert sorted(dataset.decoded) == list(range(N)), views
        assert "made with another save_view_logits" in caplog.text
        if views:
            assert_view_logits(out)
        else:
            assert not any("view_logits" in x for x in _lines(out))


# -- two gloo ranks ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out: str, fail_at: int | None, views: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from videogn.engine.distributed import init_distributed, shutdown_distributed

    info = init_distributed("cpu", "gloo")
    dataset = Videos()
    try:
        try:
            report = _run(Path(out), ViewLogits(fail_at=fail_at), dataset, save_view_logits=views, dist_info=info)
        except Interrupted:
            report = None
        (Path(out) / f"result_rank{rank}.json").write_text(json.dumps({"decoded": dataset.decoded, "report": report}))
    finally:
        shutdown_distributed()


def _spawn(out: Path, fail_at: int | None, views: bool = False) -> list[dict]:
    mp.spawn(_rank_worker, args=(2, _free_port(), str(out), fail_at, views), nprocs=2, join=True)
    results = [json.loads((out / f"result_rank{r}.json").read_text()) for r in range(2)]
    for r in range(2):
        (out / f"result_rank{r}.json").unlink()
    return results


@pytest.mark.ddp
def test_two_ranks_resume_their_shards_and_merge_one_report(tmp_path: Path, reference: tuple[dict, Path]) -> None:
    out = tmp_path / "eval"
    first = _spawn(out, fail_at=2)  # each rank finishes one batch of 2 videos, then dies
    assert all(r["report"] is None for r in first)
    saved = {x["index"] for f in ("predictions.rank0.jsonl", "predictions.rank1.jsonl")
             for x in map(json.loads, (out / f).read_text().splitlines())}
    assert len(saved) == 4 and not (out / PREDICTIONS_FILE).exists()

    second = _spawn(out, fail_at=None)
    decoded = [set(r["decoded"]) for r in second]
    assert not decoded[0] & decoded[1] and decoded[0] | decoded[1] == set(range(N)) - saved  # split, none redone
    assert second[0]["report"]["top1"] == second[1]["report"]["top1"]  # every rank returns the whole result
    assert sorted(p.name for p in out.glob("predictions*.jsonl")) == [PREDICTIONS_FILE]  # shards merged
    assert_same_results(second[0]["report"], reference[0], out, reference[1])


@pytest.mark.ddp
def test_a_two_rank_run_resumed_by_one_process(tmp_path: Path, reference: tuple[dict, Path]) -> None:
    """Another world size on the rerun: the shard files of the first are read, none is redone."""
    out = tmp_path / "eval"
    _spawn(out, fail_at=2)
    dataset = Videos()
    report = _run(out, ViewLogits(), dataset)
    assert len(dataset.decoded) == N - 4
    assert sorted(p.name for p in out.glob("predictions*.jsonl")) == [PREDICTIONS_FILE]
    assert_same_results(report, reference[0], out, reference[1])


@pytest.mark.ddp
def test_two_ranks_keep_view_logits_through_resume_and_merge(tmp_path: Path, reference: tuple[dict, Path]) -> None:
    out = tmp_path / "eval"
    _spawn(out, fail_at=2, views=True)
    shards = [json.loads(x) for f in ("predictions.rank0.jsonl", "predictions.rank1.jsonl")
              for x in (out / f).read_text().splitlines()]
    assert len(shards) == 4 and all("view_logits" in x for x in shards)
    second = _spawn(out, fail_at=None, views=True)
    assert sorted(p.name for p in out.glob("predictions*.jsonl")) == [PREDICTIONS_FILE]  # shards merged
    assert_same_results(second[0]["report"], reference[0], out, reference[1])
    assert_view_logits(out)

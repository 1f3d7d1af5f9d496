"""Multi-view evaluation on a case with a known answer: softmax (not logits) averaged over views,
unreadable videos listed and counted as misses, per-video predictions written as the batches
finish, a versioned report naming classes, the held-out loss, and no silent 0 %."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from videogn.config import ConfigError
from videogn.engine.evaluator import (
    PREDICTIONS_FILE, REPORT_SCHEMA_VERSION, EvalOptions, NoReadableVideosError, evaluate_dataset, predict,
)

NAMES = ["a", "b", "c"]
# Per video: the logits of its 2 views (the model reads them back from the pixels), its label and
# whether it decodes. Video 0: mean softmax picks class 1, mean logits would pick class 0.
VIDEOS = [
    ([[0.0, 5.0, 0.0], [4.0, -10.0, 3.9]], 1, True),
    ([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0]], 2, True),
    ([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], 1, True),  # wrong: predicts 0
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], 0, False),  # unreadable
]


def _probs(i: int) -> torch.Tensor:
    return torch.tensor(VIDEOS[i][0]).softmax(dim=1).mean(dim=0)  # (C,)


class ViewLogits(nn.Module):
    """logits = the value of each input channel (the dataset writes the wanted logits there)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)  # only declares the classifier's width (3 classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, T, H, W) -> (N, 3)
        return x[:, :, 0, 0, 0]


class FakeTestSet(torch.utils.data.Dataset):
    num_clips, num_crops, num_frames, stride, target_fps, test_scale, crop_size = 2, 1, 2, 1, None, 4, 4
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    summary = {"num_videos": len(VIDEOS)}
    missing: list = []

    def __init__(self, videos=VIDEOS) -> None:
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        views, label, ok = self.videos[i]
        video = torch.tensor(views)[:, :, None, None, None].expand(2, 3, 2, 4, 4).clone()  # (V, 3, T, H, W)
        return {"video": video, "label": label, "index": i, "path": f"v{i}.mp4", "valid": ok,
                "error": "" if ok else "moov atom not found"}


def test_softmax_is_averaged_over_views() -> None:
    preds = predict(ViewLogits(), FakeTestSet(), batch_size=3)
    expected = torch.stack([_probs(i) for i in range(3)])
    assert torch.allclose(preds.scores[:3], expected, atol=1e-6)
    assert preds.scores[:3].argmax(dim=1).tolist() == [1, 2, 0]
    assert preds.valid.tolist() == [True, True, True, False] and preds.indices.tolist() == [0, 1, 2, 3]
    assert torch.count_nonzero(preds.scores[3]) == 0


def test_report_numbers_and_files(tmp_path: Path) -> None:
    seen: list[int] = []

    class Spy(ViewLogits):  # records how many prediction lines are on disk when each batch starts
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = tmp_path / PREDICTIONS_FILE
            seen.append(len(f.read_text().splitlines()) if f.exists() else -1)
            return super().forward(x)

    result = evaluate_dataset(Spy(), FakeTestSet(), NAMES, EvalOptions(output_dir=tmp_path, extra={"step": 7}),
                              batch_size=2)
    assert seen == [0, 2]  # the first batch's two videos were written before the second batch ran
    report = result.report
    assert report["schema_version"] == REPORT_SCHEMA_VERSION == 1 and report["step"] == 7
    assert result.top1 == report["top1"] == pytest.approx(2 / 4)  # the unreadable video is a miss
    assert report["readable"]["top1"] == pytest.approx(2 / 3)
    assert report["per_class_accuracy"] == {"a": 0.0, "b": 0.5, "c": 1.0}
    assert report["mean_class_accuracy"] == pytest.approx(0.5)
    expected_loss = -sum(math.log(float(_probs(i)[VIDEOS[i][1]])) for i in range(3)) / 3
    assert result.loss == report["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert report["unreadable"] == [{"index": 3, "path": "v3.mp4", "error": "moov atom not found"}]
    assert report["protocol"]["views_per_video"] == 2 and "softmax" in report["protocol"]["aggregation"]
    # classes by name, not index
    assert [p["top5"][0] for p in report["predictions"][:3]] == ["b", "c", "a"] and report["predictions"][3]["top5"] == []
    assert [p["label"] for p in report["predictions"]] == ["b", "c", "b", "a"]

    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["top1"] == 0.5 and on_disk["schema_version"] == 1
    assert on_disk["files"] == {"report": "report.json", "confusion_matrix": "report_confusion_matrix.png",
                                "predictions": PREDICTIONS_FILE}
    assert (tmp_path / "report_confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    lines = [json.loads(x) for x in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    assert [x["index"] for x in lines] == [0, 1, 2, 3] and [x["label"] for x in lines] == ["b", "c", "b", "a"]
    assert lines[0]["probs"] == pytest.approx(_probs(0).tolist(), abs=1e-6) and lines[0]["valid"] is True
    assert lines[3] == {"index": 3, "path": "v3.mp4", "label": "a", "valid": False, "error": "moov atom not found",
                        "probs": []}


def test_no_files_and_a_subset(tmp_path: Path) -> None:
    """What validation during training needs: metrics and loss on a few videos, nothing written."""
    out = tmp_path / "out"
    result = evaluate_dataset(ViewLogits(), FakeTestSet(), NAMES, EvalOptions(subset=[1, 2]), batch_size=2)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert result.report["num_videos"] == 2 and result.top1 == pytest.approx(1 / 2)
    assert result.loss == pytest.approx(-(math.log(float(_probs(1)[2])) + math.log(float(_probs(2)[1]))) / 2, rel=1e-5)
    assert result.report["num_missing"] is None  # not counted for a subset


def test_no_readable_video_is_an_error_not_zero_percent(tmp_path: Path) -> None:
    dead = [(views, label, False) for views, label, _ in VIDEOS]
    with pytest.raises(NoReadableVideosError, match=r"not one of the 4 videos of the val split could be read.*v0\.mp4"):
        evaluate_dataset(ViewLogits(), FakeTestSet(dead), NAMES, EvalOptions(output_dir=tmp_path), batch_size=2)
    assert issubclass(NoReadableVideosError, ConfigError)  # the console scripts exit with status 2
    assert not (tmp_path / "report.json").exists()


def test_headline_counts_unreadable_as_misses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class OneMissing(FakeTestSet):
        missing = ["v3.mp4"]

    with caplog.at_level("INFO", logger="videogn.engine.evaluator"):
        evaluate_dataset(ViewLogits(), OneMissing(), NAMES, EvalOptions(output_dir=tmp_path), batch_size=4)
    headline = next(r.getMessage() for r in caplog.records if "top-1" in r.getMessage())
    assert "(4 videos, 1 unreadable: 1 file(s) missing, 0 failed to decode; counted as misses" in headline
    assert json.loads((tmp_path / "report.json").read_text())["num_missing"] == 1


def test_view_logits_are_the_views_that_were_averaged(tmp_path: Path) -> None:
    """``eval.save_view_logits``: each readable video's line holds its num_clips x num_crops views'
    logits, in view order, whose softmax averages to its ``probs``; off, the lines are as before."""
    preds = predict(ViewLogits(), FakeTestSet(), batch_size=3, view_logits=True)
    assert preds.view_logits is not None and preds.view_logits.shape == (4, 2, 3)  # (N, V, C)
    assert torch.equal(preds.view_logits[:3], torch.tensor([VIDEOS[i][0] for i in range(3)]))
    assert torch.count_nonzero(preds.view_logits[3]) == 0  # unreadable
    assert predict(ViewLogits(), FakeTestSet(), batch_size=3).view_logits is None

    on, off = tmp_path / "on", tmp_path / "off"
    with_views = evaluate_dataset(ViewLogits(), FakeTestSet(), NAMES, EvalOptions(output_dir=on), batch_size=2,
                                  save_view_logits=True)
    without = evaluate_dataset(ViewLogits(), FakeTestSet(), NAMES, EvalOptions(output_dir=off), batch_size=2)
    assert with_views.report["predictions"] == without.report["predictions"]
    lines = [json.loads(x) for x in (on / PREDICTIONS_FILE).read_text().splitlines()]
    views = FakeTestSet.num_clips * FakeTestSet.num_crops
    for i, line in enumerate(lines[:3]):
        logits = torch.tensor(line["view_logits"])
        assert logits.shape == (views, len(NAMES))
        assert line["view_logits"] == VIDEOS[i][0]  # the model's logits of each view, in view order
        assert logits.softmax(dim=1).mean(dim=0).tolist() == pytest.approx(line["probs"], abs=1e-5)
    assert lines[3]["view_logits"] == [] and lines[3]["probs"] == []

    # off: no field, and otherwise the same bytes as the lines with it
    off_lines = (off / PREDICTIONS_FILE).read_text().splitlines()
    assert all(set(json.loads(x)) == {"index", "path", "label", "valid", "error", "probs"} for x in off_lines)
    assert off_lines == [json.dumps({k: v for k, v in line.items() if k != "view_logits"}) for line in lines]

"""Multi-view evaluation on a case with a known answer: softmax (not logits) averaged over views,
unreadable videos listed and counted as misses, report written with a confusion-matrix PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from videogn.engine.evaluator import evaluate, predict, write_report

# Per video: the logits of its 2 views (the model reads them back from the pixels), its label and
# whether it decodes. Video 0: mean softmax picks class 1, mean logits would pick class 0.
VIDEOS = [
    ([[0.0, 5.0, 0.0], [4.0, -10.0, 3.9]], 1, True),
    ([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0]], 2, True),
    ([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], 1, True),  # wrong: predicts 0
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], 0, False),  # unreadable
]


class ViewLogits(nn.Module):
    """logits = the value of each input channel (the dataset writes the wanted logits there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, T, H, W) -> (N, 3)
        return x[:, :, 0, 0, 0]


class FakeTestSet(torch.utils.data.Dataset):
    num_clips, num_crops, num_frames, stride, target_fps, test_scale, crop_size = 2, 1, 2, 1, None, 4, 4
    summary = {"num_videos": len(VIDEOS)}

    def __len__(self) -> int:
        return len(VIDEOS)

    def __getitem__(self, i: int) -> dict:
        views, label, ok = VIDEOS[i]
        video = torch.tensor(views)[:, :, None, None, None].expand(2, 3, 2, 4, 4).clone()  # (V, 3, T, H, W)
        return {"video": video, "label": label, "index": i, "path": f"v{i}.mp4", "valid": ok,
                "error": "" if ok else "moov atom not found"}


def test_softmax_is_averaged_over_views() -> None:
    preds = predict(ViewLogits(), FakeTestSet(), batch_size=3)
    expected = torch.stack([torch.tensor(v).softmax(dim=1).mean(dim=0) for v, _, _ in VIDEOS[:3]])
    assert torch.allclose(preds.scores[:3], expected, atol=1e-6)
    assert preds.scores[:3].argmax(dim=1).tolist() == [1, 2, 0]
    assert preds.valid.tolist() == [True, True, True, False] and preds.indices.tolist() == [0, 1, 2, 3]
    assert torch.count_nonzero(preds.scores[3]) == 0


def test_report_numbers_and_files(tmp_path: Path) -> None:
    report = evaluate(ViewLogits(), FakeTestSet(), ["a", "b", "c"], batch_size=2, extra={"step": 7})
    assert report["step"] == 7
    assert report["top1"] == pytest.approx(2 / 4)  # the unreadable video is a miss
    assert report["readable"]["top1"] == pytest.approx(2 / 3)
    assert report["per_class_accuracy"] == {"a": 0.0, "b": 0.5, "c": 1.0}
    assert report["mean_class_accuracy"] == pytest.approx(0.5)
    assert report["unreadable"] == [{"index": 3, "path": "v3.mp4", "error": "moov atom not found"}]
    assert report["protocol"]["views_per_video"] == 2 and "softmax" in report["protocol"]["aggregation"]
    assert [p["top5"][0] for p in report["predictions"][:3]] == [1, 2, 0] and report["predictions"][3]["top5"] == []
    json_path, png = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["top1"] == 0.5
    assert png.read_bytes()[:4] == b"\x89PNG"

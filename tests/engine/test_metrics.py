"""Metrics on cases with a known answer; unreadable videos count as misses in the headline; the
held-out loss; the confusion-matrix figure the report and TensorBoard share."""

from __future__ import annotations

import math

import pytest
import torch

from videogn.engine.metrics import (
    classification_metrics, confusion_matrix, confusion_matrix_figure, mean_cross_entropy, save_confusion_matrix,
)

NAMES = ["a", "b", "c"]


def test_known_answer() -> None:
    # 6 videos, 3 classes. Rows: probabilities. Video 5 is unreadable (its row is ignored).
    scores = torch.tensor(
        [
            [0.7, 0.2, 0.1],  # label 0, top1 0 (hit)
            [0.1, 0.3, 0.6],  # label 0, top1 2 (miss; 0 is third)
            [0.2, 0.5, 0.3],  # label 1, hit
            [0.5, 0.4, 0.1],  # label 1, top1 0 (miss; top2 has 1)
            [0.1, 0.1, 0.8],  # label 2, hit
            [0.0, 0.0, 0.0],  # label 2, unreadable
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    valid = torch.tensor([True, True, True, True, True, False])
    m = classification_metrics(scores, labels, valid, NAMES, topk=(1, 2))
    assert m["num_videos"] == 6 and m["num_readable"] == 5 and m["num_unreadable"] == 1
    assert m["top1"] == pytest.approx(3 / 6)
    assert m["top2"] == pytest.approx(4 / 6)
    assert m["per_class_accuracy"] == {"a": 0.5, "b": 0.5, "c": 0.5}
    assert m["mean_class_accuracy"] == pytest.approx(0.5)
    r = m["readable"]
    assert r["top1"] == pytest.approx(3 / 5) and r["top2"] == pytest.approx(4 / 5)
    assert r["per_class_accuracy"] == {"a": 0.5, "b": 0.5, "c": 1.0}
    assert r["mean_class_accuracy"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]


def test_class_without_videos_is_left_out_of_the_mean() -> None:
    scores = torch.eye(3)[[0, 0, 1]]
    m = classification_metrics(scores, torch.tensor([0, 0, 1]), torch.ones(3, dtype=torch.bool), NAMES)
    assert m["per_class_accuracy"]["c"] is None and m["mean_class_accuracy"] == 1.0
    assert m["top5"] == 1.0  # top-k is capped at the number of classes


def test_all_unreadable() -> None:
    m = classification_metrics(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, dtype=torch.bool), NAMES)
    assert m["top1"] == 0.0 and math.isnan(m["readable"]["top1"])


def test_confusion_matrix_rows_true_cols_pred() -> None:
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([1, 1, 2, 2]), 3)
    assert cm.tolist() == [[0, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="class_names"):
        classification_metrics(torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(2, dtype=torch.bool), ["a"])


def test_mean_cross_entropy_over_readable_videos() -> None:
    scores = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2, 1])
    valid = torch.tensor([True, True, False])  # the unreadable row (all zeros) is left out
    assert mean_cross_entropy(scores, labels, valid) == pytest.approx((-math.log(0.5) - math.log(0.1)) / 2)
    assert math.isnan(mean_cross_entropy(scores, labels, torch.zeros(3, dtype=torch.bool)))
    # a probability that underflowed to 0 is bounded, not an infinite mean
    assert mean_cross_entropy(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), torch.tensor([True])) == pytest.approx(
        -math.log(1e-12))


def test_confusion_matrix_figure_and_png(tmp_path) -> None:
    fig = confusion_matrix_figure([[2, 0], [1, 1]], ["a", "b"], title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"] and ax.get_title() == "t"
    image = ax.images[0].get_array()
    assert image[1, 0] == pytest.approx(0.5) and image[0, 0] == pytest.approx(1.0)  # rows normalised
    png = save_confusion_matrix([[2, 0], [1, 1]], ["a", "b"], tmp_path / "sub" / "cm.png")
    assert png.read_bytes()[:4] == b"\x89PNG"

"""Clip sampling: train (random start), eval (K uniform clips), target fps, short-video rules."""

import numpy as np
import pytest
import torch

from videogn.data import clip_span, clip_step, eval_clip_indices, train_clip_indices


def test_step_and_span():
    assert clip_step(2) == 2.0
    assert clip_step(2, video_fps=30, target_fps=15) == pytest.approx(2.0)
    assert clip_step(1, video_fps=25, target_fps=10) == pytest.approx(2.5)
    assert clip_span(32, 2.0) == 63 and clip_span(1, 5.0) == 1
    with pytest.raises(ValueError, match="stride"):
        clip_step(0)
    with pytest.raises(ValueError, match="video_fps"):
        clip_step(1, video_fps=None, target_fps=10)


def test_train_clip_random_start_covers_range():
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(400):
        idx = train_clip_indices(100, 8, 2.0, generator=g)
        assert idx.shape == (8,) and idx.dtype == np.int64
        assert np.all(np.diff(idx) == 2) and idx.min() >= 0 and idx.max() < 100
        starts.add(int(idx[0]))
    assert min(starts) == 0 and max(starts) == 100 - 15  # every start in [0, n - span] reachable
    assert len(starts) > 60


def test_train_clip_fractional_step():
    idx = train_clip_indices(1000, 5, 2.5, generator=torch.Generator().manual_seed(1))
    assert (idx - idx[0]).tolist() == [0, 2, 5, 8, 10]  # round(k * 2.5), numpy rounds half to even


@pytest.mark.parametrize(
    "rule, expected",
    [("loop", [0, 2, 4, 6, 8, 0, 2, 4]), ("repeat_last", [0, 2, 4, 6, 8, 9, 9, 9])],
)
def test_short_video_rules(rule, expected):
    assert train_clip_indices(10, 8, 2.0, short_video=rule).tolist() == expected
    assert eval_clip_indices(10, 8, 2.0, 3, short_video=rule).tolist() == [expected] * 3


def test_eval_clips_uniform_and_deterministic():
    idx = eval_clip_indices(100, 4, 2.0, 10)
    assert idx.shape == (10, 4)
    starts = idx[:, 0]
    assert starts[0] == 0 and starts[-1] == 100 - clip_span(4, 2.0)
    assert np.all(np.abs(np.diff(starts) - (93 / 9)) <= 1)  # evenly spaced up to rounding
    assert np.array_equal(idx, eval_clip_indices(100, 4, 2.0, 10))
    assert eval_clip_indices(100, 4, 2.0, 1)[0, 0] == (100 - 7) // 2  # one clip: centred


@pytest.mark.parametrize("kwargs, match", [({"num_frames": 0}, "num_frames"), ({"short_video": "wrap"}, "short_video")])
def test_bad_arguments(kwargs, match):
    args = {"num_video_frames": 10, "num_frames": 4, "step": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        train_clip_indices(**args)

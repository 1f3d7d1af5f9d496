"""Several training clips per decode (``clips_per_decode`` K): the span and the clips' positions, the
item against a reference built from a whole-video decode, K = 1 unchanged, collate, and the batch
sampler through a DataLoader (clips per batch, videos per epoch, resume, ranks)."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from videogn.budget import ShapeBatchSampler, build_batch_sampler, fixed
from videogn.config import ConfigError
from videogn.config.schema import BudgetConfig, DataConfig
from videogn.data import (DECODE_SPAN_FACTOR, KineticsDataset, VideoReader, clip_span, collate_clips, decode_span,
                          train_clip_indices, train_clips_indices)
from videogn.data.transforms import apply_train_crop, sample_train_crop

T, STRIDE, CROP = 4, 2, 32
SMALL = dict(num_frames=T, stride=STRIDE, train_scale=(36, 44), crop_size=CROP, backend="pyav", dtype="uint8")
VIDEO_FRAMES = 40


@pytest.fixture(scope="module")
def videos(tmp_path_factory, video_factory):
    """8 videos of 40 frames (a span of 11 for 4 frames at stride 2), two classes."""
    root = tmp_path_factory.mktemp("k_videos")
    for c in ("a", "b"):
        for k in range(4):
            video_factory.make_video(root / c / f"{k}.mp4", num_frames=VIDEO_FRAMES, height=48, width=64, seed=k)
    return root


# -- where the clips are -----------------------------------------------------------------------------------


def test_decode_span_is_one_and_a_half_clips():
    assert DECODE_SPAN_FACTOR == 1.5
    assert decode_span(32, 2.0) == 95 and clip_span(32, 2.0) == 63  # the benchmark's clip
    assert decode_span(8, 2.0) == 23 and decode_span(4, 2.0) == 11


def test_clips_lie_in_one_span_at_independent_offsets_on_their_frame_lattice():
    g = torch.Generator().manual_seed(0)
    n, t, step = 300, 8, 2.0
    span, one = decode_span(t, step), clip_span(t, step)  # 23, 15
    firsts, offsets = set(), set()
    for _ in range(500):
        state = g.get_state()
        idx = train_clips_indices(n, t, step, 3, generator=g)
        assert idx.shape == (3, t) and idx.dtype == np.int64
        assert np.all(np.diff(idx, axis=1) == 2)  # each row a clip at the step
        # the first draw is the span's start; every clip lies inside that span
        first = int(torch.randint(0, n - span + 1, (1,), generator=torch.Generator().set_state(state)))
        assert first <= idx.min() and idx.max() <= first + span - 1
        firsts.add(first)
        offsets.update(int(s) - first for s in idx[:, 0])
    assert min(firsts) < 10 and max(firsts) > n - span - 10  # the span moves over the whole video
    # every offset on the clips' frame lattice reachable: 0, 2, .., 8 (overlapping clips share frames)
    assert offsets == set(range(0, span - one + 1, 2))


def test_short_videos_clamp_the_span():
    g = torch.Generator().manual_seed(1)
    # between a clip (15) and a span (23): the span is the whole video
    for _ in range(50):
        idx = train_clips_indices(20, 8, 2.0, 2, generator=g)
        assert idx.min() >= 0 and idx.max() <= 19 and np.all(np.diff(idx, axis=1) == 2)
    # shorter than a clip: every clip takes the short-video rule from frame 0
    for rule in ("loop", "repeat_last"):
        idx = train_clips_indices(10, 8, 2.0, 2, short_video=rule, generator=g)
        one = train_clip_indices(10, 8, 2.0, short_video=rule)
        assert np.array_equal(idx[0], one) and np.array_equal(idx[1], one)
    with pytest.raises(ValueError, match="num_clips must be an integer >= 1, got 0"):
        train_clips_indices(100, 8, 2.0, 0)


# -- the item ------------------------------------------------------------------------------------------------


def _reference(path, seed: int, k: int) -> tuple[torch.Tensor, np.ndarray, list]:
    """The clips an item should hold, made from a whole-video decode with the item's draws."""
    with VideoReader(path, backend="pyav") as vr:
        full = vr.get_frames(np.arange(len(vr)))  # (n, H, W, 3)
        n, (h, w) = len(vr), vr.frame_size
    torch.manual_seed(seed)
    if k == 1:
        idx = train_clip_indices(n, T, float(STRIDE))[None]
    else:
        idx = train_clips_indices(n, T, float(STRIDE), k)
    crops = [sample_train_crop(h, w, scale=SMALL["train_scale"], crop_size=CROP) for _ in range(k)]
    clips = [apply_train_crop(full[torch.from_numpy(i), c.top:c.top + c.height, c.left:c.left + c.width].contiguous(),
                              c, crop_size=CROP, normalized=False) for i, c in zip(idx, crops)]
    return torch.stack(clips), idx, crops


def test_two_clips_from_one_decode_match_the_reference(videos):
    ds = KineticsDataset(videos, clips_per_decode=2, **SMALL)
    both_differ = 0
    for seed in range(6):
        i = seed % len(ds)
        torch.manual_seed(seed)
        item = ds[(i, T, CROP)]
        assert item["video"].shape == (2, 3, T, CROP, CROP) and item["clips"] == 2 and item["valid"]
        expected, idx, crops = _reference(ds.records[i].path, seed, 2)
        assert torch.equal(item["video"], expected)
        assert idx.max() - idx.min() <= decode_span(T, STRIDE) - 1  # one span: 11 frames
        if idx[0, 0] != idx[1, 0] and crops[0].box != crops[1].box:
            both_differ += 1
            assert not torch.equal(item["video"][0], item["video"][1])
    assert both_differ >= 3  # each clip has its own offset and crop, not a copy of the other


def test_one_clip_per_decode_is_the_single_clip_path(videos):
    """K = 1 (the default) draws and decodes exactly as before the option: same clip for the same seed."""
    default = KineticsDataset(videos, **SMALL)
    one = KineticsDataset(videos, clips_per_decode=1, **SMALL)
    for seed in range(4):
        torch.manual_seed(seed)
        a = default[(seed, T, CROP)]
        torch.manual_seed(seed)
        b = one[(seed, T, CROP)]
        expected, _, _ = _reference(default.records[seed].path, seed, 1)
        assert "clips" not in a and a["video"].shape == (3, T, CROP, CROP)
        assert torch.equal(a["video"], expected[0]) and torch.equal(b["video"], expected[0])


def test_float_and_channels_last_clips_keep_the_single_clip_layout(videos):
    for channels_last in (False, True):
        kw = SMALL | {"dtype": "float32", "channels_last": channels_last}
        ds1 = KineticsDataset(videos, **kw)
        ds2 = KineticsDataset(videos, clips_per_decode=2, **kw)
        one, two = ds1[0]["video"], ds2[0]["video"]
        assert two.dtype == one.dtype == torch.float32
        assert (two[0].stride(0) == 1) == (one.stride(0) == 1) == channels_last


def test_clips_per_decode_argument_errors(videos):
    with pytest.raises(ValueError, match="clips_per_decode must be an int >= 1, got 0"):
        KineticsDataset(videos, clips_per_decode=0, **SMALL)
    with pytest.raises(ValueError, match="clips_per_decode is for train mode"):
        KineticsDataset(videos, mode="test", clips_per_decode=2, **SMALL)
    with pytest.raises(ConfigError, match="data.clips_per_decode"):
        DataConfig(clips_per_decode=0)


def test_collate_gives_each_clip_a_row(videos):
    ds = KineticsDataset(videos, clips_per_decode=3, **SMALL)
    items = [ds[i] for i in (0, 5)]
    items[1]["replaced"] = [("gone.mp4", "file not found")]
    batch = collate_clips(items)
    assert batch["video"].shape == (6, 3, T, CROP, CROP)
    assert torch.equal(batch["video"][3:], items[1]["video"])
    assert batch["index"].tolist() == [0, 0, 0, 5, 5, 5]
    assert batch["label"].tolist() == [items[0]["label"]] * 3 + [items[1]["label"]] * 3
    assert batch["path"] == [items[0]["path"]] * 3 + [items[1]["path"]] * 3
    assert batch["valid"].all() and batch["replaced"] == [("gone.mp4", "file not found")]  # once, not per clip
    assert batch["video"].is_contiguous(memory_format=torch.channels_last_3d)  # uint8 clips: C innermost, as K = 1
    single = KineticsDataset(videos, **SMALL)[0]
    with pytest.raises(ValueError, match=r"same number of clips, got clips=\[1, 3\]"):
        collate_clips([items[0], single])


# -- through the batch sampler and a DataLoader -----------------------------------------------------------------


def _loader(ds, sampler, workers=0):
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_clips, num_workers=workers)


def test_batches_hold_b_clips_from_b_over_k_videos_and_an_epoch_is_one_pass(videos):
    ds = KineticsDataset(videos, clips_per_decode=2, **SMALL)
    sampler = ShapeBatchSampler(ds, fixed(T, CROP, 4), seed=0)  # B = 4 clips: 2 videos per batch
    assert sampler.clips_per_decode == 2 and sampler.num_batches() == 4  # 8 videos / 2 per batch
    seen = []
    for batch, entries in zip(_loader(ds, sampler, workers=1), sampler):
        assert batch["video"].shape == (4, 3, T, CROP, CROP)
        videos_in = [i for i, _, _ in entries]
        assert len(videos_in) == 2 and batch["index"].tolist() == [v for v in videos_in for _ in range(2)]
        seen += videos_in
    assert sorted(seen) == list(range(8))  # every video once per epoch, 2 clips each


def test_resume_mid_epoch_and_ranks_with_several_clips(videos):
    ds = KineticsDataset(videos, clips_per_decode=2, **SMALL)
    per_rank = []
    for rank in range(2):
        full = ShapeBatchSampler(ds, fixed(T, CROP, 2), world_size=2, rank=rank, seed=5)  # 1 video per rank and step
        full.set_epoch(1)
        expected = [b["index"].tolist() for b in _loader(ds, full)]
        assert len(expected) == 4 and all(len(ix) == 2 and ix[0] == ix[1] for ix in expected)
        resumed = ShapeBatchSampler(ds, fixed(T, CROP, 2), world_size=2, rank=rank, seed=5)
        resumed.check_resumable(full.state_dict())
        resumed.set_epoch(1, skip=3)
        assert [b["index"].tolist() for b in _loader(ds, resumed)] == expected[3:]
        per_rank.append({ix[0] for ix in expected})
    assert per_rank[0].isdisjoint(per_rank[1]) and per_rank[0] | per_rank[1] == set(range(8))


def test_batch_size_must_be_a_multiple_of_the_clips_per_decode(videos):
    ds = KineticsDataset(videos, clips_per_decode=2, **SMALL)
    with pytest.raises(ValueError, match=r"batch_size=3 .* must be a multiple of clips_per_decode=2 "
                                         r"\(budget\.batch_size counts clips, data\.clips_per_decode of them"):
        build_batch_sampler(ds, BudgetConfig(num_frames=T, batch_size=3), rank=0, world_size=1, seed=0, epochs=1)
    with pytest.raises(ValueError, match="clips_per_decode=1 differs from the dataset's clips_per_decode=2"):
        ShapeBatchSampler(ds, fixed(T, CROP, 4), clips_per_decode=1)


# -- the trainer: data.clips_per_decode from the config ------------------------------------------------------------


def test_training_run_counts_clips_per_step_and_videos_per_epoch(compose, tmp_path):
    from videogn.config import validate
    from videogn.engine.preflight import PreflightError, check_training_run
    from videogn.engine.trainer import Trainer

    # experiment=tiny: 12 training videos, batches of 2 clips (K = 2: one video a step)
    conf = validate(compose("train", "data.clips_per_decode=2", "trainer.max_steps=2", "trainer.checkpoint_every=100",
                            "trainer.eval_after_train=false", tiny=True))
    trainer = Trainer(conf, tmp_path / "run")
    assert trainer.train_set.clips_per_decode == 2 and trainer.batch_sampler.clips_per_decode == 2
    assert trainer.batch_sampler.num_batches(0) == 12  # one pass over 12 videos, 1 a step (6 steps with K = 1)
    trainer.fit()
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = f.read().splitlines()
    header = rows[0].split(",")
    assert [r.split(",")[header.index("B")] for r in rows[1:]] == ["2", "2"]  # B counts clips
    bad = validate(compose("train", "data.clips_per_decode=2", "budget.batch_size=3", tiny=True))
    with pytest.raises(PreflightError, match=r"budget\.batch_size.*multiple of data\.clips_per_decode=2"):
        check_training_run(bad)


@pytest.mark.slow
def test_bench_loader_measures_each_clips_per_decode(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_loader.py"
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--num-frames", "8", "--workers", "1", "--sets", "nob",  # 16 clips
         "--backends", "pyav", "--pipelines", "videogn", "--clips-per-decode", "1", "2",
         "--cache", str(tmp_path / "videos"), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {r["clips_per_decode"]: r for r in json.loads(out.read_text())["results"]}
    assert sorted(results) == [1, 2]
    assert results[1]["clips_timed"] == results[2]["clips_timed"] == 12  # clips, not videos: 3 batches of 4 after the first
    assert results[2]["speedup_vs_one_clip_per_decode"] > 0 and results[2]["clips_per_cpu_s"] > 0
    assert "clips_per_decode=2" in proc.stdout
    bad = subprocess.run([sys.executable, str(script), "--clips-per-decode", "3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--clips-per-decode 3: K must be >= 1 and divide --batch-size=4" in bad.stderr


def test_offsets_at_a_fractional_step_stay_inside_the_span():
    g = torch.Generator().manual_seed(3)
    step = 30 / 12.5  # a 30 fps video sampled at 12.5 fps: 2.4 frames per clip frame
    span, one = decode_span(8, step), clip_span(8, step)
    for _ in range(200):
        idx = train_clips_indices(400, 8, step, 2, generator=g)
        assert idx.max() - idx.min() <= span - 1
        assert np.all(idx[:, -1] - idx[:, 0] == one - 1)

"""data.cache_decoded (videogn.data.clip_cache): a dataset reading through the decoded cache gives
exactly the clips it gives decoding each time, in train and test mode; the cache is built once."""

from __future__ import annotations

import os

import torch

from videogn.data import KineticsDataset
from videogn.data.clip_cache import DecodedCache, attach_decoded_cache
from videogn.data.synthetic import ensure_synthetic_dataset
from videogn.defaults import SyntheticSpec


def _datasets(tmp_path, mode):
    spec = SyntheticSpec(task="blink", num_classes=4, frames=16, train_per_class=2, val_per_class=1)
    root = ensure_synthetic_dataset(spec, tmp_path / "data")
    kwargs = dict(mode=mode, num_frames=4, stride=2, train_scale=(32, 40), crop_size=28, test_scale=32,
                  num_clips=2, backend="pyav", dtype="uint8")
    plain = KineticsDataset(root / "train", root / "annotations" / "train.csv", **kwargs)
    cached = KineticsDataset(root / "train", root / "annotations" / "train.csv", **kwargs)
    cache = attach_decoded_cache(cached, tmp_path / "decoded")
    return plain, cached, cache


def test_cached_and_uncached_train_clips_are_identical(tmp_path):
    plain, cached, cache = _datasets(tmp_path, "train")
    assert len(cache) == len(plain) == 8
    for i in range(len(plain)):
        torch.manual_seed(i)  # the clip start and the crop/scale jitter
        a = plain[i]
        torch.manual_seed(i)
        b = cached[i]
        assert a["video"].shape == (3, 4, 28, 28) and torch.equal(a["video"], b["video"])
        assert a["label"] == b["label"]


def test_cached_and_uncached_test_views_are_identical_and_the_cache_is_reused(tmp_path):
    plain, cached, cache = _datasets(tmp_path, "test")
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a["valid"] and b["valid"] and torch.equal(a["video"], b["video"])
    # a second build over the same files finds the same folder and does not rewrite it
    stamp = os.stat(cache.folder / "frames.u8").st_mtime_ns
    again = DecodedCache.build([r.path for r in plain.records], backend="pyav", cache_dir=tmp_path / "decoded")
    assert again.folder == cache.folder and os.stat(again.folder / "frames.u8").st_mtime_ns == stamp
    # the reader serves frames without the decoder (the file is not opened again)
    reader = cache.reader(plain.records[0].path)
    assert reader is not None and len(reader) == 16 and reader.frame_size == (32, 32)


def test_a_missing_video_is_read_the_usual_way(tmp_path):
    plain, cached, cache = _datasets(tmp_path, "test")
    assert cache.reader(tmp_path / "not-a-video.mp4") is None


def test_the_config_option_attaches_the_cache_beside_the_built_in_dataset(compose, synthetic_cache):
    from videogn.config import validate
    from videogn.engine.build import build_dataset, resolve_data

    conf = validate(compose("train", "data.cache_decoded=true", tiny=True))
    sources = resolve_data(conf.data)
    ds = build_dataset(conf.data, conf.budget, sources, "train", mode="train")
    assert ds.frame_cache is not None and len(ds.frame_cache) == len(ds)
    assert ds.frame_cache.folder.parent == synthetic_cache / "decoded"
    off = validate(compose("train", tiny=True))
    assert build_dataset(off.data, off.budget, sources, "train", mode="train").frame_cache is None


def test_the_cache_pickles_without_its_frames_for_loader_workers(tmp_path):
    import pickle

    plain, cached, cache = _datasets(tmp_path, "test")
    cache.reader(plain.records[0].path)  # opens the memory map in this process
    blob = pickle.dumps(cache)
    assert len(blob) < (cache.folder / "frames.u8").stat().st_size / 10
    copy = pickle.loads(blob)
    path = plain.records[1].path
    assert torch.equal(copy.reader(path).get_frames([0, 3]), cache.reader(path).get_frames([0, 3]))

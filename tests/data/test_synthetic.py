"""The built-in dataset: deterministic, atomic, safe under concurrent first use, read by the
Kinetics loader, and its classes are time reverses of each other (no single frame decides)."""

from __future__ import annotations

import csv
import dataclasses
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from videogn.data import KineticsDataset
from videogn.data import synthetic as syn

SMALL = syn.SyntheticSpec(num_classes=4, train_per_class=2, val_per_class=1, frames=8, size=16)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = syn.ensure_synthetic_dataset(SMALL, tmp_path / "a")
    b = syn.ensure_synthetic_dataset(SMALL, tmp_path / "b")
    assert a.name == b.name and _files(a) == _files(b)
    other = syn.ensure_synthetic_dataset(dataclasses.replace(SMALL, seed=1), tmp_path / "a")
    assert other != a and _files(other) != _files(a)


def test_layout_and_kinetics_loader(tmp_path: Path) -> None:
    root = syn.ensure_synthetic_dataset(SMALL, tmp_path)
    with open(root / "annotations" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label", "youtube_id", "time_start", "time_end", "split"]
    assert [r["label"] for r in rows[:4]] == ["move_right", "move_left", "move_down", "move_up"]
    assert len(rows) == 8 and all(r["split"] == "train" for r in rows)
    ds = KineticsDataset(root / "train", root / "annotations" / "train.csv", mode="train", num_frames=4, stride=2,
                         train_scale=(16, 16), crop_size=16, flip=False,
                         class_index={c: i for i, c in enumerate(SMALL.classes)})
    assert len(ds) == 8 and ds.summary["num_missing"] == 0
    item = ds[0]
    assert item["valid"] and item["video"].shape == (3, 4, 16, 16) and item["label"] == 0


def _generate(cache: str, q) -> None:
    q.put(str(syn.ensure_synthetic_dataset(SMALL, cache)))


def test_concurrent_first_use_generates_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_generate, args=(str(tmp_path), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    roots = {q.get(timeout=5) for _ in procs}
    assert len(roots) == 1 and all(p.exitcode == 0 for p in procs)
    # one finished dataset, no temporary folders left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [Path(roots.pop()).name]


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = syn.write_video

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(syn, "write_video", flaky)
    with pytest.raises(OSError, match="disk full"):
        syn.ensure_synthetic_dataset(SMALL, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]
    monkeypatch.setattr(syn, "write_video", real)
    root = syn.ensure_synthetic_dataset(SMALL, tmp_path)
    assert (root / "DONE").is_file() and len(list((root / "train").glob("*.mp4"))) == 8


@pytest.mark.parametrize(
    "motion,twin",
    [("move_right", "move_left"), ("move_down", "move_up"), ("grow", "shrink"), ("orbit_clockwise", "orbit_counterclockwise")],
)
def test_each_class_is_the_time_reverse_of_its_twin(motion: str, twin: str) -> None:
    spec = dataclasses.replace(SMALL, num_classes=8, size=32, frames=12, noise=0.0)
    for k in range(3):
        p = syn.sample_clip_params(spec, motion, np.random.default_rng(k))
        forward = syn.render_clip(p, spec.frames, spec.size)
        backward = syn.render_clip(dataclasses.replace(p, motion=twin), spec.frames, spec.size)
        assert np.array_equal(forward[::-1], backward)  # same frames, opposite order
        assert not np.array_equal(forward, backward)  # but a different clip


def test_objects_are_visible_and_move() -> None:
    spec = dataclasses.replace(SMALL, size=32, frames=12, noise=0.0)
    for motion in syn.MOTIONS:
        p = syn.sample_clip_params(spec, motion, np.random.default_rng(0))
        clip = syn.render_clip(p, spec.frames, spec.size).astype(np.int16)
        bg = np.round(np.asarray(p.background) * 255)
        obj = (np.abs(clip - bg).sum(-1) > 30)  # (T, H, W) object pixels
        assert obj.sum(axis=(1, 2)).min() > 4, motion
        assert np.abs(np.diff(clip, axis=0)).sum() > 0, motion


@pytest.mark.parametrize(
    "field,value", [("num_classes", 1), ("num_classes", 9), ("size", 15), ("frames", 1), ("noise", 2.0), ("train_per_class", 0)]
)
def test_bad_spec_names_field_and_value(field: str, value) -> None:
    with pytest.raises(ValueError, match=rf"{field} must .* got {value!r}"):
        syn.SyntheticSpec(**{field: value})


def test_same_spec_gives_identical_files_back_to_back(tmp_path: Path) -> None:
    # Clips shorter than x264's rate-control lookahead (40 frames), as the default spec's 20: the
    # encoder's end-of-stream lookahead (macroblock tree) read memory left from earlier work, so a
    # second generation in the same process differed in some clips (see encode.write_video).
    spec = syn.SyntheticSpec(num_classes=4, train_per_class=5, val_per_class=1, frames=20, size=32, noise=0.02)
    a = _files(syn.ensure_synthetic_dataset(spec, tmp_path / "a"))
    b = _files(syn.ensure_synthetic_dataset(spec, tmp_path / "b"))
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".mp4")]) == 24
    assert [k for k in a if a[k] != b[k]] == []
    # the mechanism, checkable on a quiet machine too: x264 records its settings in every file
    video = next(v for k, v in a.items() if k.endswith(".mp4"))
    settings = video[video.index(b"x264 - core"):].split(b"\x00", 1)[0].decode("latin-1")
    assert " mbtree=0 " in settings and " threads=1 " in settings


def test_class_index_written_with_the_data(tmp_path: Path) -> None:
    # the spec's class order (not the sorted labels) reaches a dataset built without class_index
    root = syn.ensure_synthetic_dataset(SMALL, tmp_path)
    ds = KineticsDataset(root / "val", root / "annotations" / "val.csv", mode="test", num_clips=1, num_frames=4,
                         test_scale=16, crop_size=16)
    assert ds.classes == SMALL.classes != sorted(SMALL.classes)
    assert ds.class_index_path == root / "annotations" / "classes.json"


# ---- task="tempo": classes by how often a pan reverses ----------------------------------------

TEMPO = syn.SyntheticSpec(task="tempo", num_classes=8, train_per_class=1, val_per_class=1, frames=40, size=32, noise=0.0)


def _pan_shift(clip: np.ndarray, axis: int) -> np.ndarray:
    """Per-frame displacement (whole pixels, on the torus) that best maps frame 0 onto each frame."""
    ref = clip[0].astype(np.float32)
    size = clip.shape[1]
    return np.array([min(range(size), key=lambda k: np.abs(np.roll(ref, k, axis) - f).mean()) for f in clip.astype(np.float32)])


@pytest.mark.parametrize("cls", list(syn.TEMPO_CLASSES))
def test_tempo_pan_reverses_every_interval_frames(cls: str) -> None:
    interval = syn.REVERSAL_INTERVALS[syn.TEMPO_CLASSES.index(cls)]
    p = syn.sample_clip_params(TEMPO, cls, np.random.default_rng(3))
    p = dataclasses.replace(p, velocity=2.0, phase=0.0, direction=1.0)  # whole-pixel steps from a reversal
    clip = syn.render_clip(p, TEMPO.frames, TEMPO.size)
    shift = _pan_shift(clip, p.axis + 0)  # array axis of (H, W, 3) frames: 0 rows, 1 columns
    step = (np.diff(shift) + TEMPO.size // 2) % TEMPO.size - TEMPO.size // 2  # signed, unwrapped
    expected = np.array([2 if (t // interval) % 2 == 0 else -2 for t in range(TEMPO.frames - 1)])
    assert np.array_equal(step, expected)


def test_tempo_no_frame_or_frame_pair_tells_the_class() -> None:
    # the look (texture, speed, direction, axis, phase) is drawn the same way for every class:
    # the same random stream gives the same first frame and the same first step for two classes
    a = syn.sample_clip_params(TEMPO, "reverse_every_16", np.random.default_rng(7))
    b = syn.sample_clip_params(TEMPO, "reverse_every_23", np.random.default_rng(7))
    assert dataclasses.replace(a, motion=b.motion, phase=b.phase) == b
    ca = syn.render_clip(dataclasses.replace(a, phase=0.0), 40, 32)
    cb = syn.render_clip(dataclasses.replace(b, phase=0.0), 40, 32)
    assert np.array_equal(ca[:17], cb[:17]) and not np.array_equal(ca, cb)  # they part at the first reversal


def test_tempo_spec_classes_cache_key_and_bad_task(tmp_path: Path) -> None:
    assert TEMPO.classes == [f"reverse_every_{r}" for r in syn.REVERSAL_INTERVALS]
    assert TEMPO.key() != dataclasses.replace(TEMPO, task="motion").key()
    # the motion task keeps the cache key it had before tasks existed (no regeneration for users)
    assert syn.SyntheticSpec().key() == "1a6d7a8bc424"
    with pytest.raises(ValueError, match=r"task must be one of \['blink', 'motion', 'tempo'\], got 'pan'"):
        syn.SyntheticSpec(task="pan")
    with pytest.raises(ValueError, match="num_classes must be in"):
        syn.SyntheticSpec(task="tempo", num_classes=9)
    root = syn.ensure_synthetic_dataset(dataclasses.replace(TEMPO, num_classes=3, frames=12), tmp_path)
    rows = (root / "annotations" / "train.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["reverse_every_2", "reverse_every_3", "reverse_every_4"]

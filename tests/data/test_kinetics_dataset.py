"""Kinetics annotations (official CSV, list file, folder-per-class), the clip dataset in train and
test mode, bad-file handling (also with DataLoader workers), collate, seeding, DistributedSampler."""

import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from videogn.data import (KineticsDataset, MissingVideo, build_kinetics_index, collate_clips, load_annotations,
                          make_worker_init_fn, read_kinetics_csv, read_list_file, write_class_index,
                          write_missing_videos, write_video)

CLASSES = ["abseiling", "passing American football (in game)", "zumba"]
SMALL = dict(num_frames=4, stride=2, train_scale=(32, 40), crop_size=32, test_scale=32)


def _row(label, yid, t0, split):
    return f'"{label}",{yid},{t0},{t0 + 10},{split},0\n'


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory, video_factory):
    """Official layout: annotations/{train,validate}.csv; videos/<split>/<label>/<id>_<start>_<end>.mp4.
    One train row has no file (missing), one file is corrupt."""
    base = tmp_path_factory.mktemp("kinetics")
    ann = base / "annotations"
    ann.mkdir()
    train_rows, val_rows = [], []
    for c, label in enumerate(CLASSES):
        for k in range(3):
            train_rows.append((label, f"tr{c}x{k}abcde", 10 * k, "train"))
        val_rows.append((label, f"va{c}xyzabcd", 5, "val"))
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    (ann / "train.csv").write_text(header + "".join(_row(*r) for r in train_rows))
    (ann / "validate.csv").write_text(header + "".join(_row(*r) for r in val_rows))
    videos = base / "videos"
    for i, (label, yid, t0, split) in enumerate(train_rows + val_rows):
        if yid == "tr0x1abcde":
            continue  # missing
        path = videos / split / label / f"{yid}_{t0:06d}_{t0 + 10:06d}.mp4"
        video_factory.make_video(path, num_frames=12 + 2 * i, height=48, width=64, seed=i)
    bad = videos / "train" / "zumba" / "tr2x2abcde_000020_000030.mp4"
    bad.write_bytes(b"not a video" * 100)
    return {"base": base, "train_csv": ann / "train.csv", "val_csv": ann / "validate.csv", "videos": videos, "bad": bad}


def test_read_csv_and_splits(kinetics):
    rows = read_kinetics_csv(kinetics["train_csv"])
    assert len(rows) == 9 and rows[3]["label"] == CLASSES[1] and rows[3]["time_end"] == 10
    assert len(read_kinetics_csv(kinetics["val_csv"], split="validate")) == 3
    assert len(read_kinetics_csv(kinetics["val_csv"], split="val")) == 3  # alias
    assert read_kinetics_csv(kinetics["train_csv"], split="val") == []


def test_read_csv_rejects_other_tables(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a Kinetics CSV"):
        read_kinetics_csv(p)


def test_dataset_from_csv(kinetics):
    ds = KineticsDataset(kinetics["videos"], kinetics["train_csv"], split="train", **SMALL)
    assert ds.classes == sorted(CLASSES) and ds.num_classes == 3
    s = ds.summary
    assert s["num_missing"] == 1 and s["missing"] == ["tr0x1abcde_000010_000020.mp4"]
    assert len(ds) == 8 and s["num_videos"] == 8 and s["num_annotated"] == 9
    # the missing row is named with where it was looked for
    assert ds.missing == [MissingVideo("tr0x1abcde_000010_000020.mp4",
                                       kinetics["videos"] / "tr0x1abcde_000010_000020.mp4", 0)]
    # constructors write nothing: the class index is derived (sorted labels) and shared explicitly
    assert not (kinetics["train_csv"].parent / "classes.json").exists() and ds.class_index_path is None
    val = KineticsDataset(kinetics["videos"], kinetics["val_csv"], mode="test", num_clips=2,
                          class_index=ds.class_to_idx, **SMALL)
    assert val.classes == ds.classes and len(val) == 3 and val.missing == []
    item = ds[0]
    assert item["video"].shape == (3, 4, 32, 32) and item["valid"] and item["error"] == ""
    assert item["label"] == ds.classes.index("abseiling")


def test_build_index_script_roundtrip(kinetics, tmp_path):
    out = tmp_path / "index"
    summary = build_kinetics_index([kinetics["train_csv"], kinetics["val_csv"]], kinetics["videos"], out)
    assert summary["train"] == {"rows": 9, "found": 8, "missing": 1}
    assert summary["validate"] == {"rows": 3, "found": 3, "missing": 0}
    assert (out / "train_missing.txt").read_text().splitlines() == [
        f"tr0x1abcde_000010_000020.mp4\t{kinetics['videos'] / 'tr0x1abcde_000010_000020.mp4'}"]
    assert (out / "validate_missing.txt").read_text() == ""
    pairs = read_list_file(out / "train.txt")
    assert len(pairs) == 8 and pairs[0][0].startswith("train/")
    ds = KineticsDataset(kinetics["videos"], out / "train.txt", **SMALL)  # picks classes.json beside it
    assert ds.classes == sorted(CLASSES) and len(ds) == 8


def test_list_file_parsing(tmp_path, good_videos):
    root = tmp_path / "root"
    (root / "sub dir").mkdir(parents=True)
    shutil.copy(good_videos["h264_nob.mp4"], root / "sub dir" / "a b.mp4")
    shutil.copy(good_videos["mpeg4.mp4"], root / "c.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nsub dir/a b.mp4 1\n\nc.mp4 0\ngone.mp4 2\n")
    assert read_list_file(lst) == [("sub dir/a b.mp4", 1), ("c.mp4", 0), ("gone.mp4", 2)]
    ds = KineticsDataset(root, lst, **SMALL)
    assert len(ds) == 2 and ds.num_classes == 3 and ds.summary["missing"] == ["gone.mp4"]
    assert [ds[i]["label"] for i in range(2)] == [1, 0]
    bad = tmp_path / "bad.txt"
    bad.write_text("c.mp4 zero\n")
    with pytest.raises(ValueError, match="bad.txt:1: label must be an integer"):
        read_list_file(bad)


def test_folder_per_class_and_index_tuples(tmp_path, video_factory):
    for c in ["b_class", "a_class"]:
        for k in range(2):
            video_factory.make_video(tmp_path / c / f"{k}.mp4", num_frames=10 + k, seed=k)
    ds = KineticsDataset(tmp_path, **SMALL)
    assert ds.classes == ["a_class", "b_class"] and len(ds) == 4
    assert [ds[i]["label"] for i in range(4)] == [0, 0, 1, 1]
    assert not (tmp_path / "classes.json").exists()  # derived, not written
    assert ds[(1, 6)]["video"].shape == (3, 6, 32, 32)          # (index, num_frames)
    assert ds[(1, 2, 24)]["video"].shape == (3, 2, 24, 24)      # (index, num_frames, crop_size)
    with pytest.raises(IndexError):
        ds[4]


def test_test_mode_views_deterministic(kinetics):
    ds = KineticsDataset(kinetics["videos"], kinetics["val_csv"], mode="test", num_clips=3, num_crops=3,
                         **(SMALL | {"crop_size": 32}))
    a, b = ds[1], ds[1]
    assert a["video"].shape == (9, 3, 4, 32, 32) and a["valid"]
    assert torch.equal(a["video"], b["video"])


def test_test_mode_never_replaces_bad_or_missing(kinetics):
    ds = KineticsDataset(kinetics["videos"], kinetics["train_csv"], mode="test", num_clips=2, **SMALL)
    assert len(ds) == 9  # the missing file stays in the evaluation set
    items = [ds[i] for i in range(len(ds))]
    invalid = {it["path"]: it["error"] for it in items if not it["valid"]}
    assert "cannot decode video" in invalid[str(kinetics["bad"])]
    assert any("tr0x1abcde" in p and "file not found" in e for p, e in invalid.items())
    assert len(invalid) == 2
    for it in items:
        assert it["video"].shape == (2, 3, 4, 32, 32)
        if not it["valid"]:
            assert not it["video"].any()


def test_train_replaces_and_logs_bad_video(kinetics, tmp_path):
    log = tmp_path / "run" / "bad_videos.txt"
    ds = KineticsDataset(kinetics["videos"], kinetics["train_csv"], bad_video_log=log, **SMALL)
    bad_index = next(i for i, r in enumerate(ds.records) if r.path == kinetics["bad"])
    item = ds[bad_index]
    assert item["valid"] and item["index"] != bad_index and item["path"] != str(kinetics["bad"])
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith(str(kinetics["bad"]) + "\t") for line in lines)
    assert "cannot decode video" in lines[0]


def test_train_gives_up_after_max_retries(tmp_path):
    (tmp_path / "c").mkdir()
    for k in range(3):
        (tmp_path / "c" / f"{k}.mp4").write_bytes(b"")
    ds = KineticsDataset(tmp_path, max_retries=4, **SMALL)
    with pytest.raises(RuntimeError, match=r"5 consecutive videos failed.*max_retries=4.*empty file"):
        ds[0]


@pytest.mark.parametrize("mode", ["train", "test"])
def test_dataloader_workers_with_bad_files(kinetics, tmp_path, mode):
    log = tmp_path / "bad.txt"
    ds = KineticsDataset(kinetics["videos"], kinetics["train_csv"], mode=mode, num_clips=2, bad_video_log=log,
                         **SMALL)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_clips,
                        worker_init_fn=make_worker_init_fn(123), shuffle=(mode == "train"),
                        generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    valid = torch.cat([b["valid"] for b in batches])
    assert sum(len(b["path"]) for b in batches) == len(ds)
    if mode == "train":
        assert valid.all() and batches[0]["video"].shape == (4, 3, 4, 32, 32)
        assert str(kinetics["bad"]) in log.read_text()
    else:
        assert int((~valid).sum()) == 2 and batches[0]["video"].shape == (4, 2, 3, 4, 32, 32)
        errors = [e for b in batches for e in b["error"] if e]
        assert len(errors) == 2 and not log.exists()


def test_collate(kinetics):
    ds = KineticsDataset(kinetics["videos"], kinetics["val_csv"], channels_last=True, **SMALL)
    batch = collate_clips([ds[0], ds[1]])
    assert batch["video"].shape == (2, 3, 4, 32, 32)
    assert batch["video"].is_contiguous(memory_format=torch.channels_last_3d)
    assert batch["label"].dtype == torch.int64 and batch["valid"].dtype == torch.bool
    with pytest.raises(ValueError, match="one clip length per batch"):
        collate_clips([ds[(0, 4)], ds[(1, 6)]])
    with pytest.raises(ValueError, match="empty"):
        collate_clips([])


def test_worker_seeds_mix_rank_and_worker():
    def state(base, rank, wid):
        torch.manual_seed(99)  # what DataLoader does before calling the init fn
        make_worker_init_fn(base, rank)(wid)
        return (torch.rand(1).item(), np.random.rand(), __import__("random").random())

    a = state(0, 0, 0)
    assert a == state(0, 0, 0)
    assert len({a, state(0, 0, 1), state(0, 1, 0), state(1, 0, 0)}) == 4
    with pytest.raises(ValueError, match="rank"):
        make_worker_init_fn(0, -1)


def test_distributed_sampler_partitions(kinetics):
    ds = KineticsDataset(kinetics["videos"], kinetics["train_csv"], **SMALL)
    parts = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 4
    assert sorted(parts[0] + parts[1]) == list(range(len(ds)))


@pytest.mark.parametrize("target_fps, stride, expected_step", [(10, 1, 3), (15, 1, 2), (None, 4, 4)])
def test_clip_step_in_decoded_frames(tmp_path, target_fps, stride, expected_step):
    # frame i is a flat grey of level 6 * i: the decoded clip tells which frames were taken
    levels = np.arange(36) * 6
    frames = np.broadcast_to(levels[:, None, None, None], (36, 32, 32, 3)).astype(np.uint8)
    write_video(tmp_path / "c" / "v.mp4", frames, fps=30, crf=0)
    ds = KineticsDataset(tmp_path, mode="test", num_clips=1, num_frames=4, stride=stride, target_fps=target_fps,
                         test_scale=32, crop_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    video = ds[0]["video"]  # (1, 3, 4, 32, 32), values in [0, 1]
    got = (video[0].mean(dim=(0, 2, 3)) * 255 / 6).round().long()
    span = 3 * expected_step + 1
    start = (36 - span) // 2
    assert got.tolist() == [start + k * expected_step for k in range(4)]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"mode": "eval"}, "mode"), ({"num_crops": 2}, "num_crops"), ({"stride": 0}, "stride"),
     ({"backend": "cv2"}, "backend"), ({"short_video": "x"}, "short_video"), ({"max_retries": -1}, "max_retries")],
)
def test_bad_arguments(kinetics, kwargs, match):
    with pytest.raises(ValueError, match=match):
        KineticsDataset(kinetics["videos"], kinetics["train_csv"], **kwargs)
    with pytest.raises(FileNotFoundError, match="root"):
        KineticsDataset(kinetics["base"] / "nope")


def test_unlabelled_test_csv(kinetics, tmp_path):
    # Kinetics test CSVs have no label column: label -1, and no empty classes.json is written
    csv = tmp_path / "test.csv"
    csv.write_text("youtube_id,time_start,time_end,split\nva0xyzabcd,5,15,test\n")
    ds = KineticsDataset(kinetics["videos"], csv, mode="test", num_clips=1, **SMALL)
    item = ds[0]
    assert item["label"] == -1 and item["valid"] and not (tmp_path / "classes.json").exists()


def test_one_class_index_policy(kinetics, tmp_path, video_factory):
    """given > classes.json beside the annotation > derived from the annotation; for CSVs, list
    files and class folders alike; reading never writes."""
    order = {"zumba": 0, "abseiling": 1, "passing American football (in game)": 2}
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "train.csv").write_bytes(kinetics["train_csv"].read_bytes())
    (ann / "list.txt").write_text("train/zumba/tr2x0abcde_000000_000010.mp4 0\n")
    derived = load_annotations(kinetics["videos"], ann / "train.csv")
    assert derived.classes == sorted(CLASSES) and derived.class_index_path is None
    assert load_annotations(kinetics["videos"], ann / "list.txt").classes == ["0"]
    write_class_index(ann / "classes.json", sorted(order, key=order.get))
    for name in ("train.csv", "list.txt"):
        beside = load_annotations(kinetics["videos"], ann / name)
        assert beside.class_to_idx == order and beside.class_index_path == ann / "classes.json"
    assert load_annotations(kinetics["videos"] / "train", class_index=ann / "classes.json").class_to_idx == order
    given = {c: i for i, c in enumerate(reversed(sorted(CLASSES)))}
    assert load_annotations(kinetics["videos"], ann / "train.csv", class_index=given).class_to_idx == given
    assert load_annotations(kinetics["videos"], ann / "list.txt").records[0].label_name == "zumba"
    with pytest.raises(ValueError, match="label '.*' is not in the class index"):
        load_annotations(kinetics["videos"], ann / "train.csv", class_index={"abseiling": 0})
    with pytest.raises(ValueError, match="class folders"):
        load_annotations(kinetics["videos"] / "train", class_index={"abseiling": 0})
    with pytest.raises(ValueError, match="split='train' needs a Kinetics CSV"):
        load_annotations(kinetics["videos"], ann / "list.txt", split="train")
    assert sorted(p.name for p in ann.iterdir()) == ["classes.json", "list.txt", "train.csv"]


def test_missing_videos_named_and_written(kinetics, tmp_path):
    ds = KineticsDataset(kinetics["videos"], kinetics["train_csv"], **SMALL)
    assert len(ds) == 8 and [m.key for m in ds.missing] == ["tr0x1abcde_000010_000020.mp4"]
    assert all(r.path is not None for r in ds.records)  # train mode: missing files are not samples
    out = write_missing_videos(ds.missing, tmp_path / "run" / "missing_videos.txt")
    assert out == tmp_path / "run" / "missing_videos.txt"
    key, expected = out.read_text().rstrip("\n").split("\t")
    assert key == "tr0x1abcde_000010_000020.mp4" and expected == str(ds.missing[0].expected)
    test = KineticsDataset(kinetics["videos"], kinetics["train_csv"], mode="test", num_clips=1, **SMALL)
    assert test.missing == ds.missing and len(test) == 9
    assert write_missing_videos([], tmp_path / "none.txt").read_text() == ""


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_train_item_is_train_transform_of_the_decoded_clip(kinetics, dtype):
    """The item decodes only its crop box; it must equal train_transform on whole decoded frames."""
    from videogn.data import VideoReader, train_clip_indices, train_transform

    ds = KineticsDataset(kinetics["videos"], kinetics["val_csv"], dtype=dtype, **dict(SMALL, train_scale=(24, 40)))
    for seed in range(8):
        torch.manual_seed(seed)
        got = ds[seed % len(ds)]["video"]
        torch.manual_seed(seed)  # the same draws in the same order: start, then scale, crop, flip
        with VideoReader(ds.records[seed % len(ds)].path) as vr:
            frames = vr.get_frames(train_clip_indices(len(vr), 4, 2.0))
        ref = train_transform(frames, scale=(24, 40), crop_size=32, normalized=dtype == "float32")
        assert got.dtype == ref.dtype and torch.equal(got, ref)


@pytest.mark.parametrize("channels_last", [False, True])
def test_uint8_clips_normalised_on_device_equal_float_clips(kinetics, channels_last):
    """dtype='uint8' + normalize_batch (where the model runs) gives the float pipeline's batch."""
    from videogn.data import normalize_batch

    kw = dict(SMALL, channels_last=channels_last)
    for mode, extra in (("train", {}), ("test", {"num_clips": 2, "num_crops": 3})):
        f32 = KineticsDataset(kinetics["videos"], kinetics["val_csv"], mode=mode, **kw, **extra)
        u8 = KineticsDataset(kinetics["videos"], kinetics["val_csv"], mode=mode, dtype="uint8", **kw, **extra)
        items = []
        for ds in (f32, u8):
            torch.manual_seed(5)  # the train transform's crop, scale and flip draws
            items.append(collate_clips([ds[0], ds[2]]))
        a, b = items
        assert b["video"].dtype == torch.uint8 and b["video"].shape == a["video"].shape
        got = normalize_batch(b["video"], f32.mean, f32.std)
        assert got.dtype == torch.float32 and torch.equal(got, a["video"]), mode
        if mode == "train":  # the uint8 batch is channels-last (C innermost) and stays so
            assert got.is_contiguous(memory_format=torch.channels_last_3d)
        # or takes the model's layout in the same pass (the trainer with channels_last=false)
        flat = normalize_batch(b["video"], f32.mean, f32.std, memory_format=torch.contiguous_format)
        assert flat.is_contiguous() and torch.equal(flat, a["video"]), mode
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'uint8', got 'float16'"):
        KineticsDataset(kinetics["videos"], kinetics["val_csv"], dtype="float16")
    with pytest.raises(TypeError, match="uint8"):
        normalize_batch(torch.zeros(1, 3, 2, 4, 4), f32.mean, f32.std)
    with pytest.raises(ValueError, match="shape"):
        normalize_batch(torch.zeros(1, 4, 2, 4, 4, dtype=torch.uint8), f32.mean, f32.std)


def test_uint8_missing_video_in_test_mode(kinetics):
    ds = KineticsDataset(kinetics["videos"], kinetics["train_csv"], mode="test", num_clips=1, dtype="uint8", **SMALL)
    bad = [ds[i] for i in range(len(ds)) if not ds[i]["valid"]]
    assert len(bad) == 2 and all(b["video"].dtype == torch.uint8 and not b["video"].any() for b in bad)

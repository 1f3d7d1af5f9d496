"""The compact record index (videogn.data.index): every annotation format round-trips exactly
through it, it pickles as a few buffers, and DataLoader workers under spawn read the same records."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from videogn.data import (KineticsDataset, MissingVideo, VideoRecord, load_annotations, read_kinetics_csv,
                          read_list_file, resolve_csv_records, scan_class_folders)
from videogn.data.index import MissingVideos, RecordIndex

CLASSES = ["abseiling", "passing American football (in game)", "zumba"]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # nothing is decoded: the index only needs the file to exist
    return path


@pytest.fixture()
def tree(tmp_path) -> dict[str, Path]:
    """A Kinetics-like root with the three annotation kinds over it: files in split/label folders
    (so CSV rows are found away from root/key), a missing row, an unlabelled row, non-ASCII and
    spaced names, an undecodable file name (not UTF-8), and a list-file row with an absolute path."""
    root = tmp_path / "videos"
    rows = [("abseiling", "aaaaaaaaaaa", 0), ("zumba", "bbbbbbbbbbb", 10),
            ("passing American football (in game)", "ccccccccccc", 20), ("zumba", "missingxxxx", 30),
            (None, "unlabelled1", 40), ("abseiling", "dddddddddéd", 50)]
    lines = ["label,youtube_id,time_start,time_end,split,is_cc\n"]
    for label, yid, t0 in rows:
        name = f"{yid}_{t0:06d}_{t0 + 10:06d}"
        lines.append(f'"{label or ""}",{yid},{t0},{t0 + 10},train,0\n')
        if yid != "missingxxxx":
            folder = label or "unknown"
            _touch(root / "train" / folder / (name + (".webm" if yid == "ccccccccccc" else ".mp4")))
    _touch(root / "train" / "zumba" / "with space.mp4")
    undecodable = os.path.join(os.fsencode(root / "train" / "abseiling"), b"bad\xffname.mp4")
    open(undecodable, "wb").close()
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "train.csv").write_text("".join(lines), encoding="utf-8")
    outside = _touch(tmp_path / "elsewhere" / "abs.mp4")
    (ann / "list.txt").write_text(
        "# relative/path label\n"
        "train/zumba/with space.mp4 2\n"
        "train/abseiling/aaaaaaaaaaa_000000_000010.mp4 0\n"
        "./train/zumba/bbbbbbbbbbb_000010_000020.mp4 2\n"
        "train/zumba/not_there.mp4 1\n"
        "train/unknown/unlabelled1_000040_000050.mp4 -1\n"
        f"{outside} 1\n", encoding="utf-8")
    # folder-per-class: the class folders of train/ (unknown/ is a class there)
    return {"root": root, "csv": ann / "train.csv", "list": ann / "list.txt", "folders": root / "train"}


def _reference(tree: dict[str, Path], kind: str) -> list[VideoRecord]:
    """The records as the per-object code built them, from the public reading functions."""
    root = tree["root"]
    if kind == "csv":
        rows = read_kinetics_csv(tree["csv"])
        labels = sorted({r["label"] for r in rows if r["label"]})
        return resolve_csv_records(rows, root, {c: i for i, c in enumerate(labels)})
    if kind == "list":
        pairs = read_list_file(tree["list"])
        names = [str(i) for i in range(max(lab for _, lab in pairs) + 1)]
        return [VideoRecord(rel, root / rel if (root / rel).is_file() else None, lab,
                            names[lab] if lab >= 0 else None) for rel, lab in pairs]
    classes, items = scan_class_folders(tree["folders"])
    return [VideoRecord(p.relative_to(tree["folders"]).as_posix(), p, classes.index(c), c) for p, c in items]


@pytest.mark.parametrize("kind", ["csv", "list", "folder"])
def test_index_round_trips_every_record(tree, kind):
    root = tree["folders"] if kind == "folder" else tree["root"]
    ann = load_annotations(root, None if kind == "folder" else tree[kind])
    expected = _reference(tree, kind)
    # the reference covers the cases the storage tells apart: no file, a file away from root/key
    # (CSV: found by name; list: absolute), a name that is not UTF-8 (folder scan)
    if kind == "folder":
        assert "abseiling/bad\udcffname.mp4" in [r.key for r in expected]
    else:
        assert None in [r.path for r in expected]
        assert any(r.path is not None and (r.path != root / r.key or not r.path.is_relative_to(root))
                   for r in expected)
    assert isinstance(ann.records, RecordIndex) and len(ann.records) == len(expected)
    for got, want in zip(ann.records, expected):  # every field, with its type
        assert (got.key, got.path, got.label, got.label_name) == (want.key, want.path, want.label, want.label_name)
        assert got.path is None or type(got.path) is type(want.path)
    assert ann.records == expected and ann.records[-1] == expected[-1]
    assert ann.records[1:4] == expected[1:4] and ann.records[::-2] == expected[::-2]
    np.testing.assert_array_equal(ann.records.labels, [r.label for r in expected])
    with pytest.raises(ValueError):
        ann.records.labels[0] = 5  # read-only: the arrays are shared with workers
    assert ann.missing == [MissingVideo(r.key, root / r.key, r.label) for r in expected if r.path is None]
    # a plain pickle round-trips too
    assert pickle.loads(pickle.dumps(ann.records)) == expected


def test_index_edge_cases_and_errors(tmp_path):
    recs = RecordIndex(".", ["a.mp4", "b c.mp4"], ["./a.mp4", "/x/b c.mp4"], [0, -1], ["cls"])
    assert list(recs) == [VideoRecord("a.mp4", Path("a.mp4"), 0, "cls"), VideoRecord("b c.mp4", Path("/x/b c.mp4"), -1)]
    assert recs.take([1]) == [recs[1]] and recs.take(np.array([False, True])) == [recs[1]]
    assert len(recs.take([])) == 0 and list(RecordIndex(tmp_path, [], [], [], [])) == []
    with pytest.raises(IndexError, match="record 2 out of range"):
        recs[2]
    with pytest.raises(ValueError, match="label 3 is outside -1..0"):
        RecordIndex(".", ["a"], [None], [3], ["cls"])
    with pytest.raises(ValueError, match="one entry per record"):
        RecordIndex(".", ["a"], [], [0], ["cls"])
    assert MissingVideos(recs.take([])) == [] and recs != [recs[0]]


def test_dataset_records_and_missing_are_compact(tree):
    ds = KineticsDataset(tree["root"], tree["csv"])  # train mode: missing rows are not samples
    assert isinstance(ds.records, RecordIndex) and isinstance(ds.missing, MissingVideos)
    assert len(ds) == 5 and all(r.path is not None for r in ds.records)
    assert [m.key for m in ds.missing] == ["missingxxxx_000030_000040.mp4"]
    full = KineticsDataset(tree["root"], tree["csv"], mode="test")
    assert full.records == _reference(tree, "csv") and full.missing == ds.missing


def _list_file(path: Path, n: int, files: int) -> float:
    """``n`` Kinetics-like list-file rows, the first ``files`` with a file; returns the mean key length."""
    rng = np.random.default_rng(0)
    rels = [f"train/class {i % 700:03d}/{''.join(rng.choice(list('abcdefghijk'), 11))}_{i:06d}_{i + 10:06d}.mp4"
            for i in range(n)]
    path.write_text("".join(f"{r} {i % 700}\n" for i, r in enumerate(rels)), encoding="utf-8")
    for r in rels[:files]:
        _touch(path.parent / "videos" / r)
    return float(np.mean([len(r.encode()) for r in rels]))


def test_pickled_dataset_is_a_few_buffers(tmp_path):
    n, files = 50_000, 2_000
    key_len = _list_file(tmp_path / "list.txt", n, files=files)
    ds = KineticsDataset(tmp_path / "videos", tmp_path / "list.txt", keep_missing=True)
    assert len(ds) == n and len(ds.missing) == n - files
    size = len(pickle.dumps(ds))
    # per row: the key's bytes, two uint32 offsets, an int32 label and a uint8 path kind (found
    # files are root/key: nothing more is stored; the missing share the records' index) -- plus
    # a fixed amount for the rest of the dataset
    assert size <= n * (key_len + 4 + 4 + 4 + 1) + 64 * 1024
    # against one pickled object per record (what spawned workers used to unpickle), found files
    found = ds.records.take(ds.records.found)
    assert 2 * len(pickle.dumps(found)) < len(pickle.dumps(list(found)))
    again = pickle.loads(pickle.dumps(ds))
    assert again.records == ds.records and again.missing == ds.missing and again.classes == ds.classes


class _Fields(torch.utils.data.Dataset):
    """Item i: record i's fields, read in the worker from the dataset it was given."""

    def __init__(self, dataset: KineticsDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple:
        r = self.dataset.records[i]
        return r.key, None if r.path is None else str(r.path), r.label, r.label_name, os.getpid()


def test_spawned_workers_read_the_same_records(tmp_path):
    _list_file(tmp_path / "list.txt", 300, files=120)
    (tmp_path / "classes.json").write_text(json.dumps({f"class {i:03d}": i for i in range(700)}))
    ds = KineticsDataset(tmp_path / "videos", tmp_path / "list.txt", keep_missing=True)
    loader = torch.utils.data.DataLoader(_Fields(ds), batch_size=None, num_workers=2,
                                         multiprocessing_context="spawn")
    got = list(loader)
    want = [(r.key, None if r.path is None else str(r.path), r.label, r.label_name) for r in ds.records]
    assert [tuple(g[:4]) for g in got] == want  # (the loader hands tuples back as lists)
    assert len({g[4] for g in got}) == 2 and os.getpid() not in {g[4] for g in got}
    assert sum(g[1] is not None for g in got) == 120 and got[0][3] == "class 000"
    # the parent now reads the index from the shared memory the workers were given: still the same
    assert ds.records._shared is not None
    assert [(r.key, None if r.path is None else str(r.path), r.label, r.label_name) for r in ds.records] == want

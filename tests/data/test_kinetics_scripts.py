"""datasets/kinetics/ command-line tools: --help, index building, resizing (resumable after a kill,
audio dropped, no upscaling unless asked), scanning for unreadable videos (resumable, non-zero exit
when it finds any)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from videogn.data import read_list_file

SCRIPTS = Path(__file__).resolve().parents[2] / "datasets" / "kinetics"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"kinetics_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # lets multiprocessing pickle the script's worker function
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["build_index", "resize", "scan"])
def test_help(name):
    out = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "usage:" in out.stdout and "--" in out.stdout


def test_build_index_cli(tmp_path, video_factory, capsys):
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nrun,aaaaaaaaaaa,0,10,train\nswim,bbbbbbbbbbb,3,13,train\n")
    video_factory.make_video(tmp_path / "videos" / "run" / "aaaaaaaaaaa_000000_000010.mp4", num_frames=8)
    assert _load("build_index").main(["--csv", str(csv), "--root", str(tmp_path / "videos"), "--out", str(tmp_path / "idx")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] == {"rows": 2, "found": 1, "missing": 1} and summary["num_classes"] == 2
    assert read_list_file(tmp_path / "idx" / "train.txt") == [("run/aaaaaaaaaaa_000000_000010.mp4", 0)]
    assert json.loads((tmp_path / "idx" / "classes.json").read_text()) == {"run": 0, "swim": 1}


def test_resize_cli_resumable_and_drops_audio(tmp_path, video_factory, good_videos):
    src, dst = tmp_path / "src", tmp_path / "dst"
    video_factory.make_video(src / "a" / "x.mp4", num_frames=10, height=48, width=64, audio=True)
    (src / "a" / "y.webm").parent.mkdir(parents=True, exist_ok=True)
    (src / "a" / "y.webm").write_bytes(good_videos["vp9.webm"].read_bytes())
    (src / "broken.mp4").write_bytes(b"junk" * 10)
    resize = _load("resize")
    assert resize.main(["--src", str(src), "--dst", str(dst), "--short-side", "32", "-j", "2"]) == 1  # one failed
    for rel, n, size in [("a/x.mp4", 10, (42, 32)), ("a/y.mp4", 24, (42, 32))]:
        with av.open(str(dst / rel)) as c:
            s = c.streams.video[0]
            assert (s.codec_context.width, s.codec_context.height) == size
            assert len(c.streams.audio) == 0 and sum(1 for _ in c.decode(s)) == n
    failed = (dst / "resize_failures.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in failed] == [str(src / "broken.mp4")] and failed[0].split("\t")[1]
    assert not list(dst.rglob(".*partial*"))
    mtime = (dst / "a" / "x.mp4").stat().st_mtime_ns
    # the failed file is retried (and fails again): still non-zero; done files are skipped
    assert resize.main(["--src", str(src), "--dst", str(dst), "--short-side", "32", "-j", "1"]) == 1
    assert (dst / "a" / "x.mp4").stat().st_mtime_ns == mtime
    (src / "broken.mp4").unlink()
    assert resize.main(["--src", str(src), "--dst", str(dst), "--short-side", "32", "-j", "1"]) == 0
    assert not (dst / "resize_failures.tsv").exists()  # no stale list after a clean run
    # the command line exits with the status main returns
    (src / "broken2.mp4").write_bytes(b"junk" * 10)
    run = subprocess.run([sys.executable, str(SCRIPTS / "resize.py"), "--src", str(src), "--dst", str(dst),
                          "--short-side", "32", "-j", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "1 of 1 failed" in run.stderr and "resize_failures.tsv" in run.stderr


def test_build_index_unknown_label_is_one_clear_line(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nrun,aaaaaaaaaaa,0,10,train\njuggling,bbbbbbbbbbb,3,13,train\n")
    (tmp_path / "classes.json").write_text(json.dumps({"run": 0}))
    (tmp_path / "videos").mkdir()
    out = subprocess.run([sys.executable, str(SCRIPTS / "build_index.py"), "--csv", str(csv), "--root",
                          str(tmp_path / "videos"), "--out", str(tmp_path / "idx"), "--class-index",
                          str(tmp_path / "classes.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "juggling" in out.stderr and "Traceback" not in out.stderr


def test_resize_never_upscales_unless_asked(tmp_path, video_factory):
    src = tmp_path / "src"
    video_factory.make_video(src / "small.mp4", num_frames=4, height=24, width=32)
    resize = _load("resize")
    assert resize.main(["--src", str(src), "--dst", str(tmp_path / "kept"), "--short-side", "48", "-j", "1"]) == 0
    assert resize.main(["--src", str(src), "--dst", str(tmp_path / "up"), "--short-side", "48", "--upscale", "-j", "1"]) == 0
    sizes = {}
    for name in ("kept", "up"):
        with av.open(str(tmp_path / name / "small.mp4")) as c:
            sizes[name] = (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height)
    assert sizes == {"kept": (32, 24), "up": (64, 48)}


def test_resize_killed_then_rerun_finishes_and_cleans_up(tmp_path, video_factory):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(12):
        video_factory.make_video(src / f"v{i:02d}.mp4", num_frames=48, height=96, width=128, seed=i)
    cmd = [sys.executable, str(SCRIPTS / "resize.py"), "--src", str(src), "--dst", str(dst), "--short-side", "64", "-j", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(dst.glob("v*.mp4")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the script and its pool workers, mid-job
    proc.wait(timeout=60)
    # the kill may land between two videos: make sure a temporary file as a killed run leaves it exists
    (dst / ".v11.partial.mp4").write_bytes(b"half a video")
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "removed" in rerun.stderr and "temporary file" in rerun.stderr
    assert sorted(p.name for p in dst.iterdir()) == [f"v{i:02d}.mp4" for i in range(12)]  # no partials left
    for p in dst.iterdir():
        with av.open(str(p)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 48


def test_scan_resumes_from_its_progress_file(tmp_path, damaged_videos, video_factory, monkeypatch):
    root = tmp_path / "videos"
    for i in range(3):
        video_factory.make_video(root / f"ok{i}.mp4", num_frames=4)
    (root / "bad.mp4").write_bytes(damaged_videos["empty"].read_bytes())
    out = tmp_path / "bad.tsv"
    # an interrupted run got as far as ok0 (and tore its next line); ok0 is not scanned again
    progress = out.with_name(out.name + ".progress.jsonl")
    done = {"path": str(root / "ok0.mp4"), "ok": True, "error": "", "frames": 4, "fps": 25.0, "backend": "pyav"}
    progress.write_text(json.dumps(done) + "\n" + '{"path": "torn')
    scan = _load("scan")
    seen = []
    real = scan.partial

    def spy(fn, **kw):
        checker = real(fn, **kw)
        return lambda p: (seen.append(p), checker(p))[1]

    monkeypatch.setattr(scan, "partial", spy)
    monkeypatch.setattr(scan, "Pool", _InlinePool)
    assert scan.main(["--root", str(root), "--out", str(out), "-j", "1"]) == 1
    assert sorted(Path(p).name for p in seen) == ["bad.mp4", "ok1.mp4", "ok2.mp4"]
    assert [line.split("\t")[0] for line in out.read_text().splitlines()] == [str(root / "bad.mp4")]
    assert json.loads(out.with_suffix(".json").read_text())["num_videos"] == 4
    assert not progress.exists()


class _InlinePool:
    """multiprocessing.Pool's imap_unordered in this process (so a test can watch the calls)."""

    def __init__(self, *_):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap_unordered(self, fn, items, chunksize=1):
        return map(fn, items)


def test_scan_cli(tmp_path, damaged_videos, good_videos):
    out = tmp_path / "report" / "bad.tsv"
    root = damaged_videos["empty"].parent
    assert _load("scan").main(["--root", str(root), "--out", str(out), "-j", "2"]) == 1  # bad files found
    bad = dict(line.split("\t", 1) for line in out.read_text().splitlines())
    summary = json.loads(out.with_suffix(".json").read_text())
    expected = {str(p) for k, p in damaged_videos.items() if k not in ("missing", "no_video_stream")}
    assert set(bad) == expected and summary["num_bad"] == len(expected)
    assert str(root / "src_good.mp4") not in bad and summary["num_videos"] == len(expected) + 2


HEADER = "label,youtube_id,time_start,time_end,split\n"


def _kinetics_folder(root: Path, video_factory) -> Path:
    """$K/videos/{train,val}/<label>/<id>_...mp4 (two train videos, one val video per class) and the
    official CSVs in $K/annotations."""
    rows = {"train": [("run", "aaaaaaaaaaa"), ("run", "ccccccccccc"), ("swim", "bbbbbbbbbbb"), ("swim", "ddddddddddd")],
            "validate": [("run", "eeeeeeeeeee"), ("swim", "fffffffffff")]}
    for split, folder in (("train", "train"), ("validate", "val")):
        for label, vid in rows[split]:
            video_factory.make_video(root / "videos" / folder / label / f"{vid}_000000_000010.mp4", num_frames=8)
        csv = root / "annotations" / f"{split}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text(HEADER + "".join(f"{lab},{vid},0,10,{split}\n" for lab, vid in rows[split]))
    return root


def _datasets(compose, *overrides):
    from videogn.config import validate
    from videogn.engine.build import build_dataset, resolve_data

    conf = validate(compose("train", "data=kinetics400", "data.num_workers=0", *overrides))
    sources = resolve_data(conf.data)
    train = build_dataset(conf.data, conf.budget, sources, "train", mode="train")
    val = build_dataset(conf.data, conf.budget, sources, "val", mode="test", protocol=conf.eval)
    return conf, train, val


def test_build_index_output_works_with_the_run_config(tmp_path, video_factory, compose):
    """The README's flow: build_index with each split's folder, then the CLI's data config on its
    lists (default train_dir/val_dir) and its classes.json (data.class_index): every video found."""
    k = _kinetics_folder(tmp_path / "k", video_factory)
    main = _load("build_index").main
    assert main(["--csv", str(k / "annotations" / "train.csv"), str(k / "annotations" / "validate.csv"),
                 "--root", str(k / "videos" / "train"), str(k / "videos" / "val"), "--out", str(k / "index")]) == 0
    assert read_list_file(k / "index" / "validate.txt") == [("run/eeeeeeeeeee_000000_000010.mp4", 0),
                                                           ("swim/fffffffffff_000000_000010.mp4", 1)]
    # classes.json in another order than the sorted labels: the run takes its order
    (k / "classes.json").write_text(json.dumps({"swim": 0, "run": 1, "dive": 2}))
    assert main(["--csv", str(k / "annotations" / "train.csv"), str(k / "annotations" / "validate.csv"),
                 "--root", str(k / "videos" / "train"), str(k / "videos" / "val"), "--out", str(k / "index2"),
                 "--class-index", str(k / "classes.json")]) == 0
    _, train, val = _datasets(compose, f"data.root={k / 'videos'}", f"data.train_annotation={k / 'index2' / 'train.txt'}",
                              f"data.val_annotation={k / 'index2' / 'validate.txt'}",
                              f"data.class_index={k / 'index2' / 'classes.json'}")
    assert (len(train), len(train.missing), len(val), len(val.missing)) == (4, 0, 2, 0)
    assert train.classes == val.classes == ["swim", "run", "dive"]
    assert [r.label_name for r in val.records] == ["run", "swim"] and all(r.path.is_file() for r in val.records)


def test_build_index_with_one_root_needs_the_split_dirs_dot(tmp_path, video_factory, compose):
    k = _kinetics_folder(tmp_path / "k", video_factory)
    assert _load("build_index").main(["--csv", str(k / "annotations" / "train.csv"), str(k / "annotations" / "validate.csv"),
                                      "--root", str(k / "videos"), "--out", str(k / "index")]) == 0
    assert read_list_file(k / "index" / "validate.txt")[0] == ("val/run/eeeeeeeeeee_000000_000010.mp4", 0)
    _, train, val = _datasets(compose, f"data.root={k / 'videos'}", "data.train_dir=.", "data.val_dir=.",
                              f"data.train_annotation={k / 'index' / 'train.txt'}",
                              f"data.val_annotation={k / 'index' / 'validate.txt'}")
    assert (len(train), len(val), len(val.missing)) == (4, 2, 0)


def test_build_index_refuses_a_root_count_that_does_not_pair(tmp_path, video_factory, capsys):
    k = _kinetics_folder(tmp_path / "k", video_factory)
    with pytest.raises(SystemExit) as e:
        _load("build_index").main(["--csv", str(k / "annotations" / "train.csv"), str(k / "annotations" / "validate.csv"),
                                   "--root", str(k), str(k), str(k), "--out", str(k / "index")])
    assert e.value.code == 2 and "one video folder for every CSV or one for all" in capsys.readouterr().err


def test_a_label_outside_data_class_index_names_file_and_row(tmp_path, video_factory, compose):
    from videogn.data.annotations import AnnotationError

    k = _kinetics_folder(tmp_path / "k", video_factory)
    (k / "classes.json").write_text(json.dumps({"run": 0}))
    with pytest.raises(AnnotationError, match=r"train\.csv:4: label 'swim' is not in the class index") as e:
        _datasets(compose, f"data.root={k / 'videos'}", f"data.train_annotation={k / 'annotations' / 'train.csv'}",
                  f"data.val_annotation={k / 'annotations' / 'validate.csv'}", f"data.class_index={k / 'classes.json'}")
    assert "classes.json" in str(e.value) and "data.class_index" in str(e.value)


def test_scan_report_excludes_videos_from_both_splits(tmp_path, video_factory, compose, monkeypatch, caplog):
    """data.exclude takes scan.py's TSV as written (paths relative to the directory scan.py ran in)."""
    import logging

    k = _kinetics_folder(tmp_path / "k", video_factory)
    bad_train = k / "videos" / "train" / "swim" / "bbbbbbbbbbb_000000_000010.mp4"
    bad_val = k / "videos" / "val" / "run" / "eeeeeeeeeee_000000_000010.mp4"
    bad_train.write_bytes(b"truncated")
    bad_val.write_bytes(b"truncated")
    monkeypatch.chdir(tmp_path)
    assert _load("scan").main(["--root", "k/videos", "--out", "k/bad.tsv", "-j", "1"]) == 1
    assert {line.split("\t")[0] for line in (k / "bad.tsv").read_text().splitlines()} == {
        str(Path("k/videos") / bad_train.relative_to(k / "videos")), str(Path("k/videos") / bad_val.relative_to(k / "videos"))}
    common = [f"data.root={k / 'videos'}", f"data.train_annotation={k / 'annotations' / 'train.csv'}",
              f"data.val_annotation={k / 'annotations' / 'validate.csv'}"]
    with caplog.at_level(logging.INFO, logger="videogn"):
        _, train, val = _datasets(compose, *common, "data.exclude=k/bad.tsv")
    assert (len(train), train.excluded, len(val), val.excluded) == (3, 1, 1, 1)
    assert str(bad_train) not in {str(r.path) for r in train.records} and val.records[0].label_name == "swim"
    lines = [r.getMessage() for r in caplog.records if "data.exclude" in r.getMessage()]
    assert any("1 of the train split's videos left out" in m for m in lines), lines
    _, train, val = _datasets(compose, *common)  # without it, both are samples again
    assert (len(train), train.excluded, len(val)) == (4, 0, 2)


def test_a_missing_exclude_list_is_a_config_error(tmp_path, video_factory, compose):
    from videogn.config import ConfigError

    k = _kinetics_folder(tmp_path / "k", video_factory)
    with pytest.raises(ConfigError, match="data.exclude: exclude list .*nope.tsv.* not found"):
        _datasets(compose, f"data.root={k / 'videos'}", f"data.train_annotation={k / 'annotations' / 'train.csv'}",
                  f"data.val_annotation={k / 'annotations' / 'validate.csv'}", f"data.exclude=[{k / 'nope.tsv'}]")

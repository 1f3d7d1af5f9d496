"""datasets/kinetics/ command-line tools: --help, index building, resizing (resumable, audio
dropped), scanning for unreadable videos."""

import importlib.util
import json
import subprocess
import sys
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


def test_scan_cli(tmp_path, damaged_videos, good_videos):
    out = tmp_path / "report" / "bad.tsv"
    root = damaged_videos["empty"].parent
    assert _load("scan").main(["--root", str(root), "--out", str(out), "-j", "2"]) == 0
    bad = dict(line.split("\t", 1) for line in out.read_text().splitlines())
    summary = json.loads(out.with_suffix(".json").read_text())
    expected = {str(p) for k, p in damaged_videos.items() if k not in ("missing", "no_video_stream")}
    assert set(bad) == expected and summary["num_bad"] == len(expected)
    assert str(root / "src_good.mp4") not in bad and summary["num_videos"] == len(expected) + 2

"""decord's random-access fast path: taken only on streams stored in display order (no B-frames),
frame-exact there against a full PyAV decode; streams with frame reordering keep the exact
sequential path. Also: reorder detection, and datasets/kinetics/resize.py writing in-order video."""

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from video_factory import DECORD_REFUSALS

from videogn.data import VideoDecodeError, VideoReader
from videogn.data import video_backends
from videogn.data.decode import probe_frame_order

pytest.importorskip("decord")




def full_decode(path):
    """Reference: every frame of an in-order PyAV decode, RGB (T, H, W, 3)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# name -> maker(video_factory, path)
IN_ORDER = {
    "h264_nob_gop8.mp4": lambda vf, p: vf.make_video(p, 40, 48, 64, fps=25, gop=8),
    "h264_nob_gaps.mkv": lambda vf, p: vf.make_custom(  # time stamps with gaps (pts step 3)
        p, 36, 48, 64, fps=25, options={"preset": "fast", "x264-params": "bframes=0:keyint=7"}, pts_step=3),
    "h264_intra.mp4": lambda vf, p: vf.make_custom(p, 20, 48, 64, fps=25, options={"x264-params": "keyint=1"}),
    "mpeg4_nob.mp4": lambda vf, p: vf.make_video(p, 30, 64, 96, fps=24, codec="mpeg4", gop=6),
    "mpeg4_nob.avi": lambda vf, p: vf.make_video(p, 30, 48, 64, fps=25, codec="mpeg4", gop=9),
}
REORDERED = {
    "h264_pyramid_opengop.mp4": lambda vf, p: vf.make_x264_custom(p, 48, height=48, width=64),
    "h264_bframes.mkv": lambda vf, p: vf.make_video(p, 36, 48, 64, fps=25, bframes=3, gop=12),
    "mpeg4_bframes.mkv": lambda vf, p: vf.make_video(p, 30, 48, 64, fps=25, codec="mpeg4", bframes=2, gop=8),
}
ALL = {**IN_ORDER, **REORDERED}


@pytest.fixture(scope="module")
def videos(tmp_path_factory, video_factory):
    folder = tmp_path_factory.mktemp("fastpath")
    paths = {name: make(video_factory, folder / name) for name, make in ALL.items()}
    return {name: (p, full_decode(p)) for name, p in paths.items()}


def _index_sets(n, rng):
    return [
        rng.integers(0, n, 10),                       # random, unsorted, repeats
        np.arange(n)[::-1].copy(),                    # backwards
        np.arange(1, n, 3),                           # strided
        np.array([n - 1, 2, 2, 2, n // 2, 0, n - 1]),  # repeats and jumps both ways
        np.arange(n // 2, min(n, n // 2 + 16), 2),    # a clip at stride 2 (32x2 in miniature)
        np.array([n - 1]),
        np.arange(n),
    ]


@pytest.mark.parametrize("name", sorted(ALL))
def test_reordering_detected(videos, name, monkeypatch):
    path, ref = videos[name]
    # detection only: decord may refuse to copy some frame sizes on some CPUs (tested elsewhere)
    monkeypatch.setattr(video_backends._DecordBackend, "_check_first_read", lambda self: None)
    in_order, count = probe_frame_order(path)
    assert in_order == (name in IN_ORDER) and count == len(ref)
    for backend in ("decord", "pyav"):
        with VideoReader(path, backend=backend) as vr:
            assert vr.reordered == (name not in IN_ORDER), backend
    with VideoReader(path, backend="decord") as vr:
        assert vr._impl.random_access == (name in IN_ORDER)


@pytest.mark.parametrize("name", sorted(IN_ORDER))
def test_fast_path_equals_full_pyav_decode(videos, name, monkeypatch):
    path, ref = videos[name]

    def no_sequential(self, idx):
        raise AssertionError("in-order stream must not decode from frame 0")

    monkeypatch.setattr(video_backends._DecordBackend, "_get_sequential", no_sequential)
    rng = np.random.default_rng(len(name))
    try:
        vr = VideoReader(path, backend="decord")
    except VideoDecodeError as e:  # decord may refuse a frame size on some CPUs: a clear error is the contract
        assert e.backend == "decord" and e.cause.startswith(DECORD_REFUSALS), str(e)
        return
    with vr:  # one reader for all requests: state carries over
        assert vr._impl.random_access
        for idx in _index_sets(len(ref), rng):
            got = vr.get_frames(idx).numpy()
            bad = [int(i) for i, g in zip(idx, got) if not np.array_equal(g, ref[i])]
            assert not bad, f"{name}: wrong frames at {bad[:8]} for request {idx.tolist()}"


@pytest.mark.parametrize("name", sorted(REORDERED))
def test_reordered_streams_take_exact_path(videos, name, monkeypatch):
    path, ref = videos[name]

    def no_seeking(self, idx):
        raise AssertionError("reordered stream must not use decord's seeks")

    monkeypatch.setattr(video_backends._DecordBackend, "_get_random_access", no_seeking)
    rng = np.random.default_rng(len(name))
    with VideoReader(path, backend="decord") as vr:
        assert not vr._impl.random_access
        for idx in _index_sets(len(ref), rng)[:5]:
            assert np.array_equal(vr.get_frames(idx).numpy(), ref[idx]), f"{name}: {idx.tolist()}"


def test_fast_path_memory_stays_flat(videos):
    path, ref = videos["h264_nob_gop8.mp4"]

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def churn(n):
        for i in range(n):
            with VideoReader(path, backend="decord") as vr:
                vr.get_frames([(5 * i) % len(ref), (11 * i + 3) % len(ref), 0])

    churn(30)  # warm up allocator pools and codec tables
    before = rss_mb()
    churn(150)
    assert rss_mb() - before < 25, f"RSS grew by {rss_mb() - before:.1f} MiB over 150 readers"


def test_frame_count_disagreement_disables_fast_path(videos):
    path, ref = videos["h264_nob_gop8.mp4"]
    n = len(ref)
    # a demux that saw one frame more than decord counts (e.g. an edit list): no random access
    impl = video_backends._DecordBackend(path, 1, in_order=(True, n + 1))
    assert not impl.random_access and not impl.reordered
    assert np.array_equal(impl.get(np.array([n - 1, 3])), ref[[n - 1, 3]])
    impl.close()


def _packet(pts, discard=False):
    return SimpleNamespace(pts=pts, is_discard=discard)


@pytest.mark.parametrize(
    "pts, has_b, discard_at, in_order",
    [
        ([0, 1, 2, 3, 4, 5], False, None, True),
        ([0, 3, 6, 9], False, None, True),             # gaps are fine
        ([0, 1, 2, 3, 4, 6, 5, 7], False, None, False),  # a B-frame late in the stream only
        ([0, 1, 2, 2, 3], False, None, False),         # duplicate pts
        ([0, 1, None, 3], False, None, False),         # a frame without a time stamp
        ([0, 1, 2, 3], True, None, False),             # the codec announces B-frame delay
        ([0, 1, 2, 3], False, 0, False),               # edit list drops a frame
    ],
)
def test_order_check_rules(pts, has_b, discard_at, in_order):
    check = video_backends._OrderCheck(has_b)
    for i, p in enumerate(pts):
        check.feed(_packet(p, discard=i == discard_at))
    assert check.in_order == in_order


def test_probe_errors_and_auto_choice(videos, damaged_videos):
    with pytest.raises(VideoDecodeError, match="no video stream"):
        probe_frame_order(damaged_videos["no_video_stream"])
    with pytest.raises(VideoDecodeError) as info:
        probe_frame_order(damaged_videos["not_a_video"])
    assert info.value.path == str(damaged_videos["not_a_video"])
    # auto: PyAV on every stream (measured faster than decord's fast path, see video_backends.py)
    for name in ("h264_nob_gop8.mp4", "h264_pyramid_opengop.mp4"):
        path, ref = videos[name]
        with VideoReader(path) as vr:
            assert vr.backend == "pyav" and vr.reordered == (name in REORDERED)
            assert np.array_equal(vr.get_frames([5, 1]).numpy(), ref[[5, 1]])


def _load_resize():
    script = Path(__file__).resolve().parents[2] / "datasets" / "kinetics" / "resize.py"
    spec = importlib.util.spec_from_file_location("kinetics_resize_fastpath", script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # lets multiprocessing pickle the script's worker function
    spec.loader.exec_module(mod)
    return mod


def _keyframes(path):
    with av.open(str(path)) as c:
        return [i for i, p in enumerate(c.demux(video=0)) if p.size and p.is_keyframe]


def test_resize_writes_in_order_video(videos, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    b_src, ref = videos["h264_pyramid_opengop.mp4"]  # B-pyramid source, 48 frames
    (src / "a.mp4").write_bytes(b_src.read_bytes())
    resize = _load_resize()
    assert resize.main(["--src", str(src), "--dst", str(tmp_path / "d0"), "--short-side", "32", "--gop", "16", "-j", "1"]) == 0
    out = tmp_path / "d0" / "a.mp4"
    assert probe_frame_order(out) == (True, len(ref))
    keys = _keyframes(out)
    assert keys[0] == 0 and max(np.diff(keys)) <= 16  # the GOP bound holds
    try:
        vr = VideoReader(out, backend="decord")
    except VideoDecodeError as e:  # a frame size decord refuses on this CPU: a clear error is the contract
        assert e.backend == "decord" and e.cause.startswith(DECORD_REFUSALS), str(e)
    else:
        with vr:
            assert vr._impl.random_access
            assert np.array_equal(vr.get_frames([40, 3, 17]).numpy(), full_decode(out)[[40, 3, 17]])
    # B-frames on request: reordered, and decord falls back to sequential decoding
    assert resize.main(["--src", str(src), "--dst", str(tmp_path / "d3"), "--short-side", "32", "--bframes", "3",
                        "-j", "1"]) == 0
    assert probe_frame_order(tmp_path / "d3" / "a.mp4")[0] is False
    with pytest.raises(SystemExit):
        resize.main(["--src", str(src), "--dst", str(tmp_path / "bad"), "--bframes", "-1"])

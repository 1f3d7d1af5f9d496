"""decord's failure modes (its frame copy assumes unpadded rows; FFmpeg pads them to the CPU's SIMD
alignment, so some widths fail on some CPUs): a decord reader returns frames equal to a full PyAV
decode or raises a VideoDecodeError naming the cause; ``auto`` always reads the file (PyAV) and logs
one line per distinct cause. Failures are also simulated so every machine checks the handling."""

import logging

import av
import numpy as np
import pytest

from video_factory import DECORD_REFUSALS

from videogn.data import VideoDecodeError, VideoReader
from videogn.data import decode, video_backends

decord = pytest.importorskip("decord")

COPY_ERROR = ("[12:00:00] /project/src/runtime/ndarray.cc:171: Check failed: from_size == to_size "
              "(24576 vs. 18432) DECORDArrayCopyFromTo: The size must exactly match")



def full_decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# rows of 96, 170 and 340 RGB pixels are 288, 510 and 1020 bytes: none a multiple of 32 or 64
WIDTHS = (96, 170, 340)
KINDS = {  # in order -> decord's get_batch fast path; reordered -> its seek(0) + next() path
    "in_order": lambda vf, p, w: vf.make_video(p, 20, 36, w, fps=25, gop=6),
    "mpeg4_in_order": lambda vf, p, w: vf.make_video(p, 16, 64, w, fps=24, codec="mpeg4", gop=6),
    "reordered": lambda vf, p, w: vf.make_video(p, 20, 36, w, fps=25, bframes=3, gop=8),
}


@pytest.fixture(scope="module")
def width_videos(tmp_path_factory, video_factory):
    folder = tmp_path_factory.mktemp("widths")
    out = {}
    for kind, make in KINDS.items():
        for w in WIDTHS:
            p = make(video_factory, folder / f"{kind}_{w}.mp4", w)
            out[(kind, w)] = (p, full_decode(p))
    return out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decord_exact_or_clear_error(width_videos, kind, width):
    path, ref = width_videos[(kind, width)]
    n = len(ref)
    requests = [np.arange(n), np.array([n - 1, 0, 3, 3]), np.arange(1, n, 4)]
    try:
        vr = VideoReader(path, backend="decord")
    except VideoDecodeError as e:
        assert e.backend == "decord" and e.path == str(path) and e.cause.startswith(DECORD_REFUSALS)
        return
    with vr:
        for idx in requests:
            got = vr.get_frames(idx).numpy()
            assert got.shape == (len(idx),) + ref.shape[1:]
            assert np.array_equal(got, ref[idx]), f"{kind} width {width}: wrong frames for {idx.tolist()}"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_auto_reads_every_width(width_videos, kind, width):
    path, ref = width_videos[(kind, width)]
    with VideoReader(path) as vr:
        assert np.array_equal(vr.get_frames([len(ref) - 1, 0, 5]).numpy(), ref[[len(ref) - 1, 0, 5]])


def _raise_copy_error(*args, **kwargs):
    raise decord.DECORDError(COPY_ERROR)


@pytest.fixture
def decord_copy_fails(monkeypatch):
    """decord's get_batch and next fail as on the AVX-512 machine."""
    monkeypatch.setattr(decord.VideoReader, "get_batch", _raise_copy_error)
    monkeypatch.setattr(decord.VideoReader, "next", _raise_copy_error)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_simulated_copy_error_explicit_decord_raises(width_videos, decord_copy_fails, kind):
    path, _ = width_videos[(kind, 170)]
    with pytest.raises(VideoDecodeError, match="DECORDArrayCopyFromTo.*padded frame rows") as info:
        VideoReader(path, backend="decord")
    assert info.value.backend == "decord" and info.value.path == str(path)


def test_simulated_copy_error_auto_uses_pyav(width_videos, decord_copy_fails):
    path, ref = width_videos[("in_order", 170)]
    with VideoReader(path) as vr:
        assert vr.backend == "pyav"
        assert np.array_equal(vr.get_frames([4, 1]).numpy(), ref[[4, 1]])


def test_error_after_open_is_named(width_videos, monkeypatch):
    path, _ = width_videos[("in_order", 340)]
    monkeypatch.setattr(video_backends._DecordBackend, "_check_first_read", lambda self: setattr(self, "frame_shape", (36, 340, 3)))
    vr = VideoReader(path, backend="decord")
    monkeypatch.setattr(decord.VideoReader, "get_batch", _raise_copy_error)
    with pytest.raises(VideoDecodeError, match=r"\[decord\]: decoding failed \(Check failed.*DECORDArrayCopyFromTo"):
        vr.get_frames([0, 1])


class _FakeNDArray:
    def __init__(self, arr):
        self.arr = arr

    def asnumpy(self):
        return self.arr


@pytest.mark.parametrize("bad_shape", [(1, 36, 384, 3), (1, 36, 340, 4), (1, 48, 340, 3)])
def test_frame_shape_mismatch_raises(width_videos, monkeypatch, bad_shape):
    path, _ = width_videos[("in_order", 340)]
    monkeypatch.setattr(decord.VideoReader, "get_batch", lambda self, i: _FakeNDArray(np.zeros(bad_shape, np.uint8)))
    with pytest.raises(VideoDecodeError, match=r"shape .* the stream is 36x340x3"):
        VideoReader(path, backend="decord")


def test_auto_fallback_logs_once_per_cause(width_videos, monkeypatch, caplog):
    # PyAV refusing files sends auto to decord; decord failing too gives an error naming both
    monkeypatch.setattr(decode, "_LOGGED_FALLBACKS", set())

    def pyav_fails(self, path, num_threads, device="cpu"):
        raise VideoDecodeError(path, f"simulated failure at byte {len(str(path))}", "pyav")

    monkeypatch.setattr(video_backends._PyAVBackend, "__init__", pyav_fails)
    paths = [width_videos[(kind, w)][0] for kind in sorted(KINDS) for w in WIDTHS]
    opened = 0
    with caplog.at_level(logging.WARNING, logger="videogn.data.decode"):
        for p in paths:
            try:
                with VideoReader(p) as vr:
                    assert vr.backend == "decord"
                    opened += 1
            except VideoDecodeError as e:  # decord refuses this width here: both causes named
                assert e.backend == "pyav+decord" and "simulated failure" in e.cause
    lines = [r for r in caplog.records if "simulated failure" in r.getMessage()]
    assert len(lines) == min(opened, 1)  # one per distinct cause (numbers masked), not one per file
    monkeypatch.setattr(decord.VideoReader, "get_batch", _raise_copy_error)
    monkeypatch.setattr(decord.VideoReader, "next", _raise_copy_error)
    with pytest.raises(VideoDecodeError, match=r"pyav: simulated failure.*; decord: .*DECORDArrayCopyFromTo"):
        VideoReader(paths[0])

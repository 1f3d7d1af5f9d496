"""write_video: real files that PyAV reads back with the right size, count, rate and frame types."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from av.video.frame import PictureType

from videogn.data import write_video
from video_factory import pattern_frames


def _probe(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        return s, frames, [f.to_ndarray(format="rgb24") for f in frames], len(c.streams.audio)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_roundtrip(tmp_path, codec, suffix):
    frames = pattern_frames(12, 48, 64)
    path = write_video(tmp_path / f"v{suffix}", torch.from_numpy(frames), fps=30, codec=codec)
    s, decoded, rgb, _ = _probe(path)
    assert len(decoded) == 12 and s.codec_context.width == 64 and s.codec_context.height == 48
    assert s.average_rate == 30
    assert s.codec_context.name == ("h264" if codec == "libx264" else "mpeg4")
    # lossy, but close: the mean error of a smooth pattern stays small
    assert np.abs(np.stack(rgb).astype(int) - frames).mean() < 12


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_bframes_present_or_absent(tmp_path, codec):
    frames = pattern_frames(30, 48, 64)
    with_b = _probe(write_video(tmp_path / "b.mp4", frames, codec=codec, bframes=3, gop=12))[1]
    without = _probe(write_video(tmp_path / "nob.mp4", frames, codec=codec, bframes=0, gop=12))[1]
    types = lambda fs: [PictureType(int(f.pict_type)).name for f in fs]
    assert types(with_b).count("B") >= 10
    assert "B" not in types(without)


def test_ntsc_rate_and_audio(tmp_path):
    s, decoded, _, n_audio = _probe(write_video(tmp_path / "a.mp4", pattern_frames(10), fps=29.97, audio=True))
    assert s.average_rate == Fraction(30000, 1001) and len(decoded) == 10 and n_audio == 1


def test_odd_size(tmp_path):
    frames = pattern_frames(4, 47, 63)
    with pytest.raises(ValueError, match="63x47.*yuv444p"):
        write_video(tmp_path / "odd.mp4", frames)
    s, decoded, _, _ = _probe(write_video(tmp_path / "odd444.mp4", frames, pix_fmt="yuv444p"))
    assert (s.codec_context.width, s.codec_context.height) == (63, 47) and len(decoded) == 4


@pytest.mark.parametrize(
    "frames, kwargs, match",
    [
        (np.zeros((4, 48, 64, 3), np.float32), {}, "uint8"),
        (np.zeros((48, 64, 3), np.uint8), {}, r"\(T, H, W, 3\)"),
        (np.zeros((0, 48, 64, 3), np.uint8), {}, "at least one frame"),
        (np.zeros((4, 48, 64, 3), np.uint8), {"codec": "vp8"}, "codec"),
        (np.zeros((4, 48, 64, 3), np.uint8), {"fps": 0}, "fps"),
        (np.zeros((4, 48, 64, 3), np.uint8), {"bframes": -1}, "bframes"),
        (np.zeros((4, 48, 64, 3), np.uint8), {"crf": 99}, "crf"),
    ],
)
def test_bad_input(tmp_path, frames, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        write_video(tmp_path / "x.mp4", frames, **kwargs)

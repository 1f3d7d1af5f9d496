"""The torchcodec backend (optional): frame-exact against a full PyAV decode where it reads a file,
a named refusal where it cannot (no per-frame timestamps).

Every test here carries the ``torchcodec`` marker: where torchcodec's native library does not load
(FFmpeg's shared libraries missing) they skip, saying why, and with VIDEOGN_REQUIRE_TORCHCODEC=1
(CI's step after installing FFmpeg) they fail instead (tests/data/conftest.py). What happens
without the library is tested in test_video_decode_backends.py. NVDEC (``device="cuda"``) needs a
GPU and torchcodec's CUDA build: not exercised here.
"""

import numpy as np
import pytest

from videogn.data import VideoDecodeError, VideoReader, available_backends
from video_factory import GOOD_VIDEOS

pytestmark = pytest.mark.torchcodec

# containers without per-frame pts: torchcodec returned wrong frames there, so the backend refuses
REFUSED = {"mpeg4_bframes.avi"}


def test_listed_but_not_chosen_by_auto(good_videos):
    assert available_backends()[-1] == "torchcodec"
    assert VideoReader(good_videos["h264_short.mp4"]).backend == "pyav"  # auto: PyAV measured faster


@pytest.mark.parametrize("name", sorted(GOOD_VIDEOS))
def test_frames_equal_full_pyav_decode(good_videos, reference_frames, name):
    ref = reference_frames[name]
    if name in REFUSED:
        with pytest.raises(VideoDecodeError, match="no per-frame timestamps") as info:
            VideoReader(good_videos[name], backend="torchcodec")
        assert info.value.backend == "torchcodec"
        return
    rng = np.random.default_rng(0)
    n = len(ref)
    index_sets = [np.arange(n), np.arange(n)[::-1].copy(), rng.integers(0, n, 12), np.array([n - 1, 0, n // 2, n // 2]),
                  np.array([n - 1]), np.array([n // 2, n - 1])]
    for idx in index_sets:
        with VideoReader(good_videos[name], backend="torchcodec") as vr:  # fresh: the first seek matters
            assert vr.backend == "torchcodec" and len(vr) == n
            got = vr.get_frames(idx)
            assert got.dtype.is_floating_point is False and got.device.type == "cpu"
            bad = [int(i) for k, i in enumerate(idx) if not np.array_equal(got[k].numpy(), ref[i])]
            assert not bad, f"{name}: wrong frames at {bad[:8]} for request {idx.tolist()}"


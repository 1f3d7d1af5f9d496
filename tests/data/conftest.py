"""Fixtures for the data tests: small real videos made once per session (tests/data/video_factory.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ has no __init__.py: make video_factory importable

import video_factory as vf  # noqa: E402

GOOD_VIDEOS = vf.GOOD_VIDEOS


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test of a backend this machine cannot use (its ``backend`` parameter, or the ``torchcodec``
    marker) skips with the reason, or fails where CI requires torchcodec (video_factory.require_backend)."""
    names = {"torchcodec"} if item.get_closest_marker("torchcodec") else set()
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get("backend") if callspec is not None else None
    if isinstance(param, str) and param in vf.BACKENDS:
        names.add(param)
    for name in sorted(names):
        vf.require_backend(name)


def full_decode(path: Path) -> np.ndarray:
    """Reference: every frame of an in-order PyAV decode, RGB (T, H, W, 3)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="session")
def good_videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("good_videos")
    return {name: make(folder / name) for name, make in GOOD_VIDEOS.items()}


@pytest.fixture(scope="session")
def reference_frames(good_videos) -> dict[str, np.ndarray]:
    return {name: full_decode(p) for name, p in good_videos.items()}


@pytest.fixture(scope="session")
def damaged_videos(tmp_path_factory) -> dict[str, Path]:
    return vf.make_damaged_set(tmp_path_factory.mktemp("damaged"))


@pytest.fixture(scope="session")
def video_factory():
    return vf

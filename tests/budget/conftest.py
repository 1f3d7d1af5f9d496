"""Fixtures for the budget tests: the data tests' small real videos (tests/data/video_factory.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))  # tests/ has no __init__.py

import video_factory as vf  # noqa: E402


@pytest.fixture(scope="session")
def video_factory():
    return vf

"""Shared fixtures of the engine tests: the real configs composed with ``experiment=tiny`` (the one
tiny test config, ``configs/experiment/tiny.yaml``) and one small built-in dataset per session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from omegaconf import DictConfig


@pytest.fixture
def compose_train(compose, synthetic_cache: Path) -> Callable[..., DictConfig]:
    """``compose_train(*overrides, tiny=True)``: the real train config (``experiment=tiny`` unless told)."""

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose("train", *overrides, tiny=tiny)

    return make

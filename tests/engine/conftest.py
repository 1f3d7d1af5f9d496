"""Shared fixtures of the engine tests: the real configs composed with tiny overrides, and one
small built-in dataset generated once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from videogn.config import register_configs
from videogn.train import CONFIG_DIR

# A seconds-long run: 3 classes x 4 clips of 12 frames at 32x32, 4-frame clips, batches of 2.
TINY = [
    "trainer=debug",
    "data.synthetic.num_classes=3",
    "data.synthetic.train_per_class=4",
    "data.synthetic.val_per_class=2",
    "data.synthetic.frames=12",
    "data.synthetic.size=32",
    "data.train_scale=[32,36]",
    "data.crop_size=28",
    "data.test_scale=32",
    "data.num_clips=2",
    "data.num_workers=0",
    "budget.num_frames=4",
    "budget.batch_size=2",
    "model.dropout=0.5",
    "optim.lr=0.05",
    "optim.reference_batch_size=null",
]


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videogn-cache")


@pytest.fixture
def compose_train(synthetic_cache: Path) -> Callable[..., DictConfig]:
    """``compose_train(*overrides, tiny=True)``: the real train config (tiny unless told)."""
    register_configs()

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        extra = TINY + [f"data.synthetic.cache_dir={synthetic_cache}"] if tiny else []
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=extra + list(overrides))

    return make

"""Test-wide setup: Triton runs in its interpreter on machines without CUDA (set before any import
of the kernel module), and tests stay on one intra-op thread so pytest-xdist workers share cores.

Every test that needs a small run uses the shipped ``experiment=tiny`` config (:data:`TINY`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from omegaconf import DictConfig

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(1)

TINY = "experiment=tiny"  # configs/experiment/tiny.yaml: a seconds-long run on a tiny built-in dataset


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], object]:
    """``load_script("bench_loader")``: ``scripts/<name>.py`` imported as a module (once per session)."""
    import importlib.util

    loaded: dict[str, object] = {}

    def load(name: str) -> object:
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of the tiny built-in dataset for the whole session."""
    return tmp_path_factory.mktemp("videogn-cache")


@pytest.fixture
def compose(synthetic_cache: Path) -> Callable[..., DictConfig]:
    """``compose(name, *overrides, tiny=False)``: ``configs/<name>.yaml`` composed as the console
    scripts do (from the installed ``videogn.configs``); ``tiny=True`` adds ``experiment=tiny`` and
    the session's dataset cache."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from videogn.cli import CONFIG_MODULE
    from videogn.config import register_configs

    register_configs()

    def make(name: str, *overrides: str, tiny: bool = False) -> DictConfig:
        extra = [TINY, f"data.synthetic.cache_dir={synthetic_cache}"] if tiny else []
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(name, overrides=extra + list(overrides))

    return make

"""The console scripts' launcher (``videogn-train``, ``videogn-eval``, ``videogn-predict``): OpenMP
set to wait passively before torch loads it, then the entry point runs.

libgomp reads ``OMP_WAIT_POLICY`` once, when ``import torch`` loads it, and importing anything under
``videogn`` imports torch first (``videogn/__init__``). So the console scripts start in this
top-level, stdlib-only module: it runs :func:`videogn.threads.ensure_passive_openmp` (a stdlib-only
file, loaded here without importing the package; with OpenMP not yet loaded it only sets the
variable, unless the user set it), then imports and calls ``videogn.train:main``,
``videogn.evaluate:main`` or ``videogn.predict:main``. ``python -m videogn.train`` starts inside the
package, where torch is already loaded: its ``__main__`` block calls the same function, which then
re-executes the process once. Library users are left alone: importing videogn changes nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType
from typing import Any

__all__ = ["evaluate", "predict", "train"]


def _threads_module() -> ModuleType:
    """``videogn/threads.py`` executed on its own: ``import videogn.threads`` would run
    ``videogn/__init__`` and load torch first."""
    package = importlib.util.find_spec("videogn")  # finds the package without importing it
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("videogn is not installed: pip install videogn")
    path = os.path.join(list(package.submodule_search_locations)[0], "threads.py")
    spec = importlib.util.spec_from_file_location("_videogn_launch_threads", path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"videogn's thread policy is missing: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(entry_point: str) -> Any:
    _threads_module().ensure_passive_openmp()
    module, _, name = entry_point.partition(":")
    return getattr(importlib.import_module(module), name)()


def train() -> Any:
    """``videogn-train``."""
    return _launch("videogn.train:main")


def evaluate() -> Any:
    """``videogn-eval``."""
    return _launch("videogn.evaluate:main")


def predict() -> Any:
    """``videogn-predict``."""
    return _launch("videogn.predict:main")

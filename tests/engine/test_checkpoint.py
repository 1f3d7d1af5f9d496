"""Checkpoints: atomic writes, weights_only loading, damaged-file handling, RNG round trips."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from videogn.engine import checkpoint as ckpt


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((4,), value)}, "step": int(value), "rng": ckpt.capture_rng_state()}


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint(_state(3.0), ckpt.checkpoint_path(tmp_path, 3))
    assert path.name == "step_000000003.pt"
    state = torch.load(path, weights_only=True)  # no pickled objects anywhere
    assert state["step"] == 3 and torch.equal(state["model"]["w"], torch.full((4,), 3.0))


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = ckpt.save_checkpoint(_state(1.0), ckpt.checkpoint_path(tmp_path, 1))
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half-written file, then the process "dies"
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(_state(2.0), ckpt.checkpoint_path(tmp_path, 2))
    monkeypatch.undo()
    # nothing under the final name, no temp file left, the previous checkpoint intact
    assert not ckpt.checkpoint_path(tmp_path, 2).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]
    path, state = ckpt.find_latest_checkpoint(tmp_path)
    assert path == good and state["step"] == 1


def test_damaged_newest_checkpoint_is_skipped(tmp_path: Path) -> None:
    ckpt.save_checkpoint(_state(1.0), ckpt.checkpoint_path(tmp_path, 1))
    bad = ckpt.checkpoint_path(tmp_path, 2)
    ckpt.save_checkpoint(_state(2.0), bad)
    bad.write_bytes(bad.read_bytes()[:200])  # e.g. a disk-full copy
    with pytest.raises(RuntimeError, match="unreadable"):
        ckpt.load_checkpoint(bad)
    path, state = ckpt.find_latest_checkpoint(tmp_path)
    assert path.name == "step_000000001.pt" and state["step"] == 1


def test_missing_directory_has_no_checkpoint(tmp_path: Path) -> None:
    assert ckpt.find_latest_checkpoint(tmp_path / "nope") is None
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")


def test_prune_keeps_newest(tmp_path: Path) -> None:
    for s in (5, 10, 15, 20):
        ckpt.save_checkpoint(_state(float(s)), ckpt.checkpoint_path(tmp_path, s))
    deleted = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in deleted) == ["step_000000005.pt", "step_000000010.pt"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_000000020.pt", "step_000000015.pt"]


def test_rng_state_round_trip_through_a_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in NumPy's state
    random.gauss(0, 1)
    path = ckpt.save_checkpoint({"model": {}, "rng": ckpt.capture_rng_state()}, tmp_path / "step_000000001.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.normal(), np.random.rand(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.restore_rng_state(torch.load(path, weights_only=True)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.normal(), np.random.rand(), torch.rand(3))
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])

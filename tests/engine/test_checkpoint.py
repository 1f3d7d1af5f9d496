"""Checkpoints (videogn.checkpoint): atomic writes, weights_only loading, the version check and
migrations, every refusal's message, one unwrapping rule set for foreign weights, RNG round trips."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import videogn
from videogn import checkpoint as ckpt
from videogn.checkpoint import CheckpointError

FIXTURE_V1 = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_v1.pt"
# The fixture was written by videogn 0.1.0's trainer (format version 1), `experiment=tiny` with a
# narrower model so that it stays small:
#   python -m videogn.train experiment=tiny trainer.eval_after_train=false \
#       '+model.kwargs.widths=[8,16,32,64]' +model.kwargs.stem_width=8
FIXTURE_OVERRIDES = ("+model.kwargs.widths=[8,16,32,64]", "+model.kwargs.stem_width=8")


def _state(value: float, **training: object) -> dict:
    return ckpt.make_checkpoint(
        model_state={"w": torch.full((4,), value)}, step=int(value), class_names=["a", "b"], config="name: t\n",
        rng=ckpt.capture_rng_state(), **training,
    )


def _write_raw(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


# ------------------------------------------------------------------------------------------
# writing and reading a folder of checkpoints
# ------------------------------------------------------------------------------------------


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint(_state(3.0), ckpt.checkpoint_path(tmp_path, 3))
    assert path.name == "step_000000003.pt"
    state = torch.load(path, weights_only=True)  # no pickled objects anywhere
    assert state["step"] == 3 and torch.equal(state["model"]["w"], torch.full((4,), 3.0))
    assert state["format"] == ckpt.FORMAT and state["version"] == ckpt.FORMAT_VERSION
    assert state["videogn_version"] == videogn.__version__


def test_make_checkpoint_refuses_to_overwrite_format_keys() -> None:
    with pytest.raises(ValueError, match="version"):
        ckpt.make_checkpoint(model_state={}, step=0, class_names=[], config="", version=7)


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
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        ckpt.load_checkpoint(bad)
    assert str(bad) in str(info.value) and info.value.reason == "damaged"
    path, state = ckpt.find_latest_checkpoint(tmp_path)
    assert path.name == "step_000000001.pt" and state["step"] == 1


def test_newest_checkpoint_from_a_newer_videogn_is_not_skipped(tmp_path: Path) -> None:
    # skipping it would resume from an older step and later overwrite the newer run's files
    ckpt.save_checkpoint(_state(1.0), ckpt.checkpoint_path(tmp_path, 1))
    ckpt.save_checkpoint({**_state(2.0), "version": ckpt.FORMAT_VERSION + 1}, ckpt.checkpoint_path(tmp_path, 2))
    with pytest.raises(CheckpointError, match="newer videogn"):
        ckpt.find_latest_checkpoint(tmp_path)


def test_missing_directory_has_no_checkpoint(tmp_path: Path) -> None:
    assert ckpt.find_latest_checkpoint(tmp_path / "nope") is None
    with pytest.raises(CheckpointError, match="nope.pt.*not found") as info:
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    assert info.value.reason == "missing"


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
    path = ckpt.save_checkpoint(_state(0.0), tmp_path / "step_000000001.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.normal(), np.random.rand(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.restore_rng_state(ckpt.load_checkpoint(path)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.normal(), np.random.rand(), torch.rand(3))
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])


# ------------------------------------------------------------------------------------------
# refusals: each names the file and the cause
# ------------------------------------------------------------------------------------------


def test_newer_format_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    newer = ckpt.FORMAT_VERSION + 1
    path = _write_raw({**_state(1.0), "version": newer, "videogn_version": "9.0.0"}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and info.value.reason == "newer"
    expected = f"written by a newer videogn (videogn 9.0.0, format version {newer} > {ckpt.FORMAT_VERSION})"
    assert f"{expected}; upgrade videogn" in message
    with pytest.raises(CheckpointError, match="upgrade videogn"):  # the weights reader applies the same check
        ckpt.read_weights(path)


@pytest.mark.parametrize("version", [0, "2", None, True])
def test_invalid_format_version_is_refused(tmp_path: Path, version: object) -> None:
    path = _write_raw({**_state(1.0), "version": version}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="invalid format version"):
        ckpt.load_checkpoint(path)


def test_foreign_file_is_not_a_videogn_checkpoint(tmp_path: Path) -> None:
    path = _write_raw({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"foreign\.pt.*not a videogn checkpoint.*model\.weights") as info:
        ckpt.load_checkpoint(path)
    assert info.value.reason == "not_videogn"
    assert set(ckpt.read_weights(path).state_dict) == {"w"}  # but its weights read fine


def test_weights_only_checkpoint_cannot_be_resumed(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint(
        ckpt.make_checkpoint(model_state={"w": torch.ones(1)}, step=5, class_names=["a"], config=""), tmp_path / "w.pt"
    )
    assert ckpt.load_checkpoint(path)["step"] == 5
    with pytest.raises(CheckpointError, match="no training state.*optimizer.*model.weights=PATH"):
        ckpt.load_checkpoint(path, resume=True)


def test_pickled_objects_are_refused_not_run(tmp_path: Path) -> None:
    path = _write_raw({"state_dict": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects") as info:
        ckpt.read_weights(path)
    assert str(path) in str(info.value)


def test_empty_and_non_torch_files_are_damaged(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    for name in ("empty.pt", "text.pt"):
        with pytest.raises(CheckpointError, match="truncated or damaged"):
            ckpt.read_weights(tmp_path / name)


# ------------------------------------------------------------------------------------------
# format version 1 (videogn 0.1.0's trainer): still loads, migrated, and resumes
# ------------------------------------------------------------------------------------------


def test_version_1_fixture_is_what_it_claims() -> None:
    raw = torch.load(FIXTURE_V1, weights_only=True)
    assert raw["format"] == ckpt.FORMAT and raw["version"] == 1 and "videogn_version" not in raw
    assert FIXTURE_V1.stat().st_size < 2 * 2**20


def test_version_1_checkpoint_is_migrated_and_its_model_loads() -> None:
    from videogn.config import ModelConfig, NormConfig
    from videogn.engine.build import build_model

    state = ckpt.load_checkpoint(FIXTURE_V1)
    assert state["version"] == ckpt.FORMAT_VERSION and state["videogn_version"] == "0.1.0"
    assert state["step"] == 4 and set(ckpt.RESUME_KEYS) <= state.keys()
    # only the model and norm sections: the rest of an old config is the config schema's to upgrade
    saved = OmegaConf.create(state["config"])
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), saved.model))
    norm_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(NormConfig), saved.norm))
    assert model_cfg.name == "i3d_tiny" and norm_cfg.name == "gn"
    model = build_model(model_cfg, norm_cfg, len(state["class_names"]), load_weights=False)
    model.load_state_dict(state["model"])  # strict: every key and shape of the model its config names
    weights = ckpt.read_weights(FIXTURE_V1)
    assert weights.wrapper == "model" and weights.checkpoint is not None
    assert weights.checkpoint["version"] == ckpt.FORMAT_VERSION
    assert weights.state_dict.keys() == model.state_dict().keys()


def test_training_resumes_from_a_version_1_checkpoint(compose_train, tmp_path: Path) -> None:
    from videogn.config import validate
    from videogn.engine.trainer import Trainer

    conf = validate(compose_train(*FIXTURE_OVERRIDES, "trainer.max_steps=6", f"trainer.resume={FIXTURE_V1}"))
    trainer = Trainer(conf, tmp_path)
    assert trainer.state.step == 4 and trainer.state.batch_in_epoch == 4 and trainer.resumed_from == FIXTURE_V1
    v1 = torch.load(FIXTURE_V1, weights_only=True)
    for k, v in trainer.unwrapped_model.state_dict().items():
        assert torch.equal(v, v1["model"][k]), k
    assert trainer.fit()["steps"] == 6
    newest = ckpt.list_checkpoints(tmp_path / "checkpoints")[0]
    assert newest.name == "step_000000006.pt"
    assert torch.load(newest, weights_only=True)["version"] == ckpt.FORMAT_VERSION  # written in the current format


def test_resume_from_a_damaged_file_is_a_config_error(compose_train, tmp_path: Path) -> None:
    from videogn.config import ConfigError, validate
    from videogn.engine.trainer import Trainer

    bad = tmp_path / "bad.pt"
    bad.write_bytes(FIXTURE_V1.read_bytes()[:1000])
    conf = validate(compose_train(*FIXTURE_OVERRIDES, f"trainer.resume={bad}"))
    with pytest.raises(ConfigError, match=r"trainer.resume: checkpoint .*bad\.pt.* truncated or damaged"):
        Trainer(conf, tmp_path / "run")


# ------------------------------------------------------------------------------------------
# foreign weights: one rule set
# ------------------------------------------------------------------------------------------


def _sd() -> dict[str, torch.Tensor]:
    return nn.Sequential(nn.Conv3d(3, 4, 1), nn.GroupNorm(2, 4)).state_dict()


@pytest.mark.parametrize(
    "wrap, wrapper",
    [
        (lambda sd: sd, None),  # a bare state dict
        (lambda sd: {"model_state": sd, "train_state": None}, "model_state"),  # pytorchvideo hub files
        # Lightning, timm, torchvision's ImageNet example (a tensor beside the wrapper)
        (lambda sd: {"state_dict": sd, "epoch": 3, "best_acc1": torch.tensor(70.1)}, "state_dict"),
        (lambda sd: {"model": sd, "optimizer": {"state": {}}, "epoch": 3}, "model"),  # DeiT-style
        (lambda sd: {"module": sd}, "module"),
        (lambda sd: {"state_dict": {"module": sd}}, "state_dict.module"),  # nested wrappers
    ],
)
def test_foreign_wrappers_are_unwrapped(wrap, wrapper: str) -> None:
    sd = _sd()
    state, found = ckpt.unwrap_state_dict(wrap(sd))
    assert found == wrapper and state.keys() == sd.keys()
    assert all(torch.equal(state[k], sd[k]) for k in sd)


def test_videogn_checkpoint_unwraps_to_its_model() -> None:
    sd = _sd()
    state, wrapper = ckpt.unwrap_state_dict(ckpt.make_checkpoint(model_state=sd, step=1, class_names=[], config=""))
    assert wrapper == "model" and state.keys() == sd.keys()


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_every_key_carries_are_removed(prefix: str) -> None:
    sd = _sd()
    state, _ = ckpt.unwrap_state_dict({"state_dict": {prefix + k: v for k, v in sd.items()}})
    assert state.keys() == sd.keys()


def test_a_prefix_only_some_keys_carry_is_a_module_name_and_kept() -> None:
    sd = {"module.weight": torch.ones(1), "head.weight": torch.ones(1)}  # a submodule called "module"
    assert ckpt.unwrap_state_dict(sd)[0].keys() == sd.keys()


def test_entries_that_are_not_tensors_are_dropped() -> None:
    state, wrapper = ckpt.unwrap_state_dict({"w": torch.ones(1), "epoch": 3, "arch": "resnet18"})
    assert wrapper is None and list(state) == ["w"]


@pytest.mark.parametrize("obj", [{"epoch": 3, "net": {"w": 1}}, {}, [torch.ones(1)], torch.ones(1)])
def test_no_state_dict_is_an_error(obj: object) -> None:
    with pytest.raises(CheckpointError, match="my.pt holds no state dict") as info:
        ckpt.unwrap_state_dict(obj, source="my.pt")
    assert info.value.reason == "no_state_dict"


def test_read_weights_accepts_a_loaded_object_and_a_file(tmp_path: Path) -> None:
    sd = _sd()
    from_obj = ckpt.read_weights({"model_state": sd})
    assert from_obj.checkpoint is None and from_obj.wrapper == "model_state" and from_obj.state_dict.keys() == sd.keys()
    path = _write_raw({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pt")
    from_file = ckpt.read_weights(path)
    assert from_file.checkpoint is None and from_file.wrapper == "state_dict"
    assert from_file.state_dict.keys() == sd.keys()
    with pytest.raises(CheckpointError, match="nope.pt.*not found"):
        ckpt.read_weights(tmp_path / "nope.pt")

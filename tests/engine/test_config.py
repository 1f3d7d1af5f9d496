"""Every shipped config composes and validates; bad values stop with the field and value named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from videogn.config import ConfigError, EvalConfig, TrainConfig, register_configs, validate
from videogn.train import CONFIG_DIR

GROUPS = ("model", "norm", "data", "budget", "optim", "sched", "trainer", "experiment")
KINETICS_PATHS = ["data.root=/data/k400", "data.train_annotation=/data/k400/train.csv", "data.val_annotation=/data/k400/validate.csv"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def _compose(name: str, overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=overrides)


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert _options(group), f"configs/{group}/ is empty"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_config_composes_and_validates(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    cfg = _compose("train", overrides)
    if cfg.data.name == "kinetics":
        overrides += KINETICS_PATHS
        cfg = _compose("train", overrides)
    conf = validate(cfg)
    assert isinstance(conf, TrainConfig)
    if group != "experiment":
        assert getattr(conf, group) is not None


def test_default_is_the_main_job() -> None:
    conf = validate(_compose("train", []))
    assert (conf.model.name, conf.norm.name, conf.data.name) == ("i3d_tiny", "gn", "synthetic")
    assert conf.trainer.eval_after_train and conf.data.flip is False  # a flip would swap left/right classes


@pytest.mark.parametrize(
    "experiment,norm,frames,stride,batch",
    [
        ("k400_i3d_r50_gn_32x8", "gn", 32, 2, 8),
        ("k400_i3d_r50_bn_32x8", "bn", 32, 2, 8),
        ("k400_i3d_r50_gn_32x4", "gn", 32, 2, 4),
        ("k400_i3d_r50_bn_32x4", "bn", 32, 2, 4),
        ("k400_i3d_r50_gn_64x4", "gn", 64, 1, 4),
        ("k400_i3d_r50_bn_64x4", "bn", 64, 1, 4),
    ],
)
def test_paper_rows_carry_the_recipe(experiment: str, norm: str, frames: int, stride: int, batch: int) -> None:
    conf = validate(_compose("train", [f"experiment={experiment}"] + KINETICS_PATHS))
    assert conf.model.name == "i3d_r50" and conf.norm.name == norm and conf.model.dropout == 0.5
    assert (conf.budget.num_frames, conf.budget.stride, conf.budget.batch_size) == (frames, stride, batch)
    o, s, d = conf.optim, conf.sched, conf.data
    assert (o.lr, o.reference_batch_size, o.momentum, o.nesterov, o.weight_decay, o.norm_weight_decay) == (
        0.01, 64, 0.9, True, 1e-4, 0.0)
    assert (s.name, list(s.milestones), s.gamma, conf.trainer.max_steps) == ("step", [0.375, 0.75], 0.1, 400000)
    assert (list(d.train_scale), d.crop_size, d.flip, d.test_scale, d.num_clips, d.num_crops) == (
        [256, 320], 224, True, 256, 10, 3)


def test_kinetics_paths_are_required() -> None:
    with pytest.raises(ConfigError, match=r"data\.root"):
        validate(_compose("train", ["data=kinetics400"]))


def test_eval_config_composes() -> None:
    conf = validate(_compose("eval", ["checkpoint=/tmp/x.pt", "num_clips=10", "num_crops=3"]))
    assert isinstance(conf, EvalConfig) and (conf.num_clips, conf.num_crops, conf.data) == (10, 3, None)
    conf = validate(_compose("eval", ["checkpoint=/tmp/x.pt", "data=kinetics400"] + KINETICS_PATHS))
    assert conf.data is not None and conf.data.name == "kinetics"


def test_eval_checkpoint_is_required() -> None:
    with pytest.raises(ConfigError, match="checkpoint"):
        validate(_compose("eval", []))


@pytest.mark.parametrize(
    "override,named",
    [
        ("optim.lr=-1", "optim.lr"),
        ("optim.momentum=1.5", "optim.momentum"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("trainer.accumulate=0", "trainer.accumulate"),
        ("model.name=resnet9000", "model.name"),
        ("norm.name=batchy", "norm.name"),
        ("budget.batch_size=0", "budget.batch_size"),
        ("budget.sampler=nope", "budget.sampler"),
        ("data.num_crops=2", "data.num_crops"),
        ("data.train_scale=[320,256]", "data.train_scale"),
        ("sched.milestones=[0.8,0.2]", "sched.milestones"),
        ("sched.name=linear", "sched.name"),
        ("data.synthetic.size=31", "data.synthetic.size"),
        ("data.synthetic.num_classes=99", "data.synthetic.num_classes"),
    ],
)
def test_bad_values_name_field_and_value(override: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(_compose("train", [override]))
    value = override.split("=", 1)[1].strip("[]").split(",")[0]
    assert named in str(err.value) and value in str(err.value)


@pytest.mark.parametrize(
    "override,named",
    [("optim.lr=abc", "optim.lr"), ("optim.nope=1", "nope"), ("trainer.epochs=many", "trainer.epochs")],
)
def test_bad_types_and_keys_fail_at_composition(override: str, named: str) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as err:
        _compose("train", [override])
    text = str(err.value) + str(err.value.__cause__ or "")
    assert named in text


def test_synthetic_config_mirrors_the_dataset_spec():
    """data.synthetic repeats SyntheticSpec's fields for Hydra; they must not drift apart."""
    import dataclasses

    from videogn.config.schema import SyntheticConfig
    from videogn.data.synthetic import SyntheticSpec

    spec = {f.name: f.default for f in dataclasses.fields(SyntheticSpec)}
    config = {f.name: f.default for f in dataclasses.fields(SyntheticConfig) if f.name != "cache_dir"}
    assert config == spec

"""Every shipped config composes and validates; bad values stop with the field and value named;
unknown keys are refused (with ``+`` too) naming the closest valid key; the YAML files state only
what differs from the schema's defaults."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videogn.cli import CONFIG_MODULE, check_overrides, config_dir
from videogn.config import ConfigError, EvalConfig, TrainConfig, register_configs, validate

GROUPS = ("model", "norm", "data", "budget", "optim", "sched", "trainer", "experiment")
KINETICS_PATHS = ["data.root=/data/k400", "data.train_annotation=/data/k400/train.csv", "data.val_annotation=/data/k400/validate.csv"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _compose(name: str, overrides: list[str]):
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
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
        ("k400_i3d_r50", "gn", 32, 2, 8),
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
    e = conf.eval
    assert (list(d.train_scale), d.crop_size, d.flip, e.test_scale, e.num_clips, e.num_crops) == (
        [256, 320], 224, True, 256, 10, 3)
    assert conf.name == experiment and conf.trainer.precision == "bf16"


def test_kinetics_paths_are_required() -> None:
    with pytest.raises(ConfigError, match=r"data\.root"):
        validate(_compose("train", ["data=kinetics400"]))


def test_eval_config_composes() -> None:
    conf = validate(_compose("eval", ["checkpoint=/tmp/x.pt", "eval.num_clips=10", "eval.num_crops=3"]))
    assert isinstance(conf, EvalConfig) and (conf.eval.num_clips, conf.eval.num_crops, conf.eval.test_scale) == (10, 3, None)
    assert conf.data.root is None  # every data field not given: the checkpoint's
    conf = validate(_compose("eval", ["checkpoint=/tmp/x.pt", "data=kinetics400"] + KINETICS_PATHS))
    assert conf.data.name == "kinetics"


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
        ("data.backend=ffmpeg", "data.backend"),
        ("data.num_workers=many", "data.num_workers"),
        ("eval.num_crops=2", "eval.num_crops"),
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


def test_num_workers_auto_is_the_cores_available() -> None:
    import os

    conf = validate(_compose("train", ["data=kinetics400"] + KINETICS_PATHS))
    assert conf.data.num_workers == max(1, min(len(os.sched_getaffinity(0)), 8))
    assert validate(_compose("train", ["data.num_workers=3"])).data.num_workers == 3


@pytest.mark.parametrize(
    "override,key,near",
    [
        ("+trainer.epoch=1", "trainer.epoch", "trainer.epochs"),
        ("+optim.learning_rate=0.1", "optim.learning_rate", None),
        ("+data.synthetic.num_class=4", "data.synthetic.num_class", "data.synthetic.num_classes"),
        ("+nme=x", "nme", "name"),
    ],
)
def test_keys_added_with_plus_are_refused(override: str, key: str, near: str | None) -> None:
    """Hydra lets ``+key`` add a key the schema lacks; the job would silently ignore it."""
    cfg = _compose("train", [override])  # composes: struct mode is lifted for "+"
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert f"{key} is not a config key" in str(err.value)
    assert (f"did you mean {near}?" in str(err.value)) if near else ("did you mean" not in str(err.value))


@pytest.mark.parametrize(
    "args,key,near",
    [
        (["trainer.epoch=1"], "trainer.epoch", "trainer.epochs"),
        (["+trainer.epoch=1"], "trainer.epoch", "trainer.epochs"),
        (["++budget.batchsize=2"], "budget.batchsize", "budget.batch_size"),
        (["model=i3d_r18", "+model.dropuot=0.1"], "model.dropuot", "model.dropout"),
        (["epochs=3"], "epochs", None),
        (["--cfg", "job", "trainer.epoch=1"], "trainer.epoch", "trainer.epochs"),
    ],
)
def test_command_line_keys_are_checked_before_hydra_runs(args: list[str], key: str, near: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides(args, TrainConfig)
    assert f"{key} is not a config key" in str(err.value)
    if near:
        assert f"did you mean {near}?" in str(err.value)


@pytest.mark.parametrize(
    "args",
    [["experiment=tiny", "model=i3d_r18", "norm.kwargs.num_groups=4", "+model.kwargs.width=8", "hydra.run.dir=x",
      "trainer.epochs=3", "data.synthetic.seed=2", "~trainer.seed", "hydra/job_logging=disabled"],
     ["--config-dir", "/tmp/mine", "mygroup=x"], ["--cfg", "job", "-p", "trainer", "trainer.epochs=2"]],
)
def test_valid_command_lines_pass_the_check(args: list[str]) -> None:
    check_overrides(args, TrainConfig)


def test_eval_keys_are_checked_against_the_eval_schema() -> None:
    check_overrides(["checkpoint=x.pt", "eval.num_clips=3", "data=kinetics400", "data.root=/x"], EvalConfig)
    with pytest.raises(ConfigError, match="eval.num_clip is not a config key; did you mean eval.num_clips"):
        check_overrides(["eval.num_clip=3"], EvalConfig)
    with pytest.raises(ConfigError, match="data.rooot is not a config key; did you mean data.root"):
        check_overrides(["data.rooot=/x"], EvalConfig)
    with pytest.raises(ConfigError, match="did you mean checkpoint"):
        validate(_compose("eval", ["checkpoint=x.pt", "+checkpont=y.pt"]))


def _schema_defaults(schema: type) -> dict[str, Any]:
    """A dataclass's defaults as a plain nested dict (nested dataclasses expanded)."""
    return OmegaConf.to_container(OmegaConf.structured(schema))  # type: ignore[return-value]


def _redundant(values: Any, defaults: Any, prefix: str = "") -> list[str]:
    if not isinstance(values, dict) or not isinstance(defaults, dict):
        return [prefix.rstrip(".")] if values == defaults else []
    out = []
    for key, value in values.items():
        # a group file's top-level ``name`` says what it selects, even when that is the default
        if key in defaults and key != "defaults" and not (prefix == "" and key == "name"):
            out += _redundant(value, defaults[key], f"{prefix}{key}.")
    return out


RULE_GROUPS = ("model", "norm", "data", "budget", "optim", "sched", "trainer")


@pytest.mark.parametrize("group,option", [(g, o) for g in RULE_GROUPS for o in _options(g)])
def test_group_files_state_only_what_differs_from_the_schema(group: str, option: str) -> None:
    """The config rule (README, "Configs"): a value is said once, in the library (the schema takes
    its defaults from it) unless a file changes it."""
    text = (config_dir() / group / f"{option}.yaml").read_text()
    values = yaml.safe_load(text) or {}
    if "# @package _global_" in text:  # it sets other sections too: compare with the whole schema
        defaults = _schema_defaults(TrainConfig)
        assert set(values) <= set(defaults), f"configs/{group}/{option}.yaml: unknown sections {set(values) - set(defaults)}"
    else:
        defaults = _schema_defaults(typing.get_type_hints(TrainConfig)[group])
    assert _redundant(values, defaults) == [], f"configs/{group}/{option}.yaml repeats the schema's defaults"


def test_experiment_files_state_only_what_differs() -> None:
    """An experiment's own values change the config it is laid over (the main job's)."""
    defaults = OmegaConf.to_container(_compose("train", []))
    for option in _options("experiment"):
        values = yaml.safe_load((config_dir() / "experiment" / f"{option}.yaml").read_text()) or {}
        values = {k: v for k, v in values.items() if k in ("data", "budget", "model", "optim", "sched", "trainer", "norm")}
        assert _redundant(values, defaults) == [], option


def test_paper_rows_differ_from_their_base_only_in_norm_budget_and_name() -> None:
    base = OmegaConf.to_container(_compose("train", ["experiment=k400_i3d_r50"] + KINETICS_PATHS))
    rows = [o for o in _options("experiment") if o.startswith("k400_i3d_r50_")]
    assert len(rows) == 6
    for row in rows:
        cfg = OmegaConf.to_container(_compose("train", [f"experiment={row}"] + KINETICS_PATHS))
        changed = {k for k in cfg if cfg[k] != base[k]}
        assert changed <= {"norm", "budget", "name"}, (row, changed)


def test_tiny_experiment_is_tiny() -> None:
    conf = validate(_compose("train", ["experiment=tiny"]))
    s = conf.data.synthetic
    assert (s.num_classes, s.train_per_class, s.val_per_class, s.frames) == (3, 4, 2, 12)
    assert (conf.trainer.max_steps, conf.trainer.device, conf.budget.batch_size, conf.data.num_workers) == (4, "cpu", 2, 0)


@pytest.mark.parametrize(
    "override,named",
    [("optim.lr=abc", "optim.lr"), ("optim.nope=1", "nope"), ("trainer.epochs=many", "trainer.epochs")],
)
def test_bad_types_and_keys_fail_at_composition(override: str, named: str) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as err:
        _compose("train", [override])
    text = str(err.value) + str(err.value.__cause__ or "")
    assert named in text


def test_data_synthetic_is_the_dataset_spec() -> None:
    """data.synthetic has SyntheticSpec's keys and defaults (derived from it) and builds the spec the
    dataset is generated from; a bad value is named as the config key."""
    from videogn.config.schema import SyntheticConfig
    from videogn.defaults import SyntheticSpec

    keys = [f.name for f in dataclasses.fields(SyntheticConfig)]
    assert keys == [f.name for f in dataclasses.fields(SyntheticSpec)] + ["cache_dir"]
    assert SyntheticConfig().to_spec() == SyntheticSpec()
    conf = validate(_compose("train", ["data.synthetic.num_distractors=2", "data.synthetic.task=tempo"]))
    assert conf.data.synthetic.to_spec() == SyntheticSpec(num_distractors=2, task="tempo")
    with pytest.raises(ConfigError, match=r"data\.synthetic\.fps must be an integer >= 1, got 0"):
        validate(_compose("train", ["data.synthetic.fps=0"]))


def test_the_schema_takes_its_defaults_from_the_library() -> None:
    from videogn.budget import DEFAULT_LENGTHS, DEFAULT_LONG_CYCLE, DEFAULT_SHORT_CYCLE
    from videogn.config.schema import BudgetConfig, DataConfig
    from videogn.data import KINETICS_MEAN, KINETICS_STD, KineticsDataset
    from videogn.data.annotations import DEFAULT_FILENAME_PATTERN

    data, budget = DataConfig(), BudgetConfig()
    assert (tuple(data.mean), tuple(data.std)) == (KINETICS_MEAN, KINETICS_STD)
    assert data.filename_pattern == DEFAULT_FILENAME_PATTERN
    assert inspect.signature(KineticsDataset).parameters["filename_pattern"].default == data.filename_pattern
    assert tuple(budget.lengths) == DEFAULT_LENGTHS and tuple(budget.short_cycle) == DEFAULT_SHORT_CYCLE
    assert [tuple(p) for p in budget.long_cycle] == list(DEFAULT_LONG_CYCLE)


def test_importing_the_config_does_not_import_the_data_package() -> None:
    """videogn.data loads every video decoder; the schema takes its defaults from leaf modules."""
    import subprocess
    import sys

    code = "import sys, videogn.config; print(sorted(m for m in sys.modules if m.startswith('videogn.data')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_schedule_has_a_budget_yaml() -> None:
    """A new schedule is a registered builder plus a YAML in configs/budget/ that selects it."""
    from videogn.budget import SCHEDULES

    chosen = {validate(_compose("train", [f"budget={o}"])).budget.schedule for o in _options("budget")}
    assert set(SCHEDULES.names()) <= chosen, f"no configs/budget/*.yaml selects {set(SCHEDULES.names()) - chosen}"


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["budget.lengths=[4,8]"], r"budget\.lengths is not an option of budget\.schedule='fixed' \(its options: none\)"),
        (["budget=constant_memory", "budget.num_long_cycles=2"],
         r"budget\.num_long_cycles is not an option of budget\.schedule='constant_memory' \(its options: "
         r"budget\.lengths, budget\.pairs, budget\.voxel_budget, budget\.order\)"),
        (["budget=multigrid", "budget.order=random"], r"budget\.order is not an option of budget\.schedule='multigrid'"),
    ],
)
def test_an_option_the_schedule_does_not_have_is_refused(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        validate(_compose("train", overrides))


def test_the_budget_shape_must_be_given() -> None:
    """No default clip shape fits every budget: each budget file states T and B (``???`` in the schema)."""
    with pytest.raises(ConfigError, match=r"budget\.num_frames must be given \(it is '\?\?\?' in the config\)"):
        validate(OmegaConf.structured(TrainConfig))

"""Fine-tuning through the trainer: a checkpoint of another class count with a new head, frozen stages
(no gradient, not in the optimizer, BN statistics unchanged), AdamW, a head learning-rate multiplier
and label smoothing, on the tiny built-in dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videogn.checkpoint import list_checkpoints, load_checkpoint
from videogn.config import validate
from videogn.config.schema import ConfigError
from videogn.engine.build import build_model
from videogn.engine.trainer import Trainer


@pytest.fixture
def pretrained(compose_train, tmp_path: Path) -> Path:
    """A 3-class tiny BN run's checkpoint (BN: frozen stages must keep their running statistics)."""
    Trainer(validate(compose_train("norm=bn", "trainer.max_steps=2")), tmp_path / "pretrain").fit()
    return list_checkpoints(tmp_path / "pretrain" / "checkpoints")[-1]


def _finetune(compose_train, weights: Path, *extra: str):
    return validate(compose_train(
        "norm=bn", "data.synthetic.num_classes=4", f"model.weights={weights}", "trainer.max_steps=2", *extra,
    ))


def test_finetune_onto_other_classes_with_a_new_head_and_frozen_stages(
    compose_train, pretrained: Path, tmp_path: Path
) -> None:
    conf = _finetune(compose_train, pretrained, "model.new_head=true", "model.freeze_stages=2", "optim=adamw",
                     "optim.head_lr_mult=10", "optim.label_smoothing=0.1")
    trainer = Trainer(conf, tmp_path / "finetune")
    model, source = trainer.unwrapped_model, load_checkpoint(pretrained)["model"]
    assert model.fc.out_features == 4 and source["fc.weight"].shape[0] == 3
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(start[k], source[k]) for k in start if not k.startswith("fc."))

    frozen_prefixes = ("stem.", "layer1.")  # freeze_stages=2: the stem and res2
    frozen = {n for n, _ in model.named_parameters() if n.startswith(frozen_prefixes)}
    assert frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all((id(p) in in_optimizer) == (n not in frozen) for n, p in model.named_parameters())
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert {id(p) for g in ("head_decay", "head_norm_and_bias") for p in groups[g]["params"]} == {
        id(model.fc.weight), id(model.fc.bias)}
    assert groups["head_decay"]["initial_lr"] == pytest.approx(10 * groups["decay"]["initial_lr"])

    trainer.fit()
    end = model.state_dict()
    bn_stats = [k for k in end if k.endswith((".running_mean", ".running_var"))]
    for key in end:  # frozen: weights and BN statistics as loaded; the rest trained
        if key.startswith(frozen_prefixes):
            assert torch.equal(end[key], start[key]), key
    assert any(not torch.equal(end[k], start[k]) for k in bn_stats if k.startswith("layer2."))
    assert not torch.equal(end["layer3.0.conv1.weight"], start["layer3.0.conv1.weight"])
    assert not torch.equal(end["fc.weight"], start["fc.weight"])
    assert not any(m.training for m in model.layer1.modules()) and model.layer2.training


def test_another_class_count_without_new_head_names_the_option(compose_train, pretrained: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.weights=.*classifier 'fc.weight'.*model.new_head=true"):
        Trainer(_finetune(compose_train, pretrained), tmp_path / "run")


def test_freeze_stages_beyond_the_model_names_the_range(compose_train) -> None:
    conf = validate(compose_train("model.freeze_stages=6"))
    with pytest.raises(ConfigError, match=r"model.freeze_stages must be an int in \[0, 5\] for i3d_tiny"):
        build_model(conf.model, conf.norm, 3)
    with pytest.raises(ConfigError, match="model.new_head"):
        validate(compose_train("model.new_head=true"))

"""Every registered model trains through the real config and Trainer on the tiny built-in data, and
the budget planner script takes any registered model.

Clips are ``experiment=tiny``'s (4 frames, 28x28) raised to each model's ``ModelSpec.min_clip``
(S3D: 8 frames at 32x32, the built-in videos' full side)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from videogn.config import validate
from videogn.engine.trainer import Trainer
from videogn.models import get_model_spec, list_models

TINY_FRAMES, TINY_CROP = 4, 28  # configs/experiment/tiny.yaml
HEAVY = {"i3d_r101", "csn_r101"}  # ResNet-101 depth: the slowest to build and step on one CPU thread


def _params(name: str):
    marks = [pytest.mark.slow] if name in HEAVY else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_params(n) for n in list_models()])
def test_every_registered_model_trains_two_steps(compose, tmp_path: Path, name: str) -> None:
    frames, crop = get_model_spec(name).min_clip
    frames, crop = max(frames, TINY_FRAMES), max(crop, TINY_CROP)
    conf = validate(compose(
        "train", f"model={name}", f"budget.num_frames={frames}", f"data.crop_size={crop}",
        "trainer.max_steps=2", "trainer.checkpoint_every=100", "trainer.eval_after_train=false", tiny=True,
    ))
    trainer = Trainer(conf, tmp_path)
    model = trainer.unwrapped_model
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())  # norm=gn reached the model
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    summary = trainer.fit()
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert math.isfinite(summary["final_loss"])
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "two SGD steps changed no parameter"
    assert (tmp_path / "checkpoints").is_dir() and any((tmp_path / "checkpoints").iterdir())


def test_plan_budget_script_takes_a_non_resnet_model(tmp_path: Path, capsys, load_script) -> None:
    script = load_script("plan_budget")
    out = tmp_path / "plan.json"
    code = script.main(["--model", "x3d_xs", "--frames", "4", "--crop-size", "32", "--budget", "64MiB",
                        "--num-classes", "5", "--device", "cpu", "--probe", "1", "--max-batch-size", "4",
                        "--out", str(out), "--quiet"])
    assert code == 0
    assert "| x3d_xs | gn | 4 | 32 |" in capsys.readouterr().out
    [row] = json.loads(out.read_text())["rows"]
    assert row["model"] == "x3d_xs" and row["num_frames"] == 4
    assert 1 <= row["batch_size"] <= 4 and row["peak_bytes"] <= 64 * 2**20

"""The trainer's memory switches: ``trainer.activation_checkpointing`` and ``trainer.channels_last``
train the same model as without them, and their checkpoints resume either way."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from videogn.config import ConfigError, validate
from videogn.engine.trainer import Trainer
from videogn.models.checkpointing import is_checkpointed


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _assert_same_weights(a: Trainer, b: Trainer, rtol: float, atol: float) -> None:
    sa, sb = a.unwrapped_model.state_dict(), b.unwrapped_model.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], rtol=rtol, atol=atol, msg=key)


def test_activation_checkpointing_trains_the_same_run_and_resumes_without_it(compose_train, tmp_path: Path) -> None:
    base = ("trainer.max_steps=4", "trainer.checkpoint_every=100")
    plain_conf = validate(compose_train(*base))
    full_conf = validate(compose_train(*base, "trainer.activation_checkpointing=full"))
    plain = Trainer(plain_conf, tmp_path / "plain")
    plain.fit()
    checked = Trainer(full_conf, tmp_path / "checked")
    model = checked.unwrapped_model
    assert is_checkpointed(model.stem) and all(is_checkpointed(b) for b in model.layer1)
    checked.fit(until_step=2)
    # the same directory, checkpointing off: resumes from the step-2 checkpoint written with it on
    resumed = Trainer(plain_conf, tmp_path / "checked")
    assert resumed.state.step == 2 and not any(is_checkpointed(m) for m in resumed.unwrapped_model.modules())
    resumed.fit()
    assert _losses(tmp_path / "checked") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-5)
    _assert_same_weights(plain, resumed, rtol=1e-5, atol=1e-6)


def test_channels_last_trains_like_contiguous(compose_train, tmp_path: Path) -> None:
    runs, layouts = {}, {}
    for flag in (False, True):
        conf = validate(compose_train("trainer.max_steps=2", "trainer.checkpoint_every=100",
                                      f"trainer.channels_last={str(flag).lower()}"))
        trainer = Trainer(conf, tmp_path / str(flag))
        seen: list[torch.Tensor] = []
        trainer.unwrapped_model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        trainer.fit()
        layouts[flag] = (seen[0].is_contiguous(memory_format=torch.channels_last_3d), seen[0].is_contiguous(),
                         trainer.unwrapped_model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last_3d))
        runs[flag] = trainer
    assert layouts[True] == (True, False, True)  # clips and convolutions channels-last
    assert layouts[False] == (False, True, False)  # contiguous end to end
    assert _losses(tmp_path / "True") == pytest.approx(_losses(tmp_path / "False"), rel=1e-4)
    _assert_same_weights(runs[False], runs[True], rtol=1e-3, atol=1e-5)


def test_an_unknown_checkpointing_mode_is_refused_naming_the_field(compose_train) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.activation_checkpointing.*'all'"):
        validate(compose_train("trainer.activation_checkpointing=all"))


def test_group_norm3d_causes_no_graph_break_in_forward() -> None:
    from videogn.models import create_model

    model = create_model("i3d_tiny", 5, norm="gn").train()
    explained = torch._dynamo.explain(model)(torch.randn(2, 3, 8, 32, 32))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_compiled_run_keeps_plain_keys_and_resumes_without_compile(
    compose_train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the trainer's wiring, not inductor: dynamo's eager backend keeps this test seconds long
    compile_in_place = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_in_place(self, backend="eager"))
    base = ("trainer.max_steps=4", "trainer.checkpoint_every=100")
    compiled = Trainer(validate(compose_train(*base, "trainer.compile=true")), tmp_path / "run")
    assert compiled.unwrapped_model._compiled_call_impl is not None
    assert "trainer.compile=true on the CPU" in caplog.text
    compiled.fit(until_step=2)
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_000000002.pt", weights_only=True)
    assert list(state["model"]) == list(compiled.unwrapped_model.state_dict())
    assert not any("_orig_mod" in key for key in state["model"])
    resumed = Trainer(validate(compose_train(*base)), tmp_path / "run")  # compile off: the same keys load
    assert resumed.state.step == 2 and resumed.unwrapped_model._compiled_call_impl is None
    resumed.fit()
    plain = Trainer(validate(compose_train(*base)), tmp_path / "plain")
    plain.fit()
    assert _losses(tmp_path / "run") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-4)
    _assert_same_weights(plain, resumed, rtol=1e-4, atol=1e-6)

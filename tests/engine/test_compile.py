"""``trainer.compile``: the run counts its compilations, validation leaves the training graph alone,
the recompile limit covers the schedule's clip shapes, a fall-back to eager is a warning, and
checkpoints resume across compile on/off.

Dynamo's ``eager`` backend stands in for inductor (the trainer's wiring is under test, not
inductor's code generation): dynamo traces, guards and counts compilations exactly as with
inductor, in seconds instead of minutes. The one inductor run is marked ``slow``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from videogn.config import validate
from videogn.engine import trainer as trainer_module
from videogn.engine.trainer import Trainer

BASE = ("trainer.checkpoint_every=100",)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    # dynamo keeps its caches per code object, and every nn.Module.compile compiles the one
    # Module._call_impl: a recompile limit hit in one test would leave it eager for the next
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def eager_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """``nn.Module.compile`` with the trainer's own options, on dynamo's eager backend."""
    compile_in_place = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_in_place(self, **kw, backend="eager"))


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_validation_does_not_recompile_the_training_graph(
    compose_train, tmp_path: Path, eager_backend: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = validate(compose_train(*BASE, "trainer.compile=true", "trainer.max_steps=3", "trainer.val_every=1",
                                  "trainer.val_unit=step"))
    trainer = Trainer(conf, tmp_path)
    assert trainer.compile_watch is not None
    seen: list[tuple[int, int, int]] = []  # (step, compiles before, compiles after) of each validation
    validate_now = Trainer.validate

    def watched(self: Trainer, log: Any = None) -> dict[str, float]:
        before = self.compile_watch.stats()["compiles"]
        metrics = validate_now(self, log)
        seen.append((self.state.step, before, self.compile_watch.stats()["compiles"]))
        return metrics

    monkeypatch.setattr(Trainer, "validate", watched)
    summary = trainer.fit()
    # every validation ran (eval mode, no_grad, other batches) and none compiled anything; the
    # training steps after them found their graph again
    assert seen == [(1, 1, 1), (2, 1, 1), (3, 1, 1)]
    with open(tmp_path / "val_metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert summary["compile"] == {"compiles": 1, "recompiles": 0, "graphs": 1, "eager_fallbacks": 0,
                                  "recompile_limit": trainer_module.compile_recompile_limit(1)}
    assert json.loads((tmp_path / "train_summary.json").read_text())["compile"]["compiles"] == 1


def test_the_recompile_limit_covers_every_clip_shape_of_a_multigrid_run(
    compose_train, tmp_path: Path, eager_backend: None, caplog: pytest.LogCaptureFixture
) -> None:
    conf = validate(compose_train(
        *BASE, "budget=multigrid", "budget.num_frames=4", "budget.batch_size=2", "budget.stride=2",
        "budget.long_cycle=[[0.5,0.5],[1.0,1.0]]", "budget.short_cycle=[0.5]",
        "trainer.max_steps=null", "trainer.epochs=2", "trainer.compile=true", "trainer.compile_dynamic=false",
    ))
    with torch._dynamo.config.patch(recompile_limit=2), caplog.at_level("INFO", logger="videogn.engine.trainer"):
        trainer = Trainer(conf, tmp_path)  # torch's own limit (2 here) is below the schedule's shapes
        shapes = trainer.batch_sampler.schedule.shapes
        trained = {shape for epoch in (0, 1) for shape in trainer.batch_sampler.batch_shapes(epoch)}
        assert len(trained) == len(shapes) > 2
        summary = trainer.fit()
    # static shapes: one compilation per clip shape, none run eagerly
    assert summary["compile"]["compiles"] == len(shapes)
    assert summary["compile"]["eager_fallbacks"] == 0
    assert summary["compile"]["recompile_limit"] == len(shapes) + 1
    assert "runs eagerly" not in caplog.text
    assert f"torch.compile at end of training: {len(shapes)} compilation(s)" in caplog.text


def test_falling_back_to_eager_is_a_warning_naming_the_fix(
    compose_train, tmp_path: Path, eager_backend: None, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(trainer_module, "compile_recompile_limit", lambda num_shapes: 1)
    conf = validate(compose_train(
        *BASE, "budget=constant_memory", "budget.num_frames=4", "budget.batch_size=2", "budget.stride=2",
        "budget.lengths=[2,4]", "trainer.max_steps=3", "trainer.compile=true", "trainer.compile_dynamic=false",
    ))
    trainer = Trainer(conf, tmp_path)
    with caplog.at_level("WARNING", logger="videogn.engine.trainer"):
        summary = trainer.fit()
    warnings = [r.getMessage() for r in caplog.records if "runs eagerly" in r.getMessage()]
    assert len(warnings) == 1  # once, though every later step of the other shape runs eagerly
    assert "recompile limit (1 compilations" in warnings[0] and "trainer.compile_dynamic=true" in warnings[0]
    assert summary["compile"]["compiles"] == 1 and summary["compile"]["eager_fallbacks"] >= 1
    assert all(map(torch.isfinite, map(torch.tensor, _losses(tmp_path))))  # the eager steps still trained


def test_an_eager_run_resumes_compiled_with_the_same_losses(compose_train, tmp_path: Path, eager_backend: None) -> None:
    # (compiled -> eager: tests/engine/test_memory_switches.py)
    plain = validate(compose_train(*BASE, "trainer.max_steps=4"))
    Trainer(plain, tmp_path / "plain").fit()
    Trainer(plain, tmp_path / "run").fit(until_step=2)
    resumed = Trainer(validate(compose_train(*BASE, "trainer.max_steps=4", "trainer.compile=true")), tmp_path / "run")
    assert resumed.state.step == 2 and resumed.unwrapped_model._compiled_call_impl is not None
    summary = resumed.fit()
    assert summary["compile"]["compiles"] == 1
    assert _losses(tmp_path / "run") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-4)
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_000000004.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in state["model"])


@pytest.mark.slow
def test_inductor_trains_like_eager(compose_train, tmp_path: Path) -> None:
    # the real backend (C++ code generation on the CPU: a minute or more). No dropout: inductor
    # draws its random masks from its own generator, not eager's stream
    base = (*BASE, "trainer.max_steps=3", "model.dropout=0.0")
    plain = validate(compose_train(*base))
    Trainer(plain, tmp_path / "plain").fit()
    compiled = Trainer(validate(compose_train(*base, "trainer.compile=true")), tmp_path / "run")
    summary = compiled.fit()
    assert summary["compile"]["compiles"] == 1 and summary["compile"]["eager_fallbacks"] == 0
    assert _losses(tmp_path / "run") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-3)


def test_the_final_evaluation_runs_eagerly(compose_train, tmp_path: Path, eager_backend: None) -> None:
    """videogn-train's evaluation after training compiles nothing of its own: the one compilation
    is the training step's."""
    from torch._dynamo.utils import counters

    from videogn.train import run

    before = counters["frames"]["ok"]  # process-wide, and not cleared by torch._dynamo.reset()
    result = run(compose_train(*BASE, "trainer.compile=true", "trainer.max_steps=2", "trainer.eval_after_train=true"),
                 output_dir=tmp_path)
    assert result["eval"] is not None and result["eval"]["num_videos"] > 0
    assert result["train"]["compile"]["compiles"] == 1
    assert counters["frames"]["ok"] - before == 1  # after the evaluation too

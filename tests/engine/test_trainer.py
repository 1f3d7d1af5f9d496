"""The training loop: exact resume, non-finite steps, damaged videos, logs and checkpoints."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from videogn.config import validate
from videogn.checkpoint import list_checkpoints, load_checkpoint
from videogn.engine.evaluator import evaluate_split
from videogn.engine.trainer import NonFiniteLossError, Trainer


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resume_repeats_the_uninterrupted_run(compose_train, tmp_path: Path, accumulate: int) -> None:
    # 12 clips in batches of 2: 6 micro-batches per epoch, so 8 steps cross epoch boundaries;
    # dropout 0.5 and random crops make every RNG matter.
    conf = validate(compose_train("trainer.max_steps=8", "trainer.checkpoint_every=100", f"trainer.accumulate={accumulate}"))
    full = Trainer(conf, tmp_path / "full")
    full.fit()
    first = Trainer(conf, tmp_path / "resumed")
    first.fit(until_step=4)  # "crash" right after the step-4 checkpoint
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == ["step_000000004.pt"]
    second = Trainer(conf, tmp_path / "resumed")  # trainer.resume=auto
    assert second.state.step == 4 and second.resumed_from is not None
    second.fit()

    full_rows, resumed_rows = _rows(tmp_path / "full"), _rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed_rows] == [str(i) for i in range(1, 9)]
    for a, b in zip(full_rows, resumed_rows):
        assert (a["step"], a["epoch"], a["loss"], a["lr"]) == (b["step"], b["epoch"], b["loss"], b["lr"])
    full_sd, resumed_sd = full.unwrapped_model.state_dict(), second.unwrapped_model.state_dict()
    assert full_sd.keys() == resumed_sd.keys()
    for k in full_sd:
        assert torch.equal(full_sd[k], resumed_sd[k]), k
    # the checkpoint holds everything, as tensors and plain values
    state = torch.load(list_checkpoints(tmp_path / "resumed" / "checkpoints")[0], weights_only=True)
    assert state["step"] == 8 and {"model", "optimizer", "scheduler", "scaler", "sampler", "rng", "config"} <= state.keys()


def test_run_directory_contents(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("trainer.max_steps=3", "trainer.checkpoint_every=2", "trainer.tensorboard=true"))
    summary = Trainer(conf, tmp_path).fit()
    assert summary["steps"] == 3 and summary["skipped_steps"] == 0
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_000000003.pt", "step_000000002.pt"]
    rows = _rows(tmp_path)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["lr"]) > 0 and float(r["clips_per_s"]) > 0 and math.isfinite(float(r["loss"])) for r in rows)
    assert "budget:" in (tmp_path / "config.yaml").read_text()
    assert any((tmp_path / "tensorboard").iterdir())
    assert json.loads((tmp_path / "train_summary.json").read_text())["steps"] == 3


def _nan_on_calls(model: torch.nn.Module, calls: set[int] | None, snapshots: dict[int, torch.Tensor]):
    count = {"n": 0}

    def hook(module, inputs, output):
        count["n"] += 1
        snapshots[count["n"]] = next(module.parameters()).detach().clone()
        if calls is None or count["n"] in calls:
            return output * float("nan")
        return output

    return model.register_forward_hook(hook)


def test_nonfinite_loss_skips_the_step(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("trainer.max_steps=4", "trainer.checkpoint_every=100"))
    trainer = Trainer(conf, tmp_path)
    snaps: dict[int, torch.Tensor] = {}
    _nan_on_calls(trainer.model, {2}, snaps)
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1 and summary["steps"] == 4
    assert torch.equal(snaps[2], snaps[3])  # step 2 changed nothing
    assert not torch.equal(snaps[1], snaps[2]) and not torch.equal(snaps[3], snaps[4])
    rows = _rows(tmp_path)
    assert [r["skipped"] for r in rows] == ["0", "1", "0", "0"] and rows[1]["loss"] == "nan"


def test_persistent_nonfinite_loss_aborts(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("trainer.max_steps=10", "trainer.max_nonfinite_steps=3"))
    trainer = Trainer(conf, tmp_path)
    _nan_on_calls(trainer.model, None, {})
    with pytest.raises(NonFiniteLossError, match="non-finite .* for 3 consecutive steps"):
        trainer.fit()


def test_damaged_videos_train_to_the_end_and_are_reported(compose_train, tmp_path: Path, caplog) -> None:
    cache = tmp_path / "cache"
    conf = validate(compose_train("trainer.max_steps=8", f"data.synthetic.cache_dir={cache}", "data.synthetic.seed=7"))
    from videogn.engine.build import resolve_data

    sources = resolve_data(conf.data)
    damaged_train = sorted(sources.train_root.glob("*.mp4"))[:2]
    damaged_val = sorted(sources.val_root.glob("*.mp4"))[0]
    for p in [*damaged_train, damaged_val]:
        p.write_bytes(b"not a video" * 10)
    trainer = Trainer(conf, tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="videogn"):
        summary = trainer.fit()
    # every clip is drawn once per epoch (8 steps: more than one epoch): each bad video at least once
    assert summary["steps"] == 8 and summary["bad_videos"] == 2 and summary["bad_video_replacements"] >= 2
    logged = (tmp_path / "run" / "bad_videos.log").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in logged) == sorted(map(str, damaged_train))
    assert all(line.split("\t")[1] for line in logged)  # the cause
    # announced once per video, with its path and cause, however often it was drawn
    announced = [r.getMessage() for r in caplog.records if "bad video" in r.getMessage()]
    assert len(announced) == 2 and all(any(str(p) in m for m in announced) for p in damaged_train)
    assert all("not a readable media file" in m for m in announced)
    report = evaluate_split(trainer.evaluation_target()).report
    assert report["num_videos"] == 6 and report["num_unreadable"] == 1 and report["num_readable"] == 5
    assert report["unreadable"][0]["path"] == str(damaged_val) and report["unreadable"][0]["error"]
    preds = report["predictions"]
    hits = sum(p["valid"] and p["top5"][0] == p["label"] for p in preds)
    assert report["top1"] == pytest.approx(hits / 6)  # unreadable = miss in the headline
    assert report["readable"]["top1"] == pytest.approx(hits / 5)


def test_bad_videos_met_in_loader_workers_are_announced_without_decoder_noise(
    compose_train, tmp_path: Path, capfd, caplog
) -> None:
    # backend=auto tries decord after PyAV; decord's C++ prints "video_reader.cc:86: ERROR opening"
    # on fd 2 of the worker process for a file that is no video
    cache = tmp_path / "cache"
    conf = validate(compose_train("trainer.max_steps=6", "trainer.checkpoint_every=100", "data.num_workers=1",
                                  "data.backend=auto", f"data.synthetic.cache_dir={cache}", "data.synthetic.seed=7"))
    from videogn.engine.build import resolve_data

    damaged = sorted(resolve_data(conf.data).train_root.glob("*.mp4"))[0]
    damaged.write_bytes(b"not a video" * 10)
    with caplog.at_level(logging.WARNING, logger="videogn"):
        summary = Trainer(conf, tmp_path / "run").fit()  # one epoch: the damaged video is drawn once
    assert summary["bad_videos"] == 1
    announced = [r.getMessage() for r in caplog.records if "bad video" in r.getMessage()]
    assert len(announced) == 1 and str(damaged) in announced[0] and "decord" in announced[0]
    err = capfd.readouterr().err
    assert "video_reader.cc" not in err and "ERROR opening" not in err


def test_metrics_csv_has_each_steps_clip_shape(compose_train, tmp_path: Path, caplog) -> None:
    conf = validate(compose_train("trainer.max_steps=2", "trainer.checkpoint_every=100"))
    with caplog.at_level(logging.INFO, logger="videogn"):
        Trainer(conf, tmp_path).fit()
    rows = _rows(tmp_path)
    # experiment=tiny: 4-frame clips, 28x28 crops, 2 clips per batch
    assert [(r["T"], r["S"], r["B"]) for r in rows] == [("4", "28", "2")] * 2
    assert any("T=4 S=28 B=2" in r.getMessage() for r in caplog.records if r.getMessage().startswith("step 2/2"))


def test_checkpoint_config_rebuilds_the_model(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("trainer.max_steps=1"))
    Trainer(conf, tmp_path).fit()
    state = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[0])
    assert state["class_names"] == ["move_right", "move_left", "move_down"]
    assert "i3d_tiny" in state["config"]


def test_kinetics_config_path_on_a_kinetics_layout(compose_train, tmp_path: Path) -> None:
    # The built-in dataset is laid out like Kinetics, so data=kinetics400 can point at it.
    import shutil

    from videogn.engine.build import resolve_data

    sources = resolve_data(validate(compose_train()).data)
    ann = tmp_path / "annotations"
    ann.mkdir()
    shutil.copy(sources.train_annotation, ann / "train.csv")
    shutil.copy(sources.val_annotation, ann / "validate.csv")
    conf = validate(compose_train(
        "data=kinetics400", f"data.root={sources.train_root.parent}", f"data.train_annotation={ann / 'train.csv'}",
        f"data.val_annotation={ann / 'validate.csv'}", "data.train_scale=[32,36]", "data.crop_size=28",
        "eval.test_scale=32", "eval.num_clips=2", "eval.num_crops=3", "data.num_workers=0", "trainer=debug",
        "trainer.max_steps=2", "budget.num_frames=4", "budget.batch_size=2", tiny=False,
    ))
    trainer = Trainer(conf, tmp_path / "run")
    assert trainer.class_names == sorted(["move_right", "move_left", "move_down"])  # from the CSV labels
    trainer.fit()
    report = evaluate_split(trainer.evaluation_target()).report
    assert report["num_videos"] == 6 and report["protocol"]["views_per_video"] == 6
    assert report["protocol"]["crop_size"] == 32  # fully convolutional test crops of test_scale


def test_nonfinite_gradient_with_a_finite_loss_is_never_applied(compose_train, tmp_path: Path) -> None:
    # what CPU bf16 autocast did on an AVX-512 Xeon: finite loss, NaN Conv3d weight gradient
    conf = validate(compose_train("trainer.max_steps=3", "trainer.checkpoint_every=100"))
    trainer = Trainer(conf, tmp_path)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv3d))
    calls = {"n": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 2 else grad

    conv.weight.register_hook(poison)
    stepped: list[int] = []

    def count_step(opt, args, kwargs) -> None:
        stepped.append(trainer.state.step + 1)

    trainer.optimizer.register_step_pre_hook(count_step)
    summary = trainer.fit()
    rows = _rows(tmp_path)
    assert summary["skipped_steps"] == 1 and [r["skipped"] for r in rows] == ["0", "1", "0"]
    assert rows[1]["loss"] == "nan"  # a skipped step reports no loss
    assert torch.isfinite(conv.weight).all()  # the NaN update never reached the weights
    assert stepped == [1, 3]  # the optimizer stepped on steps 1 and 3 only


def test_cpu_bf16_is_refused_at_start_up(compose_train, tmp_path: Path) -> None:
    from videogn.config import ConfigError

    conf = validate(compose_train("trainer.precision=bf16", "trainer.device=cpu"))
    with pytest.raises(ConfigError, match=r"trainer.precision='bf16' is refused on the CPU"):
        Trainer(conf, tmp_path)

"""Validation during training (trainer.val_every): when it runs, what it records, the best
checkpoint it keeps (outside the step_*.pt rotation, resume-safe) and that it leaves the training
itself unchanged. All on the tiny built-in dataset: 12 training clips in batches of 2 (6 steps per
epoch), 6 validation videos."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from videogn.checkpoint import find_latest_checkpoint, list_checkpoints, load_checkpoint, prune_checkpoints
from videogn.config import ConfigError, validate
from videogn.engine.trainer import BEST_CHECKPOINT, Trainer


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_validation_runs_at_the_step_interval_and_writes_its_metrics(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("trainer.max_steps=4", "trainer.val_every=2", "trainer.val_unit=step",
                                  "trainer.val_num_clips=1", "trainer.tensorboard=true"))
    trainer = Trainer(conf, tmp_path)
    calls: list[int] = []
    validate_once = trainer.validate

    def counting(log=None):
        calls.append(trainer.state.step)
        return validate_once(log)

    trainer.validate = counting  # type: ignore[method-assign]
    summary = trainer.fit()
    assert calls == [2, 4]
    rows = _csv(tmp_path / "val_metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]
    for r in rows:
        assert 0.0 <= float(r["val_top1"]) <= float(r["val_top5"]) <= 1.0
        assert float(r["val_loss"]) > 0 and int(r["num_videos"]) == 6
    assert rows[0]["best"] == "1"  # the first validation is always the best so far
    # no per-video files: validation writes only its row (and best.pt)
    assert not list(tmp_path.glob("predictions*.jsonl")) and not (tmp_path / "report.json").exists()
    assert (tmp_path / "checkpoints" / BEST_CHECKPOINT).is_file()
    assert summary["best"]["metric"] == "val_top1" and summary["best"]["step"] in (2, 4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("validation/top1")] == [2, 4]
    assert {"validation/top5", "validation/loss"} <= set(acc.Tags()["scalars"])


def test_validation_at_the_epoch_interval(compose_train, tmp_path: Path) -> None:
    # 6 steps per epoch: epochs end at steps 6 and 12; every 2nd epoch -> step 12 only
    conf = validate(compose_train("trainer.max_steps=13", "trainer.val_every=2", "trainer.val_unit=epoch",
                                  "trainer.val_num_clips=1", "trainer.val_subset=2", "trainer.checkpoint_every=100"))
    Trainer(conf, tmp_path).fit()
    rows = _csv(tmp_path / "val_metrics.csv")
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(12, 2)]
    assert int(rows[0]["num_videos"]) == 2  # trainer.val_subset


def test_validation_subset_is_the_same_videos_every_time(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("trainer.max_steps=1", "trainer.val_subset=3"))
    first = Trainer(conf, tmp_path / "a")._val_subset()
    again = Trainer(conf, tmp_path / "b")._val_subset()
    assert first == again and len(first) == 3 and len(set(first)) == 3 and all(0 <= i < 6 for i in first)
    other = Trainer(validate(compose_train("trainer.max_steps=1", "trainer.val_subset=3", "trainer.seed=5")),
                    tmp_path / "c")._val_subset()
    assert other != first  # seeded by trainer.seed (3 of 6: 20 subsets, these two seeds differ)


def test_validation_leaves_the_training_unchanged(compose_train, tmp_path: Path) -> None:
    # dropout and random crops use every RNG; the validation loader must not shift them
    plain = validate(compose_train("trainer.max_steps=4", "trainer.checkpoint_every=100"))
    with_val = validate(compose_train("trainer.max_steps=4", "trainer.checkpoint_every=100", "trainer.val_every=1",
                                      "trainer.val_unit=step", "trainer.val_num_clips=1"))
    a = Trainer(plain, tmp_path / "a")  # seeds the global RNGs: build each trainer right before its fit
    a.fit()
    b = Trainer(with_val, tmp_path / "b")
    b.fit()
    assert [r["loss"] for r in _csv(tmp_path / "a" / "metrics.csv")] == [r["loss"] for r in _csv(tmp_path / "b" / "metrics.csv")]
    for (k, va), vb in zip(a.unwrapped_model.state_dict().items(), b.unwrapped_model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_best_checkpoint_is_outside_the_rotation(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("trainer.max_steps=4", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=1",
                                  "trainer.val_every=1", "trainer.val_unit=step", "trainer.val_num_clips=1",
                                  "trainer.best_metric=val_loss"))
    trainer = Trainer(conf, tmp_path)
    trainer.fit()
    ckpts = tmp_path / "checkpoints"
    best = ckpts / BEST_CHECKPOINT
    losses = [float(r["val_loss"]) for r in _csv(tmp_path / "val_metrics.csv")]
    best_step = 1 + losses.index(min(losses))
    state = load_checkpoint(best)
    assert state["step"] == best_step and state["best"]["value"] == pytest.approx(min(losses))
    # pruning and resume=auto see only the step checkpoints
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_000000004.pt"]
    assert find_latest_checkpoint(ckpts)[0].name == "step_000000004.pt"
    assert prune_checkpoints(ckpts, 1) == [] and best.is_file()
    # best.pt newer than every step checkpoint is still not taken by resume=auto
    best.touch()
    resumed = Trainer(validate(compose_train("trainer.max_steps=4", "trainer.val_every=1", "trainer.val_unit=step",
                                             "trainer.best_metric=val_loss")), tmp_path)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step_000000004.pt"


def test_a_resumed_run_keeps_comparing_against_the_best_so_far(compose_train, tmp_path: Path) -> None:
    over = ("trainer.checkpoint_every=2", "trainer.val_every=2", "trainer.val_unit=step", "trainer.val_num_clips=1",
            "trainer.best_metric=val_loss")
    conf = validate(compose_train("trainer.max_steps=6", *over))
    first = Trainer(conf, tmp_path)
    first.fit(until_step=4)  # "crash" after the step-4 checkpoint and validation
    best_before = dict(first.best)
    assert load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[0])["best"] == best_before
    second = Trainer(conf, tmp_path)
    assert second.state.step == 4 and second.best == best_before
    # a later validation that is worse than the stored best must not replace best.pt
    worse = best_before["value"] + 1.0
    second._update_best(worse)
    assert second.best == best_before
    second.fit()
    rows = _csv(tmp_path / "val_metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # the resumed run continues the file
    losses = {int(r["step"]): float(r["val_loss"]) for r in rows}
    expected = min(losses, key=losses.get)
    assert second.best["step"] == expected and load_checkpoint(tmp_path / "checkpoints" / BEST_CHECKPOINT)["step"] == expected
    assert rows[2]["best"] == ("1" if expected == 6 else "0")


@pytest.mark.parametrize("override, key", [("trainer.val_every=0", "trainer.val_every"),
                                           ("trainer.val_unit=iteration", "trainer.val_unit"),
                                           ("trainer.best_metric=top1", "trainer.best_metric"),
                                           ("trainer.val_subset=0", "trainer.val_subset")])
def test_bad_validation_settings_name_the_key(compose_train, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        validate(compose_train(override))


def _ddp_worker(rank: int, world: int, port: int, conf, tmp: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from videogn.engine.distributed import init_distributed, shutdown_distributed

    info = init_distributed("cpu", "gloo")
    try:
        trainer = Trainer(conf, Path(tmp) / f"out_rank{rank}", info)
        summary = trainer.fit()
        torch.save({"bad": sorted(trainer.bad_videos), "met_here": sorted(trainer._bad_seen_here),
                    "summary_bad": summary["bad_videos"], "best": summary["best"]}, Path(tmp) / f"result_rank{rank}.pt")
    finally:
        shutdown_distributed()


@pytest.mark.ddp
def test_two_processes_validate_together_and_rank0_hears_every_bad_video(compose_train, tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    from videogn.engine.build import resolve_data

    cache = tmp_path / "cache"
    # 12 clips over 2 ranks in batches of 2: one epoch is 3 steps; each rank sees half the clips
    conf = validate(compose_train("trainer.max_steps=3", "trainer.checkpoint_every=100", "trainer.val_every=1",
                                  "trainer.val_unit=epoch", "trainer.val_num_clips=1", "trainer.device=cpu",
                                  f"data.synthetic.cache_dir={cache}", "data.synthetic.seed=7"))
    damaged = sorted(resolve_data(conf.data).train_root.glob("*.mp4"))[1::2]  # every other one: both ranks meet some
    for p in damaged:
        p.write_bytes(b"not a video" * 10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, conf, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "result_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "result_rank1.pt", weights_only=True)
    out0 = tmp_path / "out_rank0"
    assert not (tmp_path / "out_rank1").exists()  # rank 1 wrote nothing
    logged = sorted(line.split("\t")[0] for line in (out0 / "bad_videos.log").read_text().splitlines())
    assert set(r1["met_here"]) - set(r0["met_here"])  # rank 1's loader met a bad video rank 0's did not
    # rank 0 logged the union of both ranks' bad videos, each once; every rank knows the union
    assert logged == sorted(set(r0["met_here"]) | set(r1["met_here"])) == r0["bad"] == r1["bad"]
    assert r0["summary_bad"] == len(logged) and set(logged) <= {str(p) for p in damaged}
    assert [int(r["step"]) for r in _csv(out0 / "val_metrics.csv")] == [3]
    assert (out0 / "checkpoints" / BEST_CHECKPOINT).is_file() and r0["best"] == r1["best"]

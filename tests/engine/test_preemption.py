"""Preemption with real signals on real processes: SIGTERM/SIGUSR1 finish the current step, write a
checkpoint, exit with EXIT_PREEMPTED, and ``trainer.resume=auto`` continues from it — under DDP
every rank stops at the same step even when only one rank got the signal."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from train_processes import WAIT_S, finish, free_port, start, steps_logged, wait_for_steps, write_config

from videogn.checkpoint import list_checkpoints
from videogn.engine.preemption import EXIT_PREEMPTED

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_resume_continues(compose_train, tmp_path: Path, sig: signal.Signals) -> None:
    config = write_config(compose_train, tmp_path / "config.yaml")
    run_dir = tmp_path / "run"
    p = start(config, run_dir)
    wait_for_steps(run_dir, 2, [p])
    p.send_signal(sig)
    code, out = finish(p)
    assert code == EXIT_PREEMPTED, out
    assert f"got {sig.name}" in out
    stopped = steps_logged(run_dir)
    ckpts = list_checkpoints(run_dir / "checkpoints")
    assert ckpts and ckpts[0].name == f"step_{stopped:09d}.pt"  # the step it finished, checkpointed
    state = torch.load(ckpts[0], weights_only=True)
    assert state["step"] == stopped

    p = start(config, run_dir, str(stopped + 2))  # trainer.resume=auto
    code, out = finish(p)
    assert code == 0, out
    assert f"resumed from {ckpts[0]}" in out
    assert steps_logged(run_dir) == stopped + 2


@pytest.mark.ddp
def test_one_rank_signalled_every_rank_stops_at_the_same_step(compose_train, tmp_path: Path) -> None:
    config = write_config(compose_train, tmp_path / "config.yaml")
    run_dir = tmp_path / "run"
    port = str(free_port())

    def rank_env(rank: int) -> dict[str, str]:
        return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}

    procs = [start(config, run_dir, env=rank_env(r)) for r in (0, 1)]
    wait_for_steps(run_dir, 2, procs)
    os.kill(int((tmp_path / "pid_rank1").read_text()), signal.SIGTERM)  # rank 1 only
    results = [finish(p) for p in procs]
    assert [c for c, _ in results] == [EXIT_PREEMPTED, EXIT_PREEMPTED], results
    stopped = steps_logged(run_dir)
    ckpts = list_checkpoints(run_dir / "checkpoints")
    assert ckpts and ckpts[0].name == f"step_{stopped:09d}.pt"
    state = torch.load(ckpts[0], weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2

    port = str(free_port())
    procs = [start(config, run_dir, str(stopped + 2), env=rank_env(r)) for r in (0, 1)]
    results = [finish(p) for p in procs]
    assert [c for c, _ in results] == [0, 0], results
    assert steps_logged(run_dir) == stopped + 2


def test_videogn_train_exits_75_on_sigterm_and_resumes(tmp_path: Path) -> None:
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    args = ["experiment=tiny", f"data.synthetic.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}",
            "trainer.checkpoint_every=100000"]
    log = open(tmp_path / "train.out", "w+")
    p = subprocess.Popen([sys.executable, "-m", "videogn.train", *args, "trainer.max_steps=100000"],
                         cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    p.log = log  # type: ignore[attr-defined]
    wait_for_steps(run_dir, 2, [p])
    p.send_signal(signal.SIGTERM)
    code, out = finish(p)
    assert code == EXIT_PREEMPTED, out
    stopped = steps_logged(run_dir)
    assert list_checkpoints(run_dir / "checkpoints")[0].name == f"step_{stopped:09d}.pt"
    assert "trainer.resume=auto" in out  # the log says how to continue

    done = subprocess.run([sys.executable, "-m", "videogn.train", *args, f"trainer.max_steps={stopped + 2}",
                           "trainer.eval_after_train=false"], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert steps_logged(run_dir) == stopped + 2

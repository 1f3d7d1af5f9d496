"""Faults on real processes: a rank that dies is named by the survivors within a bounded time;
``torchrun --max-restarts`` with ``trainer.resume=auto`` continues from the newest checkpoint; a
two-"node" torchrun launch (c10d rendezvous on 127.0.0.1) trains one model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videogn.checkpoint import list_checkpoints

from train_processes import DRIVER, WAIT_S, finish, free_port, start, steps_logged, wait_for_steps, write_config

pytestmark = pytest.mark.ddp


def _torchrun(config: Path, run_dir: Path, until: int, *launcher: str) -> subprocess.Popen:
    log = open(run_dir.parent / f"torchrun_{free_port()}.log", "w+")
    p = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *launcher, str(DRIVER), str(config), str(run_dir), str(until)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    p.log = log  # type: ignore[attr-defined]
    return p


def test_a_dead_rank_is_named_by_the_survivor(compose_train, tmp_path: Path) -> None:
    config = write_config(compose_train, tmp_path / "config.yaml", "trainer.dist_timeout_s=60")
    run_dir, port = tmp_path / "run", str(free_port())
    procs = [
        start(config, run_dir, env={"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                     "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"})
        for r in (0, 1)
    ]
    wait_for_steps(run_dir, 2, procs)
    os.kill(int((tmp_path / "pid_rank1").read_text()), signal.SIGKILL)
    code, out = finish(procs[0])
    procs[1].wait(timeout=WAIT_S)
    assert code not in (0, None), out
    assert "RankFailure" in out and "rank(s) 1 stopped responding" in out, out


def test_torchrun_restart_resumes_from_the_newest_checkpoint(compose_train, tmp_path: Path) -> None:
    config = write_config(compose_train, tmp_path / "config.yaml", "trainer.checkpoint_every=2", "trainer.dist_timeout_s=60")
    run_dir = tmp_path / "run"
    p = _torchrun(config, run_dir, 12, "--standalone", "--nproc_per_node=2", "--max-restarts=1", "--monitor-interval=0.5")
    wait_for_steps(run_dir, 3, [p])
    os.kill(int((tmp_path / "pid_rank1").read_text()), signal.SIGKILL)
    code, out = finish(p)
    assert code == 0, out
    assert "resumed from" in out, out
    assert steps_logged(run_dir) == 12  # the rows after the resumed step were rewritten, none missing
    state = torch.load(list_checkpoints(run_dir / "checkpoints")[0], weights_only=True)
    assert state["step"] == 12 and state["world_size"] == 2


@pytest.mark.slow
def test_two_node_launch_on_one_machine(compose_train, tmp_path: Path) -> None:
    config = write_config(compose_train, tmp_path / "config.yaml", "trainer.dist_timeout_s=60")
    run_dir, port = tmp_path / "run", free_port()
    nodes = [
        _torchrun(config, run_dir, 4, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
                  f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=videogn-test")
        for _ in range(2)
    ]
    results = [finish(p) for p in nodes]
    assert [c for c, _ in results] == [0, 0], results
    state = torch.load(list_checkpoints(run_dir / "checkpoints")[0], weights_only=True)
    assert state["step"] == 4 and state["world_size"] == 2

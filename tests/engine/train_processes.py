"""Training processes for the signal and fault tests: start ``run_trainer.py`` on a tiny config
(alone or as one rank of a job), watch its metrics, collect its exit status and output."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from videogn.config import validate
from videogn.engine.build import resolve_data

DRIVER = Path(__file__).with_name("run_trainer.py")
WAIT_S = 240  # a safety net for a hung process, not a timing expectation


def write_config(compose_train, path: Path, *overrides: str) -> Path:
    # never ends on its own: the run only stops on the signal (or at UNTIL_STEP)
    conf = compose_train("trainer.max_steps=100000", "trainer.checkpoint_every=100000", "trainer.device=cpu", *overrides)
    resolve_data(validate(conf).data)  # generate the dataset before any process starts
    path.write_text(OmegaConf.to_yaml(conf, resolve=True))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(config: Path, run_dir: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    # output to a file: a full pipe would block the process
    log = open(run_dir.parent / f"out_{time.monotonic_ns()}.log", "w+")
    p = subprocess.Popen([sys.executable, str(DRIVER), str(config), str(run_dir), *extra],
                         env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    p.log = log  # type: ignore[attr-defined]
    return p


def output(p: subprocess.Popen) -> str:
    p.log.seek(0)  # type: ignore[attr-defined]
    return p.log.read()  # type: ignore[attr-defined]


def steps_logged(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return 0
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def wait_for_steps(run_dir: Path, n: int, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + WAIT_S
    while steps_logged(run_dir) < n:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"training exited early ({p.returncode}):\n{output(p)}")
        if time.monotonic() > deadline:
            pytest.fail("training logged no steps in time")
        time.sleep(0.05)


def finish(p: subprocess.Popen) -> tuple[int, str]:
    try:
        p.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # its own session: torchrun's workers go too
        pytest.fail(f"process hung for {WAIT_S} s:\n{output(p)}")
    return p.returncode, output(p)

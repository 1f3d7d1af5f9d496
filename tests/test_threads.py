"""Thread policy: plan_threads as a pure function of (workers, threads, cores); the console scripts
start OpenMP with OMP_WAIT_POLICY=PASSIVE (as libgomp itself reports it) unless the user set it."""

import os
import re
import subprocess
import sys

import pytest

from videogn import threads
from videogn.threads import available_cores, plan_threads


@pytest.mark.parametrize(
    "workers, threads, cores, expected",
    [
        (1, None, 2, (1, 1)),    # the main job on 2 cores: one core each
        (0, None, 2, (2, 0)),    # no loader workers: every core computes
        (2, None, 2, (1, 1)),    # workers capped: the training process keeps a core
        (8, None, 2, (1, 1)),
        (3, None, 16, (13, 3)),
        (4, None, 1, (1, 0)),    # one core: load in the training process
        (0, None, 1, (1, 0)),
        (4, 3, 2, (3, 4)),       # trainer.num_threads given: both kept as asked
        (1, 2, 2, (2, 1)),
    ],
)
def test_plan_threads(workers, threads, cores, expected):
    got = plan_threads(workers, threads, cores=cores)
    assert got == expected
    if threads is None:
        assert got[0] >= 1 and got[0] + got[1] <= cores  # never more busy threads than cores


@pytest.mark.parametrize("bad", [dict(num_workers=-1, requested_threads=None), dict(num_workers="auto", requested_threads=None),
                                 dict(num_workers=1, requested_threads=0), dict(num_workers=True, requested_threads=None)])
def test_plan_threads_rejects_bad_input(bad):
    with pytest.raises(ValueError, match=r"num_workers|num_threads"):
        plan_threads(**bad, cores=2)


def test_available_cores_divided_among_local_ranks(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = available_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(alone * 4))
    assert available_cores() == 1  # never 0, even with more ranks than cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert available_cores() == alone >= 1


def _libgomp_spin_counts(env_extra: dict[str, str], launcher: list[str]) -> list[str]:
    """GOMP_SPINCOUNT as libgomp reports it at load (OMP_DISPLAY_ENV=VERBOSE), once per load."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "_VIDEOGN_OMP_REEXEC")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **env_extra)
    res = subprocess.run([*launcher, "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", res.stderr)


def _needs_libgomp():
    import torch  # noqa: F401

    with open("/proc/self/maps") as f:
        if "libgomp" not in f.read():
            pytest.skip("torch here does not use GNU OpenMP (libgomp), whose OMP_DISPLAY_ENV the test reads")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps (Linux)")
@pytest.mark.parametrize("launcher", [["-m", "videogn.train"]])
def test_console_scripts_start_openmp_passive(launcher):
    _needs_libgomp()
    counts = _libgomp_spin_counts({}, [sys.executable, *launcher])
    # libgomp reads OMP_WAIT_POLICY only when it loads (at import torch): the process must have
    # been (re)started with it; PASSIVE means no spinning at all
    assert counts and counts[-1] == "0", counts


def test_users_wait_policy_wins(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("_VIDEOGN_OMP_REEXEC", raising=False)
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail(f"re-executed: {a}"))
    threads.ensure_passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_reexec_keeps_interpreter_and_arguments(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("_VIDEOGN_OMP_REEXEC", raising=False)
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "videogn.train", "trainer.epochs=1"], raising=False)
    monkeypatch.setattr(threads, "_openmp_loaded", lambda: True)
    calls = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: calls.append((exe, argv)))
    threads.ensure_passive_openmp()
    assert calls == [(sys.executable, [sys.executable, "-m", "videogn.train", "trainer.epochs=1"])]
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    threads.ensure_passive_openmp()  # the re-executed process: never again
    assert len(calls) == 1

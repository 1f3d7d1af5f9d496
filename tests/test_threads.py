"""Thread policy: plan_threads as a pure function of (workers, threads, cores); the console scripts
start OpenMP with OMP_WAIT_POLICY=PASSIVE (as libgomp itself reports it) unless the user set it,
set before torch is imported; importing videogn changes nothing."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

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


REPO = Path(__file__).resolve().parent.parent
# What the console scripts run (pip's generated script calls _videogn_launch.train), from the checkout.
CONSOLE_SCRIPT = [sys.executable, "-c", "import sys, _videogn_launch; sys.argv[0] = 'videogn-train'; "
                                        "sys.exit(_videogn_launch.train())"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "_VIDEOGN_OMP_REEXEC")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), **extra)
    return env


def _libgomp_spin_counts(env_extra: dict[str, str], launcher: list[str]) -> list[str]:
    """GOMP_SPINCOUNT as libgomp reports it at load (OMP_DISPLAY_ENV=VERBOSE), once per load."""
    env = _clean_env(OMP_DISPLAY_ENV="VERBOSE", **env_extra)
    res = subprocess.run([*launcher, "--help"], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", res.stderr)


def _needs_libgomp():
    import torch  # noqa: F401

    with open("/proc/self/maps") as f:
        if "libgomp" not in f.read():
            pytest.skip("torch here does not use GNU OpenMP (libgomp), whose OMP_DISPLAY_ENV the test reads")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps (Linux)")
def test_console_scripts_start_openmp_passive():
    _needs_libgomp()
    # libgomp reads OMP_WAIT_POLICY only when it loads (at import torch); PASSIVE means no spinning.
    # The console script sets it before torch loads: one load, passive, no re-execution.
    assert _libgomp_spin_counts({}, CONSOLE_SCRIPT) == ["0"]
    # python -m imports the package (and torch) first: its __main__ block re-executes once
    counts = _libgomp_spin_counts({}, [sys.executable, "-m", "videogn.train"])
    assert len(counts) == 2 and counts[-1] == "0", counts


_SPY_ON_TORCH_IMPORT = """
import json, os, sys

class TorchImported(Exception):
    pass

class Spy:  # stops the process's first import of torch, with OMP_WAIT_POLICY as it was then
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise TorchImported(os.environ.get("OMP_WAIT_POLICY"))
        return None

sys.meta_path.insert(0, Spy())
import _videogn_launch
sys.argv = ["videogn-train", "--help"]
try:
    _videogn_launch.train()
except TorchImported as e:
    print(json.dumps({"at_torch_import": e.args[0]}))
"""


@pytest.mark.parametrize("user_policy", [None, "ACTIVE"])
def test_launcher_sets_wait_policy_before_torch_is_imported(user_policy):
    env = _clean_env(**({"OMP_WAIT_POLICY": user_policy} if user_policy else {}))
    res = subprocess.run([sys.executable, "-c", _SPY_ON_TORCH_IMPORT], capture_output=True, text=True,
                         env=env, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got == {"at_torch_import": user_policy or "PASSIVE"}  # set before torch; the user's value wins


def test_importing_videogn_leaves_the_environment_alone():
    # even in a process that looks like the console script (the old import-time trigger)
    code = ("import json, os, sys; sys.argv[0] = '/usr/bin/videogn-train'; before = dict(os.environ); "
            "import videogn; after = dict(os.environ); "
            "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) ^ set(after) | "
            "{k for k in before if before[k] != after.get(k)}}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(),
                         timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {}


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

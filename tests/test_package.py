"""videogn is a real pip package: the configs ship inside it (``videogn.configs``, mapped from the
repo's ``configs/``), so a non-editable install's console scripts work from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _source_packages() -> set[str]:
    """Every folder of Python modules under videogn/ (what the wheel must hold)."""
    return {
        ".".join(d.relative_to(REPO).parts)
        for d in [REPO / "videogn", *(REPO / "videogn").rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    }


def test_pyproject_lists_every_package() -> None:
    """The configs mapping rules out packages.find, so the list must keep up with the source tree."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == _source_packages() | {"videogn.configs"}


def test_configs_are_found_through_the_package() -> None:
    from videogn.cli import config_dir

    assert (config_dir() / "train.yaml").is_file() and (config_dir() / "experiment" / "tiny.yaml").is_file()
    assert config_dir().resolve() == (REPO / "configs").resolve()  # the one source, not a copy


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_built_wheel_installs_and_runs_from_anywhere(tmp_path: Path) -> None:
    """Build sdist + wheel, install the wheel into a fresh venv, train and evaluate outside the checkout."""
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)], cwd=tmp_path)
    wheel = next(dist.glob("videogn-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("videogn/py.typed", "videogn/configs/train.yaml", "videogn/configs/eval.yaml",
                 "videogn/configs/experiment/tiny.yaml", "videogn/configs/hydra/job_logging/videogn.yaml",
                 "_videogn_launch.py"):  # the console scripts' launcher (sets OpenMP's wait policy before torch)
        assert name in names
    assert not any(n.startswith("configs/") for n in names)  # no top-level "configs" package
    with tarfile.open(next(dist.glob("videogn-*.tar.gz"))) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("/configs/train.yaml") for m in members) and any(m.endswith("/videogn/py.typed") for m in members)

    # A fresh venv that reuses this environment's dependencies (torch, hydra, ...) but not its videogn.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "_deps.pth").write_text("\n".join(deps) + "\n")  # appended after the venv's own site-packages
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"  # not the checkout: nothing of the repo is on the path
    work.mkdir()
    env = {**os.environ, "VIDEOGN_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ""}
    where = _run([str(py), "-c", "import videogn; print(videogn.__file__)"], cwd=work, env=env).stdout.strip()
    assert where.startswith(str(venv)), where

    bin_ = venv / "bin"
    assert "from _videogn_launch import train" in (bin_ / "videogn-train").read_text()
    assert "experiment" in _run([str(bin_ / "videogn-train"), "--help"], cwd=work, env=env).stdout
    _run([str(bin_ / "videogn-train"), "experiment=tiny", "hydra.run.dir=run"], cwd=work, env=env)
    report = json.loads((work / "run" / "report.json").read_text())
    assert report["num_videos"] == 6 and report["step"] == 4
    _run([str(bin_ / "videogn-eval"), "checkpoint=run", "hydra.run.dir=ev"], cwd=work, env=env)
    assert json.loads((work / "ev" / "report.json").read_text())["step"] == 4

    # a config folder of the user's own, added to the search path
    mine = work / "my_configs" / "experiment"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - tiny\n\nname: mine\n")
    job = _run([str(bin_ / "videogn-train"), "--config-dir", str(work / "my_configs"), "experiment=mine", "--cfg", "job"],
               cwd=work, env=env).stdout
    assert "name: mine" in job and "num_classes: 3" in job

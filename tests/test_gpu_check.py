"""scripts/gpu_check.py in its CPU smoke mode, with the optional packages made unimportable.

The GPU check must run on a bare CUDA machine (Python, torch, triton only): a ``sitecustomize``
on PYTHONPATH maps av, decord, Hydra, OmegaConf, pytorchvideo, TensorBoard, tqdm and matplotlib to
``None`` in ``sys.modules`` (so importing them fails as if absent), in the check and in the
torchrun worker it spawns. Timings are not checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("av", "decord", "hydra", "omegaconf", "pytorchvideo", "tensorboard", "tqdm",
           "matplotlib")


@pytest.mark.ddp
def test_cpu_smoke_runs_without_optional_packages(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        f"for _name in {BLOCKED!r}:\n"
        "    sys.modules[_name] = None  # 'import _name' now fails as if not installed\n"
    )
    out = tmp_path / "report"
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(block), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    report = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.md").read_text().startswith("# videogn GPU check")
    env_info = report["environment"]
    assert sorted(env_info["missing_optional"]) == sorted(BLOCKED)  # the block was in force
    assert env_info["torch"] and env_info["triton"] and env_info["python"]
    assert env_info["device_name"]

    sections = report["sections"]
    assert list(sections) == ["correctness", "speed", "train_step", "compile", "memory_planner", "ddp"]
    cases = sections["correctness"]["cases"]
    names = " ".join(c["case"] for c in cases)
    for expected in ("float32", "float16", "bfloat16", "channels_last", "relu", "silu",
                     "C/G=1", "C/G=64", "autocast", "torch.compile", "opcheck"):
        assert expected in names, expected
    for case in cases:
        assert isinstance(case["max_err"], float) and case["pass"] is True, case
        assert case["max_err"] <= case["tol"], case
    # what CPU cannot do is skipped with a reason, never silently
    assert sections["speed"]["status"] == "skipped" and "CUDA" in sections["speed"]["reason"]
    assert any("2^31" in s["case"] and s["reason"] for s in sections["correctness"]["skipped"])
    for name, section in sections.items():
        assert section["status"] in ("ok", "skipped"), (name, section)
        if section["status"] == "skipped":
            assert section["reason"], name
    runs = sections["train_step"]["runs"]
    assert {r["norm"] for r in runs} == {"GN (ours)", "nn.GroupNorm", "BN"}
    assert sections["train_step"]["trajectory"]["pass"] is True
    assert sections["ddp"]["backend"] == "gloo" and all(sections["ddp"]["applied"])
    compiled = sections["compile"]["runs"]  # compiled vs eager steps of the trainer's compile
    assert [r["model"] for r in compiled] == ["i3d_tiny"] and compiled[0]["pass"] is True, compiled
    assert compiled[0]["compile_s"] > 0 and compiled[0]["ratio_min"] <= compiled[0]["ratio_median"]
    assert all(row["batch_size"] >= 1 for row in sections["memory_planner"]["rows"])

"""The console scripts' own surface: ``--version``, a readable ``videogn-train --help``, user
mistakes in ``videogn-eval`` ending in one message and exit status 2 (no traceback, no run dir;
under torchrun only rank 0 says it), and a classifier of another size than the data's classes
refused unless ``allow_class_mismatch=true``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import videogn
from videogn.config import ConfigError
from videogn.evaluate import run
from videogn.models import create_model

DATA = ["data=synthetic", "data.synthetic.num_classes=3", "data.synthetic.train_per_class=4",
        "data.synthetic.val_per_class=2", "data.synthetic.frames=12", "data.num_workers=0"]
FOREIGN = ["model=i3d_tiny", "eval.num_frames=4", "eval.stride=1", "eval.num_clips=1", "eval.num_crops=1", "device=cpu"]


def _cli(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("module", ["videogn.train", "videogn.evaluate"])
def test_version_is_videogns(tmp_path: Path, module: str) -> None:
    res = _cli(module, "--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == f"videogn {videogn.__version__}", res.stdout + res.stderr
    assert "Hydra" not in res.stdout and not (tmp_path / "outputs").exists()


def test_train_help_lists_the_groups_and_where_keys_are_described(tmp_path: Path) -> None:
    res = _cli("videogn.train", "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) < 40, len(lines)  # not the whole composed config
    for group, option in (("model", "i3d_r50"), ("norm", "gn"), ("data", "kinetics400"), ("budget", "t32_b8"),
                          ("optim", "adamw"), ("sched", "cosine"), ("trainer", "main_job"), ("experiment", "tiny")):
        line = next((x for x in lines if x.startswith(group + " ")), None)
        assert line is not None and option in line and len(line.split(":")[0]) > len(group) + 5, (group, line)
    assert "videogn/config/schema.py" in res.stdout and "--cfg job" in res.stdout and "--version" in res.stdout
    assert "zero_init_last" not in res.stdout  # keys are described in the schema, not dumped here


def test_eval_mistakes_end_in_one_message_and_status_2(tmp_path: Path, synthetic_cache: Path) -> None:
    truncated = tmp_path / "cut.pt"
    torch.save(create_model("i3d_tiny", 3).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    bn = tmp_path / "bn.pth"
    torch.save(create_model("i3d_tiny", 3, norm="bn").state_dict(), bn)
    data = [*DATA, f"data.synthetic.cache_dir={synthetic_cache}"]
    cases = {
        "missing": ([f"checkpoint={tmp_path / 'nope.pt'}"], "nope.pt"),
        "truncated": ([f"checkpoint={truncated}", *FOREIGN, *data], "is truncated or damaged"),
        "bn_without_norm": ([f"checkpoint={bn}", *FOREIGN, *data], "norm='bn'"),
    }
    for name, (args, said) in cases.items():
        run_dir = tmp_path / f"ev_{name}"
        res = _cli("videogn.evaluate", *args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        out = res.stdout + res.stderr
        assert res.returncode == 2, (name, out[-3000:])
        assert "config error" in out and said in out and "Traceback" not in out, (name, out[-3000:])
        assert not run_dir.exists(), name  # refused before anything was written


def test_eval_with_a_wrong_data_root_names_the_keys(compose, tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "checkpoint_v1.pt"  # a videogn checkpoint (built-in data)
    missing = tmp_path / "k400"
    with pytest.raises(ConfigError) as e:
        run(compose("eval", f"checkpoint={fixture}", "data=kinetics400", f"data.root={missing}",
                    f"data.train_annotation={missing / 'train.csv'}", f"data.val_annotation={missing / 'val.csv'}",
                    f"output_dir={tmp_path / 'out'}", "device=cpu"))
    assert f"data.root: {str(missing)!r} is not a directory" in str(e.value)
    assert f"data.val_annotation: {str(missing / 'val.csv')!r} not found" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_only_rank_0_prints_a_config_error(tmp_path: Path) -> None:
    for rank, says in (("0", True), ("1", False)):
        res = _cli("videogn.evaluate", f"checkpoint={tmp_path / 'nope.pt'}", f"hydra.run.dir={tmp_path / rank}",
                   cwd=tmp_path, env={"RANK": rank})
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        assert ("config error" in res.stdout + res.stderr) is says, rank
        res = _cli("videogn.evaluate", "checkpoint=x.pt", "eval.num_clip=3", cwd=tmp_path, env={"RANK": rank})
        assert res.returncode == 2 and ("did you mean eval.num_clips?" in res.stderr) is says, rank


def test_a_classifier_of_another_size_is_refused_unless_allowed(compose, synthetic_cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "five_classes.pth"
    torch.save(create_model("i3d_tiny", 5, norm="bn").state_dict(), path)
    args = [f"checkpoint={path}", "norm=bn", *FOREIGN, *DATA, f"data.synthetic.cache_dir={synthetic_cache}"]
    with pytest.raises(ConfigError) as e:
        run(compose("eval", *args, f"output_dir={tmp_path / 'refused'}"))
    assert "classifier of 5 outputs" in str(e.value) and "the data has 3 classes" in str(e.value)
    assert "allow_class_mismatch=true" in str(e.value) and not (tmp_path / "refused").exists()
    report = run(compose("eval", *args, "allow_class_mismatch=true", f"output_dir={tmp_path / 'allowed'}"))
    assert report["num_videos"] == 6 and len(report["classes"]) == 3


def test_a_videogn_checkpoint_keeps_its_classes_against_data_class_index(compose, synthetic_cache: Path,
                                                                         tmp_path: Path) -> None:
    import json

    fixture = Path(__file__).parent / "fixtures" / "checkpoint_v1.pt"
    classes = list(torch.load(fixture, map_location="cpu", weights_only=True)["class_names"])
    index = tmp_path / "classes.json"
    index.write_text(json.dumps({c: i for i, c in enumerate(reversed(classes))}))
    with pytest.raises(ConfigError, match="does not list the checkpoint's classes in its order"):
        run(compose("eval", f"checkpoint={fixture}", f"data.synthetic.cache_dir={synthetic_cache}",
                    f"data.class_index={index}", f"output_dir={tmp_path / 'out'}", "device=cpu"))


def test_eval_label_outside_the_checkpoints_classes_names_file_and_row(compose, tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "checkpoint_v1.pt"
    (tmp_path / "k" / "val").mkdir(parents=True)
    (tmp_path / "k" / "val" / "aaaaaaaaaaa_000000_000010.mp4").write_bytes(b"never decoded")
    csv = tmp_path / "k" / "val.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\njuggling,aaaaaaaaaaa,0,10,validate\n")
    with pytest.raises(ConfigError, match=r"data.val_annotation: .*val\.csv:2: label 'juggling' is not in the class index"):
        run(compose("eval", f"checkpoint={fixture}", "data=kinetics400", f"data.root={tmp_path / 'k'}",
                    f"data.train_annotation={csv}", f"data.val_annotation={csv}", "data.num_workers=0",
                    f"output_dir={tmp_path / 'out'}", "device=cpu"))


def test_what_the_start_up_check_logs_reaches_the_runs_log_file(tmp_path: Path) -> None:
    """The check runs before the log file exists (a refused run leaves no run dir); what it logged
    for a run that goes on is written to that run's log once the file is open."""
    import logging

    from videogn.cli import job_context

    def check(info, out) -> None:
        logging.getLogger("videogn.engine.preflight").warning("1 of 6 training videos have no file")

    out = tmp_path / "run"
    with job_context("cpu", "gloo", out, "train.log", check=check):
        logging.getLogger("videogn.train").warning("training starts")
    lines = (out / "train.log").read_text().splitlines()
    assert "1 of 6 training videos have no file" in lines[0] and "[WARNING]" in lines[0]
    assert "training starts" in lines[1]

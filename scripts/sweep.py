#!/usr/bin/env python
"""The GN paper's Table 8 in miniature, as a loop over the toolkit's trainer: every run is
``videogn.train.run`` on a composed ``videogn-train`` config (same dataset class, batch sampler,
learning-rate rule, training step and evaluator), so any run can be repeated by hand with the
command line stored beside its results.

    .venv/bin/python scripts/sweep.py --quick              # a smoke version: 4 short runs, minutes
    .venv/bin/python scripts/sweep.py --stage pilot --jobs 2     # the learning-rate pilot, into a new folder
    .venv/bin/python scripts/sweep.py --stage grid --jobs 2 --out outputs/sweep/<that folder>   # then the grid
    .venv/bin/python scripts/sweep.py --stage grid_2x --jobs 2 --out <same folder>   # the stopping rule's rerun at 2x epochs
    (either stage started again on the same --out continues it, skipping finished runs)
    .venv/bin/python scripts/sweep_report.py outputs/sweep/<...>/sweep_results.json           # the analysis

The task, hypotheses, cells, seeds, learning-rate rule and analysis are fixed in
``docs/preregistration.md`` (``grid_2x``, the rerun at twice the epochs its stopping rule calls for:
``docs/preregistration_2x.md``); the pre-registered stages refuse to start while their file is
uncommitted or modified, and record its SHA-256 and the commit they ran on. ``--quick`` checks the
machinery only (its results say ``"preregistered": false``).

Results: ``<out>/sweep_results.json`` (rewritten atomically after every run; a finished run — same
key and overrides — is skipped when the sweep is started again on the same ``--out``):
``setup`` (the pipeline's common overrides, the dataset spec with its ideal-observer ceilings per
(frames, stride), the number of validation videos, the seeds, the pre-registration's hash and
commit, the learning-rate pilot) and ``runs`` (``norm``, ``num_frames``, ``stride``,
``batch_size``, ``seed``, ``lr``, the exact ``videogn-train`` overrides and command, the final
metrics, the held-out loss curve and every validation video's probabilities). Each run's own
directory (``<out>/runs/<key>/``) is a normal ``videogn-train`` run dir.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
PREREGISTRATION = REPO / "docs" / "preregistration.md"
# the separately labelled rerun with twice the epochs that the stopping rule calls for
PREREGISTRATION_2X = REPO / "docs" / "preregistration_2x.md"
RESULTS = "sweep_results.json"

NORMS = ("bn", "gn")
# (num_frames, stride, clips per batch): the paper's 32x8 at stride 2, 32x4 at stride 2, and 64x4 at
# stride 1 (same window as 32@2, twice the density, same memory as 32x8), at a quarter of the length
SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)  # docs/preregistration.md: 8 seeds
PILOT_SEEDS = (100, 101)  # outside the grid's seeds
PILOT_LRS = (0.025, 0.05, 0.1, 0.2)  # optim.lr at optim.reference_batch_size=8 (scaled linearly with B)

EPOCHS = 8  # of the 2,000 training videos: 16,000 clips per run (docs/preregistration.md: budget)
CURVE_VIDEOS = 500  # the held-out loss curve: a fixed seeded half of the validation set (the final eval: all)

# The task and protocol every stage shares (the dataset is generated once, then cached)
TASK = {
    "data.synthetic.task": "blink", "data.synthetic.num_classes": 4, "data.synthetic.frames": 32,
    "data.synthetic.train_per_class": 500, "data.synthetic.val_per_class": 250,
}
COMMON = [
    "data.cache_decoded=true", "data.flip=true", "data.num_workers=0", "eval.num_clips=2",
    "optim.reference_batch_size=8", "trainer.device=cpu", "trainer.num_threads=1", "trainer.val_every=1",
    "trainer.tensorboard=false", "trainer.progress_bar=false", "trainer.checkpoint_every=100000",
    "trainer.keep_checkpoints=1",
]

SCALES: dict[str, dict[str, Any]] = {
    "grid": {"cells": [(8, 2, 8), (8, 2, 4), (16, 1, 4)], "seeds": SEEDS, "epochs": EPOCHS, "task": TASK,
             "extra": [f"trainer.val_subset={CURVE_VIDEOS}"]},
    # docs/preregistration_2x.md: the grid again, twice the epochs, the pilot's learning rates
    "grid_2x": {"cells": [(8, 2, 8), (8, 2, 4), (16, 1, 4)], "seeds": SEEDS, "epochs": 2 * EPOCHS, "task": TASK,
                "extra": [f"trainer.val_subset={CURVE_VIDEOS}"]},
    "pilot": {"cells": [(8, 2, 8)], "seeds": PILOT_SEEDS, "epochs": EPOCHS, "task": TASK,
              "extra": [f"trainer.val_subset={CURVE_VIDEOS}"], "lrs": PILOT_LRS},
    # the machinery end to end, fast: a smaller dataset, short runs, a fixed learning rate
    "quick": {"cells": [(8, 2, 8), (16, 1, 4)], "seeds": (0,), "epochs": 3, "lr": 0.1, "extra": [],
              "task": {**TASK, "data.synthetic.train_per_class": 40, "data.synthetic.val_per_class": 25}},
    # the tests' seconds-long version
    "smoke": {"cells": [(4, 2, 4), (8, 1, 2)], "seeds": (0,), "epochs": None, "lr": 0.1,
              "extra": ["trainer.max_steps=2", "trainer.val_unit=step"],
              "task": {**TASK, "data.synthetic.train_per_class": 2, "data.synthetic.val_per_class": 2,
                       "data.synthetic.frames": 16}},
}
PREREGISTRATIONS = {"pilot": PREREGISTRATION, "grid": PREREGISTRATION, "grid_2x": PREREGISTRATION_2X}
PREREGISTERED_STAGES = tuple(PREREGISTRATIONS)
GRID_STAGES = ("grid", "grid_2x")  # they take the pilot's learning rates


class Refused(Exception):
    """A user mistake found before any run starts (printed as one line, exit status 2)."""


# ---------------------------------------------------------------------------------------------
# the plan


def run_overrides(scale: dict[str, Any], norm: str, t: int, s: int, b: int, seed: int, lr: float) -> list[str]:
    """The complete ``videogn-train`` overrides of one run (nothing else decides it)."""
    length = [f"trainer.epochs={scale['epochs']}"] if scale["epochs"] else ["trainer.epochs=null"]
    return ([f"{k}={v}" for k, v in scale["task"].items()] + COMMON + length + list(scale["extra"]) +
            [f"norm={norm}", f"budget.num_frames={t}", f"budget.stride={s}", f"budget.batch_size={b}",
             f"trainer.seed={seed}", f"optim.lr={lr}", f"name=sweep_{norm}_{t}x{b}_s{s}_seed{seed}"])


def plan(stage: str, lrs: Optional[dict[str, float]] = None) -> list[dict[str, Any]]:
    """Every run of ``stage``: dicts with key, norm, num_frames, stride, batch_size, seed, lr, overrides."""
    scale = SCALES[stage]
    runs = []
    for norm in NORMS:
        for lr in (scale["lrs"] if stage == "pilot" else [(lrs or {}).get(norm, scale.get("lr"))]):
            if lr is None:
                raise Refused(f"no learning rate for norm {norm!r}: run --stage pilot first (same --out)")
            for t, s, b in scale["cells"]:
                for seed in scale["seeds"]:
                    key = (f"{norm}_t{t}s{s}_b{b}_seed{seed}" + (f"_lr{lr}" if stage == "pilot" else "")
                           + ("_2x" if stage == "grid_2x" else ""))  # unique across stages in one results file
                    runs.append({"key": key, "stage": stage, "norm": norm, "num_frames": t, "stride": s,
                                 "batch_size": b, "seed": seed, "lr": lr,
                                 "overrides": run_overrides(scale, norm, t, s, b, seed, lr)})
    return runs


def choose_lrs(pilot_runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The pre-registered rule, the same for every norm: the pilot learning rate with the lowest
    mean final held-out loss over the pilot seeds (ties: the smaller rate)."""
    table: dict[str, dict[float, list[float]]] = {}
    for r in pilot_runs:
        table.setdefault(r["norm"], {}).setdefault(r["lr"], []).append(r["metrics"]["loss"])
    chosen = {norm: min(by_lr, key=lambda lr: (sum(by_lr[lr]) / len(by_lr[lr]), lr)) for norm, by_lr in table.items()}
    return {"rule": "lowest mean final held-out loss over the pilot seeds; ties: the smaller rate",
            "losses": {n: {str(lr): v for lr, v in by.items()} for n, by in table.items()}, "chosen": chosen}


# ---------------------------------------------------------------------------------------------
# pre-registration guard


def preregistration_state(path: Path = PREREGISTRATION) -> dict[str, Any]:
    """The file's SHA-256, the commit checked out, and whether git holds the file unmodified."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=path.parent, capture_output=True, text=True)

    tracked = git("ls-files", "--error-unmatch", str(path)).returncode == 0
    dirty = git("status", "--porcelain", "--", str(path)).stdout.strip()
    commit = git("rev-parse", "HEAD").stdout.strip() or None
    sha = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {"path": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path), "sha256": sha,
            "commit": commit, "committed": tracked and not dirty and sha is not None,
            "draft": sha is not None and "DRAFT" in path.read_text().split("\n", 3)[0]}


def check_preregistration(state: dict[str, Any]) -> None:
    """Refuse a pre-registered stage while the file is missing, uncommitted, modified or a draft."""
    if not state["committed"]:
        raise Refused(f"refusing to start: {state['path']} is missing, uncommitted or modified "
                         f"(git status --porcelain {state['path']}); commit the frozen pre-registration first")
    if state["draft"]:
        raise Refused(f"refusing to start: {state['path']} is still marked DRAFT in its title; "
                         f"freeze it (remove DRAFT, commit) first")


# ---------------------------------------------------------------------------------------------
# one run


def _compose(overrides: Sequence[str]):
    from hydra import compose, initialize_config_module

    from videogn.cli import CONFIG_MODULE
    from videogn.config import register_configs

    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _read_curve(run_dir: Path) -> list[dict[str, float]]:
    import csv

    path = run_dir / "val_metrics.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [{k: float(row[k]) for k in ("step", "epoch", "val_top1", "val_loss") if row.get(k) not in (None, "")}
                for row in csv.DictReader(f)]


def train_one(run: dict[str, Any], out: Path) -> dict[str, Any]:
    """``videogn.train.run`` on the run's overrides; its results for the JSON."""
    import torch

    from videogn.train import run as train_run

    run_dir = out / "runs" / run["key"]
    torch.set_num_threads(1)
    start = time.time()
    result = train_run(_compose(run["overrides"]), output_dir=run_dir)
    report = result["eval"]
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return {
        **run,
        "command": "videogn-train " + " ".join(shlex.quote(o) for o in run["overrides"]),
        "metrics": {"top1": report["top1"], "loss": report["loss"], "mean_class_accuracy": report["mean_class_accuracy"],
                    "steps": result["train"]["steps"]},
        "curve": _read_curve(run_dir),
        "classes": report["classes"],
        # per validation video, in dataset order: its label and the view-averaged probabilities
        "labels": [p["label"] for p in preds],
        "probs": [p["probs"] for p in preds],
        "wall_s": round(time.time() - start, 1),
    }


# ---------------------------------------------------------------------------------------------
# setup, results file


def dataset_setup(scale: dict[str, Any]) -> dict[str, Any]:
    """The spec with its ideal-observer ceilings at every (frames, stride) of the stage."""
    from videogn.data.ceilings import blink_ceilings
    from videogn.defaults import SyntheticSpec

    spec = SyntheticSpec(**{k.split(".")[-1]: v for k, v in scale["task"].items()})
    num_clips = int(next(o for o in COMMON if o.startswith("eval.num_clips=")).split("=")[1])
    shapes = sorted({(t, s) for t, s, _ in scale["cells"]})
    return {"spec": dataclasses.asdict(spec), "classes": spec.classes, "num_val_videos": spec.num_videos("val"),
            "num_train_videos": spec.num_videos("train"), "eval_num_clips": num_clips,
            "ceilings": [c.as_dict() for c in blink_ceilings(spec, shapes, num_clips)]}


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _worker(run: dict[str, Any], out: str) -> dict[str, Any]:
    return train_one(run, Path(out))


def execute(runs: list[dict[str, Any]], results: dict[str, Any], path: Path, jobs: int) -> None:
    """Train the runs not yet in ``results`` (same key and overrides), ``jobs`` side by side,
    writing the results file after each."""
    done = {r["key"]: r for r in results["runs"]}
    todo = [r for r in runs if r["key"] not in done or done[r["key"]]["overrides"] != r["overrides"]]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already done; {len(todo)} to train", flush=True)
    results["runs"] = [r for r in results["runs"] if r["key"] not in {t["key"] for t in todo}]

    def record(res: dict[str, Any]) -> None:
        results["runs"].append(res)
        _write_atomic(path, results)
        m = res["metrics"]
        print(f"{res['key']}: top1 {100 * m['top1']:.1f} %, held-out loss {m['loss']:.3f} ({res['wall_s']:.0f} s)",
              flush=True)

    if jobs <= 1:
        for r in todo:
            record(train_one(r, path.parent))
        return
    with cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for fut in cf.as_completed([pool.submit(_worker, r, str(path.parent)) for r in todo]):
            record(fut.result())


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(argv)
    except Refused as e:
        print(f"sweep: {e}", file=sys.stderr)
        return 2


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("pilot", "grid", "grid_2x", "quick", "smoke"), default="grid")
    parser.add_argument("--quick", action="store_true", help="same as --stage quick (not pre-registered)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: a new outputs/sweep/<date>_<time>/)")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one intra-op thread each)")
    parser.add_argument("--preregistration", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stage = "quick" if args.quick else args.stage
    out = args.out or REPO / "outputs" / "sweep" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    prereg = preregistration_state(args.preregistration or PREREGISTRATIONS.get(stage, PREREGISTRATION))
    if stage in PREREGISTERED_STAGES:
        check_preregistration(prereg)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    results = json.loads(path.read_text()) if path.is_file() else {"setup": {}, "runs": []}
    scale = SCALES[stage]
    setup = results["setup"]
    setup.setdefault("stages", {})[stage] = {"preregistration": prereg, "started": dt.datetime.now().isoformat(timespec="seconds"),
                                             "preregistered": stage in PREREGISTERED_STAGES}
    setup["pipeline"] = {"entry": "videogn.train.run (= videogn-train)", "common_overrides": COMMON,
                         "task_overrides": [f"{k}={v}" for k, v in scale["task"].items()]}
    # the pilot and the grid share one record: the grid's cells' ceilings, its seeds, the pilot's seeds
    setup["dataset"] = dataset_setup(SCALES["grid"] if stage in PREREGISTERED_STAGES else scale)
    setup["seeds"] = list(SCALES["grid"]["seeds"] if stage in PREREGISTERED_STAGES else scale["seeds"])
    if stage in PREREGISTERED_STAGES:
        setup["pilot_seeds"] = list(SCALES["pilot"]["seeds"])
    lrs = None
    if stage in GRID_STAGES:
        pilot = [r for r in results["runs"] if r.get("stage") == "pilot"]
        if not pilot:
            raise Refused(f"no pilot runs in {path}: run --stage pilot --out {out} first")
        pilot_prereg = setup["stages"].get("pilot", {}).get("preregistration", {})
        pilot_sha = pilot_prereg.get("sha256")
        # the pilot's pre-registration must be the one in force now (the grid's own; for grid_2x, the
        # original the pilot ran under, still committed unchanged)
        if stage == "grid":
            now = prereg
        else:
            now = preregistration_state(REPO / pilot_prereg["path"] if pilot_prereg.get("path") else PREREGISTRATION)
            check_preregistration(now)
        if pilot_sha != now["sha256"]:
            raise Refused(f"the pilot in {out} ran under another pre-registration (sha256 {pilot_sha}, now "
                          f"{now['sha256']}); rerun the pilot into a new --out")
        setup["lr_pilot"] = choose_lrs(pilot)
        lrs = setup["lr_pilot"]["chosen"]
    _write_atomic(path, results)
    execute(plan(stage, lrs), results, path, args.jobs)
    if stage == "pilot":
        setup["lr_pilot"] = choose_lrs([r for r in results["runs"] if r.get("stage") == "pilot"])
        _write_atomic(path, results)
    print(f"results: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

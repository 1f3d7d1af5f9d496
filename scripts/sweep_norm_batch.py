#!/usr/bin/env python
"""The GN paper's Kinetics claims in miniature: norm x clips per batch, clip length at constant
memory, and the group ablation, on the built-in ``tempo`` dataset (classes = how often the motion
reverses, so longer clips separate more classes).

    .venv/bin/python scripts/sweep_norm_batch.py              # the full CPU grid into a new outputs/sweep/<date>_<time>/
    .venv/bin/python scripts/sweep_norm_batch.py --quick      # a small grid (BN and GN only), under 5 minutes
    .venv/bin/python scripts/sweep_norm_batch.py --out outputs/sweep/2026-01-01_12-00-00   # continue that sweep
    .venv/bin/python scripts/sweep_norm_batch.py --scale long # BN and GN trained 4x longer (under 1 h)
    .venv/bin/python scripts/sweep_norm_batch.py --scale gpu  # the grid sized for one GPU

Protocol (every scale): each run sees the same number of training clips whatever its batch size
(the linear scaling rule: peak rate ``lr * B / reference_batch_size``, linear warmup over the first
``warmup_fraction`` of the steps, then cosine to 0); SGD Nesterov 0.9, weight decay 1e-4 and none
on norm parameters; random temporal offset, random crop and horizontal flip (the classes are
mirror-symmetric). Validation: the centre T frames of every validation video, one view scored two
ways: whole frames (fully convolutional, as the paper; the tables' result) and the centre crop at
the training resolution (``top1_crop``). BN* is the paper's frozen BN: the BN model trained at the
largest batch with the same seed, its BN layers turned into a fixed affine, trained on at each
batch size (so it has had twice the training of the others).

Speed: the videos are generated as mp4 files (``ensure_synthetic_dataset``), decoded once with
:class:`videogn.data.VideoReader` into ``<out>/data/*.npy``, and the runs read those arrays
(memory-mapped, shared by the worker processes) instead of decoding every clip again: at 32x32
the decode of a clip costs as much as its training step. ``--jobs`` runs (default: one per
available core) train side by side, one intra-op thread each.

Resumable: every finished run is written to ``<out>/sweep_results.json`` (atomically) with the
validation videos it got right; started again on the same ``--out``, the sweep skips them.
``scripts/sweep_report.py`` turns the JSON into the tables (95 % bootstrap intervals over seeds
and validation videos) and plots; this script calls it after every run.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_report  # noqa: E402  (the tables and plots, beside this script)

# Norm variants by name: (norm, norm kwargs, weight-standardised convs). "gn" is the model's own
# GN (i3d_tiny: 8 groups); the group ablation adds named variants.
VARIANTS: dict[str, tuple[str, dict[str, int], bool]] = {
    "bn": ("bn", {}, False), "gn": ("gn", {}, False), "ln": ("ln", {}, False), "in": ("in", {}, False),
    "frozen_bn": ("frozen_bn", {}, False), "gn_ws": ("gn", {}, True),
}
for _g in (1, 2, 4, 8, 16, 32):
    VARIANTS[f"gn_g{_g}"] = ("gn", {"num_groups": _g}, False)
for _c in (4, 8, 16):
    VARIANTS[f"gn_c{_c}"] = ("gn", {"group_size": _c}, False)

_TEMPO = dict(task="tempo", num_classes=8, frames=40, size=32, min_speed=1.5, max_speed=3.0,
              num_distractors=0, noise=0.02)
_NO_POOL1 = {"pool1_kernel": [1, 1, 1], "pool1_stride": [1, 1, 1]}
SCALES: dict[str, dict[str, Any]] = {
    # 2 cores: i3d_tiny (widths 16-128) without its first max-pool (the last stage sees 2x2, not
    # 1x1: GN's statistics need the room), 24x24 crops of 28x28 frames; docs/sweep.md gives the
    # cost arithmetic
    "cpu": {
        "data": {**_TEMPO, "size": 28, "train_per_class": 300, "val_per_class": 80},
        "model": "i3d_tiny", "model_kwargs": _NO_POOL1, "crop_size": 24, "clips_seen": 12800, "lr": 0.1, "reference_batch_size": 16,
        "warmup_fraction": 0.1, "device": "cpu",
        "num_frames": 8, "batch_sizes": [2, 4, 8, 16, 32],
        "pairs": [[4, 32], [8, 16], [16, 8], [32, 4]],
        "batch_norms": ["bn", "gn", "ln", "in", "frozen_bn", "gn_ws"], "pair_norms": ["bn", "gn"],
        "main_seeds": 5, "other_seeds": 3,
        "group_cell": [8, 16], "group_variants": ["gn_g1", "gn_g4", "gn_g16", "gn_g32", "gn_c4", "gn_c16"],
    },
    # the same task and protocol with fewer cells, seeds and clips: a check that it all runs
    "quick": {
        "data": {**_TEMPO, "size": 28, "train_per_class": 300, "val_per_class": 80},
        "model": "i3d_tiny", "model_kwargs": _NO_POOL1, "crop_size": 24, "clips_seen": 6400, "lr": 0.1, "reference_batch_size": 16,
        "warmup_fraction": 0.1, "device": "cpu",
        "num_frames": 8, "batch_sizes": [4, 32],
        "pairs": [[4, 32], [8, 16], [16, 8]],
        "batch_norms": ["bn", "gn"], "pair_norms": ["bn", "gn"],
        "main_seeds": 2, "other_seeds": 0,
        "group_cell": [8, 16], "group_variants": [],
    },
    # BN and GN trained 4x longer on the cpu grid's task and model: how much of GN's gap is
    # under-training (the cpu grid's GN runs have not flattened); 54 min on 2 cores
    "long": {
        "data": {**_TEMPO, "size": 28, "train_per_class": 300, "val_per_class": 80},
        "model": "i3d_tiny", "model_kwargs": _NO_POOL1, "crop_size": 24, "clips_seen": 51200, "lr": 0.1, "reference_batch_size": 16,
        "warmup_fraction": 0.1, "device": "cpu",
        "num_frames": 8, "batch_sizes": [2, 16, 32],
        "pairs": [[4, 32], [8, 16], [16, 8], [32, 4]],
        "batch_norms": ["bn", "gn"], "pair_norms": ["bn", "gn"],
        "main_seeds": 2, "other_seeds": 0,
        "group_cell": [8, 16], "group_variants": [],
    },
    # one GPU: a wider model on bigger frames and longer clips, more training (not yet run)
    "gpu": {
        "data": {**_TEMPO, "frames": 72, "size": 64, "min_speed": 3.0, "max_speed": 6.0,
                 "train_per_class": 600, "val_per_class": 100},
        "model": "i3d_r18", "crop_size": 56, "clips_seen": 24000, "lr": 0.1, "reference_batch_size": 16,
        "warmup_fraction": 0.1, "device": "cuda",
        "num_frames": 16, "batch_sizes": [2, 4, 8, 16, 32],
        "pairs": [[8, 32], [16, 16], [32, 8]],
        "batch_norms": ["bn", "gn", "ln", "in", "frozen_bn", "gn_ws"], "pair_norms": ["bn", "gn"],
        "main_seeds": 5, "other_seeds": 3,
        "group_cell": [16, 16], "group_variants": ["gn_g1", "gn_g4", "gn_g8", "gn_g16", "gn_c4", "gn_c16"],
    },
}
LOSS_POINTS = 20  # the training-loss curve kept per run: means over 20 equal stretches of steps


def run_key(norm: str, t: int, b: int, seed: int) -> str:
    return f"{norm}/T{t}xB{b}/seed{seed}"


def plan_runs(scale: dict[str, Any]) -> list[dict[str, Any]]:
    """Every distinct run of the grid: the BN and GN cells first (the question; 5 seeds), then
    the other norms and the group ablation; seed by seed within each part, so a sweep stopped
    early has every cell of a part at its first seeds. BN* runs come after their BN sources."""
    t0, bmax = scale["num_frames"], max(scale["batch_sizes"])
    cells: list[tuple[str, int, int, int]] = []  # (norm, T, B, seeds)
    for norm in scale["batch_norms"]:
        seeds = scale["main_seeds"] if norm in ("bn", "gn") else scale["other_seeds"]
        cells += [(norm, t0, b, seeds) for b in scale["batch_sizes"]]
    cells += [(norm, t, b, scale["main_seeds"]) for norm in scale["pair_norms"] for t, b in scale["pairs"]]
    gt, gb = scale["group_cell"]
    cells += [(v, gt, gb, scale["other_seeds"]) for v in scale["group_variants"]]
    runs: dict[str, dict[str, Any]] = {}
    for main in (True, False):
        part = [c for c in cells if (c[0] in ("bn", "gn")) == main]
        for seed in range(max((c[3] for c in part), default=0)):
            for norm, t, b, seeds in sorted(part, key=lambda c: (c[0] == "frozen_bn", -c[1] * c[2])):
                if seed >= seeds:
                    continue
                key = run_key(norm, t, b, seed)
                init = run_key("bn", t0, bmax, seed) if norm == "frozen_bn" else None
                runs.setdefault(key, {"key": key, "norm": norm, "num_frames": t, "batch_size": b, "seed": seed,
                                      "init_from": init})
    return list(runs.values())


# ------------------------------------------------------------------------------------------------
# Data: the built-in videos, decoded once
# ------------------------------------------------------------------------------------------------


def decode_split(root: Path, split: str, classes: list[str], dest: Path) -> None:
    """Decode every video of ``split`` (frames (N, F, H, W, 3) uint8, labels (N,)) into ``dest``."""
    import csv

    from videogn.data import VideoReader

    frames_path, labels_path = dest / f"{split}_frames.npy", dest / f"{split}_labels.npy"
    if frames_path.exists() and labels_path.exists():
        return
    with open(root / "annotations" / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    clips, labels = [], []
    for row in rows:
        name = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
        reader = VideoReader(root / split / name, backend="pyav")
        clips.append(reader.get_frames(np.arange(len(reader))).numpy())
        labels.append(classes.index(row["label"]))
    dest.mkdir(parents=True, exist_ok=True)
    for path, array in ((frames_path, np.stack(clips)), (labels_path, np.array(labels, dtype=np.int64))):
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array)
        tmp.replace(path)


def prepare_data(scale: dict[str, Any], cache: Optional[Path], dest: Path) -> dict[str, Any]:
    """Generate (or reuse) the dataset, decode it into ``dest``; returns its description."""
    from videogn.data.synthetic import SyntheticSpec, ensure_synthetic_dataset

    spec = SyntheticSpec(**scale["data"])
    root = ensure_synthetic_dataset(spec, cache)
    for split in ("train", "val"):
        decode_split(root, split, spec.classes, dest)
    return {"spec": scale["data"], "classes": spec.classes, "root": str(root),
            "num_train_videos": spec.num_videos("train"), "num_val_videos": spec.num_videos("val")}


_DATA: dict[str, np.ndarray] = {}


def _init_worker(data_dir: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # tiny gradients late in a run must not slow the CPU down
    for name in ("train_frames", "train_labels", "val_frames", "val_labels"):
        _DATA[name] = np.load(Path(data_dir) / f"{name}.npy", mmap_mode="r")


def _train_batch(frames: np.ndarray, idx: np.ndarray, t: int, crop: int, rng: np.random.Generator):
    """uint8 (B, 3, T, crop, crop): random start, random crop, random horizontal flip."""
    import torch

    _, f, h, w, _ = frames.shape
    out = np.empty((len(idx), t, crop, crop, 3), dtype=np.uint8)
    for i, v in enumerate(idx):
        s, y, x = rng.integers(f - t + 1), rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        clip = frames[v, s:s + t, y:y + crop, x:x + crop]
        out[i] = clip[:, :, ::-1] if rng.random() < 0.5 else clip
    return torch.from_numpy(out).permute(0, 4, 1, 2, 3)


def _val_batch(frames: np.ndarray, lo: int, hi: int, t: int, crop: Optional[int] = None):
    """uint8 (n, 3, T, h, w): the centre T frames, their centre crop x crop (None: whole frames)."""
    import torch

    _, f, h, w, _ = frames.shape
    s = (f - t) // 2
    y, x = ((h - crop) // 2, (w - crop) // 2) if crop else (0, 0)
    clip = frames[lo:hi, s:s + t, y:y + (crop or h), x:x + (crop or w)]
    return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 4, 1, 2, 3)


def train_run(scale: dict[str, Any], run: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Train and validate one run (in a worker process); returns its record."""
    import torch

    from videogn.budget import batch_lr_scale
    from videogn.data import KINETICS_MEAN, KINETICS_STD, normalize_batch
    from videogn.layers import standardize_convs
    from videogn.models import create_model
    from videogn.optim import LRSchedule, build_sgd
    from videogn.runtime import forward_backward, optimizer_step, resolve_device, seed_everything

    start = time.perf_counter()
    norm, norm_kwargs, ws = VARIANTS[run["norm"]]
    t, b, seed = run["num_frames"], run["batch_size"], run["seed"]
    device = resolve_device(scale["device"])
    seed_everything(seed)
    frames, labels = _DATA["train_frames"], _DATA["train_labels"]
    model = create_model(scale["model"], num_classes=int(labels.max()) + 1, norm=norm,
                         norm_kwargs=norm_kwargs or None, dropout=0.0, **scale.get("model_kwargs", {}))
    if ws:
        standardize_convs(model)
    if run["init_from"]:  # BN*: the BN source's weights and statistics become a fixed affine
        source = Path(workdir) / (run["init_from"].replace("/", "_") + ".pt")
        model.load_state_dict(torch.load(source, map_location="cpu"))
    model.to(device).train()
    opt = build_sgd(model, scale["lr"], momentum=0.9, nesterov=True, weight_decay=1e-4, norm_weight_decay=0.0)
    steps = scale["clips_seen"] // b
    sched = LRSchedule("cosine", steps, warmup_fraction=scale["warmup_fraction"])
    lr_scale = batch_lr_scale(b, 1, scale["reference_batch_size"])
    rng = np.random.default_rng([seed, 1])
    order = np.concatenate([rng.permutation(len(labels)) for _ in range(math.ceil(steps * b / len(labels)))])
    losses = torch.empty(steps)
    for step in range(steps):
        idx = order[step * b:(step + 1) * b]
        clips = _train_batch(frames, idx, t, scale["crop_size"], rng).to(device)
        clips = normalize_batch(clips, KINETICS_MEAN, KINETICS_STD)
        target = torch.from_numpy(np.asarray(labels[idx])).to(device)
        sched.apply(opt, step, lr_scale)
        losses[step] = forward_backward(model, clips, target)
        if not optimizer_step(model, opt, finite=bool(torch.isfinite(losses[step]))):
            raise FloatingPointError(f"{run['key']}: non-finite loss or gradient at step {step}")
    if run["norm"] == "bn" and b == max(scale["batch_sizes"]) and t == scale["num_frames"]:
        dest = Path(workdir) / (run["key"].replace("/", "_") + ".pt")  # the source of BN* runs
        torch.save(model.state_dict(), dest.with_suffix(".tmp"))
        dest.with_suffix(".tmp").replace(dest)

    model.eval()
    vframes, vlabels = _DATA["val_frames"], np.asarray(_DATA["val_labels"])
    # Two single views: the whole frame (fully convolutional, as the paper tests; the result) and the
    # centre crop at the training resolution (on feature maps of 2-4 positions the larger frame
    # changes what zero padding adds to per-sample statistics: docs/sweep.md compares the two)
    hits = {}
    with torch.no_grad():
        for view, crop in (("whole", None), ("crop", scale["crop_size"])):
            correct = []
            for lo in range(0, len(vlabels), 64):
                clips = _val_batch(vframes, lo, lo + 64, t, crop).to(device)
                clips = normalize_batch(clips, KINETICS_MEAN, KINETICS_STD)
                correct.append((model(clips).argmax(1).cpu().numpy() == vlabels[lo:lo + 64]))
            hits[view] = np.concatenate(correct)
    curve = [float(c.mean()) for c in torch.tensor_split(losses, min(LOSS_POINTS, steps))]
    return {
        **run, "top1": float(hits["whole"].mean()), "correct": "".join("1" if h else "0" for h in hits["whole"]),
        "top1_crop": float(hits["crop"].mean()), "correct_crop": "".join("1" if h else "0" for h in hits["crop"]),
        "clips_seen": steps * b, "steps": steps, "final_loss": curve[-1], "loss_curve": [round(c, 4) for c in curve],
        "late_drop": late_drop(curve), "wall_s": round(time.perf_counter() - start, 1),
    }


def late_drop(curve: list[float]) -> Optional[float]:
    """Share of the run's total loss decrease that came in its last quarter (the convergence test:
    a run whose loss still falls steeply at the end is not converged); None for a curve too short
    or one that never fell."""
    q = len(curve) // 4
    if q == 0:
        return None
    total = curve[0] - float(np.mean(curve[-q:]))
    late = float(np.mean(curve[-2 * q:-q])) - float(np.mean(curve[-q:]))
    return round(late / total, 4) if total > 0 else None


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def _save(results: dict[str, Any], out_json: Path) -> None:
    tmp = out_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out_json)  # atomic: an interrupted sweep leaves the previous valid JSON


def _setup(scale_name: str, scale: dict[str, Any], data: dict[str, Any], jobs: int) -> dict[str, Any]:
    import torch

    return {
        "scale": scale_name, **{k: v for k, v in scale.items() if k != "data"}, "dataset": data["spec"],
        "classes": data["classes"], "num_classes": len(data["classes"]),
        "num_train_videos": data["num_train_videos"], "num_val_videos": data["num_val_videos"],
        "groups": [{"norm": v, "label": _group_label(v)} for v in scale["group_variants"]],
        "default_gn": "8 groups" if scale["model"] == "i3d_tiny" else "32 groups",
        "val_view": "centre T frames: whole frames (top1, correct), centre crop_size crop (top1_crop, correct_crop)",
        "torch": torch.__version__, "jobs": jobs, "threads_per_job": 1 if scale["device"] == "cpu" else None,
    }


def _group_label(variant: str) -> str:
    _, kw, _ = VARIANTS[variant]
    return f"G={kw['num_groups']}" if "num_groups" in kw else f"{kw['group_size']} channels per group"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="grid size (default: cpu)")
    ap.add_argument("--quick", action="store_true", help="same as --scale quick")
    ap.add_argument("--out", type=Path, default=None,
                    help="output dir (default: a new outputs/sweep/<date>_<time>); one holding a "
                         "sweep_results.json of the same setup is continued")
    ap.add_argument("--cache", type=Path, default=None, help="built-in dataset cache (default: $VIDEOGN_CACHE or ~/.cache/videogn)")
    ap.add_argument("--jobs", type=int, default=None, help="runs side by side (default: CPU: one per available core; GPU: 1)")
    ap.add_argument("--max-minutes", type=float, default=None, help="start no new run after this much wall time")
    args = ap.parse_args(argv)
    scale_name = "quick" if args.quick else args.scale
    scale = SCALES[scale_name]
    if scale["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            ap.error(f"--scale {scale_name} needs a CUDA GPU; none is visible")
    from videogn.threads import available_cores

    jobs = args.jobs if args.jobs is not None else (available_cores() if scale["device"] == "cpu" else 1)
    if jobs < 1:
        ap.error(f"--jobs must be >= 1, got {jobs}")

    t0 = time.perf_counter()
    out_dir = args.out or Path("outputs") / "sweep" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out_json = out_dir / "sweep_results.json"
    workdir = out_dir / "runs"
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"writing to {out_dir}", flush=True)
    data = prepare_data(scale, args.cache, out_dir / "data")
    setup = _setup(scale_name, scale, data, jobs)
    # elapsed_s: the sweep's clock time over all its invocations, data preparation included, up to
    # the last finished run (each run's own wall time is in its record)
    results: dict[str, Any] = {"setup": setup, "runs": {}, "elapsed_s": 0.0}
    elapsed_before = 0.0
    if out_json.exists():
        previous = json.loads(out_json.read_text())
        same = ("scale", "dataset", "model", "model_kwargs", "clips_seen", "lr", "crop_size")
        diff = [k for k in same if previous["setup"].get(k) != setup.get(k)]
        if diff:
            print(f"error: {out_json} holds a sweep of another setup (differs in {diff}); "
                  "choose another --out (nothing was changed)", file=sys.stderr)
            return 2
        results["runs"] = previous["runs"]
        elapsed_before = previous.get("elapsed_s", 0.0)

    runs = plan_runs(scale)
    todo = [r for r in runs if r["key"] not in results["runs"]]
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to go, {jobs} at a time; "
          f"{data['num_train_videos']} training / {data['num_val_videos']} validation videos", flush=True)
    start = time.perf_counter()
    waiting = [r for r in todo if r["init_from"] and r["init_from"] not in results["runs"]]
    ready = [r for r in todo if r not in waiting]
    ctx = multiprocessing.get_context("spawn")  # no OpenMP state forked from this process
    done = 0
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                initargs=(str(out_dir / "data"), 1)) as pool:
        running: dict[cf.Future, dict[str, Any]] = {}

        def fill() -> None:
            while ready and len(running) < jobs:
                if args.max_minutes is not None and (time.perf_counter() - start) / 60 >= args.max_minutes:
                    print(f"--max-minutes {args.max_minutes}: starting no more runs; continue with --out {out_dir}", flush=True)
                    ready.clear()
                    waiting.clear()
                    return
                run = ready.pop(0)
                running[pool.submit(train_run, scale, run, str(workdir))] = run

        fill()
        while running:
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                run = running.pop(fut)
                rec = fut.result()  # a failed run stops the sweep with its error; finished runs are kept
                results["runs"][rec["key"]] = rec
                results["elapsed_s"] = round(elapsed_before + time.perf_counter() - t0, 1)
                _save(results, out_json)
                done += 1
                print(f"[{done}/{len(todo)}] {rec['key']}: top-1 {100 * rec['top1']:.1f}%  loss {rec['final_loss']:.3f}  "
                      f"late drop {rec['late_drop'] if rec['late_drop'] is None else round(rec['late_drop'], 2)}  {rec['steps']} steps  {rec['wall_s']:.0f}s  "
                      f"(elapsed {(time.perf_counter() - start) / 60:.1f} min)", flush=True)
                ready.extend(r for r in waiting if r["init_from"] == rec["key"])
                waiting[:] = [r for r in waiting if r["init_from"] != rec["key"]]
            fill()
    sweep_report.write_report(results, out_json)
    print(sweep_report.markdown(results))
    missing = len(runs) - len(results["runs"])
    if missing:
        print(f"{missing} runs not done; continue with --out {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

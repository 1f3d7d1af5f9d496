#!/usr/bin/env python
"""The GN paper's Kinetics table and batch-size figure in miniature, on the built-in dataset.

Trains (through the real :class:`videogn.engine.trainer.Trainer` and evaluator) one model per
(norm, batch size, seed) and per (norm, T x B constant-memory pair, seed), and reports mean ± std
validation top-1 as a markdown table (between the markers of ``sweep.md`` beside the JSON), PNG
plots and raw JSON into a fresh output dir (``outputs/sweep/<date>_<time>/`` unless ``--out``):

    .venv/bin/python scripts/sweep_norm_batch.py                 # CPU scale: every run, from scratch
    .venv/bin/python scripts/sweep_norm_batch.py --scale gpu     # larger data/model/epochs on a GPU
    .venv/bin/python scripts/sweep_norm_batch.py --out outputs/sweep/2026-01-01_12-00-00   # continue that sweep

The committed results (``docs/sweep_results.json``, the table in ``docs/sweep.md``) are what the
docs cite; the script never reads them unless pointed at ``--out docs``.

Protocol (both scales): a fixed number of epochs for every batch size; learning rate scaled
linearly with the batch (``optim.lr`` at ``optim.reference_batch_size`` clips); cosine schedule.
Frozen BN ("BN*", as in the paper): the BN model trained at the largest batch with the same seed
supplies the statistics and weights; its BN layers become a fixed affine (``norm=frozen_bn``) and
it is trained on at each batch size for the same epochs (so BN* has seen twice the training —
it is the paper's fine-tuning baseline, not a from-scratch norm).

Each configuration runs in-process after a full reset (the trainer reseeds every RNG and builds a
fresh model, optimizer and loader), one after another; finished runs are saved to the results JSON
after each run and skipped when the script is started again on the same ``--out`` dir (resumable). ``--max-minutes`` stops
starting new runs after that much wall time, leaving a valid JSON and tables of what finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

NORMS = ("bn", "gn", "ln", "in", "frozen_bn")
LABELS = {"bn": "BN", "gn": "GN", "ln": "LN", "in": "IN", "frozen_bn": "BN* (frozen)"}

SCALES: dict[str, dict[str, Any]] = {
    # 2-core CPU: 6 motion classes, 192 training clips, 28x28 crops, i3d_tiny, 10 epochs (~5-30 s a run)
    "cpu": {
        "batch_sizes": [2, 4, 8, 16],
        "pairs": [[4, 16], [8, 8], [16, 4]],
        "pair_norms": ["bn", "gn"],
        "seeds": [0, 1, 2],
        "epochs": 10,
        "lr": 0.1,
        "reference_batch_size": 16,
        "num_frames": 8,
        "overrides": [
            "model=i3d_tiny", "model.dropout=0.0",
            "data.synthetic.num_classes=6", "data.synthetic.train_per_class=32", "data.synthetic.val_per_class=12",
            "data.synthetic.frames=16", "data.synthetic.size=32", "data.synthetic.num_distractors=0",
            "data.train_scale=[32,36]", "data.crop_size=28", "data.test_scale=32", "data.num_clips=1",
            "data.num_crops=1", "data.num_workers=0", "budget.stride=1",
            "trainer.num_threads=2", "trainer.eval_batch_size=16", "sched.warmup_fraction=0.1",
        ],
    },
    # one GPU: the full-size built-in dataset, a wider I3D, more epochs and all three seeds
    "gpu": {
        "batch_sizes": [2, 4, 8, 16],
        "pairs": [[8, 32], [16, 16], [32, 8], [64, 4]],
        "pair_norms": ["bn", "gn", "ln", "in"],
        "seeds": [0, 1, 2],
        "epochs": 30,
        "lr": 0.1,
        "reference_batch_size": 16,
        "num_frames": 16,
        "overrides": [
            "model=i3d_r18", "model.dropout=0.0",
            "data.synthetic.num_classes=8", "data.synthetic.train_per_class=200", "data.synthetic.val_per_class=50",
            "data.synthetic.frames=72", "data.synthetic.size=64", "data.synthetic.num_distractors=2",
            "data.train_scale=[64,72]", "data.crop_size=56", "data.test_scale=64", "data.num_clips=3",
            "data.num_crops=1", "data.num_workers=4", "budget.stride=1", "trainer.precision=bf16",
            "trainer.eval_batch_size=16", "sched.warmup_fraction=0.1",
        ],
    },
}


def _key(kind: str, norm: str, t: int, b: int, seed: int) -> str:
    return f"{kind}/{norm}/T{t}xB{b}/seed{seed}"


def plan_runs(scale: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the sweep, BN at the largest batch before the BN* runs that start from it."""
    runs = []
    t0, bmax = scale["num_frames"], max(scale["batch_sizes"])
    for seed in scale["seeds"]:
        for norm in NORMS:
            for b in sorted(scale["batch_sizes"], reverse=True):
                runs.append({"kind": "batch", "norm": norm, "num_frames": t0, "batch_size": b, "seed": seed,
                             "init_from": _key("batch", "bn", t0, bmax, seed) if norm == "frozen_bn" else None})
        for norm in scale["pair_norms"]:
            for t, b in scale["pairs"]:
                runs.append({"kind": "pair", "norm": norm, "num_frames": t, "batch_size": b, "seed": seed, "init_from": None})
    for r in runs:
        r["key"] = _key(r["kind"], r["norm"], r["num_frames"], r["batch_size"], r["seed"])
    return runs


def compose_run(scale: dict[str, Any], run: dict[str, Any], cache: Path, workdir: Path):
    from hydra import compose, initialize_config_module

    from videogn.cli import CONFIG_MODULE
    from videogn.config import register_configs, validate

    register_configs()
    overrides = list(scale["overrides"]) + [
        f"norm={run['norm']}", f"budget.num_frames={run['num_frames']}", f"budget.batch_size={run['batch_size']}",
        f"trainer.seed={run['seed']}", f"trainer.epochs={scale['epochs']}", "trainer.max_steps=null",
        f"optim.lr={scale['lr']}", f"optim.reference_batch_size={scale['reference_batch_size']}",
        f"data.synthetic.cache_dir={cache}", "trainer.resume=never", "trainer.tensorboard=false",
        "trainer.progress_bar=false", "trainer.checkpoint_every=100000", "trainer.keep_checkpoints=1",
        "trainer.device=auto", f"name=sweep_{run['key'].replace('/', '_')}",
    ]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return validate(cfg)


def train_one(scale: dict[str, Any], run: dict[str, Any], cache: Path, workdir: Path) -> dict[str, Any]:
    """Train and evaluate one configuration; returns its record (top-1 etc.)."""
    from videogn.engine.checkpoint import list_checkpoints, load_checkpoint
    from videogn.engine.evaluator import evaluate_split
    from videogn.engine.trainer import Trainer

    conf = compose_run(scale, run, cache, workdir)
    out = workdir / run["key"].replace("/", "_")
    t0 = time.perf_counter()
    trainer = Trainer(conf, out)
    if run["init_from"]:
        src = workdir / run["init_from"].replace("/", "_") / "checkpoints"
        found = list_checkpoints(src)
        if not found:
            raise RuntimeError(f"BN* run {run['key']} needs the BN model {run['init_from']} trained first")
        # BN buffers and weights become FrozenBatchNorm's fixed affine (num_batches_tracked dropped)
        trainer.unwrapped_model.load_state_dict(load_checkpoint(found[0])["model"])
    summary = trainer.fit()
    report = evaluate_split(
        trainer.unwrapped_model, conf, trainer.sources, trainer.class_names, split="val",
        batch_size=conf.trainer.eval_batch_size, device=trainer.device, precision=conf.trainer.precision,
        progress=False,
    )
    return {
        **{k: run[k] for k in ("key", "kind", "norm", "num_frames", "batch_size", "seed", "init_from")},
        "top1": report["top1"], "top5": report["top5"], "mean_class_accuracy": report["mean_class_accuracy"],
        "steps": summary["steps"], "final_loss": summary["final_loss"], "wall_s": round(time.perf_counter() - t0, 2),
    }


def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: dict[str, Any], scale: dict[str, Any]) -> dict[str, Any]:
    """mean/std top-1 (in %) per (norm, B) and per (norm, T x B) over the seeds that finished."""
    groups: dict[tuple, list[float]] = {}
    for rec in results["runs"].values():
        groups.setdefault((rec["kind"], rec["norm"], rec["num_frames"], rec["batch_size"]), []).append(100 * rec["top1"])
    return {g: (*_stats(v), len(v)) for g, v in groups.items()}


def markdown(results: dict[str, Any], scale: dict[str, Any]) -> str:
    stats = summarize(results, scale)
    t0 = scale["num_frames"]
    bs = sorted(scale["batch_sizes"], reverse=True)
    lines = [f"Validation top-1 (%), mean ± std over seeds (n = seeds finished), T = {t0} frames:", "",
             "| norm | " + " | ".join(f"B={b}" for b in bs) + " |", "|---" * (len(bs) + 1) + "|"]
    for norm in NORMS:
        cells = []
        for b in bs:
            s = stats.get(("batch", norm, t0, b))
            cells.append(f"{s[0]:.1f} ± {s[1]:.1f} (n={s[2]})" if s else "—")
        lines.append(f"| {LABELS[norm]} | " + " | ".join(cells) + " |")
    pairs = scale["pairs"]
    lines += ["", "Constant memory (T x B at equal T·B), validation top-1 (%):", "",
              "| norm | " + " | ".join(f"{t}x{b}" for t, b in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for norm in scale["pair_norms"]:
        cells = []
        for t, b in pairs:
            s = stats.get(("pair", norm, t, b))
            cells.append(f"{s[0]:.1f} ± {s[1]:.1f} (n={s[2]})" if s else "—")
        lines.append(f"| {LABELS[norm]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _chance(scale: dict[str, Any]) -> Optional[float]:
    """Chance top-1 (%) of the scale's dataset: 100 / num_classes."""
    for o in scale["overrides"]:
        if o.startswith("data.synthetic.num_classes="):
            return 100.0 / int(o.split("=", 1)[1])
    return None


def plot(results: dict[str, Any], scale: dict[str, Any], prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarize(results, scale)
    t0 = scale["num_frames"]
    paths = []
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for norm in NORMS:
        pts = [(b, stats[("batch", norm, t0, b)]) for b in sorted(scale["batch_sizes"]) if ("batch", norm, t0, b) in stats]
        if pts:
            ax.errorbar([p[0] for p in pts], [100 - p[1][0] for p in pts], yerr=[p[1][1] for p in pts],
                        marker="o", capsize=3, label=LABELS[norm])
    chance = _chance(scale)
    if chance is not None:
        ax.axhline(100 - chance, color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(scale["batch_sizes"]), [str(b) for b in sorted(scale["batch_sizes"])])
    ax.set_xlabel("clips per batch")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"error vs batch size (T={t0}, mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    paths.append(prefix.with_name(prefix.name + "_batch.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for norm in scale["pair_norms"]:
        pts = [(t, b, stats[("pair", norm, t, b)]) for t, b in scale["pairs"] if ("pair", norm, t, b) in stats]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[2][0] for p in pts], yerr=[p[2][1] for p in pts],
                        marker="o", capsize=3, label=LABELS[norm])
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks([t for t, _ in scale["pairs"]], [f"{t}x{b}" for t, b in scale["pairs"]])
    ax.set_xlabel("clip length T x clips per batch B (constant T·B)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("accuracy vs clip length at constant memory")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    paths.append(prefix.with_name(prefix.name + "_length.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


TABLE_START, TABLE_END = "<!-- sweep-table:start -->", "<!-- sweep-table:end -->"


def _write_table(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else ""
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + TABLE_START + "\n" + table + TABLE_END + rest.split(TABLE_END, 1)[1]
    elif not text:
        text = "# Sweep results\n\n" + TABLE_START + "\n" + table + TABLE_END + "\n"
    else:  # a write-up without markers: append the table once, with markers
        text = text.rstrip("\n") + "\n\n" + TABLE_START + "\n" + table + TABLE_END + "\n"
    path.write_text(text)


def write_outputs(results: dict[str, Any], scale: dict[str, Any], out_json: Path) -> None:
    tmp = out_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out_json)  # atomic: an interrupted sweep leaves the previous valid JSON
    # the table goes between the markers of <out dir>/sweep.md (the write-up), or is that file
    _write_table(out_json.with_name(out_json.stem.replace("_results", "") + ".md"), markdown(results, scale))
    if results["runs"]:
        plot(results, scale, out_json.with_name(out_json.stem.replace("_results", "")))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="cpu (minutes on 2 cores) or gpu (bigger data/model/epochs)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output dir: sweep_results.json, sweep.md, the PNGs and runs/ (default: a new "
                         "outputs/sweep/<date>_<time>); a dir holding sweep_results.json is continued")
    ap.add_argument("--workdir", type=Path, default=None, help="run directories (default: <out>/runs; BN* reads BN's checkpoints there)")
    ap.add_argument("--cache", type=Path, default=None, help="built-in dataset cache (default: $VIDEOGN_CACHE or ~/.cache/videogn)")
    ap.add_argument("--seeds", type=int, default=None, help="use only the first N seeds of the scale")
    ap.add_argument("--epochs", type=int, default=None, help="override the scale's epochs")
    ap.add_argument("--max-minutes", type=float, default=None, help="start no new run after this much wall time")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    scale = dict(SCALES[args.scale])
    if args.seeds is not None:
        if not 1 <= args.seeds <= len(scale["seeds"]):
            ap.error(f"--seeds must be in [1, {len(scale['seeds'])}], got {args.seeds}")
        scale["seeds"] = scale["seeds"][: args.seeds]
    if args.epochs is not None:
        if args.epochs < 1:
            ap.error(f"--epochs must be >= 1, got {args.epochs}")
        scale["epochs"] = args.epochs
    from videogn.data.synthetic import default_cache_dir

    cache = args.cache or default_cache_dir()
    out_dir = args.out or Path("outputs") / "sweep" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out_json = out_dir / "sweep_results.json"
    workdir = args.workdir or out_dir / "runs"
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"writing to {out_dir}", flush=True)

    setup = {k: v for k, v in scale.items()}
    results: dict[str, Any] = {"runs": {}}
    if out_json.exists():  # only a dir the user pointed at (the default dir is new)
        results = json.loads(out_json.read_text())
        if results.get("setup", {}).get("overrides") != setup["overrides"] or results["setup"].get("epochs") != setup["epochs"]:
            print(f"{out_json} holds a different setup; starting afresh", flush=True)
            results = {"runs": {}}
    results["setup"] = {**setup, "scale": args.scale, "device": "cuda" if torch.cuda.is_available() else "cpu",
                        "torch": torch.__version__, "norms": list(NORMS)}
    runs = plan_runs(scale)
    start = time.perf_counter()
    todo = [r for r in runs if r["key"] not in results["runs"]]
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to go", flush=True)
    for i, run in enumerate(todo):
        elapsed = (time.perf_counter() - start) / 60
        if args.max_minutes is not None and elapsed >= args.max_minutes:
            print(f"stopping after {elapsed:.1f} min (--max-minutes {args.max_minutes}): {len(todo) - i} runs not started", flush=True)
            break
        if run["init_from"] and not list((workdir / run["init_from"].replace("/", "_") / "checkpoints").glob("*.pt")):
            print(f"[{i + 1}/{len(todo)}] {run['key']}: skipped, its BN source {run['init_from']} has no checkpoint in {workdir}", flush=True)
            continue
        rec = train_one(scale, run, cache, workdir)
        results["runs"][run["key"]] = rec
        results["wall_s_total"] = round(results.get("wall_s_total", 0.0) + rec["wall_s"], 1)
        write_outputs(results, scale, out_json)
        print(f"[{i + 1}/{len(todo)}] {run['key']}: top-1 {100 * rec['top1']:.1f}%  loss {rec['final_loss']:.3f}  "
              f"{rec['steps']} steps  {rec['wall_s']:.1f}s  (elapsed {(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    write_outputs(results, scale, out_json)
    print(markdown(results, scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())

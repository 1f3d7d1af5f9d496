#!/usr/bin/env python
"""The pre-registered analysis of a sweep's results JSON (written by ``scripts/sweep.py``):
per-cell top-1 against the ideal observer's ceiling, convergence on held-out loss, and H1-H3
(paired by seed and video, Holm-corrected; :mod:`videogn.science.analysis`).

    .venv/bin/python scripts/sweep_report.py outputs/sweep/<date>_<time>/sweep_results.json
    .venv/bin/python scripts/sweep_report.py RESULTS --margin 0.03 --out-dir docs/   # where the files go

Writes ``analysis.json`` (every number), ``analysis.md`` (the tables) and ``sweep_top1.png`` /
``sweep_loss.png`` / ``sweep_contrasts.png`` (the hypotheses' paired intervals) beside the results (or in ``--out-dir``). Only the ``grid`` stage's runs enter
the hypotheses; the other stages' runs (``pilot``, ``quick``) get the descriptive tables only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from videogn.science.analysis import convergence, correctness, evaluate_hypotheses, t_quantile

MARGIN = 0.03  # docs/preregistration.md: the equivalence margin of H2, in top-1 (fraction)
# docs/preregistration.md, "Convergence and stopping": more than this many unconverged runs in any
# cell of the grid and every verdict is reported as under-trained
MAX_UNCONVERGED_PER_CELL = 1
LABELS = {"bn": "BN", "gn": "GN"}
# the same contrasts in the GN paper's Table 8 (top-1 points; Kinetics, ResNet-50 I3D, 32@2 and 64@1):
# H1 = BN 73.3 - 72.1, H2 = GN 73.0 - 72.8, H3 = (GN 74.5 - 73.0) - (BN 73.3 - 73.3)
PAPER_CONTRASTS = {"H1": 1.2, "H2": 0.2, "H3": 1.5}


def _ceiling(setup: dict[str, Any], t: int, s: int) -> Optional[dict[str, Any]]:
    """The ideal observer of the test protocol's views for (t, s) (the primary view)."""
    for c in setup.get("dataset", {}).get("ceilings", []):
        if c["num_frames"] == t and c["stride"] == s and c["num_clips"] is not None:
            return c
    return None


def cell_rows(results: dict[str, Any], runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell: seeds, mean top-1 with a 95 % t-interval over seeds, ceiling, held-out loss and
    convergence counts."""
    setup = results.get("setup", {})
    num_classes = len(setup.get("dataset", {}).get("classes", [])) or len(runs[0]["classes"])
    rows = []
    cells = sorted({(r["norm"], r["num_frames"], r["stride"], r["batch_size"]) for r in runs},
                   key=lambda c: (c[0], c[1] * c[2], c[1], -c[3]))
    for norm, t, s, b in cells:
        rs = [r for r in runs if (r["norm"], r["num_frames"], r["stride"], r["batch_size"]) == (norm, t, s, b)]
        top1 = np.array([r["metrics"]["top1"] for r in rs])
        ceil = _ceiling(setup, t, s)
        conv = [convergence(r.get("curve", []), min_ce=ceil["min_ce"] if ceil else None, num_classes=num_classes,
                            num_videos=len(r["labels"]), top1=r["metrics"]["top1"]) for r in rs]
        half = t_quantile(0.975, len(rs) - 1) * top1.std(ddof=1) / np.sqrt(len(rs)) if len(rs) > 1 else float("nan")
        rows.append({"norm": norm, "num_frames": t, "stride": s, "batch_size": b, "seeds": sorted(r["seed"] for r in rs),
                     "top1": float(top1.mean()), "top1_half_width": float(half),
                     "loss": float(np.mean([r["metrics"]["loss"] for r in rs])),
                     "ceiling_top1": ceil["top1"] if ceil else None, "ceiling_min_ce": ceil["min_ce"] if ceil else None,
                     "learned": sum(c["learned"] for c in conv), "converged": sum(c["converged"] for c in conv),
                     "runs": {r["key"]: c for r, c in zip(rs, conv)}})
    return rows


def analyse(results: dict[str, Any], margin: float = MARGIN, stage: str = "grid") -> dict[str, Any]:
    """Everything the write-up needs, as JSON-ready data; the hypotheses from ``stage``'s runs
    (``grid``, or ``grid_2x``: the rerun at twice the epochs)."""
    grid = [r for r in results["runs"] if r.get("stage", "grid") == stage]
    runs = grid or results["runs"]
    out: dict[str, Any] = {"margin": margin, "stage": stage if grid else f"descriptive only (no {stage} runs)",
                           "cells": cell_rows(results, runs), "hypotheses": None}
    if grid:
        try:
            out["hypotheses"] = [v.as_dict() for v in evaluate_hypotheses(correctness(grid), margin=margin)]
        except KeyError as e:  # a cell of the family not run (yet)
            out["hypotheses_missing"] = str(e)
        out["training"] = training_state(out["cells"])
    return out


def training_state(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The pre-registered stopping rule: the verdicts stand as trained only when no cell has more
    than ``MAX_UNCONVERGED_PER_CELL`` unconverged runs."""
    short = [f"{LABELS.get(c['norm'], c['norm'])} {c['num_frames']}@{c['stride']} x{c['batch_size']}: "
             f"{len(c['seeds']) - c['converged']} of {len(c['seeds'])} not converged"
             for c in cells if len(c["seeds"]) - c["converged"] > MAX_UNCONVERGED_PER_CELL]
    return {"rule": f"more than {MAX_UNCONVERGED_PER_CELL} unconverged run(s) in any cell: verdicts under-trained",
            "under_trained": bool(short), "cells": short}


def markdown(analysis: dict[str, Any]) -> str:
    lines = [f"Stage: {analysis['stage']}. Top-1 on the validation set (view-averaged, the primary metric); "
             "± is the 95 % t-interval over seeds; ceiling: the ideal observer of the same views.", "",
             "| norm | clip | clips/batch | seeds | top-1 % | ceiling % | held-out loss | min CE | learned | converged |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in analysis["cells"]:
        n = len(c["seeds"])
        ceil = f"{100 * c['ceiling_top1']:.1f}" if c["ceiling_top1"] is not None else "–"
        mince = f"{c['ceiling_min_ce']:.3f}" if c["ceiling_min_ce"] is not None else "–"
        half = f" ± {100 * c['top1_half_width']:.1f}" if n > 1 else ""  # one seed: no interval
        lines.append(f"| {LABELS.get(c['norm'], c['norm'])} | {c['num_frames']}@{c['stride']} | {c['batch_size']} | {n} | "
                     f"{100 * c['top1']:.1f}{half} | {ceil} | {c['loss']:.3f} | {mince} | "
                     f"{c['learned']}/{n} | {c['converged']}/{n} |")
    training = analysis.get("training")
    if training and training["under_trained"]:
        lines += ["", "**Under-trained** (pre-registered rule: " + training["rule"] + "): " + "; ".join(training["cells"]) +
                  ". The verdicts below are reported as under-trained."]
    if analysis.get("hypotheses"):
        lines += ["", f"Hypotheses (paired by seed and video; Holm over H1-H3; H2's margin ±{100 * analysis['margin']:g} points):", "",
                  "| | hypothesis | estimate (points) | 95 % interval | p | p (Holm) | verdict | resolves (points) |",
                  "|---|---|---|---|---|---|---|---|"]
        for h in analysis["hypotheses"]:
            lines.append(f"| {h['name']} | {h['statement']} | {100 * h['estimate']:+.2f} | "
                         f"[{100 * h['low']:+.2f}, {100 * h['high']:+.2f}] | {h['p']:.4f} | {h['p_holm']:.4f} | "
                         f"{h['verdict']} | {100 * h['resolves']:.2f} |")
    elif analysis.get("hypotheses_missing"):
        lines += ["", f"Hypotheses not tested: {analysis['hypotheses_missing']}"]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], analysis: dict[str, Any], out_dir: Path, prefix: str = "") -> list[Path]:
    """Top-1 per cell with its interval and ceiling; the held-out loss curves, a panel per cell shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    cells = analysis["cells"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, c in enumerate(cells):
        color = "C0" if c["norm"] == "bn" else "C1"
        err = 100 * c["top1_half_width"] if len(c["seeds"]) > 1 else None
        ax.errorbar(i, 100 * c["top1"], yerr=err, fmt="o", color=color, capsize=4)
        if c["ceiling_top1"] is not None:
            ax.hlines(100 * c["ceiling_top1"], i - 0.3, i + 0.3, colors="k", linestyles="dashed")
    ax.set_xticks(range(len(cells)), [f"{LABELS.get(c['norm'], c['norm'])}\n{c['num_frames']}@{c['stride']}x{c['batch_size']}"
                                      for c in cells])
    ax.set_ylabel("top-1 % (dashed: ceiling)")
    fig.tight_layout()
    files.append(out_dir / f"{prefix}sweep_top1.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    # one panel per clip shape and batch (the stage's runs only), BN and GN curves in each, the
    # ceiling's minimum cross-entropy dashed: convergence is judged on these curves
    stage_runs = [r for r in results["runs"] if r.get("stage", "grid") == analysis["stage"]] or results["runs"]
    shapes = sorted({(r["num_frames"], r["stride"], r["batch_size"]) for r in stage_runs}, key=lambda c: (c[0] * c[1], c[0], -c[2]))
    fig, axes = plt.subplots(1, max(len(shapes), 1), figsize=(3.2 * max(len(shapes), 1), 3.2), sharey=True, squeeze=False)
    for ax, (t, s, b) in zip(axes[0], shapes):
        for r in stage_runs:
            if (r["num_frames"], r["stride"], r["batch_size"]) == (t, s, b) and r.get("curve"):
                ax.plot([p["epoch"] if "epoch" in p else p["step"] for p in r["curve"]], [p["val_loss"] for p in r["curve"]],
                        color="C0" if r["norm"] == "bn" else "C1", alpha=0.5, lw=1,
                        label=LABELS.get(r["norm"], r["norm"]))
        ceil = _ceiling(results.get("setup", {}), t, s)
        if ceil:
            ax.axhline(ceil["min_ce"], color="k", ls="--", lw=1)
        ax.set_title(f"{t}@{s}, {b} clips/batch")
        ax.set_xlabel("epoch")
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    axes[0][0].set_ylabel("held-out loss (nats; dashed: ceiling)")
    fig.tight_layout()
    files.append(out_dir / f"{prefix}sweep_loss.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    if analysis.get("hypotheses"):
        # the paired contrasts the hypotheses are about, with their 95 % intervals, H2's margin
        # shaded and the paper's values marked
        hs = analysis["hypotheses"]
        fig, ax = plt.subplots(figsize=(8, 2.6))
        m = 100 * analysis["margin"]
        ax.axvspan(-m, m, color="0.9", label=f"±{m:g} (H2's margin)")
        ax.axvline(0, color="k", lw=0.8)
        for i, h in enumerate(hs):
            ax.errorbar(100 * h["estimate"], i, xerr=[[100 * (h["estimate"] - h["low"])], [100 * (h["high"] - h["estimate"])]],
                        fmt="o", color="C2", capsize=4, label="this sweep (95 % paired interval)" if i == 0 else None)
            if h["name"] in PAPER_CONTRASTS:
                ax.plot(PAPER_CONTRASTS[h["name"]], i, "kx", label="GN paper, Table 8" if i == 0 else None)
        ax.set_yticks(range(len(hs)), [h["name"] for h in hs])
        ax.invert_yaxis()
        ax.set_xlabel("top-1 difference (points)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        files.append(out_dir / f"{prefix}sweep_contrasts.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a sweep_results.json")
    p.add_argument("--margin", type=float, default=MARGIN, help="H2's equivalence margin (fraction of top-1)")
    p.add_argument("--out-dir", type=Path, default=None, help="where to write (default: beside the results)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--stage", default="grid", choices=("grid", "grid_2x"),
                   help="whose runs the hypotheses are tested on (grid_2x: the rerun at twice the epochs)")
    p.add_argument("--prefix", default="", help="prefix of the written files' names (e.g. 2x_)")
    args = p.parse_args(argv)
    if not args.results.is_file():
        print(f"sweep_report: no results file at {args.results}", file=sys.stderr)
        return 2
    results = json.loads(args.results.read_text())
    out_dir = args.out_dir or args.results.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis = analyse(results, args.margin, args.stage)
    (out_dir / f"{args.prefix}analysis.json").write_text(json.dumps(analysis, indent=1) + "\n")
    (out_dir / f"{args.prefix}analysis.md").write_text(markdown(analysis))
    if not args.no_plots:
        plot(results, analysis, out_dir, prefix=args.prefix)
    print(markdown(analysis))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Tables, intervals and plots of a norm sweep's results JSON (written by ``sweep_norm_batch.py``).

    .venv/bin/python scripts/sweep_report.py docs/sweep_results.json   # rewrite the tables and plots beside it

Every number comes from the per-run records: each run keeps which validation videos it got right,
so a cell's 95 % interval is a bootstrap over seeds *and* validation videos (the same resampled
videos for every seed of a replicate; seeds resampled with replacement). A difference between two
cells resamples the videos jointly (both cells are scored on the same videos) and each cell's seeds
independently.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

BOOTSTRAP_REPLICATES = 2000
LABELS = {
    "bn": "BN", "gn": "GN", "ln": "LN", "in": "IN", "frozen_bn": "BN* (frozen)", "gn_ws": "GN+WS",
}
FLAT_LATE_DROP = 0.15  # a run "has flattened" when its last quarter brought at most 15 % of its loss decrease
TABLE_START, TABLE_END = "<!-- sweep-table:start -->", "<!-- sweep-table:end -->"


def label(norm: str) -> str:
    return LABELS.get(norm, norm)


def correct_matrix(runs: Sequence[dict[str, Any]], key: str = "correct") -> np.ndarray:
    """(seeds, videos) 0/1 matrix of a cell's runs, from each run's ``correct`` bit string (or
    another view's, e.g. ``correct_crop``)."""
    return np.array([[c == "1" for c in r[key]] for r in runs], dtype=np.float64)


def bootstrap_mean(m: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> tuple[float, float, float]:
    """Mean top-1 (%) of a (seeds, videos) matrix with its 95 % percentile bootstrap interval."""
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"need a non-empty (seeds, videos) matrix, got shape {m.shape}")
    rng = np.random.default_rng(seed)
    n, v = m.shape
    reps = np.empty(replicates)
    for i in range(replicates):
        rows = rng.integers(n, size=n)
        cols = rng.integers(v, size=v)
        reps[i] = m[np.ix_(rows, cols)].mean()
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return 100 * m.mean(), 100 * lo, 100 * hi


def bootstrap_diff(a: np.ndarray, b: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES,
                   seed: int = 0) -> tuple[float, float, float]:
    """Mean(a) - mean(b) in points with its 95 % interval; a and b are scored on the same videos."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cells must be scored on the same videos, got {a.shape[1]} and {b.shape[1]}")
    rng = np.random.default_rng(seed)
    v = a.shape[1]
    reps = np.empty(replicates)
    for i in range(replicates):
        cols = rng.integers(v, size=v)
        ra = rng.integers(a.shape[0], size=a.shape[0])
        rb = rng.integers(b.shape[0], size=b.shape[0])
        reps[i] = a[np.ix_(ra, cols)].mean() - b[np.ix_(rb, cols)].mean()
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return 100 * (a.mean() - b.mean()), 100 * lo, 100 * hi


def cells(results: dict[str, Any]) -> dict[tuple[str, int, int], list[dict[str, Any]]]:
    """Runs grouped by (norm, T, B), seeds in order."""
    out: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for rec in results["runs"].values():
        out.setdefault((rec["norm"], rec["num_frames"], rec["batch_size"]), []).append(rec)
    for runs in out.values():
        runs.sort(key=lambda r: r["seed"])
    return out


def _fmt(runs: Optional[list[dict[str, Any]]]) -> str:
    if not runs:
        return "—"
    mean, lo, hi = bootstrap_mean(correct_matrix(runs))
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}] (n={len(runs)})"


def _fmt_diff(a: Optional[list], b: Optional[list]) -> str:
    if not a or not b:
        return "—"
    d, lo, hi = bootstrap_diff(correct_matrix(a), correct_matrix(b))
    mark = " *" if lo > 0 or hi < 0 else ""
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]{mark}"


def markdown(results: dict[str, Any]) -> str:
    """Every table of the write-up, from the runs alone."""
    setup = results["setup"]
    by = cells(results)
    t0, bs = setup["num_frames"], sorted(setup["batch_sizes"], reverse=True)
    pairs = [tuple(p) for p in setup["pairs"]]
    norms = list(setup["batch_norms"])
    lines = [f"Validation top-1 (%), mean over seeds [95 % bootstrap interval over seeds and the "
             f"{setup['num_val_videos']} validation videos] (n = seeds), T = {t0} frames:", "",
             "| norm | " + " | ".join(f"B={b}" for b in bs) + " |", "|---" * (len(bs) + 1) + "|"]
    for norm in norms:
        lines.append(f"| {label(norm)} | " + " | ".join(_fmt(by.get((norm, t0, b))) for b in bs) + " |")
    bmax = bs[0]
    lines += ["", f"Change from B={bmax} (points, 95 % interval; * = the interval excludes 0):", "",
              "| norm | " + " | ".join(f"B={b}" for b in bs[1:]) + " |", "|---" * len(bs) + "|"]
    for norm in norms:
        lines.append(f"| {label(norm)} | " + " | ".join(
            _fmt_diff(by.get((norm, t0, b)), by.get((norm, t0, bmax))) for b in bs[1:]) + " |")
    lines += ["", "GN − BN at each batch size (points):", "",
              "| | " + " | ".join(f"B={b}" for b in bs) + " |", "|---" * (len(bs) + 1) + "|",
              "| GN − BN | " + " | ".join(_fmt_diff(by.get(("gn", t0, b)), by.get(("bn", t0, b))) for b in bs) + " |"]
    lines += ["", "Constant memory (T x B at equal T·B), validation top-1 (%):", "",
              "| norm | " + " | ".join(f"{t}x{b}" for t, b in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for norm in setup["pair_norms"]:
        lines.append(f"| {label(norm)} | " + " | ".join(_fmt(by.get((norm, t, b))) for t, b in pairs) + " |")
    first = pairs[0]
    lines += ["", f"Gain over {first[0]}x{first[1]} (points):", "",
              "| norm | " + " | ".join(f"{t}x{b}" for t, b in pairs[1:]) + " |", "|---" * len(pairs) + "|"]
    for norm in setup["pair_norms"]:
        lines.append(f"| {label(norm)} | " + " | ".join(
            _fmt_diff(by.get((norm, t, b)), by.get((norm, *first))) for t, b in pairs[1:]) + " |")
    lines.append("| GN − BN, same pair | " + " | ".join(
        _fmt_diff(by.get(("gn", t, b)), by.get(("bn", t, b))) for t, b in pairs[1:]) + " |")
    if setup.get("groups"):
        gt, gb = setup["group_cell"]
        lines += ["", f"Group ablation (GN at T={gt}, B={gb}): validation top-1 (%) and change from "
                  f"the model's default GN ({setup['default_gn']}):", "", "| GN variant | top-1 | vs default |",
                  "|---|---|---|", f"| {setup['default_gn']} (default) | {_fmt(by.get(('gn', gt, gb)))} | |"]
        for g in setup["groups"]:
            runs = by.get((g["norm"], gt, gb))
            lines.append(f"| {g['label']} | {_fmt(runs)} | {_fmt_diff(runs, by.get(('gn', gt, gb)))} |")
    lines += ["", *convergence_table(results), *crop_view_table(results), "", resolution_line(results)]
    cost = cost_line(results)
    if cost:
        lines += ["", cost]
    return "\n".join(lines) + "\n"


def _fmt_convergence(runs: Optional[list[dict[str, Any]]]) -> str:
    if not runs:
        return "—"
    drops = [r["late_drop"] for r in runs]
    flat = sum(d is not None and d <= FLAT_LATE_DROP for d in drops)
    known = [d for d in drops if d is not None]
    drop = f"{np.mean(known):.2f}" if known else "n/a"
    return f"{np.mean([r['final_loss'] for r in runs]):.2f} / {drop} ({flat}/{len(runs)})"


def convergence_table(results: dict[str, Any]) -> list[str]:
    """Final training loss, late_drop and how many seeds flattened, per cell."""
    setup = results["setup"]
    by = cells(results)
    t0, cols = setup["num_frames"], _all_columns(setup)
    lines = [f"Convergence: final training loss / late_drop (share of the run's loss decrease that came "
             f"in its last quarter), mean over seeds, and (seeds flattened / seeds): a run counts as "
             f"flattened when late_drop ≤ {FLAT_LATE_DROP}; chance loss is ln {setup['num_classes']} = "
             f"{np.log(setup['num_classes']):.2f}. T = {t0} unless the column says T x B:", "", _column_head(setup, cols)]
    for norm in setup["batch_norms"]:
        row = [_fmt_convergence(by.get((norm, t, b))) if t == t0 or norm in setup["pair_norms"] else "—"
               for t, b in cols]
        lines.append(f"| {label(norm)} | " + " | ".join(row) + " |")
    return lines


def _all_columns(setup: dict[str, Any]) -> list[tuple[int, int]]:
    """(T, B) of the batch grid (largest B first), then the constant-memory pairs at other T."""
    t0 = setup["num_frames"]
    return ([(t0, b) for b in sorted(setup["batch_sizes"], reverse=True)]
            + [(t, b) for t, b in (tuple(p) for p in setup["pairs"]) if t != t0])


def _column_head(setup: dict[str, Any], cols: list[tuple[int, int]]) -> str:
    """A table's header and rule lines for ``cols`` (B=.. at the grid's T, T x B otherwise)."""
    names = [f"B={b}" if t == setup["num_frames"] else f"{t}x{b}" for t, b in cols]
    return "| norm | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|"


def crop_view_table(results: dict[str, Any]) -> list[str]:
    """Top-1 of the centre-crop view (the training resolution) and its change from the whole-frame
    view, per cell whose runs all recorded it; empty when none did."""
    setup = results["setup"]
    by = cells(results)
    if not any("correct_crop" in r for runs in by.values() for r in runs):
        return []
    t0, cols = setup["num_frames"], _all_columns(setup)
    lines = ["", f"Centre-crop view ({setup['crop_size']}×{setup['crop_size']}, the training resolution): "
             f"top-1 (%) and its change from the whole-frame view above (points); T = {t0} unless the "
             "column says T x B:", "", _column_head(setup, cols)]
    for norm in setup["batch_norms"]:
        row = []
        for t, b in cols:
            runs = by.get((norm, t, b))
            if not runs or not all("correct_crop" in r for r in runs):
                row.append("—")
                continue
            crop, whole = correct_matrix(runs, "correct_crop"), correct_matrix(runs)
            d, lo, hi = bootstrap_diff(crop, whole)
            row.append(f"{100 * crop.mean():.1f} ({d:+.1f} [{lo:+.1f}, {hi:+.1f}])")
        if any(cell != "—" for cell in row):
            lines.append(f"| {label(norm)} | " + " | ".join(row) + " |")
    return lines


def cost_line(results: dict[str, Any]) -> Optional[str]:
    """What the sweep cost, from the JSON's own records."""
    runs = results["runs"]
    if not runs:
        return None
    total = sum(r["wall_s"] for r in runs.values())
    jobs = results["setup"].get("jobs", 1)
    line = (f"Cost: {len(runs)} runs, their run times summed {total / 60:.0f} min "
            f"({jobs} side by side: about {total / 60 / jobs:.0f} min of clock)")
    if results.get("elapsed_s"):
        line += f"; the sweep's measured clock time over all its invocations {results['elapsed_s'] / 60:.0f} min"
    return line + "."


def resolution_line(results: dict[str, Any]) -> str:
    """The smallest difference the design resolves: the median half-width of the 95 % interval of
    a difference between two BN or GN cells of the batch-size grid."""
    setup = results["setup"]
    by = cells(results)
    t0 = setup["num_frames"]
    widths = []
    for norm in ("bn", "gn"):
        bs = sorted(setup["batch_sizes"])
        for b1, b2 in zip(bs, bs[1:]):
            a, b = by.get((norm, t0, b1)), by.get((norm, t0, b2))
            if a and b:
                _, lo, hi = bootstrap_diff(correct_matrix(a), correct_matrix(b))
                widths.append((hi - lo) / 2)
    if not widths:
        return "Resolution: not enough finished runs to estimate."
    return (f"Resolution: a difference between two BN/GN cells of the batch grid is resolved (its 95 % "
            f"interval excludes 0) when it is larger than about ±{float(np.median(widths)):.1f} points "
            f"(median half-width over adjacent cells; range {min(widths):.1f}–{max(widths):.1f}).")


def plot(results: dict[str, Any], prefix: Path) -> list[Path]:
    """``<prefix>_batch.png`` (error vs clips per batch), ``<prefix>_length.png`` (top-1 vs T at
    constant memory) and ``<prefix>_loss.png`` (training-loss curves of every norm and batch size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setup = results["setup"]
    by = cells(results)
    t0 = setup["num_frames"]
    chance = 100.0 / setup["num_classes"]
    paths = []

    def errorbars(ax, xs, stats, **kw):
        means = np.array([s[0] for s in stats])
        err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
        return ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, **kw)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for norm in setup["batch_norms"]:
        bs = [b for b in sorted(setup["batch_sizes"]) if by.get((norm, t0, b))]
        if bs:
            stats = [bootstrap_mean(correct_matrix(by[(norm, t0, b)])) for b in bs]
            errorbars(ax, bs, [(100 - m, 100 - hi, 100 - lo) for m, lo, hi in stats], label=label(norm))
    ax.axhline(100 - chance, color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(setup["batch_sizes"]), [str(b) for b in sorted(setup["batch_sizes"])])
    ax.set_xlabel("clips per batch")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"error vs clips per batch (T={t0}; 95 % bootstrap intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(prefix.with_name(prefix.name + "_batch.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    pairs = [tuple(p) for p in setup["pairs"]]
    for norm in setup["pair_norms"]:
        pts = [(t, b) for t, b in pairs if by.get((norm, t, b))]
        if pts:
            line = errorbars(ax, [t for t, _ in pts], [bootstrap_mean(correct_matrix(by[(norm, t, b)])) for t, b in pts],
                             label=f"{label(norm)} (whole frame)")
            cropped = [(t, b) for t, b in pts if all("correct_crop" in r for r in by[(norm, t, b)])]
            if cropped:  # the centre-crop view, where recorded: same colour, dashed
                errorbars(ax, [t for t, _ in cropped],
                          [bootstrap_mean(correct_matrix(by[(norm, t, b)], "correct_crop")) for t, b in cropped],
                          label=f"{label(norm)} (centre crop)", linestyle="--", color=line[0].get_color())
    ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks([t for t, _ in pairs], [f"{t}x{b}" for t, b in pairs])
    ax.set_xlabel("frames per clip x clips per batch (constant T·B)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("accuracy vs clip length at constant memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(prefix.with_name(prefix.name + "_length.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    curves = [(norm, t, b) for (norm, t, b) in sorted(by) if t == t0 and norm in setup["batch_norms"]]
    curves += [(norm, t, b) for (norm, t, b) in sorted(by) if (t, b) in pairs and t != t0 and norm in setup["pair_norms"]]
    panels = list(dict.fromkeys(n for n, _, _ in curves))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharey=True, squeeze=False)
        for ax, norm in zip(axes[0], panels):
            for n, t, b in curves:
                if n != norm:
                    continue
                runs = by[(n, t, b)]
                curve = np.mean([r["loss_curve"] for r in runs], axis=0)
                x = np.linspace(1, len(curve), len(curve)) / len(curve) * runs[0]["clips_seen"]
                ax.plot(x, curve, label=f"{t}x{b}")
            ax.set_title(label(norm))
            ax.set_xlabel("training clips seen")
            ax.legend(fontsize=6)
        axes[0][0].set_ylabel("training loss (mean over seeds)")
        fig.tight_layout()
        paths.append(prefix.with_name(prefix.name + "_loss.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def write_table(path: Path, table: str) -> None:
    """Put ``table`` between the markers of ``path`` (a write-up), or make ``path`` hold only it."""
    text = path.read_text() if path.exists() else ""
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + TABLE_START + "\n" + table + TABLE_END + rest.split(TABLE_END, 1)[1]
    else:
        text = "# Sweep results\n\n" + TABLE_START + "\n" + table + TABLE_END + "\n" + text
    path.write_text(text)


def write_report(results: dict[str, Any], out_json: Path) -> list[Path]:
    """The table into ``<stem without _results>.md`` beside the JSON, and the plots."""
    stem = out_json.stem.replace("_results", "")
    write_table(out_json.with_name(stem + ".md"), markdown(results))
    return plot(results, out_json.with_name(stem)) if results["runs"] else []


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a sweep_results.json")
    args = ap.parse_args(argv)
    if not args.results.is_file():
        ap.error(f"{args.results} is not a file")
    results = json.loads(args.results.read_text())
    for p in write_report(results, args.results):
        print(f"wrote {p}")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

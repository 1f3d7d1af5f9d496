"""Dataset index memory: what a Kinetics-size index costs the parent and each DataLoader worker.

Writes a Kinetics-700-style annotation of ``--rows`` rows (700 classes, official CSV columns) into
a temporary folder, with an empty placeholder file for ``--files`` of them (spread over the rows,
in ``train/<label>/`` folders, so the CSV's files are found by a recursive scan as on a real copy;
nothing is decoded), and builds a :class:`~videogn.data.KineticsDataset` over it with
``keep_missing=True`` (every row is a record). Per annotation format (``--formats``):

    csv      the official CSV (files matched by name anywhere under the root)
    list     a list file (``train/<label>/<file> <label_idx>``) of the same rows
    folder   the folder-per-class tree (only the ``--files`` placeholders are records)

it reports, each in a fresh process:

- build time of the dataset (no tracing), and the RSS growth it left;
- the parent's index memory: bytes still allocated after the build, traced with tracemalloc
  in a second build (numpy reports its arrays to tracemalloc), and the build's peak;
- per start method (``--start-methods``: fork, forkserver, spawn) one DataLoader worker's private
  memory (``Private_Clean + Private_Dirty`` of ``/proc/self/smaps_rollup``: pages no other process
  maps). Its one item reads it at the start, runs a full garbage collection (under fork that
  alone dirties ~40 MB of the interpreter's and torch's objects, whatever the index), reads it
  again (the baseline), reads every record (key, path, label, label name: what an item reads
  before decoding), runs a full collection again, as an epoch does, and reads it a last time.
  "growth over the walk" (last - baseline) is the copy-on-read cost of the index: a worker
  writing to pages it shares with the parent. "since start" also counts the first collection
  (with an index of objects, that one already writes every record's GC header). The figure at
  start shows what a spawned worker holds of its own before it reads anything.

Run the same script against another checkout (``PYTHONPATH=/path/to/checkout``) for a before/after.
Linux only (``/proc``).

Usage:
    python scripts/bench_index.py --out bench_index.json
    python scripts/bench_index.py --rows 50000 --files 10000 --formats csv --start-methods fork spawn
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import string
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import torch

START_METHODS = ("fork", "forkserver", "spawn")
FORMATS = ("csv", "list", "folder")
NUM_CLASSES = 700  # Kinetics-700


# ------------------------------------------------------------------------------------------------
# test material


def write_material(base: Path, rows: int, files: int, seed: int = 0) -> dict[str, Any]:
    """``base/videos/train/<label>/<id>_<start>_<end>.mp4`` placeholders for ``files`` rows and
    ``base/annotations/{train.csv, train.txt, classes.json}`` for all ``rows``."""
    rng = random.Random(seed)
    labels = [f"action {c:03d}" for c in range(NUM_CLASSES)]
    ann, videos = base / "annotations", base / "videos"
    ann.mkdir(parents=True)
    alphabet = string.ascii_letters + string.digits + "-_"
    every = max(1, rows // max(files, 1)) if files else 0
    csv_lines = ["label,youtube_id,time_start,time_end,split,is_cc\n"]
    list_lines = []
    made_dirs: set[str] = set()
    made = 0
    for i in range(rows):
        c = rng.randrange(NUM_CLASSES)
        yid = "".join(rng.choices(alphabet, k=11))
        t0 = rng.randrange(0, 600)
        name = f"{yid}_{t0:06d}_{t0 + 10:06d}.mp4"
        csv_lines.append(f'"{labels[c]}",{yid},{t0},{t0 + 10},train,0\n')
        rel = f"train/{labels[c]}/{name}"
        list_lines.append(f"{rel} {c}\n")
        if every and i % every == 0 and made < files:
            folder = str(videos / "train" / labels[c])
            if folder not in made_dirs:
                os.makedirs(folder, exist_ok=True)
                made_dirs.add(folder)
            open(os.path.join(folder, name), "wb").close()
            made += 1
    (ann / "train.csv").write_text("".join(csv_lines), encoding="utf-8")
    (ann / "train.txt").write_text("".join(list_lines), encoding="utf-8")
    (ann / "classes.json").write_text(json.dumps({n: i for i, n in enumerate(labels)}), encoding="utf-8")
    return {"rows": rows, "files": made, "videos": str(videos), "csv": str(ann / "train.csv"),
            "list": str(ann / "train.txt")}


# ------------------------------------------------------------------------------------------------
# measurement (runs in a child process per format)


def private_kb() -> dict[str, int]:
    """This process's smaps_rollup: private (USS), shared and RSS, in kB."""
    fields: dict[str, int] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return {"private": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
            "shared": fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0),
            "rss": fields.get("Rss", 0)}


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class RecordWalker(torch.utils.data.Dataset):
    """A one-item dataset around a KineticsDataset: its item reads every record of the dataset
    in the worker and returns the worker's memory before and after."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = private_kb()
        # A first full collection writes to every GC-tracked object the worker inherited (torch's
        # too: ~40 MB under fork whatever the index); the baseline is taken after it, so the
        # growth below is the walk's: reference counts (and, for an index of objects, the GC
        # headers that collection already wrote are counted in ``start_growth_mb`` only).
        gc.collect()
        before = private_kb()
        t0 = time.perf_counter()
        records, n = self.dataset.records, len(self.dataset)
        for k in range(n):
            rec = records[k]
            # what an item reads before it decodes: path, label, label name
            _ = (rec.key, str(rec.path) if rec.path is not None else None, rec.label, rec.label_name)
        walk_s = time.perf_counter() - t0
        gc.collect()  # an epoch runs full collections too; they touch every tracked object
        after = private_kb()
        return {"start_kb": start, "before_kb": before, "after_kb": after, "walk_s": walk_s, "records": n,
                "pid": os.getpid()}


def build(material: dict[str, Any], fmt: str) -> Any:
    from videogn.data import KineticsDataset

    ann = {"csv": material["csv"], "list": material["list"], "folder": None}[fmt]
    # keep_missing: every annotated row is a record, as in evaluation; nothing is opened
    return KineticsDataset(material["videos"], ann, mode="train", keep_missing=True)


def measure_format(material: dict[str, Any], fmt: str, start_methods: list[str]) -> dict[str, Any]:
    import videogn.data  # noqa: F401  # imported first: the RSS growth below is the build's alone

    gc.collect()
    rss0 = rss_kb()
    t0 = time.perf_counter()
    ds = build(material, fmt)
    build_s = time.perf_counter() - t0
    gc.collect()
    rss_delta_mb = (rss_kb() - rss0) / 1024

    tracemalloc.start()
    traced = build(material, fmt)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced
    gc.collect()

    out: dict[str, Any] = {
        "format": fmt, "records": len(ds), "build_s": build_s, "build_rss_delta_mb": rss_delta_mb,
        "index_mb": current / 2**20, "build_peak_mb": peak / 2**20, "workers": {},
    }
    for method in start_methods:
        loader = torch.utils.data.DataLoader(RecordWalker(ds), batch_size=None, num_workers=1,
                                             multiprocessing_context=method)
        t0 = time.perf_counter()
        (res,) = list(loader)
        res["total_s"] = time.perf_counter() - t0
        res["growth_mb"] = (res["after_kb"]["private"] - res["before_kb"]["private"]) / 1024
        res["start_growth_mb"] = (res["after_kb"]["private"] - res["start_kb"]["private"]) / 1024
        res["private_start_mb"] = res["start_kb"]["private"] / 1024
        out["workers"][method] = res
        del loader
    return out


# ------------------------------------------------------------------------------------------------
# driver


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| format | records | build s | index MB (traced) | build peak MB | RSS growth MB | "
             "start method | worker private at start MB | growth over the walk MB | growth since start MB | "
             "walk s |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in results:
        for m, w in r["workers"].items():
            lines.append(
                f"| {r['format']} | {r['records']:,} | {r['build_s']:.1f} | {r['index_mb']:.0f} | "
                f"{r['build_peak_mb']:.0f} | {r['build_rss_delta_mb']:.0f} | {m} | "
                f"{w['private_start_mb']:.0f} | {w['growth_mb']:.1f} | {w['start_growth_mb']:.1f} | {w['walk_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=650_000, help="annotated videos (default: Kinetics-700's 650k)")
    p.add_argument("--files", type=int, default=100_000, help="rows given a placeholder file")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--start-methods", nargs="+", default=list(START_METHODS), choices=START_METHODS)
    p.add_argument("--workdir", type=Path, default=None, help="where to write the material (default: a temp dir)")
    p.add_argument("--label", default="", help="a name for this run in the JSON (e.g. 'before')")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--child", nargs=2, metavar=("MATERIAL_JSON", "FORMAT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rows < 1 or not 0 <= args.files <= args.rows:
        p.error(f"need --rows >= 1 and 0 <= --files <= --rows, got --rows {args.rows} --files {args.files}")

    if args.child:  # one format, fresh process: its memory numbers see nothing of the others
        material = json.loads(Path(args.child[0]).read_text())
        print(json.dumps(measure_format(material, args.child[1], args.start_methods)))
        return 0

    import videogn

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = time.perf_counter()
        material = write_material(Path(tmp), args.rows, args.files)
        print(f"material: {args.rows:,} rows, {material['files']:,} files in {time.perf_counter() - t0:.0f} s "
              f"(videogn from {Path(videogn.__file__).parent})", flush=True)
        mpath = Path(tmp) / "material.json"
        mpath.write_text(json.dumps(material))
        results = []
        for fmt in args.formats:
            cmd = [sys.executable, __file__, "--child", str(mpath), fmt, "--rows", str(args.rows),
                   "--files", str(args.files), "--start-methods", *args.start_methods]
            run = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                print(run.stderr, file=sys.stderr)
                raise SystemExit(f"{fmt}: measuring process failed with status {run.returncode}")
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{fmt}: {r['records']:,} records, build {r['build_s']:.1f} s, index {r['index_mb']:.0f} MB; "
                  + ", ".join(f"{m} +{w['growth_mb']:.1f} MB" for m, w in r["workers"].items()), flush=True)
    print(table(results))
    if args.out:
        meta = {"label": args.label, "rows": args.rows, "files": material["files"],
                "videogn": str(Path(videogn.__file__).parent), "python": platform.python_version(),
                "torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count()}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

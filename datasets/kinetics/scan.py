#!/usr/bin/env python
"""Scan a folder for unreadable videos and write a report (TSV of bad files + JSON summary).

By default each video is opened and its first, middle and last frames are decoded; --full
decodes every frame (slow, finds corruption in the middle).

    python datasets/kinetics/scan.py --root kinetics400/videos_256 --out kinetics400/bad_videos.tsv -j 8

Exit status: 0 when every video is readable, 1 when some are not (they are listed in --out, one
``path<TAB>error`` line each), 2 for a usage error. The scan is resumable: each result is appended
to ``<out>.progress.jsonl`` as it arrives, so a rerun after an interruption (even SIGKILL) scans only
the videos not yet done; the file is removed once the report is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from multiprocessing import Pool
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")  # = videogn.data.annotations.VIDEO_EXTENSIONS


def _progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.jsonl")


def _load_progress(progress: Path, wanted: set[str]) -> dict[str, dict]:
    """Results of an interrupted scan, for the paths still wanted (a torn last line is ignored)."""
    done: dict[str, dict] = {}
    if not progress.is_file():
        return done
    for line in progress.read_text(encoding="utf-8").splitlines():
        try:
            info = json.loads(line)
        except json.JSONDecodeError:  # the line a killed run was writing
            continue
        if isinstance(info, dict) and info.get("path") in wanted:
            done[info["path"]] = info
    return done


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Scan --root; returns the exit status (0: all readable, 1: some unreadable)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="folder to scan (recursively)")
    ap.add_argument("--out", required=True, help="report: TSV of bad videos (path, error); a .json summary is written beside it")
    ap.add_argument("--backend", default="pyav", choices=["pyav", "decord", "auto"], help="decoder (default %(default)s)")
    ap.add_argument("--full", action="store_true", help="decode every frame instead of first/middle/last")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes (default: all cores)")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from videogn.data.decode import check_video  # after parsing: --help stays instant

    root = Path(args.root)
    if not root.is_dir():
        ap.error(f"--root {str(root)!r} is not a directory")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = sorted(str(Path(d) / f) for d, _, fs in os.walk(root) for f in fs if f.lower().endswith(VIDEO_EXTENSIONS))
    progress = _progress_path(out)
    results = _load_progress(progress, set(paths))
    todo = [p for p in paths if p not in results]
    if results:
        print(f"resuming: {len(results)} video(s) already scanned, {len(todo)} to go", file=sys.stderr)
    check = partial(check_video, backend=args.backend, full=args.full)
    with open(progress, "a", encoding="utf-8") as log, Pool(max(1, args.jobs)) as pool:
        for info in tqdm(pool.imap_unordered(check, todo, chunksize=4), total=len(todo), unit="video"):
            results[info["path"]] = info
            log.write(json.dumps(info) + "\n")
            log.flush()
    bad = sorted((r for r in results.values() if not r["ok"]), key=lambda r: r["path"])
    _write_atomic(out, "".join(f"{r['path']}\t{' '.join(r['error'].split())}\n" for r in bad))
    summary = {"root": str(root), "num_videos": len(results), "num_bad": len(bad), "backend": args.backend,
               "full_decode": args.full, "bad": [r["path"] for r in bad]}
    _write_atomic(out.with_suffix(".json"), json.dumps(summary, indent=1) + "\n")
    progress.unlink()
    print(f"{len(bad)} of {len(results)} videos unreadable; report: {out}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Scan a folder for unreadable videos and write a report (TSV of bad files + JSON summary).

By default each video is opened and its first, middle and last frames are decoded; --full
decodes every frame (slow, finds corruption in the middle).

    python datasets/kinetics/scan.py --root kinetics400/videos_256 --out kinetics400/bad_videos.tsv -j 8
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


def main(argv: list[str] | None = None) -> int:
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
    paths = sorted(str(Path(d) / f) for d, _, fs in os.walk(root) for f in fs if f.lower().endswith(VIDEO_EXTENSIONS))
    check = partial(check_video, backend=args.backend, full=args.full)
    results = []
    with Pool(max(1, args.jobs)) as pool:
        for info in tqdm(pool.imap_unordered(check, paths, chunksize=4), total=len(paths), unit="video"):
            results.append(info)
    bad = sorted((r for r in results if not r["ok"]), key=lambda r: r["path"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{r['path']}\t{' '.join(r['error'].split())}\n" for r in bad), encoding="utf-8")
    summary = {"root": str(root), "num_videos": len(results), "num_bad": len(bad), "backend": args.backend,
               "full_decode": args.full, "bad": [r["path"] for r in bad]}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"{len(bad)} of {len(results)} videos unreadable; report: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

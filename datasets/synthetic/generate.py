#!/usr/bin/env python3
"""Generate (or find in the cache) the built-in synthetic dataset and print its folder.

`videogn-train` does this on first use; run it by hand to pre-generate, or to make a variant:

    python datasets/synthetic/generate.py                                   # the main job's dataset
    python datasets/synthetic/generate.py --num-classes 8 --num-distractors 2 --noise 0.05 --cache-dir /data/syn

The folder holds train/ and val/ mp4 files named by the Kinetics pattern and
annotations/{train,val}.csv in the official Kinetics CSV format.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from videogn.data.synthetic import SyntheticSpec, ensure_synthetic_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(SyntheticSpec):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                            help=f"default: {f.default}")
    parser.add_argument("--cache-dir", default=None, help="default: $VIDEOGN_CACHE or ~/.cache/videogn")
    args = vars(parser.parse_args(argv))
    cache_dir = args.pop("cache_dir")
    try:
        spec = SyntheticSpec(**args)
    except ValueError as e:
        parser.error(str(e))
    t0 = time.perf_counter()
    root = ensure_synthetic_dataset(spec, cache_dir)
    print(json.dumps({"root": str(root), "classes": spec.classes, "train_videos": spec.num_videos("train"),
                      "val_videos": spec.num_videos("val"), "seconds": round(time.perf_counter() - t0, 2)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The ideal observer of the built-in ``blink`` task: top-1 and minimum cross-entropy per
(frames, stride), for one clip and for the test protocol's views (``videogn.data.ceilings``; its
docstring states the assumptions).

    .venv/bin/python scripts/ideal_observer.py                          # the sweep's task (scripts/sweep.py)
    .venv/bin/python scripts/ideal_observer.py --frames 32 --num-clips 2 --shapes 4x2 8x2 8x1 16x1 16x2 32x1 \
        --json outputs/ideal_observer.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from videogn.data.ceilings import blink_ceilings
from videogn.defaults import SyntheticSpec

DEFAULT_SHAPES = ("4x2", "8x2", "8x1", "16x1", "16x2", "32x1")


def _shape(text: str) -> tuple[int, int]:
    try:
        t, s = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is FRAMESxSTRIDE, e.g. 8x2; got {text!r}") from None
    return t, s


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=32, help="frames per video (data.synthetic.frames)")
    p.add_argument("--num-clips", type=int, default=2, help="the test protocol's views (eval.num_clips)")
    p.add_argument("--shapes", type=_shape, nargs="+", default=[_shape(s) for s in DEFAULT_SHAPES],
                   help="clip shapes FRAMESxSTRIDE")
    p.add_argument("--samples", type=int, default=20000, help="Monte Carlo videos per class (when not exact)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    spec = SyntheticSpec(task="blink", num_classes=4, frames=args.frames)
    rows = blink_ceilings(spec, args.shapes, args.num_clips, samples=args.samples, seed=args.seed)
    print(f"blink task, {spec.num_classes} classes, {spec.frames}-frame videos; views: one clip, and "
          f"eval.num_clips={args.num_clips} spread over the video")
    print(f"{'clip':>6} {'views':>6} {'frames seen':>11} {'top-1 %':>14} {'min CE (nats)':>16}  method")
    for c in rows:
        views = "1" if c.num_clips is None else str(c.num_clips)
        top1 = f"{100 * c.top1:.2f}" + (f" ± {100 * c.top1_se:.2f}" if c.top1_se else "")
        ce = f"{c.min_ce:.4f}" + (f" ± {c.min_ce_se:.4f}" if c.min_ce_se else "")
        print(f"{c.num_frames:>3}@{c.stride:<2} {views:>6} {c.frames_seen:>11} {top1:>14} {ce:>16}  {c.method}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"spec": dataclasses.asdict(spec), "classes": spec.classes,
                                         "eval_num_clips": args.num_clips,
                                         "ceilings": [c.as_dict() for c in rows]}, indent=1) + "\n")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

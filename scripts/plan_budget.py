#!/usr/bin/env python
"""Measure, for each clip length, the largest clips per batch whose training step fits a memory budget.

Every number comes from running real training steps (the trainer's step: forward, backward, SGD step) of the model on
this machine's device — see ``videogn.budget.memory`` for what is measured and how.

    # an 8 GiB GPU budget for I3D-R50 GN at 224^2, T = 8..64
    python scripts/plan_budget.py --model i3d_r50 --norm gn --frames 8 16 32 64 --crop-size 224 \\
        --budget 8GiB --out plan.json
    # CPU, the tiny model, 256 MiB
    python scripts/plan_budget.py --model i3d_tiny --frames 8 16 32 --crop-size 112 --budget 256MiB \\
        --num-classes 10 --out plan.csv
    # the same without and with activation checkpointing (blocks and stem), and its step-time cost
    python scripts/plan_budget.py --model i3d_tiny --frames 8 16 32 --crop-size 112 --budget 256MiB \\
        --activation-checkpointing full --out plan_ckpt.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Optional, Sequence

import torch

from videogn.budget import METHODS, format_bytes, format_plan, parse_bytes, plan_budget, save_plan
from videogn.budget.memory import StepTime
from videogn.budget.planner import format_checkpointing_plan, plan_checkpointing
from videogn.runtime import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="i3d_tiny", help="registered model name (default: i3d_tiny)")
    p.add_argument("--norm", default="gn", help="norm: gn, bn, frozen_bn, ln, in, ... (default: gn)")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32], help="clip lengths T (default: 8 16 32)")
    p.add_argument("--crop-size", type=int, default=112, help="crop side S (default: 112)")
    p.add_argument("--budget", required=True, help="memory per process, e.g. 8GiB, 500MB, 1.5G")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--method", default="auto", choices=METHODS,
                   help="auto: cuda on GPU, alloc (profiler allocation events) on CPU; rss: subprocess peak RSS")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="training precision, as trainer.precision (default: fp32)")
    p.add_argument("--num-classes", type=int, default=400, help="classifier size (default: 400)")
    p.add_argument("--probe", type=int, nargs="+", default=[1, 2], help="first batch sizes measured (default: 1 2)")
    p.add_argument("--max-batch-size", type=int, default=1024, help="largest B considered (default: 1024)")
    p.add_argument("--no-check-next", action="store_true", help="do not measure B+1 to prove B is the largest")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="write the plan to this .json or .csv file")
    p.add_argument("--quiet", action="store_true", help="do not print each measurement")
    p.add_argument("--activation-checkpointing", nargs="?", const="full", default=None, choices=("blocks", "full"),
                   help="plan without and with trainer.activation_checkpointing (blocks, or full = blocks and stem; "
                        "default when given bare: full) and time the step both ways")
    p.add_argument("--timing-reps", type=int, default=5,
                   help="with --activation-checkpointing: interleaved timed step pairs per T (default: 5)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        budget = parse_bytes(args.budget)
    except ValueError as err:
        raise SystemExit(f"--budget: {err}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.timing_reps < 1:
        raise SystemExit(f"--timing-reps must be >= 1, got {args.timing_reps}")

    def show(m) -> None:
        if args.quiet:
            return
        mode = getattr(m, "activation_checkpointing", "none")
        if isinstance(m, StepTime):
            print(f"  T={m.num_frames:<4d} S={m.crop_size:<4d} B={m.batch_size:<5d} step time {mode}/none "
                  f"{m.ratio:.2f}x ({len(m.ratios)} interleaved pairs)", flush=True)
            return
        peak = "out of memory" if m.peak_bytes is None else format_bytes(m.peak_bytes)
        print(f"  T={m.num_frames:<4d} S={m.crop_size:<4d} B={m.batch_size:<5d} {peak}"
              + (f"  [{mode}]" if mode != "none" else ""), flush=True)

    plan_kw = dict(num_classes=args.num_classes, probe_batch_sizes=args.probe, max_batch_size=args.max_batch_size,
                   check_next=not args.no_check_next, method=args.method, precision=args.precision)
    start = time.perf_counter()
    if args.activation_checkpointing:
        rows = plan_checkpointing(args.model, args.norm, args.frames, args.crop_size, budget, args.device,
                                  activation_checkpointing=args.activation_checkpointing,
                                  timing_reps=args.timing_reps, progress=show, **plan_kw)
        print(format_checkpointing_plan(rows))
    else:
        rows = plan_budget(args.model, args.norm, args.frames, args.crop_size, budget, args.device,
                           progress=show, **plan_kw)
        print(format_plan(rows))
        for r in rows:
            if not r.fits:
                print(f"T={r.num_frames}: not even one clip fits {format_bytes(r.budget_bytes)} "
                      f"(one clip needs {format_bytes(r.next_peak_bytes)})")
    elapsed = time.perf_counter() - start
    device = rows[0].device
    if device.startswith("cuda"):
        machine = torch.cuda.get_device_name(torch.device(device))
    else:
        machine = f"{platform.machine()} CPU ({os.cpu_count()} cores), {torch.get_num_threads()} torch threads"
    print(f"\n{machine}, torch {torch.__version__}; {elapsed:.1f} s")
    if args.out:
        meta = {
            "argv": list(sys.argv if argv is None else argv), "machine": machine, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "seconds": round(elapsed, 2), "budget_bytes": budget,
        }
        print(f"wrote {save_plan(rows, args.out, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

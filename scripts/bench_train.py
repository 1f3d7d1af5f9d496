"""Training-step throughput and peak memory of I3D-R50 with GN, BN and frozen BN, over (T, B).

A step is the trainer's own (:func:`videogn.runtime.forward_backward` and
:func:`videogn.runtime.optimizer_step`) with the trainer's optimizer
(:func:`videogn.optim.build_sgd`: Nesterov SGD, momentum 0.9, weight decay 1e-4, none on
norm parameters and biases), on a fresh random batch each step (one batch reused over many steps
let GN gradients turn denormal and slow the CPU down). For each (T, B):

Time: one process builds a model per norm and runs them round by round (one step each per
round, the order rotating), so load from other processes on a shared machine falls on every norm
alike; it reports the minimum and the median over the timed rounds, after warm-up rounds.
Memory: each norm again in a fresh process (one warm-up and one step), so no configuration's
memory hides in another's allocator caches:

    CUDA  ``torch.cuda.max_memory_allocated()`` over those two steps (``peak_mb``), and the
          same minus what was allocated before the first step, i.e. model weights and the input
          batch (``step_mb``: gradients, optimizer state, activations, temporaries).
    CPU   the process's resident-set high-water mark (VmHWM in /proc/self/status; reset through
          /proc/self/clear_refs when the kernel allows it, else the process peak), ``peak_mb``;
          ``step_mb`` is that minus the resident set just before the first step. RSS counts what
          the allocator holds, not only live tensors, so it is an upper bound on tensor memory.

Usage:
    python scripts/bench_train.py --out bench_train_cpu.json                  # CPU, 64x64, quick
    python scripts/bench_train.py --device cuda --size 224 --configs 8x8,16x4,32x2,64x1 \\
        --steps 10 --warmup 3 --precision bf16 --channels-last --out bench_train_cuda.json
    python scripts/bench_train.py --model i3d_tiny --configs 8x8 --steps 10 --warmup 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

from videogn.runtime import PRECISIONS, check_training_precision, resolve_device

NORMS = ("gn", "gn_unfused", "bn", "frozen_bn")


def _parse_configs(text: str) -> list[tuple[int, int]]:
    configs = []
    for item in text.split(","):
        try:
            t, b = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--configs: expected TxB items like 8x8,16x4, got {item!r}") from None
        if t < 1 or b < 1:
            raise SystemExit(f"--configs: T and B must be positive, got {item!r}")
        configs.append((t, b))
    return configs


def _rss_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # Linux >= 4.0: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _setup(args: argparse.Namespace, norm: str) -> tuple[Any, Any]:
    """Device and one training-step function for ``norm`` at (args.frames, args.batch)."""
    import torch

    from videogn import convert_norm
    from videogn.optim import build_sgd
    from videogn.models import create_model
    from videogn.runtime import forward_backward, optimizer_step, resolve_device, seed_everything

    device = resolve_device(args.device)
    seed_everything(0)
    fmt = torch.channels_last_3d if args.channels_last else torch.contiguous_format

    def batch() -> tuple[Any, Any]:
        x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)  # (N, C, T, H, W)
        y = torch.randint(0, args.num_classes, (args.batch,), device=device)
        return x.contiguous(memory_format=fmt), y

    if norm == "frozen_bn":
        # The paper's BN*: a BN model whose statistics are fixed. Untrained frozen BN is the
        # identity and diverges at once, so take the statistics from one pass over a batch.
        model = create_model(args.model, args.num_classes, norm="bn", norm_kwargs={"momentum": None})
        model = model.to(device=device, memory_format=fmt).train()
        with torch.no_grad():
            model(batch()[0])
        model = convert_norm(model, to="frozen_bn")
    else:
        model = create_model(
            args.model, args.num_classes, norm="gn" if norm == "gn_unfused" else norm,
            fuse_norm_act=norm != "gn_unfused",
        ).to(device)
    model = model.to(memory_format=fmt).train()
    opt = build_sgd(model, 0.01)
    scaler = torch.amp.GradScaler("cuda") if args.precision == "fp16" else None

    def step() -> float:
        x, y = batch()  # fresh every step, drawn outside the timed region
        _sync(device)
        start = time.perf_counter()
        loss = forward_backward(model, x, y, precision=args.precision, scaler=scaler)
        applied = optimizer_step(model, opt, scaler=scaler)
        _sync(device)
        if not applied and scaler is None:
            raise RuntimeError(f"non-finite loss or gradient ({loss.item()}) for {norm} T={args.frames} B={args.batch}")
        return time.perf_counter() - start

    return device, step


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_memory_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of ``args.warmup`` + ``args.steps`` steps of one norm, alone in this process."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device, step = _setup(args, args.norm)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        reset_ok = _reset_rss_peak()
        before = (_rss_kb("VmRSS") or 0) * 1024
    times = [step() for _ in range(args.warmup + args.steps)]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        method = "torch.cuda.max_memory_allocated"
    else:
        hwm = _rss_kb("VmHWM")
        peak = hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        method = "VmHWM after clear_refs reset" if reset_ok else "process peak RSS (no reset)"
    return {"norm": args.norm, "peak_mb": peak / 2**20, "step_mb": (peak - before) / 2**20,
            "memory_method": method, "isolated_step_s": times[-1]}


def run_timing_worker(args: argparse.Namespace) -> dict[str, list[float]]:
    """Step times of every norm, interleaved round by round so that load on a shared machine
    falls on all of them alike (the order rotates each round)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    norms = args.norms.split(",")
    steps = {norm: _setup(args, norm)[1] for norm in norms}
    times: dict[str, list[float]] = {norm: [] for norm in norms}
    for r in range(args.warmup + args.steps):
        order = norms[r % len(norms):] + norms[:r % len(norms)]
        for norm in order:
            elapsed = steps[norm]()
            if r >= args.warmup:
                times[norm].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--model", default="i3d_r50")
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--norms", default="gn,gn_unfused,bn,frozen_bn",
                        help=f"comma list from {NORMS}; gn_unfused = GN with a separate ReLU module")
    parser.add_argument("--configs", default="8x8,16x4,32x2,64x1", help="TxB list (frames x clips)")
    parser.add_argument("--size", type=int, default=64, help="square crop side")
    parser.add_argument("--steps", type=int, default=4, help="timed rounds (each norm one step per round)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds (oneDNN/cuDNN pick kernels)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="as trainer.precision")
    parser.add_argument("--channels-last", action="store_true", help="model and input in channels_last_3d")
    parser.add_argument("--no-memory", action="store_true", help="skip the isolated memory runs")
    parser.add_argument("--out", default=None, help="write results as JSON here")
    # worker modes (internal): --worker memory|timing runs one (T, B) in this process
    parser.add_argument("--worker", choices=("memory", "timing"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--norm", default="gn", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "memory":
        print(json.dumps(run_memory_worker(args)))
        return
    if args.worker == "timing":
        print(json.dumps(run_timing_worker(args)))
        return

    import torch

    try:
        device = resolve_device(args.device)
        check_training_precision(args.precision, device)
    except ValueError as err:
        raise SystemExit(f"--device/--precision: {err}") from None
    args.device = str(device)
    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    for n in norms:
        if n not in NORMS:
            raise SystemExit(f"--norms: unknown norm {n!r}; valid: {', '.join(NORMS)}")
    configs = _parse_configs(args.configs)
    machine = (
        torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{os.cpu_count()}-core {platform.machine()} CPU, "
        f"{args.threads or torch.get_num_threads()} torch thread(s) per process"
    )
    print(f"# {args.model} training step on {machine}, torch {torch.__version__}, "
          f"{args.size}x{args.size}, precision={args.precision}, channels_last={args.channels_last}, "
          f"load avg {os.getloadavg()[0]:.2f}")
    common = [sys.executable, os.path.abspath(__file__), "--device", args.device, "--model", args.model,
              "--num-classes", str(args.num_classes), "--size", str(args.size), "--threads", str(args.threads),
              "--precision", args.precision] + (["--channels-last"] if args.channels_last else [])

    def worker(extra: list[str]) -> Any:
        proc = subprocess.run(common + extra, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": " | ".join(tail)}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    results: list[dict[str, Any]] = []
    print(f"{'norm':<11} {'T':>4} {'B':>3} {'min s':>7} {'median s':>9} {'clips/s':>8} {'peak MB':>8} {'step MB':>8}")
    for frames, batch in configs:
        shape = ["--frames", str(frames), "--batch", str(batch)]
        times = worker(["--worker", "timing", "--norms", ",".join(norms), "--steps", str(args.steps),
                        "--warmup", str(args.warmup)] + shape)
        for norm in norms:
            row: dict[str, Any] = {"norm": norm, "frames": frames, "batch": batch, "size": args.size}
            if "error" in times:
                row["error"] = times["error"]
            else:
                t = sorted(times[norm])
                row.update(step_s_min=t[0], step_s_median=statistics.median(t), step_s_all=times[norm],
                           clips_per_s=batch / t[0])
            if not args.no_memory:
                mem = worker(["--worker", "memory", "--norm", norm, "--steps", "1", "--warmup", "1"] + shape)
                row.update(mem)
            results.append(row)
            if "error" in row:
                print(f"{norm:<11} {frames:>4} {batch:>3}  failed: {row['error']}")
                continue
            mem_text = f"{row['peak_mb']:>8.0f} {row['step_mb']:>8.0f}" if "peak_mb" in row else ""
            print(f"{norm:<11} {frames:>4} {batch:>3} {row['step_s_min']:>7.3f} {row['step_s_median']:>9.3f} "
                  f"{row['clips_per_s']:>8.2f} {mem_text}")

    print("\n# step-time overhead over BN (ratio of min step times - 1; of medians in brackets)")
    by_key = {(r["norm"], r["frames"], r["batch"]): r for r in results if "error" not in r}
    overhead = []
    for frames, batch in configs:
        bn = by_key.get(("bn", frames, batch))
        for norm in ("gn", "gn_unfused", "frozen_bn"):
            other = by_key.get((norm, frames, batch))
            if bn and other:
                by_min = other["step_s_min"] / bn["step_s_min"] - 1
                by_median = other["step_s_median"] / bn["step_s_median"] - 1
                overhead.append({"norm": norm, "frames": frames, "batch": batch,
                                 "overhead_min": by_min, "overhead_median": by_median})
                print(f"{norm:<11} T={frames:<4} B={batch:<3} {by_min:+.1%} ({by_median:+.1%})")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({
                "machine": machine, "torch": torch.__version__, "device": args.device, "model": args.model,
                "size": args.size, "precision": args.precision, "channels_last": args.channels_last,
                "steps": args.steps, "warmup": args.warmup, "load_avg_end": os.getloadavg(),
                "results": results, "overhead_vs_bn": overhead,
            }, fh, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

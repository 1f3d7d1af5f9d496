"""Training-step throughput and peak memory of I3D-R50 with GN, BN and frozen BN, over (T, B).

A step is the trainer's own (:func:`videogn.runtime.forward_backward` and
:func:`videogn.runtime.optimizer_step`) with the trainer's optimizer
(:func:`videogn.optim.build_sgd`: Nesterov SGD, momentum 0.9, weight decay 1e-4, none on
norm parameters and biases), on a fresh random batch each step (one batch reused over many steps
let GN gradients turn denormal and slow the CPU down). For each (T, B):

Time: one process builds a model per norm and runs them round by round (one step each per
round, the order rotating), so load from other processes on a shared machine falls on every norm
alike; it reports the minimum and the median over the timed rounds, after warm-up rounds.
Compiled: ``--compile off,static,dynamic`` adds each norm compiled as ``trainer.compile`` does
(``nn.Module.compile``; static = ``dynamic=False``, dynamic = ``dynamic=True``, auto = torch's
automatic ``dynamic=None``) to the same interleaved rounds. Its first step (compilation included,
wall clock) is reported as ``first_step_s``; ``--reshape TxB`` then runs one more step of every
contender at another clip shape and reports its wall time and how many compilations it caused.
The ratio to eager is the median of the per-round ratios (each round times both), with their
range.

Memory: each eager norm again in a fresh process (one warm-up and one step), so no configuration's
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
    python scripts/bench_train.py --model i3d_tiny --norms gn --configs 8x2 --size 112 --threads 1 \
        --compile off,static,dynamic --reshape 4x4 --steps 7 --warmup 2 --clock cpu --no-memory
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
#: --compile modes: (``dynamic``, inductor options) of ``torch.compile``; off: eager.
#: static_nolayout: static without inductor's conversion of CPU convolutions to channels-last
COMPILE_MODES: dict[str, Any] = {
    "off": None, "static": (False, None), "dynamic": (True, None), "auto": (None, None),
    "static_nolayout": (False, {"layout_optimization": False}),
}


def _contender(norm: str, mode: str) -> str:
    return norm if mode == "off" else f"{norm}+compile:{mode}"


def _split_contender(name: str) -> tuple[str, str]:
    norm, _, mode = name.partition("+compile:")
    return norm, mode or "off"


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


def _setup(args: argparse.Namespace, contender: str) -> tuple[Any, Any]:
    """Device and one training-step function for ``contender`` (a norm, compiled or not) at
    (args.frames, args.batch); ``step(frames, batch)`` takes another clip shape."""
    import torch

    from videogn import convert_norm
    from videogn.optim import build_sgd
    from videogn.models import create_model
    from videogn.runtime import forward_backward, optimizer_step, resolve_device, seed_everything

    norm, mode = _split_contender(contender)
    device = resolve_device(args.device)
    seed_everything(0)
    fmt = torch.channels_last_3d if args.channels_last else torch.contiguous_format

    def batch(frames: Optional[int] = None, batch_size: Optional[int] = None) -> tuple[Any, Any]:
        b = batch_size or args.batch
        x = torch.randn(b, 3, frames or args.frames, args.size, args.size, device=device)  # (N, C, T, H, W)
        y = torch.randint(0, args.num_classes, (b,), device=device)
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
    if mode != "off":  # as trainer.compile: in place, after the layout change, before the optimizer
        dynamic, options = COMPILE_MODES[mode]
        model.compile(dynamic=dynamic, options=options)
    opt = build_sgd(model, 0.01)
    scaler = torch.amp.GradScaler("cuda") if args.precision == "fp16" else None
    # process CPU time is robust to other jobs on a shared machine (one thread: the step's own)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    def step(frames: Optional[int] = None, batch_size: Optional[int] = None, wall: bool = False) -> float:
        x, y = batch(frames, batch_size)  # fresh every step, drawn outside the timed region
        now = time.perf_counter if wall else clock
        _sync(device)
        start = now()
        loss = forward_backward(model, x, y, precision=args.precision, scaler=scaler)
        applied = optimizer_step(model, opt, scaler=scaler)
        _sync(device)
        if not applied and scaler is None:
            raise RuntimeError(f"non-finite loss or gradient ({loss.item()}) for {contender} T={args.frames} B={args.batch}")
        return now() - start

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


def _compiles() -> int:
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"]


def run_timing_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Step times of every contender, interleaved round by round so that load on a shared machine
    falls on all of them alike (the order rotates each round); compiled ones also their first
    (compiling) step and, with ``--reshape``, one step at another clip shape."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.norms.split(",")
    steps = {name: _setup(args, name)[1] for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, dict[str, float]] = {}
    for name in names:  # the compiling step of each, alone (wall clock: inductor compiles in subprocesses)
        before = _compiles()
        first[name] = {"first_step_s": steps[name](wall=True), "compiles": _compiles() - before}
    warmup = max(args.warmup, 1)  # round 0 was the first steps above
    for r in range(1, warmup + args.steps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            elapsed = steps[name]()
            if r >= warmup:
                times[name].append(elapsed)
    reshape: dict[str, dict[str, float]] = {}
    if args.reshape:
        (frames, batch), = _parse_configs(args.reshape)
        for name in names:
            before = _compiles()
            reshape[name] = {"reshape_step_s": steps[name](frames, batch, wall=True), "compiles": _compiles() - before}
            reshape[name]["next_step_s"] = steps[name](frames, batch)
    return {"times": times, "first": first, "reshape": reshape}


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
    parser.add_argument("--compile", default="off",
                        help=f"comma list from {list(COMPILE_MODES)}: each norm eager (off) and/or compiled")
    parser.add_argument("--reshape", default=None, metavar="TxB",
                        help="after timing, one step of each contender at this clip shape (a recompile)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="step times in wall-clock or process CPU time (robust to other jobs)")
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
    modes = [m.strip() for m in args.compile.split(",") if m.strip()]
    for m in modes:
        if m not in COMPILE_MODES:
            raise SystemExit(f"--compile: unknown mode {m!r}; valid: {', '.join(COMPILE_MODES)}")
    if args.reshape:
        _parse_configs(args.reshape)
    contenders = [_contender(n, m) for n in norms for m in modes]
    configs = _parse_configs(args.configs)
    machine = (
        torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{os.cpu_count()}-core {platform.machine()} CPU, "
        f"{args.threads or torch.get_num_threads()} torch thread(s) per process"
    )
    print(f"# {args.model} training step on {machine}, torch {torch.__version__}, "
          f"{args.size}x{args.size}, precision={args.precision}, channels_last={args.channels_last}, "
          f"{args.clock} clock, load avg {os.getloadavg()[0]:.2f}")
    common = [sys.executable, os.path.abspath(__file__), "--device", args.device, "--model", args.model,
              "--num-classes", str(args.num_classes), "--size", str(args.size), "--threads", str(args.threads),
              "--precision", args.precision, "--clock", args.clock] + (["--channels-last"] if args.channels_last else [])
    if args.reshape:
        common += ["--reshape", args.reshape]

    def worker(extra: list[str]) -> Any:
        proc = subprocess.run(common + extra, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": " | ".join(tail)}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    results: list[dict[str, Any]] = []
    width = max(11, *map(len, contenders))
    print(f"{'norm':<{width}} {'T':>4} {'B':>3} {'min s':>7} {'median s':>9} {'clips/s':>8} {'peak MB':>8} {'step MB':>8}")
    compiled_rows = []
    for frames, batch in configs:
        shape = ["--frames", str(frames), "--batch", str(batch)]
        timing = worker(["--worker", "timing", "--norms", ",".join(contenders), "--steps", str(args.steps),
                         "--warmup", str(args.warmup)] + shape)
        times = timing.get("times", {})
        for name in contenders:
            norm, mode = _split_contender(name)
            row: dict[str, Any] = {"norm": norm, "compile": mode, "frames": frames, "batch": batch, "size": args.size}
            if "error" in timing:
                row["error"] = timing["error"]
            else:
                t = sorted(times[name])
                row.update(step_s_min=t[0], step_s_median=statistics.median(t), step_s_all=times[name],
                           clips_per_s=batch / t[0], **timing["first"][name])
                if name in timing["reshape"]:
                    row["reshape"] = {"shape": args.reshape, **timing["reshape"][name]}
            if not args.no_memory and mode == "off":
                mem = worker(["--worker", "memory", "--norm", norm, "--steps", "1", "--warmup", "1"] + shape)
                row.update(mem)
            results.append(row)
            if "error" in row:
                print(f"{name:<{width}} {frames:>4} {batch:>3}  failed: {row['error']}")
                continue
            mem_text = f"{row['peak_mb']:>8.0f} {row['step_mb']:>8.0f}" if "peak_mb" in row else ""
            print(f"{name:<{width}} {frames:>4} {batch:>3} {row['step_s_min']:>7.3f} {row['step_s_median']:>9.3f} "
                  f"{row['clips_per_s']:>8.2f} {mem_text}")
        if "error" in timing or "off" not in modes:
            continue
        for name in contenders:
            norm, mode = _split_contender(name)
            if mode == "off":
                continue
            # paired by round: both were timed in the same round, under the same load
            ratios = sorted(c / e for c, e in zip(times[name], times[norm]))
            eager_median = statistics.median(times[norm])
            info = {"norm": norm, "compile": mode, "frames": frames, "batch": batch,
                    "ratio_median": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
                    "compile_s": timing["first"][name]["first_step_s"] - eager_median,
                    **({"reshape": timing["reshape"][name]} if name in timing["reshape"] else {})}
            compiled_rows.append(info)
    if compiled_rows:
        print("\n# compiled / eager step time (median of per-round ratios [range]); first-step compile time, wall")
        for c in compiled_rows:
            extra = ""
            if "reshape" in c:
                extra = (f"; at {args.reshape}: {c['reshape']['reshape_step_s']:.1f} s "
                         f"({c['reshape']['compiles']} compilation(s))")
            print(f"{c['norm']} {c['compile']:<8} T={c['frames']:<4} B={c['batch']:<3} {c['ratio_median']:.2f}x "
                  f"[{c['ratio_min']:.2f}-{c['ratio_max']:.2f}], compile {c['compile_s']:.1f} s{extra}")

    print("\n# step-time overhead over BN (ratio of min step times - 1; of medians in brackets)")
    by_key = {(r["norm"], r["frames"], r["batch"]): r for r in results if "error" not in r and r["compile"] == "off"}
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
                "clock": args.clock, "results": results, "overhead_vs_bn": overhead, "compiled_vs_eager": compiled_rows,
            }, fh, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

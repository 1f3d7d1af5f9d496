"""Benchmark GroupNorm3d against nn.GroupNorm and BatchNorm3d on I3D-R50 layer shapes.

CPU section (the native path): GroupNorm3d vs nn.GroupNorm vs nn.BatchNorm3d (training mode),
forward and forward+backward, contiguous and channels_last_3d, with the ratio ours / nn.GroupNorm
and an accuracy column: max |error| against float64 on the same tensor shifted to mean 1000
(PyTorch's CPU channels-last GN computes E[x^2] - E[x]^2 and loses everything there).
Forward+backward is timed as a training step has it: a fresh input that needs its gradient, the
weights' gradients reset, and whatever a call leaves behind freed off the clock. The contenders are
interleaved round by round; the whole list of shapes is measured ``--runs`` times, and the ratio
is reported with a 95 % interval over the runs. glibc is told to keep freed memory
(``--allocator retain``, the default): otherwise whether a call's tensors come as fresh pages, at
~2 us a page fault, depends on what ran before it and decides the ratio (``--allocator default``
shows it). ``--aa`` puts a second nn.GroupNorm in GroupNorm3d's place: the protocol's own spread.

CUDA section (the Triton path): per shape, dtype (bf16, fp32) and layout: a device copy of the
tensor (the bandwidth ceiling), eager F.group_norm, torch.compile'd GN and GN+ReLU, cuDNN
BatchNorm3d and BN+ReLU, and ours (forward, forward+ReLU, backward). Times are medians of
``triton.testing.do_bench``, which flushes L2 before every repetition; GB/s is on the minimal
traffic (forward 2x the tensor bytes, backward 3x) and "% copy" is that rate over the copy's.

Usage:
    python scripts/bench_groupnorm.py --device cpu --quick --out cpu.json
    python scripts/bench_groupnorm.py --device cpu --threads 1 --clock cpu   # shared machine
    python scripts/bench_groupnorm.py --device cpu --threads 1 --clock cpu --runs 8 --out cpu.json
    python scripts/bench_groupnorm.py --device cpu --threads 1 --clock cpu --runs 8 --aa    # A/A
    python scripts/bench_groupnorm.py --device cuda --out cuda.json          # on a GPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

try:
    import resource
except ImportError:  # Windows: no page-fault counts
    resource = None  # type: ignore[assignment]

import videogn
from videogn.functional import group_norm
from videogn.science.analysis import t_quantile

Shape = Tuple[int, int, int, int, int]
LAYOUTS = ("contiguous", "channels_last_3d")

# I3D-R50 (Non-local layout) norm inputs: (C, spatial) per stage; T and N vary
CPU_SHAPES: List[Shape] = [
    (2, 64, 8, 56, 56),     # res2 bottleneck inner width
    (2, 256, 8, 56, 56),    # res2 output
    (2, 512, 4, 28, 28),    # res3 output
    (4, 1024, 4, 14, 14),   # res4 output
    (4, 2048, 4, 7, 7),     # res5 output
]
CPU_QUICK: List[Shape] = [(2, 64, 8, 56, 56), (2, 512, 4, 28, 28), (4, 1024, 4, 14, 14)]
CUDA_STAGES = [(64, 56), (256, 56), (512, 28), (1024, 14)]


def cuda_shapes(quick: bool) -> List[Shape]:
    batches, times = ((2, 8), (8,)) if quick else ((2, 4, 8), (4, 8, 16))
    stages = [(64, 56), (256, 56), (1024, 14)] if quick else CUDA_STAGES
    return [(n, c, t, s, s) for n in batches for t in times for c, s in stages]


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last_3d) if layout != "contiguous" else x


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter

# A contender: prepare() does the untimed set-up of one call and returns the call to time.
Prepare = Callable[[], Callable[[], object]]


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def retain_freed_memory() -> Optional[str]:
    """Have glibc's malloc keep what is freed (no trimming of the heap, no mmap for big blocks), so
    a call reuses pages it has touched before instead of faulting fresh ones in.

    By default glibc maps every block above its mmap threshold (dynamic, at most 32 MB) fresh and
    gives it back on free, and trims the heap's top: whether a call's output and input gradient
    come as new pages (~2 us per 4 KiB page on the reference VM, ~9 ms for two 12 MB tensors) then
    depends on the allocation history, not on the layer, and lands on one contender or the other
    (docs/benchmarks/groupnorm.md). Both layers allocate the same tensors either way.

    Returns:
        None when set, else why not (not glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"allocator left as is: not glibc ({platform.system()} {platform.libc_ver()[0] or '?'})"
    import ctypes

    libc = ctypes.CDLL(None)
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)):
        return "allocator left as is: mallopt refused"
    return None


def _minor_faults() -> Optional[float]:
    """Minor page faults of this process so far (None where ``resource`` is missing: Windows)."""
    return None if resource is None else float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def _interleaved_medians(
    prepares: Dict[str, Prepare], reps: int
) -> Dict[str, Tuple[float, Optional[float]]]:
    """Median seconds and median minor page faults of one call of each contender over ``reps``
    rounds, timed round-robin so that load from other processes falls on all of them alike.

    Each timed call gets what ``prepare()`` set up just before it, untimed, and what it leaves
    behind (its input, the input's gradient) is freed after the clock stops. The page faults are
    reported because they, not the kernels, decided the old version of this benchmark: a call that
    gets freshly mapped memory pays ~1.7 us per 4 KiB page on the reference VM, ~5 ms for one
    12 MB tensor (docs/benchmarks/groupnorm.md).
    """
    for prepare in prepares.values():  # warm-up
        prepare()()
    times: Dict[str, List[float]] = {name: [] for name in prepares}
    faults: Dict[str, List[float]] = {name: [] for name in prepares}
    # Every order in turn, so that each contender goes first, and follows each other one, equally
    # often: whoever runs just before leaves the caches and the heap in its state.
    orders = list(itertools.permutations(prepares.items()))
    for rep in range(reps):
        for name, prepare in orders[rep % len(orders)]:
            call = prepare()
            faults_before = _minor_faults()
            start = _clock()
            call()
            times[name].append(_clock() - start)
            faults_after = _minor_faults()
            if faults_before is not None and faults_after is not None:
                faults[name].append(faults_after - faults_before)
            del call  # frees the call's input and its gradient, off the clock
    return {
        name: (statistics.median(t), statistics.median(faults[name]) if faults[name] else None)
        for name, t in times.items()
    }


def _forward(module: nn.Module, x: torch.Tensor) -> Prepare:
    def call() -> None:
        with torch.no_grad():
            module(x)

    return lambda: call


def _train_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Prepare:
    """Forward+backward as in a training step: a fresh input that needs its gradient (as a conv's
    output does), the weights' gradients set to None first (``optimizer.zero_grad()``'s default),
    and a fixed output gradient."""

    def prepare() -> Callable[[], None]:
        module.zero_grad(set_to_none=True)
        fresh = x.detach().clone().requires_grad_()  # clone keeps x's memory format
        return lambda: module(fresh).backward(grad)

    return prepare


def _ratio_interval(
    ours: List[float], theirs: List[float]
) -> Tuple[float, Optional[float], Optional[float]]:
    """Geometric mean of the per-run ratios ours/theirs and its 95 % Student-t interval (computed
    on the log ratios, so it is symmetric in which side is the numerator); no bounds for 1 run."""
    logs = [math.log(a / b) for a, b in zip(ours, theirs)]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), None, None
    half = t_quantile(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def _max_error_vs_float64(module: nn.GroupNorm, x: torch.Tensor) -> float:
    """Max |module(x + 1000) - float64 reference| (a large-mean input, same layout)."""
    shifted = x.detach() + 1000.0
    with torch.no_grad():
        out = module(shifted).double()
        ref = F.group_norm(shifted.double(), module.num_groups, module.weight.double(),
                           module.bias.double(), module.eps)
    return (out - ref).abs().max().item()


def _cpu_modules(c: int, aa: bool = False) -> Dict[str, nn.Module]:
    """The contenders; ``aa``: a second nn.GroupNorm in GroupNorm3d's slot (the benchmark's A/A
    calibration: its ratio shows what the protocol gives for two identical layers)."""
    return {
        "GroupNorm3d": nn.GroupNorm(32, c) if aa else videogn.GroupNorm3d(c, num_groups=32),
        "nn.GroupNorm": nn.GroupNorm(32, c),
        "nn.BatchNorm3d": nn.BatchNorm3d(c),
    }


def bench_cpu(shapes: List[Shape], reps: int, runs: int = 5, aa: bool = False) -> List[Dict]:
    """Forward and forward+backward of every contender on every shape and layout.

    One run measures every (shape, layout) once (median of ``reps`` interleaved rounds, with new
    tensors and modules); the ``runs`` runs follow each other, so each ratio's interval spans the
    machine's drift over the whole benchmark. The ratio GroupNorm3d / nn.GroupNorm is computed per
    run; a row reports its geometric mean with a 95 % interval over the runs.
    """
    cases = [(shape, layout) for shape in shapes for layout in LAYOUTS]
    fwd: Dict[Tuple[Shape, str], Dict[str, List[float]]] = {}
    fwd_bwd: Dict[Tuple[Shape, str], Dict[str, List[float]]] = {}
    faults: Dict[Tuple[Shape, str], Dict[str, List[Optional[float]]]] = {}  # fwd+bwd, per run
    errors: Dict[Tuple[Shape, str], Dict[str, Optional[float]]] = {}
    for run in range(runs):
        for case in cases:
            shape, layout = case
            x = _layout(torch.randn(shape), layout)
            grad = _layout(torch.randn(shape), layout)
            modules = _cpu_modules(shape[1], aa)
            f = _interleaved_medians({k: _forward(m, x) for k, m in modules.items()}, reps)
            fb = _interleaved_medians({k: _train_step(m, x, grad) for k, m in modules.items()}, reps)
            for store, medians in ((fwd, f), (fwd_bwd, fb)):
                for name, (seconds, _) in medians.items():
                    store.setdefault(case, {}).setdefault(name, []).append(seconds * 1e3)
            for name, (_, count) in fb.items():
                faults.setdefault(case, {}).setdefault(name, []).append(count)
            if case not in errors:
                errors[case] = {k: _max_error_vs_float64(m, x) if isinstance(m, nn.GroupNorm) else None
                                for k, m in modules.items()}
        print(f"run {run + 1}/{runs} done", flush=True)

    rows = []
    for case in cases:
        shape, layout = case
        row: Dict = {"shape": list(shape), "layout": layout,
                     "MB": torch.Size(shape).numel() * 4 / 2**20}
        for name in fwd[case]:
            row[f"{name}.fwd_ms"] = statistics.median(fwd[case][name])
            row[f"{name}.fwd_bwd_ms"] = statistics.median(fwd_bwd[case][name])
            row[f"{name}.max_err"] = errors[case][name]
            row[f"{name}.fwd_ms_runs"] = fwd[case][name]
            row[f"{name}.fwd_bwd_ms_runs"] = fwd_bwd[case][name]
            counts = [c for c in faults[case][name] if c is not None]
            row[f"{name}.fwd_bwd_faults"] = statistics.median(counts) if counts else None
        for kind, store in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
            ours, theirs = store[case]["GroupNorm3d"], store[case]["nn.GroupNorm"]
            est, low, high = _ratio_interval(ours, theirs)
            row[f"ratio_{kind}"], row[f"ratio_{kind}_low"], row[f"ratio_{kind}_high"] = est, low, high
            row[f"ratio_{kind}_runs"] = [a / b for a, b in zip(ours, theirs)]
        rows.append(row)
    return rows


def _print_cpu_header() -> None:
    print(
        f"{'shape':<22}{'layout':<18}{'MB':>6} | {'fwd ms: ours':>12}{'nn.GN':>8}{'BN3d':>8}"
        f"{'ratio [95% CI]':>21} | {'f+b ms: ours':>12}{'nn.GN':>8}{'BN3d':>8}{'ratio [95% CI]':>21}"
        f"{'faults: ours':>13}{'nn.GN':>7} | {'err@mean1000: ours':>18}{'nn.GN':>9}"
    )


def _format_ratio(r: Dict, kind: str) -> str:
    low, high = r[f"ratio_{kind}_low"], r[f"ratio_{kind}_high"]
    interval = "" if low is None else f" [{low:.3f}, {high:.3f}]"
    return f"{r[f'ratio_{kind}']:.3f}{interval}"


def _format_count(count: Optional[float]) -> str:
    return "-" if count is None else f"{count:.0f}"


def _print_cpu_row(r: Dict) -> None:
    print(
        f"{str(tuple(r['shape'])):<22}{r['layout']:<18}{r['MB']:>6.1f} | "
        f"{r['GroupNorm3d.fwd_ms']:>12.2f}{r['nn.GroupNorm.fwd_ms']:>8.2f}"
        f"{r['nn.BatchNorm3d.fwd_ms']:>8.2f}{_format_ratio(r, 'fwd'):>21} | "
        f"{r['GroupNorm3d.fwd_bwd_ms']:>12.2f}{r['nn.GroupNorm.fwd_bwd_ms']:>8.2f}"
        f"{r['nn.BatchNorm3d.fwd_bwd_ms']:>8.2f}{_format_ratio(r, 'fwd_bwd'):>21}"
        f"{_format_count(r['GroupNorm3d.fwd_bwd_faults']):>13}"
        f"{_format_count(r['nn.GroupNorm.fwd_bwd_faults']):>7} | "
        f"{r['GroupNorm3d.max_err']:>18.1e}{r['nn.GroupNorm.max_err']:>9.1e}",
        flush=True,
    )


# ------------------------------------------------------------------------------------------------
# CUDA
# ------------------------------------------------------------------------------------------------

def _do_bench(fn: Callable[[], object]) -> float:
    """Median milliseconds; L2 is flushed before each repetition."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def bench_cuda_case(
    shape: Shape, dtype: torch.dtype, layout: str, compile_: bool, device: str = "cuda"
) -> List[Dict]:
    """All methods on one (shape, dtype, layout); ``device`` is "cuda" except in smoke tests."""
    from videogn.ops import group_norm as ops

    c = shape[1]
    groups = 32
    x = _layout(torch.randn(shape, device=device, dtype=dtype), layout)
    grad = _layout(torch.randn(shape, device=device, dtype=dtype), layout)
    out = torch.empty_like(x)
    w = torch.randn(c, device=device) * 0.1 + 1
    b = torch.randn(c, device=device) * 0.1
    w_x, b_x = w.to(dtype), b.to(dtype)  # eager CUDA group_norm wants one dtype
    bn = nn.BatchNorm3d(c).to(device)
    bytes_ = x.numel() * x.element_size()

    cases: Dict[str, Tuple[Callable[[], object], int]] = {
        "copy": (lambda: out.copy_(x), 2),
        "eager F.group_norm": (lambda: F.group_norm(x, groups, w_x, b_x), 2),
        "eager GN+ReLU": (lambda: F.relu_(F.group_norm(x, groups, w_x, b_x)), 2),
        "cuDNN BN3d": (lambda: bn(x), 2),
        "cuDNN BN3d+ReLU": (lambda: F.relu_(bn(x)), 2),
        "ours fwd": (lambda: ops.triton_group_norm(x, groups, w, b, 1e-5, None), 2),
        "ours fwd+ReLU": (lambda: ops.triton_group_norm(x, groups, w, b, 1e-5, "relu"), 2),
    }
    if compile_:
        torch._dynamo.reset()  # a fresh cache per case: no recompile limit, no stale guards
        gn_c = torch.compile(lambda t: F.group_norm(t, groups, w_x, b_x))
        gn_relu_c = torch.compile(lambda t: F.relu(F.group_norm(t, groups, w_x, b_x)))
        cases["compiled GN"] = (lambda: gn_c(x), 2)
        cases["compiled GN+ReLU"] = (lambda: gn_relu_c(x), 2)

    # backward alone (3x traffic): eager GN and ours through autograd, BN for reference
    x_req = x.detach().clone().requires_grad_()
    w_req, b_req = w_x.clone().requires_grad_(), b_x.clone().requires_grad_()
    y_eager = F.group_norm(x_req, groups, w_req, b_req)
    y_ours = group_norm(x_req, groups, w.clone().requires_grad_(), b.clone().requires_grad_(),
                        backend="triton")
    y_bn = bn(x_req)
    for name, y in (("eager GN bwd", y_eager), ("ours bwd", y_ours), ("cuDNN BN3d bwd", y_bn)):
        cases[name] = ((lambda y=y: torch.autograd.grad(y, x_req, grad, retain_graph=True)), 3)

    rows = []
    times = {name: _do_bench(fn) for name, (fn, _) in cases.items()}
    copy_gbs = 2 * bytes_ / times["copy"] / 1e6
    for name, (_, traffic) in cases.items():
        gbs = traffic * bytes_ / times[name] / 1e6
        rows.append({
            "shape": list(shape), "dtype": str(dtype).split(".")[1], "layout": layout,
            "MB": bytes_ / 2**20, "method": name, "ms": times[name], "GB/s": gbs,
            "pct_copy": 100 * gbs / copy_gbs,
        })
    ref = {"ours fwd": "eager F.group_norm", "ours fwd+ReLU": "cuDNN BN3d+ReLU",
           "ours bwd": "eager GN bwd"}
    for r in rows:
        if r["method"] in ref:
            r["speedup_vs"] = ref[r["method"]]
            r["speedup"] = times[ref[r["method"]]] / r["ms"]
    return rows


def bench_cuda(shapes: List[Shape], compile_: bool) -> List[Dict]:
    rows = []
    print(f"{'shape':<22}{'dtype':<9}{'layout':<18}{'MB':>7}  {'method':<20}{'ms':>8}"
          f"{'GB/s':>8}{'%copy':>7}  speedup")
    for shape in shapes:
        for dtype in (torch.bfloat16, torch.float32):
            for layout in LAYOUTS:
                for r in bench_cuda_case(shape, dtype, layout, compile_):
                    rows.append(r)
                    extra = f"  {r['speedup']:.2f}x vs {r['speedup_vs']}" if "speedup" in r else ""
                    print(f"{str(tuple(shape)):<22}{r['dtype']:<9}{layout:<18}{r['MB']:>7.1f}  "
                          f"{r['method']:<20}{r['ms']:>8.3f}{r['GB/s']:>8.0f}{r['pct_copy']:>6.0f}%"
                          f"{extra}", flush=True)
                torch.cuda.empty_cache()
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default=None,
                        help="which section(s) to run (default: cuda if available, else cpu)")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    parser.add_argument("--reps", type=int, default=None,
                        help="CPU: interleaved rounds per run, each contender's median taken "
                             "(default 12, 6 with --quick)")
    parser.add_argument("--runs", type=int, default=None,
                        help="CPU: runs over every shape; the ratio's 95 %% interval is over runs "
                             "(default 5, 3 with --quick; 1 gives no interval)")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="CPU timer: wall time, or process CPU time (steadier on a shared, "
                             "throttled machine; use it with --threads 1)")
    parser.add_argument("--allocator", choices=["retain", "default"], default="retain",
                        help="CPU: retain (glibc keeps freed memory: no page-fault lottery between "
                             "contenders; see retain_freed_memory) or default (glibc as it comes)")
    parser.add_argument("--aa", action="store_true",
                        help="CPU: A/A calibration, a second nn.GroupNorm in GroupNorm3d's place")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile baselines")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    global _clock
    _clock = CLOCKS[args.clock]
    allocator = args.allocator
    if device in ("cpu", "all") and allocator == "retain":
        why_not = retain_freed_memory()
        if why_not:
            print(why_not)
            allocator = "default"
    if args.threads:
        torch.set_num_threads(args.threads)
    if device in ("cuda", "all") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device; none is available")
    for name in ("reps", "runs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")

    meta: Dict[str, object] = {
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads",
        "cpu_clock": args.clock,
        "cpu_allocator": allocator,
        "cpu_aa": args.aa,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "command": " ".join(sys.argv),
    }
    results: Dict[str, object] = {"meta": meta}
    print(f"torch {meta['torch']} | {meta['machine']} | GPU: {meta['gpu']}")
    if device in ("cpu", "all"):
        reps = args.reps or (6 if args.quick else 12)  # a multiple of the 6 orders of 3
        runs = args.runs or (3 if args.quick else 5)
        meta.update(cpu_reps=reps, cpu_runs=runs)
        print(f"\n== CPU: native path (GroupNorm3d) vs nn.GroupNorm vs nn.BatchNorm3d, fp32, "
              f"{args.clock} clock, {runs} runs x {reps} interleaved rounds, allocator {allocator} ==")
        if args.aa:
            print("A/A calibration: the GroupNorm3d column is a second nn.GroupNorm")
        rows = bench_cpu(CPU_QUICK if args.quick else CPU_SHAPES, reps, runs, aa=args.aa)
        print("ms = median over runs of each run's median; ratio = GroupNorm3d / nn.GroupNorm "
              "time, geometric mean over runs [95 % t-interval]; faults = median minor page "
              "faults per fwd+bwd call; err = max |y - float64| on input + 1000")
        _print_cpu_header()
        for row in rows:
            _print_cpu_row(row)
        results["cpu"] = rows
    if device in ("cuda", "all"):
        print("\n== CUDA: Triton path vs eager / compiled GN and cuDNN BN "
              "(GB/s on minimal traffic: fwd 2x, bwd 3x tensor bytes) ==")
        results["cuda"] = bench_cuda(cuda_shapes(args.quick), compile_=not args.no_compile)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

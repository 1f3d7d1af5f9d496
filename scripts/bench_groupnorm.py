"""Benchmark GroupNorm3d against nn.GroupNorm and BatchNorm3d on I3D-R50 layer shapes.

CPU section (the native path): GroupNorm3d vs nn.GroupNorm vs nn.BatchNorm3d (training mode),
forward and forward+backward, contiguous and channels_last_3d, with the ratio ours / nn.GroupNorm
and an accuracy column: max |error| against float64 on the same tensor shifted to mean 1000
(PyTorch's CPU channels-last GN computes E[x^2] - E[x]^2 and loses everything there).

CUDA section (the Triton path): per shape, dtype (bf16, fp32) and layout: a device copy of the
tensor (the bandwidth ceiling), eager F.group_norm, torch.compile'd GN and GN+ReLU, cuDNN
BatchNorm3d and BN+ReLU, and ours (forward, forward+ReLU, backward). Times are medians of
``triton.testing.do_bench``, which flushes L2 before every repetition; GB/s is on the minimal
traffic (forward 2x the tensor bytes, backward 3x) and "% copy" is that rate over the copy's.

Usage:
    python scripts/bench_groupnorm.py --device cpu --quick --out cpu.json
    python scripts/bench_groupnorm.py --device cpu --threads 1 --clock cpu   # shared machine
    python scripts/bench_groupnorm.py --device cuda --out cuda.json          # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import videogn
from videogn.functional import group_norm

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


def _interleaved_medians(fns: Dict[str, Callable[[], object]], reps: int) -> Dict[str, float]:
    """Median seconds of each function, timed round-robin so that load from other processes on
    a shared machine falls on all of them alike."""
    for fn in fns.values():  # warm-up
        fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for rep in range(reps):
        # Rotate who goes first: the first call of a round can pay for the previous one's frees.
        for name, fn in order[rep % len(order):] + order[: rep % len(order)]:
            start = _clock()
            fn()
            times[name].append(_clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        x.grad = None
        module(x).backward(grad)

    return run


def _max_error_vs_float64(module: nn.GroupNorm, x: torch.Tensor) -> float:
    """Max |module(x + 1000) - float64 reference| (a large-mean input, same layout)."""
    shifted = x.detach() + 1000.0
    with torch.no_grad():
        out = module(shifted).double()
        ref = F.group_norm(shifted.double(), module.num_groups, module.weight.double(),
                           module.bias.double(), module.eps)
    return (out - ref).abs().max().item()


def bench_cpu(shapes: List[Shape], reps: int) -> List[Dict]:
    rows = []
    for shape in shapes:
        c = shape[1]
        for layout in LAYOUTS:
            x = _layout(torch.randn(shape), layout).requires_grad_()
            grad = _layout(torch.randn(shape), layout)
            modules = {
                "GroupNorm3d": videogn.GroupNorm3d(c, num_groups=32),
                "nn.GroupNorm": nn.GroupNorm(32, c),
                "nn.BatchNorm3d": nn.BatchNorm3d(c),
            }
            def forward(module: nn.Module) -> Callable[[], object]:
                def run() -> object:
                    with torch.no_grad():
                        return module(x)

                return run

            fwd = _interleaved_medians({k: forward(m) for k, m in modules.items()}, reps)
            fwd_bwd = _interleaved_medians(
                {k: _fwd_bwd(m, x, grad) for k, m in modules.items()}, reps
            )
            result: Dict[str, Dict[str, Optional[float]]] = {
                name: {
                    "fwd_ms": fwd[name] * 1e3,
                    "fwd_bwd_ms": fwd_bwd[name] * 1e3,
                    "max_err": _max_error_vs_float64(m, x) if isinstance(m, nn.GroupNorm) else None,
                }
                for name, m in modules.items()
            }
            ours, torch_gn = result["GroupNorm3d"], result["nn.GroupNorm"]
            row = {
                "shape": list(shape),
                "layout": layout,
                "MB": x.numel() * 4 / 2**20,
                **{f"{k}.{m}": v for k, r in result.items() for m, v in r.items()},
                "ratio_fwd": ours["fwd_ms"] / torch_gn["fwd_ms"],
                "ratio_fwd_bwd": ours["fwd_bwd_ms"] / torch_gn["fwd_bwd_ms"],
            }
            rows.append(row)
            _print_cpu_row(row)
    return rows


def _print_cpu_header() -> None:
    print(
        f"{'shape':<22}{'layout':<18}{'MB':>6} | {'fwd ms: ours':>12}{'nn.GN':>8}{'BN3d':>8}"
        f"{'ratio':>7} | {'f+b ms: ours':>12}{'nn.GN':>8}{'BN3d':>8}{'ratio':>7} | "
        f"{'err@mean1000: ours':>18}{'nn.GN':>9}"
    )


def _print_cpu_row(r: Dict) -> None:
    print(
        f"{str(tuple(r['shape'])):<22}{r['layout']:<18}{r['MB']:>6.1f} | "
        f"{r['GroupNorm3d.fwd_ms']:>12.2f}{r['nn.GroupNorm.fwd_ms']:>8.2f}"
        f"{r['nn.BatchNorm3d.fwd_ms']:>8.2f}{r['ratio_fwd']:>7.2f} | "
        f"{r['GroupNorm3d.fwd_bwd_ms']:>12.2f}{r['nn.GroupNorm.fwd_bwd_ms']:>8.2f}"
        f"{r['nn.BatchNorm3d.fwd_bwd_ms']:>8.2f}{r['ratio_fwd_bwd']:>7.2f} | "
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
    parser.add_argument("--reps", type=int, default=None, help="CPU repetitions per measurement")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="CPU timer: wall time, or process CPU time (steadier on a shared, "
                             "throttled machine; use it with --threads 1)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile baselines")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    global _clock
    _clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    if device in ("cuda", "all") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device; none is available")

    meta = {
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads",
        "cpu_clock": args.clock,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "command": " ".join(sys.argv),
    }
    results: Dict[str, object] = {"meta": meta}
    print(f"torch {meta['torch']} | {meta['machine']} | GPU: {meta['gpu']}")
    if device in ("cpu", "all"):
        reps = args.reps or (5 if args.quick else 9)
        print(f"\n== CPU: native path (GroupNorm3d) vs nn.GroupNorm vs nn.BatchNorm3d, fp32, "
              f"{args.clock} clock ==")
        print("ratio = GroupNorm3d / nn.GroupNorm time; err = max |y - float64| on input + 1000")
        _print_cpu_header()
        results["cpu"] = bench_cpu(CPU_QUICK if args.quick else CPU_SHAPES, reps)
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

"""Compile the Triton group-norm kernels for an NVIDIA GPU without one (test tooling, not library).

The host code (:func:`forward`/:func:`backward` of ``videogn.ops.group_norm_triton``) is run on
``meta`` tensors with every kernel swapped for a recorder, so the recorded arguments are exactly
those of a real launch; Triton's own binder then specialises them as a launch would (``== 1``,
divisible by 16, i32/i64, ``do_not_specialize``), and each distinct variant is compiled to PTX for
the target. CI without a GPU so catches code the interpreter accepts and the compiler rejects, and
scalar memory accesses. Needs ``TRITON_INTERPRET`` unset (run it in a subprocess from tests).

    python tests/ops/gpu_compile.py --arch 90 --dtype bf16     # prints one JSON record a variant
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

KERNELS = (
    "_gn_stats_kernel", "_gn_finalize_kernel", "_gn_apply_kernel",
    "_gn_bwd_reduce_kernel", "_gn_bwd_finalize_kernel", "_gn_bwd_apply_kernel",
)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: (N, C, T, H, W) of I3D-R50 norm inputs at 32 frames, N = 8: one per stage and width; the last
#: two have T*H*W = 4*7*7 = 196 and 2*7*7 = 98, not multiples of 16
I3D_SHAPES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (8, 64, 16, 56, 56), (8, 256, 8, 56, 56), (8, 128, 8, 28, 28), (8, 512, 8, 28, 28),
    (8, 256, 4, 14, 14), (8, 1024, 4, 14, 14), (8, 512, 4, 7, 7), (8, 2048, 2, 7, 7),
)
#: more than 2^31 elements (stride_n needs 64 bits): the i64 variants of a long clip
BIG_SHAPES: Tuple[Tuple[int, int, int, int, int], ...] = ((1, 64, 1, 1, 2**25 + 5),)
SHAPE_SETS = {"aligned": I3D_SHAPES[:2], "i3d": I3D_SHAPES, "big": BIG_SHAPES,
              "all": I3D_SHAPES + BIG_SHAPES}


class _Recorder:
    """Stands in for a JITFunction: ``kernel[grid](*args, **kw)`` records instead of launching."""

    def __init__(self, kernel: Any, launches: List[Tuple[Any, tuple, dict]]) -> None:
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid: Any):
        return lambda *args, **kwargs: self.launches.append((self.kernel, args, kwargs))


def record_launches(
    shapes: Iterable[Sequence[int]], dtype: torch.dtype, layouts: Sequence[str], groups: int = 32,
    activation: str = "silu", affine: bool = True,
) -> List[Tuple[Any, tuple, dict]]:
    """Run forward and backward host code on meta tensors; return (kernel, args, kwargs) launched."""
    from videogn.ops import group_norm_triton as K
    from videogn.ops.group_norm import _shape_ncl, _with_strides

    launches: List[Tuple[Any, tuple, dict]] = []
    originals = {name: getattr(K, name) for name in KERNELS}
    try:
        for name, kernel in originals.items():
            setattr(K, name, _Recorder(kernel, launches))
        for shape in shapes:
            for layout in layouts:
                x = torch.empty(tuple(shape), device="meta", dtype=dtype)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                n, c, l = _shape_ncl(x)
                g = groups if c % groups == 0 else 1
                w = torch.empty(c, device="meta") if affine else None
                b = torch.empty(c, device="meta") if affine else None
                mean = torch.empty(n, g, device="meta")
                rstd = torch.empty_like(mean)
                x, xs = _with_strides(x)
                y, ys = _with_strides(torch.empty_like(x))
                K.forward(x, y, xs, ys, (n, c, l), g, w, b, 1e-5, activation, mean, rstd)
                K.backward(y, x, y, ys, xs, ys, (n, c, l), g, w, b, activation, mean, rstd)
    finally:
        for name, kernel in originals.items():
            setattr(K, name, kernel)
    return launches


def _backend(arch: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    target = GPUTarget("cuda", arch, 32)
    return target, make_backend(target)


def specialize(kernel: Any, args: tuple, kwargs: dict, backend: Any) -> Tuple[str, Any, dict, dict, dict]:
    """Triton's own launch-time specialisation of one call: (cache key, options, signature,
    constexprs, attrs). Uses Triton internals (``runtime.jit``), hence tests-only."""
    from triton.runtime.jit import create_function_from_signature

    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, spec, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec, options)
    key = json.dumps([kernel.__name__, [list(map(str, s)) for s in spec],
                      sorted((k, str(v)) for k, v in kwargs.items())])
    return key, options, signature, constexprs, attrs


def widest_global_access(ptx: str, op: str) -> int:
    """Bytes moved by the widest ``ld.global``/``st.global`` instruction in ``ptx``."""
    widest = 0
    for suffix in re.findall(rf"\b{op}\.global((?:\.[A-Za-z0-9_:]+)+)", ptx):
        tokens = suffix.split(".")[1:]  # e.g. ['L1::evict_first', 'L2::cache_hint', 'v4', 'b32']
        vec = next((int(t[1:]) for t in tokens if re.fullmatch(r"v\d", t)), 1)
        bits = next((int(t[1:]) for t in reversed(tokens) if re.fullmatch(r"[bfsu]\d+", t)), 0)
        widest = max(widest, vec * bits // 8)
    return widest


def variants(launches: List[Tuple[Any, tuple, dict]], arch: int = 90) -> Dict[str, dict]:
    """Distinct compiled variants (by Triton's cache key) of the recorded launches."""
    _, backend = _backend(arch)
    out: Dict[str, dict] = {}
    for kernel, args, kwargs in launches:
        key, options, signature, constexprs, attrs = specialize(kernel, args, kwargs, backend)
        out.setdefault(key, dict(kernel=kernel, options=options, signature=signature,
                                 constexprs=constexprs, attrs=attrs, args=args))
    return out


def compile_variants(launches: List[Tuple[Any, tuple, dict]], arch: int = 90) -> List[Dict[str, object]]:
    """Compile every distinct variant to PTX; one record each with its widest global accesses."""
    import triton
    from triton.compiler import ASTSource

    target, _ = _backend(arch)
    records: List[Dict[str, object]] = []
    for v in variants(launches, arch).values():
        kernel = v["kernel"]
        src = ASTSource(kernel, v["signature"], v["constexprs"], v["attrs"])
        ptx = triton.compile(src, target=target, options=v["options"].__dict__).asm["ptx"]
        data = next((a for a in v["args"] if isinstance(a, torch.Tensor)), None)
        records.append({
            "kernel": kernel.__name__,
            "dtype": str(data.dtype).replace("torch.", "") if data is not None else "",
            "signature": {k: str(t) for k, t in v["signature"].items()},
            "divisible_by_16": sorted(str(k) for k in v["attrs"]),
            "load_bytes": widest_global_access(ptx, "ld"),
            "store_bytes": widest_global_access(ptx, "st"),
        })
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dtype", nargs="+", default=["bf16"], choices=sorted(DTYPES))
    parser.add_argument("--layout", nargs="+", default=["contiguous", "channels_last"])
    parser.add_argument("--shapes", default="i3d", choices=sorted(SHAPE_SETS),
                        help="i3d: every I3D-R50 stage; aligned: the first two (T*H*W %% 16 == 0); "
                             "big: > 2^31 elements; all: i3d and big")
    parser.add_argument("--activation", default="silu", choices=["none", "relu", "silu"])
    parser.add_argument("--count-only", action="store_true", help="specialise, do not compile")
    args = parser.parse_args(argv)
    shapes = SHAPE_SETS[args.shapes]
    launches = []
    for dt in args.dtype:
        launches += record_launches(shapes, DTYPES[dt], args.layout, activation=args.activation)
    if args.count_only:
        counts: Dict[str, int] = {}
        for v in variants(launches, args.arch).values():
            counts[v["kernel"].__name__] = counts.get(v["kernel"].__name__, 0) + 1
        print(json.dumps({"launches": len(launches), "variants": counts}))
    else:
        print(json.dumps(compile_variants(launches, args.arch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

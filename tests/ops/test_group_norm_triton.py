"""The Triton group norm against float64 F.group_norm: forward, every gradient, layouts, fused
activations, odd shapes, large-mean inputs, custom-op tracing.

Without CUDA the kernels run on CPU tensors in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before anything imports them), so shapes stay tiny; with CUDA the same tests
run on the GPU. ``gpu``-marked tests need CUDA.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

import videogn
from videogn.functional import group_norm
from videogn.ops import group_norm as ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CL = {4: torch.channels_last, 5: torch.channels_last_3d}

_reason = ops.triton_unsupported_reason(torch.empty(1, device=DEVICE))
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"Triton path unavailable: {_reason}")

TOL = {  # (atol, rtol) of outputs and gradients, which are stored in the input dtype
    torch.float32: (1e-4, 0.0),
    torch.float16: (4e-3, 0.0),
    # bf16 keeps 8 bits; the interpreter also truncates fp32 -> bf16 (a GPU rounds): one ulp
    torch.bfloat16: (1e-2, 2**-7),
}


def _kernels():
    from videogn.ops import group_norm_triton

    return group_norm_triton


def _make(shape, dtype, layout, seed=0, loc=0.0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + loc).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL[len(shape)])
    return x.to(DEVICE)


def _reference(x, groups, weight, bias, eps, activation, grad):
    """float64 F.group_norm (+ activation) on CPU: output and gradients of (x, weight, bias)."""
    leaves = [t.detach().cpu().double().requires_grad_() if t is not None else None
              for t in (x, weight, bias)]
    y = F.group_norm(leaves[0], groups, leaves[1], leaves[2], eps)
    y = {"relu": F.relu, "silu": F.silu}.get(activation, lambda t: t)(y)
    y.backward(grad.cpu().double())
    return y.detach(), [t.grad if t is not None else None for t in leaves]


def _triton(x, groups, weight, bias, eps, activation, grad):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None
              for t in (x, weight, bias)]
    y = group_norm(leaves[0], groups, leaves[1], leaves[2], eps,
                   activation=activation, backend="triton")
    y.backward(grad)
    return y, [t.grad if t is not None else None for t in leaves]


def _check(x, groups, weight=None, bias=None, eps=1e-5, activation=None, grad=None, tol=None):
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x) \
        if grad is None else grad
    if x.dim() in CL and x.is_contiguous(memory_format=CL[x.dim()]) and not x.is_contiguous():
        grad = grad.contiguous(memory_format=CL[x.dim()])
    y, grads = _triton(x, groups, weight, bias, eps, activation, grad)
    y_ref, grads_ref = _reference(x, groups, weight, bias, eps, activation, grad)
    atol, rtol = tol or TOL[x.dtype]
    assert y.dtype == x.dtype and y.shape == x.shape
    assert y.stride() == torch.empty_like(x).stride()  # the input's layout when it is dense
    torch.testing.assert_close(y.cpu().double(), y_ref, atol=atol, rtol=rtol)
    for name, g, g_ref in zip(("input", "weight", "bias"), grads, grads_ref):
        if g_ref is None:
            continue
        assert g.dtype == (x.dtype if name == "input" else weight.dtype), name
        # dγ/dβ sum over N*L positions: scale the tolerance with the magnitude of the sum
        scale = 1.0 if name == "input" else max(1.0, g_ref.abs().max().item())
        torch.testing.assert_close(g.cpu().double(), g_ref, atol=atol * scale, rtol=rtol, msg=name)
    return y


def _affine(c, dtype=torch.float32, seed=2):
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(c, generator=gen) * 0.5 + 1).to(dtype).to(DEVICE)
    b = (torch.randn(c, generator=gen) * 0.5).to(dtype).to(DEVICE)
    return w, b


# --- forward and gradients against float64 ------------------------------------------------------

# fp32 and fp16 in every combination; bf16 (only loads/stores differ) with the SiLU variant
_MATRIX = [
    (layout, activation, dtype)
    for layout in ("contiguous", "channels_last")
    for dtype in (torch.float32, torch.float16, torch.bfloat16)
    for activation in ((None, "relu", "silu") if dtype != torch.bfloat16 else ("silu",))
]


@pytest.mark.parametrize("layout,activation,dtype", _MATRIX,
                         ids=lambda v: str(v).replace("torch.", ""))
def test_matches_float64_reference(layout, activation, dtype):
    # C/G = 5 (not a power of two), L = 105 (not a multiple of any block), two samples
    x = _make((2, 10, 3, 5, 7), dtype, layout, loc=0.3, scale=1.7)
    w, b = _affine(10)
    _check(x, 2, w, b, activation=activation)


@pytest.mark.parametrize("affine", ["none", "weight_only", "half_params"])
def test_affine_variants(affine):
    x = _make((1, 15, 2, 3, 5), torch.float32, "contiguous")
    w, b = _affine(15)
    if affine == "none":
        w = b = None
    elif affine == "weight_only":
        b = None
    else:  # fp16 parameters with an fp32 input (mixed precision): grads come back in fp16
        w, b = w.half(), b.half()
    _check(x, 3, w, b, activation="silu", tol=(3e-3, 0.0) if affine == "half_params" else None)


_ODD = [
    ((1, 6, 37), 3),            # (N, C, L): 1-D signal, N = 1
    ((3, 8), 4),                # (N, C): L = 1
    ((2, 12, 5, 3), 4),         # 4-D image batch
    ((1, 5, 1, 9, 1), 1),       # G = 1 (LayerNorm over C,T,H,W), size-1 dims
    ((2, 4, 3, 2, 2), 4),       # G = C (InstanceNorm)
]


@pytest.mark.parametrize("shape,groups,layout", [
    (shape, groups, layout)
    for shape, groups in _ODD
    for layout in (["contiguous", "channels_last"] if len(shape) in CL else ["contiguous"])
])
def test_odd_shapes(shape, groups, layout):
    x = _make(shape, torch.float32, layout, seed=3)
    w, b = _affine(shape[1])
    _check(x, groups, w, b, activation="relu")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_large_mean_is_stable(layout):
    # mean 1000x the spread: E[x^2]-E[x]^2 in fp32 loses everything here (PyTorch's CPU
    # channels-last kernel is off by ~1e3); the shifted Welford/Chan merge must not be
    x = _make((2, 16, 3, 6, 7), torch.float32, layout, seed=4, loc=1000.0, scale=1.0)
    w, b = _affine(16)
    y = _check(x, 4, w, b, tol=(2e-4, 0.0))
    assert y.float().std().item() > 0.3  # not collapsed to the bias


def test_strided_inputs_and_gradients():
    base = _make((2, 8, 4, 6, 5), torch.float32, "contiguous", seed=5)
    # a dense but permuted layout (time innermost) and a non-dense slice
    permuted = base.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    sliced = base[:, :, ::2]
    for x in (permuted, sliced):
        _check(x, 4, *_affine(8), activation="silu")
    # y.sum() hands back an expanded gradient (all strides 0)
    x = base.clone().requires_grad_()
    group_norm(x, 2, backend="triton").sum().backward()
    ref = base.detach().cpu().double().requires_grad_()
    F.group_norm(ref, 2).sum().backward()
    torch.testing.assert_close(x.grad.cpu().double(), ref.grad, atol=1e-5, rtol=0)


def test_empty_batch():
    x = torch.zeros(0, 8, 2, 3, 3, device=DEVICE, requires_grad=True)
    y = group_norm(x, 4, backend="triton")
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


# --- the kernels really run, integration ---------------------------------------------------------

def test_backend_triton_launches_the_kernels():
    kernels = _kernels()
    if DEVICE == "cpu":
        assert kernels.INTERPRETED, "CPU tests must run the kernels in Triton's interpreter"
    before = dict(kernels.LAUNCHES)
    layer = videogn.GroupNorm3d(16, num_groups=4, activation="relu", backend="triton").to(DEVICE)
    x = _make((1, 16, 2, 3, 3), torch.float32, "channels_last", seed=6).requires_grad_()
    y = layer(x)
    y.square().sum().backward()
    for name in ("stats", "finalize", "apply", "bwd_reduce", "bwd_finalize", "bwd_apply"):
        assert kernels.LAUNCHES[name] == before.get(name, 0) + 1, name
    native = videogn.GroupNorm3d(16, num_groups=4, activation="relu", backend="native").to(DEVICE)
    torch.testing.assert_close(y, native(x), atol=1e-5, rtol=0)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


def test_plan_splits_every_group_across_the_gpu():
    # N = 1..8 with 32 groups: the reduction of each group is split over many programs and the
    # grid holds >= 1 program per SM of an H100 (132) on every I3D-R50 layer shape
    plan = _kernels().plan
    cpu = torch.device("cpu")
    for n in (1, 2, 4, 8):
        for c, l in ((64, 8 * 56 * 56), (256, 8 * 56 * 56), (512, 8 * 28 * 28),
                     (1024, 4 * 14 * 14), (2048, 4 * 7 * 7)):
            for channels_last in (False, True):
                p = plan(n, c, l, c // 32, channels_last, cpu, interpreted=False)
                programs = n * p.num_cblocks * p.num_splits
                per_group = p.num_splits * max(1, (c // 32) // p.block_c)
                assert programs >= 132, (n, c, l, channels_last, programs)
                assert per_group >= 2, (n, c, l, channels_last, per_group)


def test_autocast_keeps_input_dtype():
    x = _make((2, 8, 2, 3, 3), torch.float16, "contiguous", seed=7)
    w, b = _affine(8)  # fp32 parameters, as in a mixed-precision model
    with torch.autocast(device_type=DEVICE, dtype=torch.bfloat16):
        y = group_norm(x, 4, w, b, backend="triton")
    assert y.dtype == torch.float16
    ref = F.group_norm(x.double().cpu(), 4, w.double().cpu(), b.double().cpu())
    torch.testing.assert_close(y.cpu().double(), ref, atol=4e-3, rtol=0)


def test_unsupported_inputs_and_fallback_log(monkeypatch, caplog):
    x64 = torch.zeros(1, 4, 3, dtype=torch.float64, device=DEVICE)
    assert "float64" in ops.triton_unsupported_reason(x64)
    with pytest.raises(RuntimeError, match="float64"):
        group_norm(x64, 2, backend="triton")
    monkeypatch.setattr(_kernels(), "INTERPRETED", False)
    assert "TRITON_INTERPRET" in ops.triton_unsupported_reason(torch.zeros(1, 4, 3))
    monkeypatch.setattr(ops, "_logged_reasons", set())
    with caplog.at_level(logging.WARNING, logger="videogn.ops"):
        ops.log_fallback_once("reason A")
        ops.log_fallback_once("reason A")
        ops.log_fallback_once("reason B")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "reason A" in messages[0] and "reason B" in messages[1]


def test_op_called_directly_rejects_bad_arguments():
    x = torch.zeros(1, 6, 4, device=DEVICE)
    with pytest.raises(ValueError, match="activation"):
        torch.ops.videogn.group_norm_fwd(x, None, None, 3, 1e-5, "gelu")
    with pytest.raises(ValueError, match="num_groups"):
        torch.ops.videogn.group_norm_fwd(x, None, None, 4, 1e-5, "none")


@pytest.mark.parametrize("backend", ["triton", "native"])
def test_fused_relu_keeps_nan_like_torch(backend):
    # F.relu keeps NaN and threshold_backward passes dy where the input is NaN; a fused
    # max(z, 0) / where(z > 0, dy, 0) would give 0 and 0. Channel biases [nan, -inf, 2, 0]
    # put NaN and -inf into z without poisoning the group statistics.
    x = _make((2, 4, 3, 5), torch.float32, "contiguous", seed=13)
    w = torch.ones(4, device=DEVICE)
    b = torch.tensor([float("nan"), float("-inf"), 2.0, 0.0], device=DEVICE)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(14)).to(x)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    y = group_norm(leaves[0], 2, leaves[1], leaves[2], activation="relu", backend=backend)
    y.backward(grad)
    y_ref, grads_ref = _reference(x, 2, w, b, 1e-5, "relu", grad)
    assert torch.isnan(y[:, 0]).all() and (y[:, 1] == 0).all()
    torch.testing.assert_close(y.detach().cpu().double(), y_ref, atol=1e-4, rtol=0, equal_nan=True)
    for name, leaf, g_ref in zip(("input", "weight", "bias"), leaves, grads_ref):
        torch.testing.assert_close(leaf.grad.cpu().double(), g_ref, atol=1e-4, rtol=1e-5,
                                   equal_nan=True, msg=name)
    assert leaves[2].grad[0] != 0  # dβ of the NaN channel: the sum of dy, not 0


def test_interpreter_refuses_cuda_tensors(monkeypatch):
    # TRITON_INTERPRET=1 on a GPU machine would run CUDA tensors through NumPy: a reason (so
    # "auto" warns once and falls back, "triton" raises), built here without a GPU
    from types import SimpleNamespace

    monkeypatch.setattr(_kernels(), "INTERPRETED", True)
    fake_cuda = SimpleNamespace(dtype=torch.float32, device=torch.device("cuda", 0))
    reason = ops.triton_unsupported_reason(fake_cuda)
    assert reason is not None and "TRITON_INTERPRET" in reason and "interpreter" in reason
    monkeypatch.setattr(_kernels(), "INTERPRETED", False)
    assert ops.triton_unsupported_reason(fake_cuda) is None


def test_parameters_on_another_device_are_rejected():
    # the kernels take raw pointers: a CPU weight for a CUDA input (or one on another GPU) must
    # raise a ValueError naming the parameter, in the functional and in the op called directly
    x = torch.zeros(1, 4, 6, device=DEVICE)
    meta = torch.ones(4, device="meta")
    for backend in ("triton", "native", "auto"):
        with pytest.raises(ValueError, match="weight is on meta"):
            group_norm(x, 2, meta, None, backend=backend)
        with pytest.raises(ValueError, match="bias is on meta"):
            group_norm(x, 2, None, meta, backend=backend)
    # the op's own check (called directly, a CPU weight with a CUDA input dispatches to the
    # CUDA kernel; a meta weight here would dispatch to the fake kernel, so call the check)
    with pytest.raises(ValueError, match="weight is on meta"):
        ops._check_op_args(x, 2, "none", meta, None)
    with pytest.raises(ValueError, match="cuda:1"):
        ops.check_param_devices(torch.empty(2, device="meta"),
                                torch.empty(2, device="meta"), torch.empty(2, device="cuda:1")
                                if torch.cuda.device_count() > 1 else _FakeParam("cuda:1"))


class _FakeParam:
    """Only what check_param_devices reads: a device (a second GPU without having one)."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_finalize_partials_are_bounded_and_exact(monkeypatch, layout):
    # with the bound at 8 partials per (n, group), L = 16 * 2 * 30 (60 splits of the default
    # interpreter plan) is merged from <= 8 partials of larger splits; results stay exact, and
    # without the bound the 60-split merge (many chunks of the finalize loop) is exact too
    kernels = _kernels()
    x = _make((2, 8, 960), torch.float32, layout if layout == "contiguous" else "contiguous",
              seed=15, loc=50.0)
    if layout == "channels_last":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)  # (N, C, L) with stride_c == 1
    w, b = _affine(8)
    for bound in (8, 10**9):
        monkeypatch.setattr(kernels, "_MAX_FINALIZE_PARTIALS", bound)
        kernels._plan.cache_clear()
        try:
            p = kernels.plan(2, 8, 960, 4, layout == "channels_last", x.device)
            if kernels.INTERPRETED:  # a GPU plan has other tiles (and its own fill rule)
                if bound == 8:
                    assert p.num_splits * 4 <= 8 and p.iters >= 30, p
                else:
                    assert p.num_splits == 30, p
            _check(x, 2, w, b, activation="silu", tol=(2e-4, 0.0))
        finally:
            kernels._plan.cache_clear()


def test_plan_bounds_finalize_work_on_huge_channels_last_layers():
    # 128 x 112 x 112 channels-last at N = 1: the stats grid still fills an H100, and each
    # finalize program merges a few thousand partials rather than tens of thousands
    plan = _kernels().plan
    cpu = torch.device("cpu")
    for c in (64, 256, 512):
        d = c // 32
        p = plan(1, c, 128 * 112 * 112, d, True, cpu, interpreted=False)
        assert p.num_cblocks * p.num_splits >= 132, (c, p)
        assert p.num_splits * d <= 2 * 4096, (c, p.num_splits, d)


def test_custom_op_opcheck():
    x = _make((2, 6, 3, 5), torch.float32, "channels_last", seed=8)
    w, b = _affine(6)
    args = (x.requires_grad_(), w.requires_grad_(), b, 3, 1e-5, "relu")
    torch.library.opcheck(
        torch.ops.videogn.group_norm_fwd.default, args,
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


def test_torch_compile_traces_the_custom_op():
    kernels = _kernels()
    layer = videogn.GroupNorm3d(8, num_groups=2, activation="silu", backend="triton").to(DEVICE)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = _make((2, 8, 2, 3, 4), torch.float32, "channels_last", seed=9).requires_grad_()
    before = kernels.LAUNCHES["apply"]
    y = compiled(x)
    assert kernels.LAUNCHES["apply"] == before + 1
    y.sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    y_ref = layer(x_ref)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


def test_torch_compile_inductor():
    layer = videogn.GroupNorm3d(8, num_groups=2, activation="relu", backend="triton").to(DEVICE)
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 1), layer).to(DEVICE)
    compiled = torch.compile(model)
    x = _make((1, 3, 2, 3, 4), torch.float32, "contiguous", seed=10)
    torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=0)


def test_torch_export_keeps_the_custom_op():
    model = torch.nn.Sequential(
        torch.nn.Conv3d(3, 8, 1),
        videogn.GroupNorm3d(8, num_groups=4, activation="relu", backend="triton"),
    ).to(DEVICE)
    x = _make((1, 3, 2, 3, 4), torch.float32, "contiguous", seed=11)
    exported = torch.export.export(model, (x,))
    targets = {str(node.target) for node in exported.graph.nodes}
    assert "videogn.group_norm_fwd.default" in targets
    torch.testing.assert_close(exported.module()(x), model(x))


# --- the benchmark script runs (numbers are not checked) ----------------------------------------

def test_bench_script_sections_run(monkeypatch, load_script):
    bench = load_script("bench_groupnorm")
    rows = bench.bench_cpu([(1, 32, 2, 4, 4)], reps=1)
    assert {r["layout"] for r in rows} == set(bench.LAYOUTS)
    assert rows[1]["GroupNorm3d.max_err"] < 1e-3  # channels-last, mean-1000 input
    # the CUDA section's code path, on the interpreter with a one-call stub for do_bench
    def one_call(fn):
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    monkeypatch.setattr(bench, "_do_bench", one_call)
    rows = bench.bench_cuda_case((1, 32, 2, 3, 3), torch.float32, "channels_last_3d",
                                 compile_=False, device=DEVICE)
    methods = {r["method"] for r in rows}
    assert {"copy", "ours fwd", "ours fwd+ReLU", "ours bwd", "eager GN bwd"} <= methods
    assert all(r["GB/s"] > 0 for r in rows)


# --- the compiled (GPU) kernels ------------------------------------------------------------------

def _gpu_compile(*args: str) -> object:
    """Run tests/ops/gpu_compile.py in a subprocess (the interpreter is off there)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(root / "tests" / "ops" / "gpu_compile.py"), *args],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_variant_per_tile_shape_across_i3d_layers():
    # counts (groups, blocks, splits, loop trips) are not specialised: the 16 forward+backward
    # launches of 8 layer shapes x 2 layouts compile one variant per distinct tile/alignment,
    # and the finalize kernels one per BLOCK_D (C/G rounded up to a power of two: 2..64 here)
    counts = _gpu_compile("--count-only", "--dtype", "bf16")
    assert counts["launches"] == 6 * 8 * 2
    assert counts["variants"]["_gn_finalize_kernel"] <= 6, counts
    assert counts["variants"]["_gn_bwd_finalize_kernel"] <= 6, counts
    for name in ("_gn_stats_kernel", "_gn_apply_kernel", "_gn_bwd_reduce_kernel"):
        assert counts["variants"][name] <= 9, counts


def test_kernels_compile_for_h100_with_16_byte_accesses():
    # the variants real launches use (Triton's own specialisation of the recorded arguments)
    # compile for sm_90, and their global accesses are 16-byte vectors where rows are aligned;
    # catches code the interpreter accepts but the compiler rejects. bf16 only (cold compiles
    # cost ~1 s each); every dtype and every I3D stage in the slow test
    records = _gpu_compile("--dtype", "bf16", "--shapes", "aligned")
    assert {r["kernel"] for r in records} == {
        "_gn_stats_kernel", "_gn_finalize_kernel", "_gn_apply_kernel",
        "_gn_bwd_reduce_kernel", "_gn_bwd_finalize_kernel", "_gn_bwd_apply_kernel"}
    for r in records:
        if "finalize" in r["kernel"]:
            continue  # tiny per-group reductions over the partials
        assert r["load_bytes"] == 16, r
        if "apply" in r["kernel"]:
            assert r["store_bytes"] == 16, r


@pytest.mark.slow
def test_every_i3d_variant_compiles_for_h100():
    # every I3D stage (T*H*W = 196 and 98 are not multiples of 16) and a > 2^31-element clip,
    # whose 64-bit strides give i64 variants
    records = _gpu_compile("--dtype", "fp32", "fp16", "bf16", "--shapes", "all")
    assert records and all(r["load_bytes"] > 0 for r in records)
    assert any("i64" in r["signature"].values() for r in records)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gpu_bf16_i3d_shape(layout):
    x = _make((2, 64, 4, 28, 28), torch.bfloat16, layout, seed=12, loc=2.0)
    _check(x, 32, *_affine(64), activation="relu")


@pytest.mark.gpu
@gpu
def test_gpu_auto_backend_picks_triton():
    kernels = _kernels()
    before = kernels.LAUNCHES["apply"]
    x = torch.randn(2, 32, 2, 8, 8, device="cuda")
    group_norm(x, 8)
    assert kernels.LAUNCHES["apply"] == before + 1


@pytest.mark.gpu
@gpu
def test_gpu_more_than_2_pow_31_elements():
    # N=1, C=64, L=2^25+5: 2^31 + 320 elements, so the last group sits beyond int32 offsets
    torch.cuda.empty_cache()
    x = torch.empty(1, 64, 2**25 + 5, dtype=torch.bfloat16, device="cuda")
    x.normal_(3.0, 2.0)
    x.requires_grad_()
    y = group_norm(x, 32, backend="triton")
    for channels in (slice(0, 2), slice(62, 64)):  # the first and the last group
        g = x.detach()[:, channels].double()  # (1, 2, L)
        ref = (g - g.mean()) / torch.sqrt(g.var(unbiased=False) + 1e-5)
        assert (y.detach()[:, channels].double() - ref).abs().max().item() < 3e-2
    del y, g, ref
    # backward with dy = x^2 (dy = 1 or dy = x would give dx = 0 and prove nothing)
    dy = x.detach().square()
    (dx,) = torch.autograd.grad(group_norm(x, 32, backend="triton"), x, dy)
    g = x.detach()[:, 62:].double()
    rstd = 1 / torch.sqrt(g.var(unbiased=False) + 1e-5)
    xhat = (g - g.mean()) * rstd
    d = dy[:, 62:].double()
    ref = rstd * (d - d.mean() - xhat * (d * xhat).mean())
    err = (dx[:, 62:].double() - ref).abs().max().item()
    assert err < 3e-2 * max(1.0, ref.abs().max().item()), err


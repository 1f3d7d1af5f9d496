"""Triton kernels for Group Normalization over ``(N, C, L)`` views of video tensors.

A tensor ``(N, C, *spatial)`` is read through three strides ``(stride_n, stride_c, stride_l)``
after its spatial dimensions are collapsed into one of length ``L = T*H*W``; contiguous
(``stride_l == 1``) and channels-last (``stride_c == 1``) layouts are both native, so no layout copy
is ever made, and the output is written with its own strides.

Why the work is split the way it is: video nets run a handful of clips per GPU with groups of
10^5-10^6 elements, so one program per (sample, group) leaves most of an H100 idle. Every pass is
therefore tiled over (sample, channel block, range of L) and the per-group reductions happen in
two phases:

forward
    1. ``_gn_stats_kernel``   per (n, channel, L-split) partial mean and centred sum of squares
       (a shifted, Chan-merged Welford: stable for a mean ~1000x the spread);
    2. ``_gn_finalize_kernel`` per (n, group): exact merge of the partials (parallel-variance
       formula), fp32 mean and rstd saved for backward;
    3. ``_gn_apply_kernel``   ``act((x - mean) * rstd * w + b)`` tile by tile.
backward
    1. ``_gn_bwd_reduce_kernel``  per (n, channel, L-split) sums of dz and dz * (x - mean), where
       dz is the upstream gradient through the fused activation (recomputed from x);
    2. ``_gn_bwd_finalize_kernel`` per (n, group): dγ/dβ partials and the two group coefficients;
    3. ``_gn_bwd_apply_kernel``   ``dx = rstd*w*dz + c2*(x - mean) + c3``.

All offsets are computed in 64 bits. The kernels never assume that C/G or L is a power of two.
Block sizes are chosen by :func:`plan` (deterministic heuristics for an H100-class GPU, no
autotuning, so launches are CUDA-graph and torch.compile friendly); under ``TRITON_INTERPRET=1``
small blocks are used so that CPU tests exercise every loop, split and mask.

Integer arguments that only count (groups, blocks, splits, loop trips) are excluded from Triton's
specialisation (``do_not_specialize``), so a network's many layer shapes share compiled variants;
C, L and the strides stay specialised because they decide whether accesses are 16-byte vectors.
The fused ReLU follows PyTorch on NaN (forward keeps it, backward passes dy like
``threshold_backward``). The tests' ``tests/ops/gpu_compile.py`` compiles the variants real
launches use for a GPU without one.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = [
    "ACT_CODES",
    "INTERPRETED",
    "LAUNCHES",
    "Plan",
    "plan",
    "forward",
    "backward",
]

#: activation name -> the ``ACT`` constexpr of the kernels
ACT_CODES = {"none": 0, "relu": 1, "silu": 2}


# Integers Triton would otherwise specialise (== 1, divisible by 16) that only count groups,
# blocks and loop trips: one compiled variant serves every layer shape. C and L (the masks along
# the contiguous dimension) and the strides stay specialised: they decide 16-byte accesses.
_REDUCE_COUNTS = ["num_cblocks", "num_splits", "iters"]
_REDUCE_COUNTS_BWD = ["G", "D"] + _REDUCE_COUNTS
_APPLY_COUNTS = ["G", "D", "num_cblocks", "num_lblocks"]
_FINALIZE_COUNTS = ["C", "L", "G", "D", "num_splits", "split_len"]
_FINALIZE_COUNTS_BWD = ["C", "L", "G", "D", "num_splits"]


@triton.jit
def _activation(z, ACT: tl.constexpr):
    if ACT == 1:
        # not tl.maximum(z, 0): F.relu keeps NaN, and so must the fused ReLU
        out = tl.where(z <= 0.0, 0.0, z)
    elif ACT == 2:
        out = z * tl.sigmoid(z)
    else:
        out = z
    return out


@triton.jit
def _activation_grad(z, dy, ACT: tl.constexpr):
    """Upstream gradient ``dy`` through the activation evaluated at its input ``z``."""
    if ACT == 1:
        # as threshold_backward: zero only where z <= 0, so a NaN input passes dy through
        dz = tl.where(z <= 0.0, 0.0, dy)
    elif ACT == 2:
        s = tl.sigmoid(z)
        dz = dy * (s * (1.0 + z * (1.0 - s)))
    else:
        dz = dy
    return dz


@triton.jit
def _tile_coords(pid, num_cblocks, num_lblocks, CB_FASTEST: tl.constexpr):
    """(n, channel block, L block) of program ``pid``; the fastest index follows memory order."""
    if CB_FASTEST:  # channels-last: neighbouring programs read neighbouring channels
        cb = pid % num_cblocks
        rest = pid // num_cblocks
        lb = rest % num_lblocks
        n = rest // num_lblocks
    else:
        lb = pid % num_lblocks
        rest = pid // num_lblocks
        cb = rest % num_cblocks
        n = rest // num_cblocks
    return n, cb, lb


@triton.jit(do_not_specialize=_REDUCE_COUNTS)
def _gn_stats_kernel(
    x_ptr, part_mean_ptr, part_m2_ptr,
    C, L,
    stride_n, stride_c, stride_l,
    num_cblocks, num_splits, iters,
    BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, CB_FASTEST: tl.constexpr,
):
    """Per (n, channel, split) mean and centred sum of squares of ``iters * BLOCK_L`` positions.

    Values are shifted by the first element of the range (per channel) before summing, and the
    per-tile moments are merged with Chan's formula, so neither the sum nor the variance loses
    digits to a large mean. Partials are laid out ``(N, num_splits, C)``.
    """
    pid = tl.program_id(0)
    n, cb, split = _tile_coords(pid, num_cblocks, num_splits, CB_FASTEST)
    n = n.to(tl.int64)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    c_off = c.to(tl.int64) * stride_c
    l_begin = split.to(tl.int64) * iters * BLOCK_L
    base = x_ptr + n * stride_n

    shift = tl.load(base + c_off + l_begin * stride_l, mask=c_mask, other=0.0).to(tl.float32)
    count = 0.0
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for i in range(iters):
        l0 = l_begin + i * BLOCK_L
        l = l0 + tl.arange(0, BLOCK_L).to(tl.int64)
        mask = c_mask[:, None] & (l < L)[None, :]
        # evict_last: the normalise pass reads these tiles again and may find them in L2
        x = tl.load(base + c_off[:, None] + l[None, :] * stride_l, mask=mask, other=0.0,
                    eviction_policy="evict_last")
        x = tl.where(mask, x.to(tl.float32) - shift[:, None], 0.0)
        nb = tl.minimum(tl.maximum(L - l0, 0), BLOCK_L).to(tl.float32)
        mean_b = tl.sum(x, axis=1) / tl.maximum(nb, 1.0)
        dev = tl.where(mask, x - mean_b[:, None], 0.0)
        m2_b = tl.sum(dev * dev, axis=1)
        total = count + nb
        frac = nb / tl.maximum(total, 1.0)
        delta = mean_b - mean
        mean = mean + delta * frac
        m2 = m2 + m2_b + delta * delta * (count * frac)
        count = total

    out = (n * num_splits + split) * C + c
    tl.store(part_mean_ptr + out, mean + shift, mask=c_mask)
    tl.store(part_m2_ptr + out, m2, mask=c_mask)


@triton.jit(do_not_specialize=_FINALIZE_COUNTS)
def _gn_finalize_kernel(
    part_mean_ptr, part_m2_ptr, mean_ptr, rstd_ptr,
    C, L, G, D, num_splits, split_len, inv_total, eps,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Merge the (split, channel) partials of one (n, group) into its mean and 1/std (fp32).

    Exact parallel-variance merge: ``M2 = sum(m2_i) + sum(n_i * (mean_i - mean)^2)``, with the
    weighted mean taken relative to the first partial so that a large mean keeps its digits.
    """
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    g = pid % G
    base = n * num_splits * C + g * D
    ref = tl.load(part_mean_ptr + base)

    acc = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        cnt = tl.minimum(tl.maximum(L - s.to(tl.int64) * split_len, 0), split_len).to(tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            mask = (s < num_splits)[:, None] & (d < D)[None, :]
            offs = base + s.to(tl.int64)[:, None] * C + d[None, :]
            pm = tl.load(part_mean_ptr + offs, mask=mask, other=0.0)
            acc += tl.where(mask, (pm - ref) * cnt[:, None], 0.0)
    mean = ref + tl.sum(tl.sum(acc, axis=1), axis=0) * inv_total

    acc = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        cnt = tl.minimum(tl.maximum(L - s.to(tl.int64) * split_len, 0), split_len).to(tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            mask = (s < num_splits)[:, None] & (d < D)[None, :]
            offs = base + s.to(tl.int64)[:, None] * C + d[None, :]
            pm = tl.load(part_mean_ptr + offs, mask=mask, other=0.0)
            pm2 = tl.load(part_m2_ptr + offs, mask=mask, other=0.0)
            dev = pm - mean
            acc += tl.where(mask, pm2 + cnt[:, None] * dev * dev, 0.0)
    var = tl.sum(tl.sum(acc, axis=1), axis=0) * inv_total
    tl.store(mean_ptr + pid, mean)
    tl.store(rstd_ptr + pid, 1.0 / tl.sqrt(var + eps))


@triton.jit(do_not_specialize=_APPLY_COUNTS)
def _gn_apply_kernel(
    x_ptr, y_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr,
    C, L, G, D,
    sx_n, sx_c, sx_l, sy_n, sy_c, sy_l,
    num_cblocks, num_lblocks,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, CB_FASTEST: tl.constexpr,
):
    """``y = act((x - mean) * rstd * w + b)`` on one (n, channel block, L block) tile.

    Programs walk the tensor in reverse of the statistics pass, so the first tiles they read are
    the ones the statistics pass read last and may still sit in L2.
    """
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    n, cb, lb = _tile_coords(pid, num_cblocks, num_lblocks, CB_FASTEST)
    n = n.to(tl.int64)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    l = lb.to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask = c_mask[:, None] & (l < L)[None, :]

    stat = n * G + c // D
    mean = tl.load(mean_ptr + stat, mask=c_mask, other=0.0)
    scale = tl.load(rstd_ptr + stat, mask=c_mask, other=0.0)
    if HAS_W:
        scale = scale * tl.load(w_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    c64 = c.to(tl.int64)
    # last use of x, and y is not read again here: both may leave L2 first
    x = tl.load(x_ptr + n * sx_n + c64[:, None] * sx_c + l[None, :] * sx_l, mask=mask, other=0.0,
                eviction_policy="evict_first")
    # (x - mean) first: both are close for large-mean inputs, so the difference is exact in fp32
    y = (x.to(tl.float32) - mean[:, None]) * scale[:, None]
    if HAS_B:
        y = y + tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)[:, None]
    y = _activation(y, ACT)
    y_ptrs = y_ptr + n * sy_n + c64[:, None] * sy_c + l[None, :] * sy_l
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask, eviction_policy="evict_first")


@triton.jit(do_not_specialize=_REDUCE_COUNTS_BWD)
def _gn_bwd_reduce_kernel(
    x_ptr, dy_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, part_s1_ptr, part_s2_ptr,
    C, L, G, D,
    sx_n, sx_c, sx_l, sd_n, sd_c, sd_l,
    num_cblocks, num_splits, iters,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, CB_FASTEST: tl.constexpr,
):
    """Per (n, channel, split): ``sum(dz)`` and ``sum(dz * (x - mean))``.

    dz is the gradient with respect to the activation's input (the affine output).
    """
    pid = tl.program_id(0)
    n, cb, split = _tile_coords(pid, num_cblocks, num_splits, CB_FASTEST)
    n = n.to(tl.int64)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    c64 = c.to(tl.int64)
    stat = n * G + c // D
    mean = tl.load(mean_ptr + stat, mask=c_mask, other=0.0)
    if ACT != 0:
        scale = tl.load(rstd_ptr + stat, mask=c_mask, other=0.0)
        if HAS_W:
            scale = scale * tl.load(w_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        if HAS_B:
            shift = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        else:
            shift = tl.zeros([BLOCK_C], dtype=tl.float32)
    x_base = x_ptr + n * sx_n + c64[:, None] * sx_c
    dy_base = dy_ptr + n * sd_n + c64[:, None] * sd_c
    l_begin = split.to(tl.int64) * iters * BLOCK_L

    s1 = tl.zeros([BLOCK_C, BLOCK_L], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_C, BLOCK_L], dtype=tl.float32)
    for i in range(iters):
        l = l_begin + i * BLOCK_L + tl.arange(0, BLOCK_L).to(tl.int64)
        mask = c_mask[:, None] & (l < L)[None, :]
        x = tl.load(x_base + l[None, :] * sx_l, mask=mask, other=0.0,
                    eviction_policy="evict_last").to(tl.float32)
        dy = tl.load(dy_base + l[None, :] * sd_l, mask=mask, other=0.0,
                     eviction_policy="evict_last").to(tl.float32)
        xc = x - mean[:, None]
        if ACT != 0:
            dy = _activation_grad(xc * scale[:, None] + shift[:, None], dy, ACT)
        dz = tl.where(mask, dy, 0.0)
        s1 += dz
        s2 += dz * xc
    out = (n * num_splits + split) * C + c
    tl.store(part_s1_ptr + out, tl.sum(s1, axis=1), mask=c_mask)
    tl.store(part_s2_ptr + out, tl.sum(s2, axis=1), mask=c_mask)


@triton.jit(do_not_specialize=_FINALIZE_COUNTS_BWD)
def _gn_bwd_finalize_kernel(
    part_s1_ptr, part_s2_ptr, rstd_ptr, w_ptr, dw_part_ptr, db_part_ptr, coef_ptr,
    C, L, G, D, num_splits, inv_total,
    HAS_W: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Per (n, group): per-channel dγ/dβ contributions and the coefficients c2, c3 of dx.

    With dxhat = dz * w over the group's M elements, ``a = mean(dxhat)`` and
    ``b = mean(dxhat * (x - mean))``: dx = rstd*w*dz - rstd^3*b*(x - mean) - rstd*a.
    """
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    g = pid % G
    rstd = tl.load(rstd_ptr + pid)
    base = n * num_splits * C + g * D
    a_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_mask = d < D
        sum1 = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
        sum2 = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
        for s0 in range(0, num_splits, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            mask = (s < num_splits)[:, None] & d_mask[None, :]
            offs = base + s.to(tl.int64)[:, None] * C + d[None, :]
            sum1 += tl.load(part_s1_ptr + offs, mask=mask, other=0.0)
            sum2 += tl.load(part_s2_ptr + offs, mask=mask, other=0.0)
        s1 = tl.sum(sum1, axis=0)
        s2 = tl.sum(sum2, axis=0)
        c = g * D + d
        tl.store(dw_part_ptr + n * C + c, s2 * rstd, mask=d_mask)
        tl.store(db_part_ptr + n * C + c, s1, mask=d_mask)
        if HAS_W:
            w = tl.load(w_ptr + c, mask=d_mask, other=0.0).to(tl.float32)
            s1 = s1 * w
            s2 = s2 * w
        a_acc += s1
        b_acc += s2
    a = tl.sum(a_acc, axis=0) * inv_total
    b = tl.sum(b_acc, axis=0) * inv_total
    tl.store(coef_ptr + 2 * pid, -rstd * rstd * rstd * b)
    tl.store(coef_ptr + 2 * pid + 1, -rstd * a)


@triton.jit(do_not_specialize=_APPLY_COUNTS)
def _gn_bwd_apply_kernel(
    x_ptr, dy_ptr, dx_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, coef_ptr,
    C, L, G, D,
    sx_n, sx_c, sx_l, sd_n, sd_c, sd_l, so_n, so_c, so_l,
    num_cblocks, num_lblocks,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, CB_FASTEST: tl.constexpr,
):
    """``dx = rstd*w*dz + c2*(x - mean) + c3`` on one tile (reverse order, as in the forward)."""
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    n, cb, lb = _tile_coords(pid, num_cblocks, num_lblocks, CB_FASTEST)
    n = n.to(tl.int64)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    c64 = c.to(tl.int64)
    l = lb.to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask = c_mask[:, None] & (l < L)[None, :]

    stat = n * G + c // D
    mean = tl.load(mean_ptr + stat, mask=c_mask, other=0.0)
    scale = tl.load(rstd_ptr + stat, mask=c_mask, other=0.0)
    if HAS_W:
        scale = scale * tl.load(w_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    c2 = tl.load(coef_ptr + 2 * stat, mask=c_mask, other=0.0)
    c3 = tl.load(coef_ptr + 2 * stat + 1, mask=c_mask, other=0.0)

    x = tl.load(x_ptr + n * sx_n + c64[:, None] * sx_c + l[None, :] * sx_l, mask=mask, other=0.0,
                eviction_policy="evict_first")
    dy = tl.load(dy_ptr + n * sd_n + c64[:, None] * sd_c + l[None, :] * sd_l, mask=mask,
                 other=0.0, eviction_policy="evict_first")
    xc = x.to(tl.float32) - mean[:, None]
    dz = dy.to(tl.float32)
    if ACT != 0:
        if HAS_B:
            shift = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        else:
            shift = tl.zeros([BLOCK_C], dtype=tl.float32)
        dz = _activation_grad(xc * scale[:, None] + shift[:, None], dz, ACT)
    dx = scale[:, None] * dz + c2[:, None] * xc + c3[:, None]
    dx_ptrs = dx_ptr + n * so_n + c64[:, None] * so_c + l[None, :] * so_l
    tl.store(dx_ptrs, dx.to(dx_ptr.dtype.element_ty), mask=mask, eviction_policy="evict_first")


def _is_interpreted() -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_gn_stats_kernel, InterpretedFunction)


#: True when the kernels were created under ``TRITON_INTERPRET=1`` and so run on CPU tensors.
INTERPRETED: bool = _is_interpreted()


# ---------------------------------------------------------------------------------------------
# Host side: launch plans and launchers (torch tensors in, kernels out).
# ---------------------------------------------------------------------------------------------

#: kernel name -> number of launches since import; tests use it to prove the kernels really ran
LAUNCHES: Counter[str] = Counter()

# H100-class defaults: ~2K elements per reduction tile and ~4K per elementwise tile keep 16-32
# fp32 values per thread (vectorised 16-byte loads, no spills); at least 4 programs per SM.
_REDUCE_TILE = 2048
_APPLY_TILE = 4096
_PROGRAMS_PER_SM = 4
_MAX_ITERS = 64
# Partials (splits x channels of a group) one finalize program merges. The finalize runs one
# program per (n, group); without a bound, channels-last layers with a huge T*H*W (128x112x112 at
# N=1) leave it thousands of partials to walk. Programs take more L-tiles instead (larger splits),
# unless that would leave the reduction grid short of _PROGRAMS_PER_SM per SM.
_MAX_FINALIZE_PARTIALS = 4096


@dataclass(frozen=True)
class Plan:
    """Tile sizes and grid of one (N, C, L, D, layout) problem.

    ``block_c x block_l`` is the reduction tile (statistics and backward sums); each reduction
    program covers ``iters`` tiles along L, so a group's reduction is split over
    ``num_splits * ceil(D / block_c)`` programs. ``apply_block_*`` is the elementwise tile.
    """

    block_c: int
    block_l: int
    iters: int
    num_splits: int
    num_cblocks: int
    apply_block_c: int
    apply_block_l: int
    apply_num_cblocks: int
    apply_num_lblocks: int
    block_s: int
    block_d: int
    cb_fastest: bool
    reduce_warps: int
    apply_warps: int


def _pow2(n: int) -> int:
    return 1 << (max(1, int(n)) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132  # an H100 SXM; only used for plans printed or compiled off-GPU


def plan(
    n: int,
    c: int,
    l: int,
    d: int,
    channels_fast: bool,
    device: torch.device,
    interpreted: Optional[bool] = None,
) -> Plan:
    """Choose tiles and splits for GN over (n, c, l) with d channels per group.

    Args:
        channels_fast: the channel stride is 1 (channels-last): tiles span many channels and few
            positions, and neighbouring programs take neighbouring channel blocks.
        device: where the kernels run (its SM count sets the split); a non-CUDA device plans for
            an H100.
        interpreted: plan for Triton's interpreter (default: whether the kernels are interpreted).
    """
    interpreted = INTERPRETED if interpreted is None else interpreted
    return _plan(n, c, l, d, channels_fast, device, interpreted)


@functools.lru_cache(maxsize=4096)  # plans are per layer shape: keep the launch path cheap
def _plan(
    n: int, c: int, l: int, d: int, channels_fast: bool, device: torch.device, interpreted: bool
) -> Plan:
    if interpreted:
        # Tiny tiles: the interpreter is slow, and small test tensors still get several channel
        # blocks, several splits of several iterations, ragged tails and multi-chunk finalisation.
        block_c, block_l, iters = 4, 16, 2
        iters = max(iters, _cdiv(_cdiv(l, block_l), max(1, _MAX_FINALIZE_PARTIALS // d)))
        apply_c, apply_l = 4, 16
        block_s, block_d = 2, 2
        reduce_warps = apply_warps = 1
    else:
        if channels_fast:
            block_c = min(_pow2(c), 256)
            block_l = max(1, _REDUCE_TILE // block_c)
            apply_c = min(_pow2(c), 256)
            apply_l = max(1, _APPLY_TILE // apply_c)
        else:
            block_l = min(_pow2(l), 1024)
            block_c = min(_pow2(c), max(1, _REDUCE_TILE // block_l))
            apply_l = min(_pow2(l), 2048)
            apply_c = min(_pow2(c), max(1, _APPLY_TILE // apply_l))
        lblocks = _cdiv(l, block_l)
        tiles = n * _cdiv(c, block_c) * lblocks
        iters = tiles // (_PROGRAMS_PER_SM * _num_sms(device))
        iters = max(1, min(_MAX_ITERS, lblocks, iters))
        fill_splits = _cdiv(_PROGRAMS_PER_SM * _num_sms(device), n * _cdiv(c, block_c))
        max_splits = max(fill_splits, _MAX_FINALIZE_PARTIALS // d, 1)
        iters = max(iters, _cdiv(lblocks, max_splits))
        block_d = min(_pow2(d), 128)
        # one BLOCK_S per BLOCK_D (not per split count): fewer compiled finalize variants
        block_s = max(1, 2048 // block_d)
        reduce_warps = 4 if block_c * block_l >= 1024 else 2
        apply_warps = 8 if apply_c * apply_l >= 4096 else 4
    return Plan(
        block_c=block_c,
        block_l=block_l,
        iters=iters,
        num_splits=_cdiv(l, iters * block_l),
        num_cblocks=_cdiv(c, block_c),
        apply_block_c=apply_c,
        apply_block_l=apply_l,
        apply_num_cblocks=_cdiv(c, apply_c),
        apply_num_lblocks=_cdiv(l, apply_l),
        block_s=block_s,
        block_d=block_d,
        cb_fastest=channels_fast,
        reduce_warps=reduce_warps,
        apply_warps=apply_warps,
    )


Strides = Tuple[int, int, int]


def forward(
    x: torch.Tensor,
    y: torch.Tensor,
    x_strides: Strides,
    y_strides: Strides,
    shape: Tuple[int, int, int],
    num_groups: int,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    eps: float,
    activation: str,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> None:
    """GN forward: writes ``y`` (through ``y_strides``) and the fp32 ``(N, G)`` ``mean``/``rstd``.

    Args:
        x, y: input and output, read/written as ``(N, C, L)`` through the given element strides.
        shape: ``(N, C, L)``; all of them > 0.
        weight, bias: contiguous ``(C,)`` tensors or None.
    """
    n, c, l = shape
    d = c // num_groups
    p = plan(n, c, l, d, x_strides[1] == 1 and c > 1, x.device)
    act = ACT_CODES[activation]
    part_mean = torch.empty((n, p.num_splits, c), device=x.device, dtype=torch.float32)
    part_m2 = torch.empty_like(part_mean)
    _gn_stats_kernel[(n * p.num_cblocks * p.num_splits,)](
        x, part_mean, part_m2, c, l, *x_strides, p.num_cblocks, p.num_splits, p.iters,
        BLOCK_C=p.block_c, BLOCK_L=p.block_l, CB_FASTEST=p.cb_fastest, num_warps=p.reduce_warps,
    )
    _gn_finalize_kernel[(n * num_groups,)](
        part_mean, part_m2, mean, rstd, c, l, num_groups, d, p.num_splits, p.iters * p.block_l,
        1.0 / (d * l), eps, BLOCK_S=p.block_s, BLOCK_D=p.block_d, num_warps=4,
    )
    dummy = mean  # never read: HAS_W / HAS_B are False
    _gn_apply_kernel[(n * p.apply_num_cblocks * p.apply_num_lblocks,)](
        x, y, mean, rstd, dummy if weight is None else weight, dummy if bias is None else bias,
        c, l, num_groups, d, *x_strides, *y_strides, p.apply_num_cblocks, p.apply_num_lblocks,
        HAS_W=weight is not None, HAS_B=bias is not None, ACT=act,
        BLOCK_C=p.apply_block_c, BLOCK_L=p.apply_block_l, CB_FASTEST=p.cb_fastest,
        num_warps=p.apply_warps,
    )
    LAUNCHES.update(("stats", "finalize", "apply"))


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    dx: torch.Tensor,
    dy_strides: Strides,
    x_strides: Strides,
    dx_strides: Strides,
    shape: Tuple[int, int, int],
    num_groups: int,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    activation: str,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """GN backward: writes ``dx`` and returns fp32 ``(dweight, dbias)`` of shape ``(C,)``.

    ``mean``/``rstd`` are the forward's fp32 ``(N, G)`` statistics; the activation's input is
    recomputed from ``x`` rather than stored.
    """
    n, c, l = shape
    d = c // num_groups
    p = plan(n, c, l, d, x_strides[1] == 1 and c > 1, x.device)
    act = ACT_CODES[activation]
    part_s1 = torch.empty((n, p.num_splits, c), device=x.device, dtype=torch.float32)
    part_s2 = torch.empty_like(part_s1)
    dummy = mean
    w = dummy if weight is None else weight
    b = dummy if bias is None else bias
    flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, ACT=act)
    _gn_bwd_reduce_kernel[(n * p.num_cblocks * p.num_splits,)](
        x, dy, mean, rstd, w, b, part_s1, part_s2, c, l, num_groups, d, *x_strides, *dy_strides,
        p.num_cblocks, p.num_splits, p.iters,
        BLOCK_C=p.block_c, BLOCK_L=p.block_l, CB_FASTEST=p.cb_fastest, num_warps=p.reduce_warps,
        **flags,
    )
    dw_part = torch.empty((n, c), device=x.device, dtype=torch.float32)
    db_part = torch.empty_like(dw_part)
    coef = torch.empty((n, num_groups, 2), device=x.device, dtype=torch.float32)
    _gn_bwd_finalize_kernel[(n * num_groups,)](
        part_s1, part_s2, rstd, w, dw_part, db_part, coef, c, l, num_groups, d, p.num_splits,
        1.0 / (d * l), HAS_W=weight is not None, BLOCK_S=p.block_s, BLOCK_D=p.block_d,
        num_warps=4,
    )
    _gn_bwd_apply_kernel[(n * p.apply_num_cblocks * p.apply_num_lblocks,)](
        x, dy, dx, mean, rstd, w, b, coef, c, l, num_groups, d, *x_strides, *dy_strides,
        *dx_strides, p.apply_num_cblocks, p.apply_num_lblocks,
        BLOCK_C=p.apply_block_c, BLOCK_L=p.apply_block_l, CB_FASTEST=p.cb_fastest,
        num_warps=p.apply_warps, **flags,
    )
    LAUNCHES.update(("bwd_reduce", "bwd_finalize", "bwd_apply"))
    return dw_part.sum(0), db_part.sum(0)

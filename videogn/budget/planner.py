"""The budget planner: for each clip length T, the largest clips per batch B whose *measured*
training step (:func:`videogn.budget.memory.measure_step_memory`) fits a memory budget in bytes.

Memory is assumed to grow with B; every answer is a measurement (B fits, and with ``check_next``
B + 1 was measured over the budget), a fitted line only chooses what to measure next.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from videogn.checks import check_int
from videogn.budget.memory import (
    ModelRef, StepMemory, StepTime, format_bytes, measure_step_memory, measure_step_time, resolve_method,
)
from videogn.budget.schedules import ClipShape
from videogn.runtime import resolve_device

__all__ = [
    "BudgetRow", "CheckpointingRow", "format_checkpointing_plan", "format_plan", "plan_budget",
    "plan_checkpointing", "save_plan",
]


@dataclass
class BudgetRow:
    """The planner's answer for one clip length.

    Attributes:
        batch_size: the largest clips per batch whose measured step fits the budget (0: not even one).
        peak_bytes: measured at ``batch_size`` (None when it is 0).
        next_peak_bytes: measured at ``batch_size + 1`` — over the budget, or None if not measured
            (``check_next=False``, or ``max_batch_size`` reached) or out of memory.
        fixed_bytes, bytes_per_clip: the line ``memory = a + b * B`` through the two measurements
            nearest ``batch_size`` (with ``check_next``: B and B + 1, so ``bytes_per_clip`` is the
            marginal cost of one more clip there).
        measurements: every ``[B, peak bytes or None]`` taken, in order.
        activation_checkpointing: the mode the steps were measured with.
    """

    model: str
    norm: str
    device: str
    method: str
    num_frames: int
    crop_size: int
    budget_bytes: int
    batch_size: int
    peak_bytes: Optional[int]
    next_peak_bytes: Optional[int]
    fixed_bytes: float
    bytes_per_clip: float
    measurements: list[list[Optional[int]]] = field(default_factory=list)
    activation_checkpointing: str = "none"

    @property
    def fits(self) -> bool:
        return self.batch_size > 0

    def as_clip_shape(self) -> ClipShape:
        """The row as a :class:`~videogn.budget.ClipShape` (for a sampler or a schedule)."""
        if self.batch_size < 1:
            raise ValueError(
                f"num_frames={self.num_frames}: not even one clip fits budget_bytes={self.budget_bytes}"
            )
        return ClipShape(self.num_frames, self.crop_size, self.batch_size)


def _line(p: tuple[int, int], q: Optional[tuple[int, int]]) -> tuple[float, float]:
    """``bytes = a + b * B`` through two measurements (through the origin and ``p`` if ``q`` is None)."""
    if q is None or q[0] == p[0]:
        return 0.0, p[1] / p[0]
    slope = (q[1] - p[1]) / (q[0] - p[0])
    return p[1] - slope * p[0], slope


def _local_line(points: dict[int, int], around: int) -> tuple[float, float]:
    """The line through the two measurements nearest ``around`` (the marginal cost of a clip there).

    Memory is not one line from B = 1 up: some kernels keep a per-sample workspace whose size does
    not depend on B, so small batches cost almost the same; only the local slope predicts well.
    """
    if not points:
        return math.nan, math.nan
    near = sorted(points, key=lambda b: (abs(b - around), -b))[:2]
    p = (near[0], points[near[0]])
    q = (near[1], points[near[1]]) if len(near) > 1 else None
    return _line(p, q)


def plan_budget(
    model_name: ModelRef,
    norm: str,
    clip_lengths: Sequence[int],
    crop_size: int,
    budget_bytes: int,
    device: Union[str, torch.device] = "auto",
    *,
    num_classes: int = 400,
    probe_batch_sizes: Sequence[int] = (1, 2),
    max_batch_size: int = 1024,
    check_next: bool = True,
    method: str = "auto",
    precision: str = "fp32",
    norm_kwargs: Optional[dict[str, Any]] = None,
    model_kwargs: Optional[dict[str, Any]] = None,
    max_measurements: int = 12,
    progress: Optional[Callable[[StepMemory], None]] = None,
    activation_checkpointing: str = "none",
) -> list[BudgetRow]:
    """For each clip length T, the largest clips per batch B whose measured training step fits.

    Per T: measure at ``probe_batch_sizes``; while no B over the budget is known, extrapolate the
    line ``memory = a + b * B`` through the two largest measurements (at most 4x further per try);
    then interpolate between the largest B that fits and the smallest that does not (bisecting every
    third try), until they are neighbours — so with ``check_next`` the answer is proven: B fits and
    B + 1 was measured over the budget. Memory is assumed to grow with B (activations scale with the
    batch). Every answer is a measurement; the line only chooses what to measure next.

    Args:
        model_name: a registered model name (or a zero-argument model factory).
        norm: the norm the model is built with ("gn", "bn", ...).
        clip_lengths: the T values, one row each.
        crop_size: S (clips are S x S).
        budget_bytes: the memory a step may use (per process).
        device: "auto", "cpu", "cuda" or "cuda:N".
        num_classes: classifier size.
        probe_batch_sizes: the first measurements of each T (at least one).
        max_batch_size: the largest B considered.
        check_next: measure B + 1 to prove B is the largest (one more step per T).
        method, precision, norm_kwargs, model_kwargs: as :func:`measure_step_memory`.
        max_measurements: measurements per T before giving up with the best fitting B so far.
        progress: called with every :class:`StepMemory` taken (e.g. to print it).
        activation_checkpointing: "none", "blocks" or "full", as ``trainer.activation_checkpointing``.

    Returns:
        One :class:`BudgetRow` per clip length, in the order given.
    """
    check_int("budget_bytes", budget_bytes, 1)
    check_int("crop_size", crop_size, 1)
    check_int("max_batch_size", max_batch_size, 1)
    check_int("max_measurements", max_measurements, 2)
    if not clip_lengths:
        raise ValueError(f"clip_lengths must name at least one clip length, got {clip_lengths!r}")
    for t in clip_lengths:
        check_int("clip_lengths item", t, 1)
    if not probe_batch_sizes:
        raise ValueError(f"probe_batch_sizes must hold at least one batch size, got {probe_batch_sizes!r}")
    for b in probe_batch_sizes:
        check_int("probe_batch_sizes item", b, 1)
        if b > max_batch_size:
            raise ValueError(f"probe_batch_sizes item {b} exceeds max_batch_size={max_batch_size}")
    dev = resolve_device(device)
    how = resolve_method(method, dev)
    name = model_name if isinstance(model_name, str) else getattr(model_name, "__name__", type(model_name).__name__)
    rows = []
    for t in clip_lengths:
        measured: dict[int, Optional[int]] = {}
        order: list[int] = []

        def measure(b: int) -> Optional[int]:
            if b not in measured:
                m = measure_step_memory(
                    model_name, t, crop_size, b, norm=norm, num_classes=num_classes, device=dev, method=how,
                    precision=precision, norm_kwargs=norm_kwargs, model_kwargs=model_kwargs,
                    activation_checkpointing=activation_checkpointing,
                )
                if progress is not None:
                    progress(m)
                measured[b] = m.peak_bytes
                order.append(b)
            return measured[b]

        def fits(b: int) -> bool:
            v = measure(b)
            return v is not None and v <= budget_bytes

        lo, hi = 0, max_batch_size + 1  # largest B known to fit, smallest known not to
        for b in sorted(set(probe_batch_sizes)):
            if b >= hi:
                break
            if fits(b):
                lo = max(lo, b)
            else:
                hi = min(hi, b)
        tries = 0
        while lo + 1 < hi and len(order) < max_measurements:
            tries += 1
            fitted = {b: v for b, v in measured.items() if v is not None}
            bracket = lo > 0 and hi <= max_batch_size and measured.get(hi) is not None
            if bracket and tries % 3 != 0 and measured[hi] > measured[lo]:
                # interpolate inside the bracket (every third try bisects, so a bent curve converges)
                m_lo, m_hi = measured[lo], measured[hi]
                guess = lo + math.floor((budget_bytes - m_lo) * (hi - lo) / (m_hi - m_lo))
            elif hi > max_batch_size:
                # extrapolate along the two largest fitting measurements, growing at most 4x per try
                top = sorted(fitted)[-2:]
                a, slope = _line((top[-1], fitted[top[-1]]), (top[0], fitted[top[0]]) if len(top) > 1 else None)
                guess = math.floor((budget_bytes - a) / slope) if slope > 0 else 4 * lo
                guess = min(guess, 4 * max(lo, 1))
            else:
                guess = (lo + hi) // 2
            if guess <= lo:
                if not check_next and lo > 0:
                    break  # the fit says lo is the answer; B + 1 is not confirmed
                guess = lo + 1
            guess = min(guess, hi - 1)
            if fits(guess):
                lo = guess
            else:
                hi = guess
        a, slope = _local_line({b: v for b, v in measured.items() if v is not None}, max(lo, 1))
        rows.append(BudgetRow(
            model=name, norm=norm if isinstance(model_name, str) else "custom", device=str(dev), method=how,
            num_frames=t, crop_size=crop_size, budget_bytes=budget_bytes, batch_size=lo,
            peak_bytes=measured.get(lo) if lo > 0 else None,
            next_peak_bytes=measured.get(lo + 1), fixed_bytes=a, bytes_per_clip=slope,
            measurements=[[b, measured[b]] for b in order], activation_checkpointing=activation_checkpointing,
        ))
    return rows


@dataclass
class CheckpointingRow:
    """One clip length planned without and with activation checkpointing.

    Attributes:
        batch_size, checked_batch_size: the largest B that fits without / with checkpointing.
        peak_bytes, checked_peak_bytes: measured at those B (None when nothing fits).
        timed_batch_size: the B both steps were timed at (the largest that fits either way; None
            when not even one clip fits without checkpointing).
        plain_seconds, checked_seconds: the interleaved step times at ``timed_batch_size``.
        time_ratio: median of the per-repetition ratios checked / plain (None when not timed).
        time_ratio_range: (smallest, largest) of those ratios.
    """

    model: str
    norm: str
    device: str
    method: str
    activation_checkpointing: str
    num_frames: int
    crop_size: int
    budget_bytes: int
    batch_size: int
    checked_batch_size: int
    peak_bytes: Optional[int]
    checked_peak_bytes: Optional[int]
    timed_batch_size: Optional[int]
    plain_seconds: list[float] = field(default_factory=list)
    checked_seconds: list[float] = field(default_factory=list)
    time_ratio: Optional[float] = None
    time_ratio_range: Optional[tuple[float, float]] = None


def plan_checkpointing(
    model_name: str,
    norm: str,
    clip_lengths: Sequence[int],
    crop_size: int,
    budget_bytes: int,
    device: Union[str, torch.device] = "auto",
    *,
    activation_checkpointing: str = "full",
    timing_reps: int = 5,
    progress: Optional[Callable[[Union[StepMemory, StepTime]], None]] = None,
    **plan_kwargs: Any,
) -> list[CheckpointingRow]:
    """:func:`plan_budget` without and with ``activation_checkpointing``, and for each T what it
    costs: the step timed both ways (:func:`~videogn.budget.memory.measure_step_time`,
    ``timing_reps`` interleaved pairs) at the largest B that fits without it.

    Args:
        model_name: a registered model name (its ModelSpec declares the blocks to recompute).
        activation_checkpointing: "blocks" or "full".
        plan_kwargs: passed to :func:`plan_budget` (``num_classes``, ``method``, ``precision``, ...).

    Returns:
        One :class:`CheckpointingRow` per clip length, in the order given.
    """
    if activation_checkpointing not in ("blocks", "full"):
        raise ValueError(f"activation_checkpointing must be 'blocks' or 'full', got {activation_checkpointing!r}")
    if not isinstance(model_name, str):
        raise ValueError(f"plan_checkpointing needs a registered model name, got {model_name!r}")
    check_int("timing_reps", timing_reps, 1)
    plain = plan_budget(model_name, norm, clip_lengths, crop_size, budget_bytes, device, progress=progress,
                        **plan_kwargs)
    checked = plan_budget(model_name, norm, clip_lengths, crop_size, budget_bytes, device, progress=progress,
                          activation_checkpointing=activation_checkpointing, **plan_kwargs)
    shared = ("num_classes", "precision", "norm_kwargs", "model_kwargs")  # what the timed steps share with the plan
    timing_kw = {k: plan_kwargs[k] for k in shared if k in plan_kwargs}
    rows = []
    for p, c in zip(plain, checked):
        timing: Optional[StepTime] = None
        if p.fits:
            timing = measure_step_time(model_name, p.num_frames, crop_size, p.batch_size, norm=norm, device=p.device,
                                       activation_checkpointing=activation_checkpointing, reps=timing_reps, **timing_kw)
            if progress is not None:
                progress(timing)
        rows.append(CheckpointingRow(
            model=p.model, norm=p.norm, device=p.device, method=p.method,
            activation_checkpointing=activation_checkpointing, num_frames=p.num_frames, crop_size=crop_size,
            budget_bytes=budget_bytes, batch_size=p.batch_size, checked_batch_size=c.batch_size,
            peak_bytes=p.peak_bytes, checked_peak_bytes=c.peak_bytes,
            timed_batch_size=p.batch_size if timing else None,
            plain_seconds=timing.plain_seconds if timing else [],
            checked_seconds=timing.checked_seconds if timing else [],
            time_ratio=timing.ratio if timing else None,
            time_ratio_range=(min(timing.ratios), max(timing.ratios)) if timing else None,
        ))
    return rows


def format_plan(rows: Sequence[BudgetRow]) -> str:
    """A markdown table of the plan."""
    lines = [
        "| model | norm | T | S | budget | B (fits) | peak at B | peak at B+1 | fit: fixed + per clip | method |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.norm} | {r.num_frames} | {r.crop_size} | {format_bytes(r.budget_bytes)} "
            f"| {r.batch_size} | {format_bytes(r.peak_bytes)} | {format_bytes(r.next_peak_bytes)} "
            f"| {format_bytes(r.fixed_bytes)} + {format_bytes(r.bytes_per_clip)} | {r.method} on {r.device} |"
        )
    return "\n".join(lines)


def format_checkpointing_plan(rows: Sequence[CheckpointingRow]) -> str:
    """A markdown table of :func:`plan_checkpointing`'s rows."""
    lines = [
        "| model | norm | T | S | budget | B (none) | B (ckpt) | peak at B (none) | peak at B (ckpt) "
        "| step time ckpt / none at B (none): median [min, max] | method |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cost = "-"
        if r.time_ratio is not None and r.time_ratio_range is not None:
            lo, hi = r.time_ratio_range
            cost = f"{r.time_ratio:.2f}x [{lo:.2f}, {hi:.2f}] at B={r.timed_batch_size}"
        lines.append(
            f"| {r.model} | {r.norm} | {r.num_frames} | {r.crop_size} | {format_bytes(r.budget_bytes)} "
            f"| {r.batch_size} | {r.checked_batch_size} ({r.activation_checkpointing}) | {format_bytes(r.peak_bytes)} "
            f"| {format_bytes(r.checked_peak_bytes)} | {cost} | {r.method} on {r.device} |"
        )
    return "\n".join(lines)


def save_plan(
    rows: Sequence[Union[BudgetRow, CheckpointingRow]],
    path: Union[str, os.PathLike],
    meta: Optional[dict[str, Any]] = None,
) -> Path:
    """Write the plan (rows of :func:`plan_budget` or :func:`plan_checkpointing`) as JSON
    (``{"meta": ..., "rows": [...]}``) or CSV (list and tuple fields as JSON), by the file's suffix."""
    path = Path(path)
    if path.suffix not in (".json", ".csv"):
        raise ValueError(f"the plan's path must end in .json or .csv, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [asdict(r) for r in rows]
    if path.suffix == ".json":
        path.write_text(json.dumps({"meta": meta or {}, "rows": records}, indent=2) + "\n")
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["model"])
            writer.writeheader()
            for rec in records:
                writer.writerow({k: json.dumps(v) if isinstance(v, (list, tuple)) else v for k, v in rec.items()})
    return path

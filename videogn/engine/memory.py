"""Measured memory of one training step, and a planner that picks clips per batch for a budget.

What is measured: the peak memory that one training step (forward, cross-entropy loss, backward,
SGD-with-momentum step) holds for *training tensors* — parameters, buffers, gradients, optimizer
state, the input batch and every activation/temporary — above what the process held before the
model was built. One step is first run unmeasured so the optimizer state exists (the steady state
of training), then the next step is measured. How, per device:

- ``cuda``: ``torch.cuda.reset_peak_memory_stats`` before the measured step and
  ``max_memory_allocated`` after it, minus ``memory_allocated`` before the model was built (the
  caching allocator's ``max_memory_reserved`` is reported too: it adds fragmentation and is what
  ``nvidia-smi`` sees; keep a margin for it and for the CUDA context). Out-of-memory counts as
  "does not fit".
- ``alloc`` (CPU default): the bytes of the live tensors before the measured step plus the peak of
  the running sum of the step's allocation and free events, recorded by ``torch.profiler`` with
  ``profile_memory=True`` (every tensor allocation of PyTorch's CPU allocator is an event). This is
  the CPU counterpart of ``max_memory_allocated``: exact to the byte, repeatable, unaffected by
  the other processes on the machine and by how glibc keeps or returns freed pages. It does not
  see memory allocated outside PyTorch's allocator (oneDNN primitive caches, thread stacks, the
  malloc arena's slack), which is why :func:`plan_budget`'s budget should keep a margin.
- ``rss`` (CPU, a cross-check): the step runs in a fresh Python subprocess; the result is the peak
  resident set size (``VmHWM`` / ``ru_maxrss``) minus the resident size just before the model was
  built (after a one-clip warm-up of a throw-away copy, so library code paged in on first use is
  not charged to the step). It includes allocator slack and is what the OS would kill you for, but
  it is noisier and costs a process start per measurement; it needs Linux ``/proc``.

Reading ``ru_maxrss`` minus the RSS after model creation (the obvious CPU method) would leave the
parameters out and charge lazily loaded library pages to the step; ``alloc`` avoids both, and
``rss`` keeps the OS view for comparison (``docs/budget.md`` has both for ``i3d_tiny``).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from videogn.data.budget import ClipShape

__all__ = [
    "AMP_MODES",
    "METHODS",
    "BudgetRow",
    "StepMemory",
    "format_bytes",
    "format_plan",
    "measure_step_memory",
    "parse_bytes",
    "plan_budget",
    "save_plan",
]

METHODS = ("auto", "cuda", "alloc", "rss")
AMP_MODES = ("none", "bf16", "fp16")

ModelSpec = Union[str, Callable[[], nn.Module]]


@dataclass(frozen=True)
class StepMemory:
    """One measurement.

    Attributes:
        peak_bytes: peak training memory of the step (see the module docstring); None if the
            device ran out of memory.
        reserved_bytes: CUDA caching-allocator peak (reserved), None elsewhere.
        model_bytes: parameters and buffers.
        method: "cuda", "alloc" or "rss".
    """

    num_frames: int
    crop_size: int
    batch_size: int
    device: str
    method: str
    peak_bytes: Optional[int]
    reserved_bytes: Optional[int] = None
    model_bytes: int = 0

    @property
    def out_of_memory(self) -> bool:
        return self.peak_bytes is None


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _resolve_device(device: Union[str, torch.device]) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA device is available")
    return dev


def _resolve_method(method: str, dev: torch.device) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "cuda" if dev.type == "cuda" else "alloc"
    if (method == "cuda") != (dev.type == "cuda"):
        raise ValueError(f"method={method!r} does not measure device {str(dev)!r}")
    if method == "rss" and not Path("/proc/self/status").exists():
        raise ValueError("method='rss' needs Linux /proc (VmRSS/VmHWM); use method='alloc'")
    return method


def _model_factory(
    model: ModelSpec, norm: str, num_classes: int, norm_kwargs: Optional[dict], model_kwargs: Optional[dict]
) -> Callable[[], nn.Module]:
    if isinstance(model, str):
        from videogn.models import create_model  # the registry validates the name

        kwargs = dict(model_kwargs or {})
        return lambda: create_model(model, num_classes, norm, norm_kwargs=norm_kwargs, **kwargs)
    if callable(model):
        return model
    raise TypeError(f"model must be a registered model name or a zero-argument callable, got {type(model).__name__}")


def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _optimizer_tensors(opt: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                yield value


class _Step:
    """Model, optimizer and one fixed batch on a device; ``run()`` is one training step."""

    def __init__(
        self, factory: Callable[[], nn.Module], shape: tuple[int, int, int], num_classes: int,
        dev: torch.device, amp: str, seed: int,
    ) -> None:
        t, s, b = shape
        torch.manual_seed(seed)
        self.model = factory().to(dev).train()
        # the trainer's optimizer: Nesterov SGD with momentum (one state tensor per parameter)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
        self.x = torch.randn(b, 3, t, s, s, device=dev)  # (N, 3, T, H, W)
        self.y = torch.randint(0, num_classes, (b,), device=dev)
        self.dev = dev
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]

    def run(self) -> None:
        ctx = (
            torch.autocast(self.dev.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None else contextlib.nullcontext()
        )
        with ctx:
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def live_bytes(self) -> int:
        m = self.model
        return _tensor_bytes([*m.parameters(), *m.buffers(), *_optimizer_tensors(self.opt), self.x, self.y])

    def model_bytes(self) -> int:
        return _tensor_bytes([*self.model.parameters(), *self.model.buffers()])


# Kineto logs every profiler start/stop (and, on a CUDA build without a GPU, a failed device count)
# to file descriptor 2; the planner profiles dozens of steps, so those lines are filtered out.
_KINETO_NOISE = re.compile(r"^(USDT|ERROR|WARNING|INFO):\S+ \S+ \d+:\d+ \S+\.cpp:\d+\] "
                           r"(profiler_start|profiler_stop|gpuGetDeviceCount failed.*)$")


@contextlib.contextmanager
def _without_kineto_notices() -> Iterator[None]:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr is not a real file (e.g. captured): nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines() if not _KINETO_NOISE.match(ln)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def _profiled_peak_delta(fn: Callable[[], None]) -> int:
    """Peak of the running sum of CPU allocations minus frees while ``fn`` runs."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with _without_kineto_notices(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    except AttributeError as err:  # the memory events moved in this torch version
        raise RuntimeError(
            f"torch {torch.__version__}: profiler memory events not found; use method='rss'"
        ) from err
    deltas = sorted(
        (e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    running = peak = 0
    for _, nbytes in deltas:
        running += nbytes
        peak = max(peak, running)
    return peak


def _measure_alloc(
    factory: Callable[[], nn.Module], shape: tuple[int, int, int], num_classes: int, amp: str, seed: int
) -> tuple[int, int]:
    step = _Step(factory, shape, num_classes, torch.device("cpu"), amp, seed)
    step.run()  # creates the momentum buffers: measure the steady state
    live = step.live_bytes()
    peak = live + _profiled_peak_delta(step.run)
    return peak, step.model_bytes()


def _measure_cuda(
    factory: Callable[[], nn.Module], shape: tuple[int, int, int], num_classes: int, dev: torch.device, amp: str,
    seed: int,
) -> tuple[Optional[int], Optional[int], int]:
    gc.collect()
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    base_alloc = torch.cuda.memory_allocated(dev)
    base_reserved = torch.cuda.memory_reserved(dev)
    step = None
    try:
        step = _Step(factory, shape, num_classes, dev, amp, seed)
        step.run()
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step.run()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base_alloc
        reserved = torch.cuda.max_memory_reserved(dev) - base_reserved
        model_bytes = step.model_bytes()
        return peak, reserved, model_bytes
    except torch.cuda.OutOfMemoryError:
        return None, None, 0
    finally:
        del step
        gc.collect()
        torch.cuda.empty_cache()


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def _rss_child(spec_json: str) -> None:
    """Body of the ``rss`` subprocess: prints one JSON line with the measurement."""
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    factory = _model_factory(spec["model"], spec["norm"], spec["num_classes"], spec["norm_kwargs"], spec["model_kwargs"])
    t, s, b = spec["shape"]
    # page in the kernels' code with a throw-away one-clip step, so it is not charged to the step
    warm = _Step(factory, (min(t, 4), min(s, 32), 1), spec["num_classes"], torch.device("cpu"), spec["amp"], 0)
    warm.run()
    del warm
    gc.collect()
    before = _proc_status_bytes("VmRSS")
    step = _Step(factory, (t, s, b), spec["num_classes"], torch.device("cpu"), spec["amp"], spec["seed"])
    step.run()
    step.run()
    peak = max(_proc_status_bytes("VmHWM"), _proc_status_bytes("VmRSS"))
    print(json.dumps({"peak_bytes": peak - before, "model_bytes": step.model_bytes(), "rss_before": before}))


def _measure_rss(
    model: ModelSpec, norm: str, num_classes: int, norm_kwargs: Optional[dict], model_kwargs: Optional[dict],
    shape: tuple[int, int, int], amp: str, seed: int,
) -> tuple[int, int]:
    if not isinstance(model, str):
        raise ValueError(f"method='rss' runs in a subprocess and needs a registered model name, got model={model!r}")
    spec = {
        "model": model, "norm": norm, "num_classes": num_classes, "norm_kwargs": norm_kwargs,
        "model_kwargs": model_kwargs, "shape": list(shape), "amp": amp, "seed": seed,
        "threads": torch.get_num_threads(),
    }
    code = "import sys; from videogn.engine.memory import _rss_child; _rss_child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"rss measurement of shape (T, S, B)={shape} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(result["peak_bytes"]), int(result["model_bytes"])


def measure_step_memory(
    model: ModelSpec,
    num_frames: int,
    crop_size: int,
    batch_size: int,
    *,
    norm: str = "gn",
    num_classes: int = 400,
    device: Union[str, torch.device] = "auto",
    method: str = "auto",
    amp: str = "none",
    norm_kwargs: Optional[dict[str, Any]] = None,
    model_kwargs: Optional[dict[str, Any]] = None,
    seed: int = 0,
) -> StepMemory:
    """Peak memory of one training step on clips of shape (batch_size, 3, num_frames, crop, crop).

    Args:
        model: a name of :func:`videogn.models.list_models` (built with ``norm``, ``norm_kwargs``,
            ``model_kwargs``) or a zero-argument callable returning the model (``norm`` ignored).
        num_frames, crop_size, batch_size: the input shape T, S, B.
        num_classes: classifier size (the loss uses random labels).
        device: "auto" (CUDA if available), "cpu", "cuda" or "cuda:N".
        method: "auto" ("cuda" on CUDA, "alloc" on CPU), "alloc" or "rss" (see the module docstring).
        amp: "none", "bf16" or "fp16" autocast for the forward pass.
        seed: seeds the model's initialisation and the batch.
    """
    _check_int("num_frames", num_frames, 1)
    _check_int("crop_size", crop_size, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("num_classes", num_classes, 1)
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    dev = _resolve_device(device)
    how = _resolve_method(method, dev)
    shape = (num_frames, crop_size, batch_size)
    reserved: Optional[int] = None
    if how == "rss":
        peak, model_bytes = _measure_rss(model, norm, num_classes, norm_kwargs, model_kwargs, shape, amp, seed)
    else:
        factory = _model_factory(model, norm, num_classes, norm_kwargs, model_kwargs)
        if how == "cuda":
            peak, reserved, model_bytes = _measure_cuda(factory, shape, num_classes, dev, amp, seed)
        else:
            peak, model_bytes = _measure_alloc(factory, shape, num_classes, amp, seed)
    return StepMemory(num_frames, crop_size, batch_size, str(dev), how, peak, reserved, model_bytes)


# -- the planner ---------------------------------------------------------------------------------------


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

    @property
    def fits(self) -> bool:
        return self.batch_size > 0

    def as_clip_shape(self, lr_scale: float = 1.0) -> ClipShape:
        """The row as a :class:`~videogn.data.budget.ClipShape` (for a sampler or a schedule)."""
        if self.batch_size < 1:
            raise ValueError(
                f"num_frames={self.num_frames}: not even one clip fits budget_bytes={self.budget_bytes}"
            )
        return ClipShape(self.num_frames, self.crop_size, self.batch_size, lr_scale)


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
    model_name: ModelSpec,
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
    amp: str = "none",
    norm_kwargs: Optional[dict[str, Any]] = None,
    model_kwargs: Optional[dict[str, Any]] = None,
    max_measurements: int = 12,
    progress: Optional[Callable[[StepMemory], None]] = None,
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
        method, amp, norm_kwargs, model_kwargs: as :func:`measure_step_memory`.
        max_measurements: measurements per T before giving up with the best fitting B so far.
        progress: called with every :class:`StepMemory` taken (e.g. to print it).

    Returns:
        One :class:`BudgetRow` per clip length, in the order given.
    """
    _check_int("budget_bytes", budget_bytes, 1)
    _check_int("crop_size", crop_size, 1)
    _check_int("max_batch_size", max_batch_size, 1)
    _check_int("max_measurements", max_measurements, 2)
    if not clip_lengths:
        raise ValueError(f"clip_lengths must name at least one clip length, got {clip_lengths!r}")
    for t in clip_lengths:
        _check_int("clip_lengths item", t, 1)
    if not probe_batch_sizes:
        raise ValueError(f"probe_batch_sizes must hold at least one batch size, got {probe_batch_sizes!r}")
    for b in probe_batch_sizes:
        _check_int("probe_batch_sizes item", b, 1)
        if b > max_batch_size:
            raise ValueError(f"probe_batch_sizes item {b} exceeds max_batch_size={max_batch_size}")
    dev = _resolve_device(device)
    how = _resolve_method(method, dev)
    name = model_name if isinstance(model_name, str) else getattr(model_name, "__name__", type(model_name).__name__)
    rows = []
    for t in clip_lengths:
        measured: dict[int, Optional[int]] = {}
        order: list[int] = []

        def measure(b: int) -> Optional[int]:
            if b not in measured:
                m = measure_step_memory(
                    model_name, t, crop_size, b, norm=norm, num_classes=num_classes, device=dev, method=how,
                    amp=amp, norm_kwargs=norm_kwargs, model_kwargs=model_kwargs,
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
            measurements=[[b, measured[b]] for b in order],
        ))
    return rows


# -- output ----------------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def parse_bytes(text: Union[str, int]) -> int:
    """"12GiB", "500MB", "1.5G" (binary), "2e9" or an int -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return _check_int("bytes", text, 1)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"a memory size must look like 4GiB, 500MB, 1.5G or 2e9, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"a memory size must be at least 1 byte, got {text!r}")
    return int(value)


def format_bytes(n: Optional[float]) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    return f"{n / 1024**2:.1f} MiB"


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


def save_plan(rows: Sequence[BudgetRow], path: Union[str, os.PathLike], meta: Optional[dict[str, Any]] = None) -> Path:
    """Write the plan as JSON (``{"meta": ..., "rows": [...]}``) or CSV, by the file's suffix."""
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
                writer.writerow({**rec, "measurements": json.dumps(rec["measurements"])})
    return path

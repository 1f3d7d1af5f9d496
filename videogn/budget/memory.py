"""Peak memory of one training step — the trainer's own (:func:`videogn.runtime.forward_backward`,
:func:`videogn.runtime.optimizer_step`, :func:`videogn.optim.build_sgd`), so the planner
measures what training will use — and the byte sizes the planner reads and prints.

Measured: the tensors a steady-state step holds (parameters, buffers, gradients, momentum, the
batch, activations and temporaries) above what the process held before the model was built; one
unmeasured step first creates the optimizer state. Methods:

- ``cuda``: ``max_memory_allocated`` over the step (``max_memory_reserved`` reported too: it is what
  ``nvidia-smi`` sees). Out-of-memory counts as "does not fit".
- ``alloc`` (CPU default): live tensor bytes plus the peak running sum of the step's allocation
  events from ``torch.profiler(profile_memory=True)``: exact and repeatable, blind to memory outside
  PyTorch's allocator (oneDNN caches, malloc slack), so keep a margin in the budget.
- ``rss`` (CPU cross-check): peak resident set of a fresh subprocess minus its size before the
  model was built; includes allocator slack, noisier, Linux ``/proc`` only.

With ``activation_checkpointing`` the model is transformed as the trainer does
(:func:`videogn.models.checkpointing.apply_activation_checkpointing`); :func:`measure_step_time`
times the step without and with it, interleaved, for what the saving costs.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import torch
from torch import nn

from videogn.checks import check_int
from videogn.optim import build_sgd
from videogn.runtime import PRECISIONS, forward_backward, optimizer_step, resolve_device, seed_everything

__all__ = [
    "METHODS",
    "StepMemory",
    "StepTime",
    "format_bytes",
    "measure_step_memory",
    "measure_step_time",
    "parse_bytes",
    "resolve_method",
]

METHODS = ("auto", "cuda", "alloc", "rss")

ModelRef = Union[str, Callable[[], nn.Module]]


@dataclass(frozen=True)
class StepMemory:
    """One measurement.

    Attributes:
        peak_bytes: peak training memory of the step (see the module docstring); None if the
            device ran out of memory.
        reserved_bytes: CUDA caching-allocator peak (reserved), None elsewhere.
        model_bytes: parameters and buffers.
        state_bytes: what the step starts from: parameters, buffers, optimizer state and the batch
            (None for ``rss``, or out of memory).
        method: "cuda", "alloc" or "rss".
        activation_checkpointing: the mode the model ran with.
    """

    num_frames: int
    crop_size: int
    batch_size: int
    device: str
    method: str
    peak_bytes: Optional[int]
    reserved_bytes: Optional[int] = None
    model_bytes: int = 0
    state_bytes: Optional[int] = None
    activation_checkpointing: str = "none"

    @property
    def activation_bytes(self) -> Optional[int]:
        """What the step itself allocates above ``state_bytes`` (activations, gradients,
        temporaries); None when either is unknown."""
        if self.peak_bytes is None or self.state_bytes is None:
            return None
        return self.peak_bytes - self.state_bytes

    @property
    def out_of_memory(self) -> bool:
        return self.peak_bytes is None


def resolve_method(method: str, dev: torch.device) -> str:
    """The measuring method for ``method`` ("auto" picks by device) on ``dev``; refuses a mismatch."""
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
    model: ModelRef, norm: str, num_classes: int, norm_kwargs: Optional[dict], model_kwargs: Optional[dict],
    activation_checkpointing: str = "none",
) -> Callable[[], nn.Module]:
    from videogn.models.checkpointing import apply_activation_checkpointing, check_checkpointing_mode

    check_checkpointing_mode(activation_checkpointing)
    if isinstance(model, str):
        from videogn.models import create_model  # the registry validates the name

        kwargs = dict(model_kwargs or {})

        def build() -> nn.Module:
            net = create_model(model, num_classes, norm, norm_kwargs=norm_kwargs, **kwargs)
            apply_activation_checkpointing(net, model, activation_checkpointing)  # as the trainer does
            return net

        return build
    if callable(model):
        if activation_checkpointing != "none":
            raise ValueError(
                f"activation_checkpointing={activation_checkpointing!r} needs a registered model name (its "
                f"ModelSpec declares the blocks), got the callable {model!r}; apply "
                "videogn.models.checkpointing.apply_activation_checkpointing inside the callable instead"
            )
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
    """Model, the trainer's optimizer and one batch on a device; ``run()`` is the trainer's step."""

    def __init__(
        self, factory: Callable[[], nn.Module], shape: tuple[int, int, int], num_classes: int,
        dev: torch.device, precision: str, seed: int,
    ) -> None:
        t, s, b = shape
        seed_everything(seed)
        self.model = factory().to(dev).train()
        self.opt = build_sgd(self.model, 1e-3)  # momentum: one state tensor per parameter, as in training
        self.x = torch.randn(b, 3, t, s, s, device=dev)  # (N, 3, T, H, W)
        self.y = torch.randint(0, num_classes, (b,), device=dev)
        self.precision = precision
        # fp16 trains with a GradScaler, whose scaled loss and unscaling are part of the step
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and dev.type == "cuda" else None

    def run(self) -> None:
        forward_backward(self.model, self.x, self.y, precision=self.precision, scaler=self.scaler)
        optimizer_step(self.model, self.opt, scaler=self.scaler)

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
    factory: Callable[[], nn.Module], shape: tuple[int, int, int], num_classes: int, precision: str, seed: int
) -> tuple[int, int, int]:
    step = _Step(factory, shape, num_classes, torch.device("cpu"), precision, seed)
    step.run()  # creates the momentum buffers: measure the steady state
    live = step.live_bytes()
    peak = live + _profiled_peak_delta(step.run)
    return peak, step.model_bytes(), live


def _measure_cuda(
    factory: Callable[[], nn.Module], shape: tuple[int, int, int], num_classes: int, dev: torch.device, precision: str,
    seed: int,
) -> tuple[Optional[int], Optional[int], int, Optional[int]]:
    gc.collect()
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    base_alloc = torch.cuda.memory_allocated(dev)
    base_reserved = torch.cuda.memory_reserved(dev)
    step = None
    try:
        step = _Step(factory, shape, num_classes, dev, precision, seed)
        step.run()
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step.run()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base_alloc
        reserved = torch.cuda.max_memory_reserved(dev) - base_reserved
        model_bytes = step.model_bytes()
        return peak, reserved, model_bytes, step.live_bytes()
    except torch.cuda.OutOfMemoryError:
        return None, None, 0, None
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
    factory = _model_factory(spec["model"], spec["norm"], spec["num_classes"], spec["norm_kwargs"],
                             spec["model_kwargs"], spec["activation_checkpointing"])
    t, s, b = spec["shape"]
    # page in the kernels' code with a throw-away one-clip step, so it is not charged to the step
    warm = _Step(factory, (min(t, 4), min(s, 32), 1), spec["num_classes"], torch.device("cpu"), spec["precision"], 0)
    warm.run()
    del warm
    gc.collect()
    before = _proc_status_bytes("VmRSS")
    step = _Step(factory, (t, s, b), spec["num_classes"], torch.device("cpu"), spec["precision"], spec["seed"])
    step.run()
    step.run()
    peak = max(_proc_status_bytes("VmHWM"), _proc_status_bytes("VmRSS"))
    print(json.dumps({"peak_bytes": peak - before, "model_bytes": step.model_bytes(), "rss_before": before}))


def _measure_rss(
    model: ModelRef, norm: str, num_classes: int, norm_kwargs: Optional[dict], model_kwargs: Optional[dict],
    shape: tuple[int, int, int], precision: str, seed: int, activation_checkpointing: str,
) -> tuple[int, int]:
    if not isinstance(model, str):
        raise ValueError(f"method='rss' runs in a subprocess and needs a registered model name, got model={model!r}")
    spec = {
        "model": model, "norm": norm, "num_classes": num_classes, "norm_kwargs": norm_kwargs,
        "model_kwargs": model_kwargs, "shape": list(shape), "precision": precision, "seed": seed,
        "threads": torch.get_num_threads(), "activation_checkpointing": activation_checkpointing,
    }
    code = "import sys; from videogn.budget.memory import _rss_child; _rss_child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"rss measurement of shape (T, S, B)={shape} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(result["peak_bytes"]), int(result["model_bytes"])


def measure_step_memory(
    model: ModelRef,
    num_frames: int,
    crop_size: int,
    batch_size: int,
    *,
    norm: str = "gn",
    num_classes: int = 400,
    device: Union[str, torch.device] = "auto",
    method: str = "auto",
    precision: str = "fp32",
    norm_kwargs: Optional[dict[str, Any]] = None,
    model_kwargs: Optional[dict[str, Any]] = None,
    seed: int = 0,
    activation_checkpointing: str = "none",
) -> StepMemory:
    """Peak memory of one training step on clips of shape (batch_size, 3, num_frames, crop, crop).

    Args:
        model: a name of :func:`videogn.models.list_models` (built with ``norm``, ``norm_kwargs``,
            ``model_kwargs``) or a zero-argument callable returning the model (``norm`` ignored).
        num_frames, crop_size, batch_size: the input shape T, S, B.
        num_classes: classifier size (the loss uses random labels).
        device: "auto" (CUDA if available), "cpu", "cuda" or "cuda:N".
        method: "auto" ("cuda" on CUDA, "alloc" on CPU), "alloc" or "rss" (see the module docstring).
        precision: "fp32", "bf16" or "fp16" (:data:`videogn.runtime.PRECISIONS`), as ``trainer.precision``.
        seed: seeds the model's initialisation and the batch.
        activation_checkpointing: "none", "blocks" or "full", as ``trainer.activation_checkpointing``
            (a registered model name only).
    """
    check_int("num_frames", num_frames, 1)
    check_int("crop_size", crop_size, 1)
    check_int("batch_size", batch_size, 1)
    check_int("num_classes", num_classes, 1)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    from videogn.models.checkpointing import check_checkpointing_mode

    check_checkpointing_mode(activation_checkpointing)
    dev = resolve_device(device)
    how = resolve_method(method, dev)
    shape = (num_frames, crop_size, batch_size)
    reserved: Optional[int] = None
    state: Optional[int] = None
    if how == "rss":
        peak, model_bytes = _measure_rss(model, norm, num_classes, norm_kwargs, model_kwargs, shape, precision, seed,
                                         activation_checkpointing)
    else:
        factory = _model_factory(model, norm, num_classes, norm_kwargs, model_kwargs, activation_checkpointing)
        if how == "cuda":
            peak, reserved, model_bytes, state = _measure_cuda(factory, shape, num_classes, dev, precision, seed)
        else:
            peak, model_bytes, state = _measure_alloc(factory, shape, num_classes, precision, seed)
    return StepMemory(num_frames, crop_size, batch_size, str(dev), how, peak, reserved, model_bytes, state,
                      activation_checkpointing)


@dataclass(frozen=True)
class StepTime:
    """Wall-clock seconds of the trainer's step without (``plain_seconds``) and with
    (``checked_seconds``) activation checkpointing, one pair per repetition, taken interleaved."""

    num_frames: int
    crop_size: int
    batch_size: int
    device: str
    activation_checkpointing: str
    plain_seconds: list[float]
    checked_seconds: list[float]

    @property
    def ratios(self) -> list[float]:
        """Per repetition: the checkpointed step's time over the plain one's."""
        return [c / p for c, p in zip(self.checked_seconds, self.plain_seconds)]

    @property
    def ratio(self) -> float:
        """The median of :attr:`ratios`: what checkpointing costs in step time."""
        return statistics.median(self.ratios)


def measure_step_time(
    model: str,
    num_frames: int,
    crop_size: int,
    batch_size: int,
    *,
    activation_checkpointing: str = "full",
    reps: int = 5,
    norm: str = "gn",
    num_classes: int = 400,
    device: Union[str, torch.device] = "auto",
    precision: str = "fp32",
    norm_kwargs: Optional[dict[str, Any]] = None,
    model_kwargs: Optional[dict[str, Any]] = None,
    seed: int = 0,
) -> StepTime:
    """Time the trainer's step of ``model`` without and with ``activation_checkpointing``, interleaved.

    Both models are built (same seed) and warmed up by one step each; then ``reps`` times one
    step of each, the first of the pair alternating, so a machine that slows down or speeds up
    during the run weighs on both alike. Both models are held at once: on a GPU, keep the shape
    within half the memory that fits one.
    """
    from videogn.models.checkpointing import check_checkpointing_mode

    check_int("reps", reps, 1)
    check_checkpointing_mode(activation_checkpointing)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = resolve_device(device)
    shape = (num_frames, crop_size, batch_size)
    modes = ("none", activation_checkpointing)
    steps = [
        _Step(_model_factory(model, norm, num_classes, norm_kwargs, model_kwargs, m), shape, num_classes, dev,
              precision, seed)
        for m in modes
    ]
    seconds: list[list[float]] = [[], []]

    def timed(i: int) -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        steps[i].run()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds[i].append(time.perf_counter() - start)

    for step in steps:
        step.run()  # warm-up: momentum buffers, kernels, allocator
    for rep in range(reps):
        for i in ((0, 1) if rep % 2 == 0 else (1, 0)):
            timed(i)
    return StepTime(num_frames, crop_size, batch_size, str(dev), activation_checkpointing, seconds[0], seconds[1])


# -- byte sizes ------------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def parse_bytes(text: Union[str, int]) -> int:
    """"12GiB", "500MB", "1.5G" (binary), "2e9" or an int -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return check_int("bytes", text, 1)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"a memory size must look like 4GiB, 500MB, 1.5G or 2e9, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"a memory size must be at least 1 byte, got {text!r}")
    return int(value)


def format_bytes(n: Optional[float]) -> str:
    """Bytes as MiB with one decimal ("-" for None or NaN)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    return f"{n / 1024**2:.1f} MiB"

"""scripts/bench_groupnorm.py's CPU protocol: what a timed call includes, the training-step
conditions of forward+backward, and the ratio's interval over runs (no timing is asserted)."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import videogn

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_groupnorm.py"


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("bench_groupnorm")


def test_call_state_is_freed_off_the_clock(bench, monkeypatch):
    """What a timed call leaves behind (its input, the input's gradient) is freed after the clock
    stops, never inside the next contender's timing."""
    events = []
    monkeypatch.setattr(bench, "_clock", lambda: events.append("clock") or 0.0)

    class Call:
        def __call__(self):
            events.append("call")

        def __del__(self):
            events.append("freed")

    bench._interleaved_medians({"a": Call, "b": Call}, reps=3)
    timed = events[4:]  # after the warm-up's two call/freed pairs
    assert events[:4] == ["call", "freed", "call", "freed"]
    assert timed == ["clock", "call", "clock", "freed"] * 6


def test_train_step_has_a_training_steps_conditions(bench):
    """Every call starts from a fresh input and reset weight gradients: after three calls the
    weights' gradients are one step's (not three accumulated), and the caller's tensor is untouched."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 2, 3, 3).contiguous(memory_format=torch.channels_last_3d)
    grad = torch.randn_like(x)
    module = videogn.GroupNorm3d(8, num_groups=4)
    prepare = bench._train_step(module, x, grad)
    for _ in range(3):
        prepare()()
    reference = nn.GroupNorm(4, 8)
    x_ref = x.clone().requires_grad_()
    reference(x_ref).backward(grad)
    torch.testing.assert_close(module.weight.grad, reference.weight.grad)
    torch.testing.assert_close(module.bias.grad, reference.bias.grad)
    assert x.grad is None and not x.requires_grad


def test_ratio_interval(bench):
    est, low, high = bench._ratio_interval([2.0, 4.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0])
    assert est == pytest.approx(2 ** 1.5)  # geometric mean of the per-run ratios
    assert low < est < high
    # on log ratios: swapping the sides gives the reciprocal estimate and bounds
    inv = bench._ratio_interval([1.0, 1.0, 1.0, 1.0], [2.0, 4.0, 2.0, 4.0])
    assert inv == pytest.approx((1 / est, 1 / high, 1 / low))
    # half-width: t(0.975, 3) = 3.182 times the standard error of the log ratios
    half = 3.182 * math.log(2) / math.sqrt(3) / 2
    assert high == pytest.approx(est * math.exp(half), rel=1e-3)
    assert bench._ratio_interval([3.0], [2.0]) == (pytest.approx(1.5), None, None)


def test_bench_cpu_reports_runs_and_intervals(bench):
    rows = bench.bench_cpu([(1, 32, 2, 4, 4)], reps=1, runs=2)
    assert [r["layout"] for r in rows] == list(bench.LAYOUTS)
    for r in rows:
        for kind in ("fwd", "fwd_bwd"):
            assert len(r[f"ratio_{kind}_runs"]) == 2
            assert r[f"ratio_{kind}_low"] <= r[f"ratio_{kind}"] <= r[f"ratio_{kind}_high"]
            assert len(r[f"GroupNorm3d.{kind}_ms_runs"]) == 2


@pytest.mark.parametrize("flag", ["--runs", "--reps"])
def test_non_positive_counts_are_refused(bench, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--device", "cpu", flag, "0"])
    assert exit_.value.code == 2
    assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err


def test_every_contender_follows_every_other_equally_often(bench):
    """Whoever runs just before leaves the caches and the heap in its state: over a multiple of
    the 6 orders of 3 contenders, each goes first, and follows each other one, equally often."""
    sequence = []

    def contender(name):
        return lambda: (lambda: sequence.append(name))

    bench._interleaved_medians({n: contender(n) for n in "abc"}, reps=12)
    rounds = [sequence[i:i + 3] for i in range(3, len(sequence), 3)]  # after the warm-up round
    assert len(rounds) == 12
    assert {n: sum(r[0] == n for r in rounds) for n in "abc"} == {"a": 4, "b": 4, "c": 4}
    pairs = [(r[i], r[i + 1]) for r in rounds for i in range(2)]
    assert {p: pairs.count(p) for p in set(pairs)} == {
        (p, q): 4 for p in "abc" for q in "abc" if p != q}


def test_aa_calibration_puts_a_second_nn_groupnorm_in_groupnorm3ds_place(bench):
    mods = bench._cpu_modules(64, aa=True)
    assert type(mods["GroupNorm3d"]) is nn.GroupNorm and type(mods["nn.GroupNorm"]) is nn.GroupNorm
    assert mods["GroupNorm3d"] is not mods["nn.GroupNorm"]
    assert isinstance(bench._cpu_modules(64)["GroupNorm3d"], videogn.GroupNorm3d)


def test_retained_allocator_is_set_or_says_why_not():
    """Run in a child: the setting lasts for the process (a test worker would keep it)."""
    import subprocess
    import sys

    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('b', sys.argv[1]); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(repr(m.retain_freed_memory()))")
    out = subprocess.run([sys.executable, "-c", code, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = out.stdout.strip().splitlines()[-1]
    assert result == "None" or result.startswith("'allocator left as is")

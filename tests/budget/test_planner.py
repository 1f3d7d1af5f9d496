"""The budget planner on the CPU with small models: it promises only what it measured."""

from __future__ import annotations

import csv
import json

import pytest
from step_models import MiB, mem, small_gn_net

from videogn.budget import BudgetRow, ClipShape, format_plan, measure_step_memory, plan_budget, save_plan
from videogn.budget.memory import measure_step_time
from videogn.budget.planner import format_checkpointing_plan, plan_checkpointing


def test_planner_picks_the_largest_batch_that_fits():
    budget = 24 * MiB
    rows = plan_budget("i3d_tiny", "gn", [4, 8], 48, budget, "cpu", num_classes=5)
    assert [r.num_frames for r in rows] == [4, 8]
    for r in rows:
        assert r.batch_size >= 1 and r.fits
        assert r.peak_bytes <= budget < r.next_peak_bytes
        # the row's numbers are real: measuring again gives the same bytes
        assert mem(r.num_frames, 48, r.batch_size) == r.peak_bytes
        assert mem(r.num_frames, 48, r.batch_size + 1) == r.next_peak_bytes
        assert [r.batch_size, r.peak_bytes] in r.measurements
        assert [r.batch_size + 1, r.next_peak_bytes] in r.measurements  # B + 1 was measured over budget
        assert r.as_clip_shape() == ClipShape(r.num_frames, 48, r.batch_size)
    assert rows[0].batch_size >= rows[1].batch_size  # longer clips: never more of them


def test_planner_reports_when_nothing_fits():
    [row] = plan_budget(small_gn_net, "gn", [8], 32, 1024, "cpu", num_classes=5)
    assert row.batch_size == 0 and not row.fits and row.peak_bytes is None
    assert row.next_peak_bytes > 1024 and row.norm == "custom"
    with pytest.raises(ValueError, match=r"num_frames=8: not even one clip fits budget_bytes=1024"):
        row.as_clip_shape()


def test_planner_without_check_next_and_max_batch_size():
    [row] = plan_budget(small_gn_net, "gn", [4], 16, 10**9, "cpu", num_classes=5, max_batch_size=6)
    assert row.batch_size == 6 and row.next_peak_bytes is None  # capped, everything fits
    [row] = plan_budget(small_gn_net, "gn", [4], 16, 2 * MiB, "cpu", num_classes=5, check_next=False)
    assert row.peak_bytes <= 2 * MiB


def test_planner_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match=r"clip_lengths item .* got 0"):
        plan_budget(small_gn_net, "gn", [0], 16, MiB, "cpu")
    with pytest.raises(ValueError, match=r"probe_batch_sizes item 8 exceeds max_batch_size=4"):
        plan_budget(small_gn_net, "gn", [4], 16, MiB, "cpu", probe_batch_sizes=(8,), max_batch_size=4)


def test_plan_is_saved_as_json_and_csv(tmp_path):
    row = BudgetRow("m", "gn", "cpu", "alloc", 8, 32, 1000, 3, 900, 1100, 300.0, 200.0, [[1, 500], [3, 900], [4, 1100]])
    data = json.loads(save_plan([row], tmp_path / "p.json", {"machine": "test"}).read_text())
    assert data["meta"] == {"machine": "test"} and data["rows"][0]["batch_size"] == 3
    with save_plan([row], tmp_path / "p.csv").open() as f:
        [rec] = list(csv.DictReader(f))
    assert rec["batch_size"] == "3" and json.loads(rec["measurements"]) == [[1, 500], [3, 900], [4, 1100]]
    assert "| m | gn | 8 | 32 |" in format_plan([row])
    with pytest.raises(ValueError, match=r"must end in .json or .csv, got '.*p.txt'"):
        save_plan([row], tmp_path / "p.txt")


def test_cli_prints_and_saves_the_table(tmp_path, capsys, load_script):
    script = load_script("plan_budget")
    out = tmp_path / "plan.json"
    code = script.main(["--model", "i3d_tiny", "--frames", "4", "--crop-size", "32", "--budget", "16MiB",
                        "--num-classes", "5", "--device", "cpu", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| i3d_tiny | gn | 4 | 32 | 16.0 MiB |" in printed
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["peak_bytes"] <= 16 * MiB < rows[0]["next_peak_bytes"]
    with pytest.raises(SystemExit):
        script.main(["--budget", "lots"])
    with pytest.raises(SystemExit) as exc:
        script.main(["--help"])
    assert exc.value.code == 0


def test_activation_checkpointing_is_measured_as_the_trainer_runs_it():
    # the same step, the blocks' and stem's activations recomputed instead of stored
    full, blocks = (mem(8, 48, 4, activation_checkpointing=mode) for mode in ("full", "blocks"))
    assert full < blocks < mem(8, 48, 4)
    with pytest.raises(ValueError, match=r"needs a registered model name .*apply_activation_checkpointing inside"):
        measure_step_memory(small_gn_net, 4, 16, 1, device="cpu", activation_checkpointing="full")
    with pytest.raises(ValueError, match=r"activation_checkpointing must be one of .* got 'all'"):
        measure_step_memory("i3d_tiny", 4, 16, 1, device="cpu", activation_checkpointing="all")


def test_checkpointing_plan_gives_both_batch_sizes_and_the_time_cost():
    budget = 24 * MiB
    [row] = plan_checkpointing("i3d_tiny", "gn", [8], 48, budget, "cpu", num_classes=5, timing_reps=2)
    [plain] = plan_budget("i3d_tiny", "gn", [8], 48, budget, "cpu", num_classes=5)
    assert (row.batch_size, row.peak_bytes) == (plain.batch_size, plain.peak_bytes)
    assert row.checked_batch_size > row.batch_size >= 1  # checkpointing fits more clips in the same bytes
    assert row.checked_peak_bytes == mem(8, 48, row.checked_batch_size, activation_checkpointing="full") <= budget
    assert mem(8, 48, row.checked_batch_size + 1, activation_checkpointing="full") > budget  # and it is the largest
    assert row.timed_batch_size == row.batch_size
    assert len(row.plain_seconds) == len(row.checked_seconds) == 2
    lo, hi = row.time_ratio_range
    assert lo <= row.time_ratio <= hi
    table = format_checkpointing_plan([row])
    assert f"| i3d_tiny | gn | 8 | 48 | 24.0 MiB | {row.batch_size} | {row.checked_batch_size} (full) |" in table
    with pytest.raises(ValueError, match=r"activation_checkpointing must be 'blocks' or 'full', got 'none'"):
        plan_checkpointing("i3d_tiny", "gn", [8], 48, budget, "cpu", activation_checkpointing="none")


def test_step_time_is_taken_interleaved_for_both_modes():
    t = measure_step_time("i3d_tiny", 4, 32, 1, num_classes=5, device="cpu", reps=3, activation_checkpointing="blocks")
    assert (t.activation_checkpointing, len(t.plain_seconds), len(t.checked_seconds)) == ("blocks", 3, 3)
    assert all(s > 0 for s in t.plain_seconds + t.checked_seconds)
    assert t.ratio == sorted(t.ratios)[1]  # the median pair's ratio


def test_cli_plans_with_and_without_checkpointing(tmp_path, capsys, load_script):
    script = load_script("plan_budget")
    out = tmp_path / "plan.csv"
    code = script.main(["--model", "i3d_tiny", "--frames", "4", "--crop-size", "32", "--budget", "16MiB",
                        "--num-classes", "5", "--device", "cpu", "--activation-checkpointing", "--timing-reps", "1",
                        "--out", str(out), "--quiet"])
    assert code == 0
    assert "| i3d_tiny | gn | 4 | 32 | 16.0 MiB |" in capsys.readouterr().out
    with out.open() as f:
        [rec] = list(csv.DictReader(f))
    assert rec["activation_checkpointing"] == "full" and int(rec["checked_batch_size"]) >= int(rec["batch_size"])
    assert len(json.loads(rec["plain_seconds"])) == 1 and float(rec["time_ratio"]) > 0

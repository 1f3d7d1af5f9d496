"""The budget planner on the CPU with small models: it promises only what it measured."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from step_models import MiB, mem, small_gn_net

from videogn.budget import BudgetRow, ClipShape, format_plan, plan_budget, save_plan

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "plan_budget.py"


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


def test_cli_prints_and_saves_the_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("plan_budget_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
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

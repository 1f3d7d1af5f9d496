"""The norm sweep: scripts/sweep.py (a loop over videogn.train.run), its pre-registration guard,
the analysis (videogn.science.analysis) on fabricated results with known answers, and
scripts/sweep_report.py / scripts/ideal_observer.py end to end."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videogn.science.analysis import (convergence, correctness, evaluate_hypotheses, holm, paired_difference,
                                      t_cdf, t_quantile)

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import ideal_observer  # noqa: E402
import sweep  # noqa: E402
import sweep_report  # noqa: E402


# -- the plan -------------------------------------------------------------------------------------


def test_grid_plan_pairs_every_cell_on_the_same_seeds_and_pins_every_value():
    runs = sweep.plan("grid", {"bn": 0.05, "gn": 0.1})
    assert len({r["key"] for r in runs}) == len(runs) == 2 * 3 * len(sweep.SEEDS)
    cells = {(r["norm"], r["num_frames"], r["stride"], r["batch_size"]) for r in runs}
    assert cells == {(n, 8, 2, 8) for n in ("bn", "gn")} | {(n, 8, 2, 4) for n in ("bn", "gn")} | \
        {(n, 16, 1, 4) for n in ("bn", "gn")}
    for cell in cells:
        assert sorted(r["seed"] for r in runs if (r["norm"], r["num_frames"], r["stride"], r["batch_size"]) == cell) \
            == list(sweep.SEEDS)
    assert len(sweep.SEEDS) >= 6 and not set(sweep.PILOT_SEEDS) & set(sweep.SEEDS)
    assert sweep.TASK["data.synthetic.val_per_class"] * sweep.TASK["data.synthetic.num_classes"] >= 1000
    r = next(r for r in runs if r["norm"] == "gn" and r["num_frames"] == 16)
    assert {"norm=gn", "budget.num_frames=16", "budget.stride=1", "budget.batch_size=4", "optim.lr=0.1",
            "data.cache_decoded=true"} <= set(r["overrides"])
    with pytest.raises(sweep.Refused, match="pilot"):
        sweep.plan("grid", None)


def test_pilot_rule_is_the_same_for_every_norm():
    runs = [{"norm": n, "lr": lr, "metrics": {"loss": loss}} for n, lr, loss in [
        ("bn", 0.05, 0.9), ("bn", 0.05, 0.8), ("bn", 0.1, 0.7), ("bn", 0.1, 0.8),
        ("gn", 0.05, 0.6), ("gn", 0.1, 0.6)]]
    chosen = sweep.choose_lrs(runs)["chosen"]
    assert chosen == {"bn": 0.1, "gn": 0.05}  # lowest mean loss; a tie goes to the smaller rate


def test_the_preregistered_stages_refuse_an_uncommitted_or_modified_file(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    prereg = tmp_path / "preregistration.md"
    prereg.write_text("# Pre-registration\n")
    with pytest.raises(sweep.Refused, match="uncommitted or modified"):
        sweep.check_preregistration(sweep.preregistration_state(prereg))
    git("add", "preregistration.md")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "freeze")
    state = sweep.preregistration_state(prereg)
    sweep.check_preregistration(state)
    assert state["committed"] and len(state["sha256"]) == 64 and len(state["commit"]) == 40
    prereg.write_text("# Pre-registration\nchanged after freezing\n")
    with pytest.raises(sweep.Refused, match="modified"):
        sweep.check_preregistration(sweep.preregistration_state(prereg))
    prereg.write_text("# DRAFT — not frozen\n")
    git("add", "preregistration.md")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "draft")
    with pytest.raises(sweep.Refused, match="DRAFT"):
        sweep.check_preregistration(sweep.preregistration_state(prereg))
    assert sweep.main(["--stage", "grid", "--out", str(tmp_path / "out"), "--preregistration", str(prereg)]) == 2
    assert not (tmp_path / "out").exists()


def test_smoke_sweep_trains_through_the_toolkit_records_everything_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIDEOGN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    assert sweep.main(["--stage", "smoke", "--out", str(out)]) == 0
    results = json.loads((out / "sweep_results.json").read_text())
    setup, runs = results["setup"], results["runs"]
    assert len(runs) == 4 and setup["stages"]["smoke"]["preregistered"] is False
    assert {(c["num_frames"], c["stride"]) for c in setup["dataset"]["ceilings"]} == {(4, 2), (8, 1)}
    assert setup["dataset"]["num_val_videos"] == 8 and "data.cache_decoded=true" in setup["pipeline"]["common_overrides"]
    for r in runs:
        assert r["command"].startswith("videogn-train ") and f"norm={r['norm']}" in r["command"]
        assert len(r["probs"]) == len(r["labels"]) == 8 and r["metrics"]["loss"] > 0 and r["curve"]
        run_dir = out / "runs" / r["key"]
        assert json.loads((run_dir / "report.json").read_text())["top1"] == r["metrics"]["top1"]
    capsys.readouterr()
    assert sweep.main(["--stage", "smoke", "--out", str(out)]) == 0
    assert "4 of 4 runs already done; 0 to train" in capsys.readouterr().out


# -- the analysis ---------------------------------------------------------------------------------


def test_t_distribution_matches_tables():
    assert t_quantile(0.975, 5) == pytest.approx(2.5706, abs=1e-4)
    assert t_quantile(0.95, 10) == pytest.approx(1.8125, abs=1e-4)
    assert t_cdf(0.0, 3) == pytest.approx(0.5) and t_cdf(-2.5706, 5) == pytest.approx(0.025, abs=1e-5)


def test_holm_orders_and_caps_adjusted_pvalues():
    adj = holm({"H1": 0.04, "H2": 0.01, "H3": 0.03})
    assert adj == pytest.approx({"H2": 0.03, "H3": 0.06, "H1": 0.06})  # 3 x .01, 2 x .03, max(.06, .04)
    assert holm({"a": 0.5, "b": 0.6}) == pytest.approx({"a": 1.0, "b": 1.0})


def _fabricate(accuracies, seeds=6, videos=1000, seed=0, seed_noise=0.0):
    """{cell: (seeds, videos) 0/1}: per video a difficulty shared by every cell (the pairing), per
    seed an offset shared by that seed's cells."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=videos)
    offsets = rng.normal(scale=seed_noise, size=seeds)
    table = {}
    for cell, acc in accuracies.items():
        u = rng.uniform(size=(seeds, videos))
        # P(correct) = acc on average: shift the shared difficulty by the cell's quantile
        p = 1 / (1 + np.exp(-(difficulty[None, :] + np.log(acc / (1 - acc)) + offsets[:, None])))
        table[cell] = (u < p).astype(float)
    return table


def _cells(bn_big, bn_small, bn_dense, gn_big, gn_small, gn_dense):
    return {("bn", 8, 2, 8): bn_big, ("bn", 8, 2, 4): bn_small, ("bn", 16, 1, 4): bn_dense,
            ("gn", 8, 2, 8): gn_big, ("gn", 8, 2, 4): gn_small, ("gn", 16, 1, 4): gn_dense}


def test_known_effects_are_detected_and_a_true_null_is_shown_equivalent():
    table = _fabricate(_cells(0.70, 0.58, 0.72, 0.70, 0.70, 0.82))
    v = {h.name: h for h in evaluate_hypotheses(table, margin=0.04)}
    assert v["H1"].verdict == "supported" and 0.06 < v["H1"].estimate < 0.18 and v["H1"].low > 0
    assert v["H2"].verdict == "supported" and abs(v["H2"].estimate) < 0.03
    assert v["H3"].verdict == "supported" and v["H3"].low > 0
    assert all(h.p_holm >= h.p for h in v.values()) and all(h.resolves > 0 for h in v.values())


def test_a_null_with_little_power_is_inconclusive_and_an_opposite_effect_contradicts():
    # 2 seeds, 100 videos, noisy seeds: nothing can be concluded about small effects
    weak = _fabricate(_cells(0.7, 0.7, 0.7, 0.7, 0.7, 0.7), seeds=2, videos=100, seed_noise=0.5)
    v = {h.name: h for h in evaluate_hypotheses(weak, margin=0.02)}
    assert v["H1"].verdict == v["H2"].verdict == v["H3"].verdict == "inconclusive at this power"
    # BN gains from smaller batches and GN collapses: H1 and H2 are contradicted
    opposite = _fabricate(_cells(0.60, 0.75, 0.6, 0.75, 0.55, 0.6))
    v = {h.name: h for h in evaluate_hypotheses(opposite, margin=0.03)}
    assert v["H1"].verdict == "contradicted" and v["H1"].high < 0
    assert v["H2"].verdict == "contradicted" and v["H2"].low > 0.03
    assert v["H3"].verdict == "contradicted"


def test_paired_difference_needs_the_same_seeds_and_videos():
    a = np.ones((6, 10))
    with pytest.raises(ValueError, match="paired"):
        paired_difference([(1.0, a), (-1.0, np.ones((5, 10)))])
    d = paired_difference([(1.0, a), (-1.0, np.zeros((6, 10)))])
    assert d.estimate == 1.0 and d.se == 0.0 and d.p_greater(0.0) == 0.0


def test_correctness_reads_per_video_probabilities_in_seed_order():
    runs = [{"norm": "gn", "num_frames": 8, "stride": 2, "batch_size": 4, "seed": s, "classes": ["a", "b"],
             "labels": ["a", "b", "b"], "probs": probs} for s, probs in
            [(1, [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), (0, [[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])]]
    m = correctness(runs)[("gn", 8, 2, 4)]
    assert m.tolist() == [[0, 1, 1], [1, 1, 0]]


def test_convergence_is_judged_on_held_out_loss_and_chance_is_not_learned():
    flat_at_chance = [{"val_loss": np.log(4) + 1e-3 * (i % 2)} for i in range(10)]
    c = convergence(flat_at_chance, min_ce=0.66, num_classes=4, num_videos=1000, top1=0.26)
    assert c["plateaued"] and not c["learned"] and not c["converged"]
    falling = [{"val_loss": 1.3 - 0.05 * i} for i in range(10)]
    c = convergence(falling, min_ce=0.66, num_classes=4, num_videos=1000, top1=0.5)
    assert c["learned"] and not c["plateaued"] and c["gap_to_ceiling"] == pytest.approx(0.85 - 0.66)
    settled = [{"val_loss": 0.7 + 0.3 * np.exp(-i)} for i in range(15)]
    c = convergence(settled, min_ce=0.66, num_classes=4, num_videos=1000, top1=0.6)
    assert c["converged"] and c["gap_to_ceiling"] < 0.05


# -- the scripts ----------------------------------------------------------------------------------


def test_ideal_observer_script_writes_the_table(tmp_path, capsys):
    out = tmp_path / "io.json"
    assert ideal_observer.main(["--frames", "16", "--num-clips", "2", "--shapes", "4x2", "8x1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(c["num_frames"], c["stride"], c["num_clips"]) for c in data["ceilings"]] == \
        [(4, 2, None), (4, 2, 2), (8, 1, None), (8, 1, 2)]
    assert "top-1 %" in capsys.readouterr().out


def test_report_on_fabricated_results(tmp_path):
    table = _fabricate(_cells(0.70, 0.58, 0.72, 0.70, 0.70, 0.82))
    classes = ["a", "b"]
    runs = []
    for (norm, t, s, b), m in table.items():
        for seed, row in enumerate(m):
            labels = ["a"] * len(row)
            probs = [[0.9, 0.1] if ok else [0.1, 0.9] for ok in row]
            curve = [{"step": i, "val_loss": 0.6 + 0.4 * np.exp(-i), "val_top1": row.mean()} for i in range(12)]
            runs.append({"key": f"{norm}{t}{s}{b}_{seed}", "stage": "grid", "norm": norm, "num_frames": t, "stride": s,
                         "batch_size": b, "seed": seed, "lr": 0.1, "classes": classes, "labels": labels,
                         "probs": probs, "curve": curve, "metrics": {"top1": row.mean(), "loss": 0.6}})
    ceilings = [{"num_frames": t, "stride": s, "num_clips": 2, "top1": 0.8, "min_ce": 0.5} for t, s in [(8, 2), (16, 1)]]
    results = {"setup": {"dataset": {"ceilings": ceilings, "num_val_videos": 1000, "classes": classes}}, "runs": runs}
    path = tmp_path / "sweep_results.json"
    path.write_text(json.dumps(results))
    assert sweep_report.main([str(path), "--margin", "0.04"]) == 0
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert {h["name"]: h["verdict"] for h in analysis["hypotheses"]} == {"H1": "supported", "H2": "supported",
                                                                         "H3": "supported"}
    md = (tmp_path / "analysis.md").read_text()
    assert "H1" in md and "supported" in md and "converged" in md
    assert all((tmp_path / f).stat().st_size > 0 for f in ("sweep_top1.png", "sweep_loss.png", "sweep_contrasts.png"))
    # the pre-registered stopping rule is applied and said in the write-up when it fires
    assert analysis["training"]["under_trained"] == ("**Under-trained**" in md)


def test_training_state_applies_the_preregistered_stopping_rule():
    def cell(converged: int) -> dict:
        return {"norm": "bn", "num_frames": 8, "stride": 2, "batch_size": 4, "seeds": list(range(8)),
                "converged": converged}

    assert sweep_report.training_state([cell(8), cell(7)])["under_trained"] is False  # one miss is allowed
    state = sweep_report.training_state([cell(8), cell(6)])
    assert state["under_trained"] is True and state["cells"] == ["BN 8@2 x4: 2 of 8 not converged"]


def test_pilot_then_grid_under_a_committed_preregistration(tmp_path, monkeypatch):
    """The pre-registered stages end to end at smoke size: the pilot's rule picks each norm's rate,
    the grid uses it, and both record the pre-registration's hash and commit."""
    monkeypatch.setenv("VIDEOGN_CACHE", str(tmp_path / "cache"))
    smoke = sweep.SCALES["smoke"]
    monkeypatch.setitem(sweep.SCALES, "pilot", {**smoke, "cells": [(4, 2, 4)], "seeds": (100,), "lrs": (0.05, 0.2)})
    monkeypatch.setitem(sweep.SCALES, "grid", {**smoke, "cells": [(4, 2, 4), (4, 2, 2), (8, 1, 2)], "seeds": (0, 1)})
    repo = tmp_path / "repo"
    repo.mkdir()
    prereg = repo / "preregistration.md"
    prereg.write_text("# Pre-registration (frozen)\n")
    for args in (["init", "-q"], ["add", "preregistration.md"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "freeze"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    out = tmp_path / "sweep"
    common = ["--out", str(out), "--preregistration", str(prereg)]
    assert sweep.main(["--stage", "grid", *common]) == 2  # no pilot yet
    assert sweep.main(["--stage", "pilot", *common]) == 0
    assert sweep.main(["--stage", "grid", *common]) == 0
    results = json.loads((out / "sweep_results.json").read_text())
    setup = results["setup"]
    chosen = setup["lr_pilot"]["chosen"]
    assert set(chosen) == {"bn", "gn"} and set(chosen.values()) <= {0.05, 0.2}
    grid = [r for r in results["runs"] if r["stage"] == "grid"]
    assert len(grid) == 12 and all(r["lr"] == chosen[r["norm"]] for r in grid)
    assert all(f"optim.lr={r['lr']}" in r["overrides"] for r in grid)
    for stage in ("pilot", "grid"):
        state = setup["stages"][stage]["preregistration"]
        assert state["committed"] and state["sha256"] == hashlib.sha256(prereg.read_bytes()).hexdigest()
    assert setup["seeds"] == [0, 1] and setup["pilot_seeds"] == [100]
    prereg.write_text("# Pre-registration (frozen)\nedited and committed after the pilot\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "edit"], cwd=repo, check=True)
    assert sweep.main(["--stage", "grid", *common]) == 2  # the pilot ran under the old version
    assert {(c["num_frames"], c["stride"]) for c in setup["dataset"]["ceilings"]} == {(4, 2), (8, 1)}


def test_the_2x_rerun_is_the_grid_at_twice_the_epochs_under_its_own_keys():
    lrs = {"bn": 0.025, "gn": 0.025}
    grid, twice = sweep.plan("grid", lrs), sweep.plan("grid_2x", lrs)
    assert not {r["key"] for r in grid} & {r["key"] for r in twice}  # one results file holds both
    assert len(grid) == len(twice)
    for a, b in zip(grid, twice):
        assert f"trainer.epochs={sweep.EPOCHS}" in a["overrides"] and f"trainer.epochs={2 * sweep.EPOCHS}" in b["overrides"]
        assert [o for o in a["overrides"] if not o.startswith("trainer.epochs=")] == \
               [o for o in b["overrides"] if not o.startswith("trainer.epochs=")]
    assert sweep.PREREGISTRATIONS["grid_2x"] != sweep.PREREGISTRATIONS["grid"]

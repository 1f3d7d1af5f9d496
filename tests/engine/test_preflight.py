"""The start-up check of a training run (videogn.engine.preflight): every mistake of issue 22 that
concerns data or checkpoints is reported before any model is built, each naming the file, row or
key, and all of them together. Each test builds a small Kinetics-style folder of real videos."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))  # tests/ has no __init__.py (as tests/data/conftest.py)

import video_factory as vf  # noqa: E402

from videogn import checkpoint as ckpt  # noqa: E402
from videogn.config import ConfigError, TrainConfig, validate  # noqa: E402
from videogn.data.annotations import build_kinetics_index, write_class_index  # noqa: E402
from videogn.engine.preflight import PreflightError, PreflightReport, check_training_run  # noqa: E402

CLASSES = ["archery", "bowling", "juggling"]
CSV_NAME = {"train": "train.csv", "val": "validate.csv"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real tiny video, copied wherever a test needs a video file."""
    return vf.make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", num_frames=12, height=32, width=32)


def write_csv(path: Path, rows: list[tuple[str, str, int, int, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerows(rows)
    return path


def make_kinetics(base: Path, clip: Path, *, train: int = 6, val: int = 3, classes_json: bool = True) -> Path:
    """``base/k``: ``train/<label>/<id>_000000_000010.mp4``, ``val/...``, ``annotations/train.csv``,
    ``annotations/validate.csv`` (and ``annotations/classes.json``), labels cycling over CLASSES."""
    root = base / "k"
    for split, n in (("train", train), ("val", val)):
        rows = []
        for i in range(n):
            label, yid = CLASSES[i % len(CLASSES)], f"{split}{i:03d}"
            dst = root / split / label / f"{yid}_000000_000010.mp4"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, dst)
            rows.append((label, yid, 0, 10, "validate" if split == "val" else split))
        write_csv(root / "annotations" / CSV_NAME[split], rows)
    if classes_json:
        write_class_index(root / "annotations" / "classes.json", CLASSES)
    return root


@pytest.fixture
def kinetics_conf(compose_train) -> Callable[..., TrainConfig]:
    """``kinetics_conf(root, *overrides)``: the tiny run's config on the folder ``root``."""

    def make(root: Path, *overrides: str) -> TrainConfig:
        ann = root / "annotations"
        return validate(compose_train(
            "data=kinetics400", f"data.root={root}", f"data.train_annotation={ann / 'train.csv'}",
            f"data.val_annotation={ann / 'validate.csv'}", *overrides,
        ))

    return make


def errors_of(conf: TrainConfig, **kw) -> tuple[PreflightReport, str]:
    """The report and the one error message check_training_run raises."""
    with pytest.raises(PreflightError) as info:
        check_training_run(conf, **kw)
    assert isinstance(info.value, ConfigError)  # what the CLI turns into a message and exit status 2
    return info.value.report, str(info.value)


def test_a_good_folder_passes_with_both_splits_counted_and_probed(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    report = check_training_run(kinetics_conf(root))
    assert report.problems == []
    assert report.class_names == CLASSES
    counts = {s: (c.annotated, c.found, c.probed) for s, c in report.splits.items()}
    assert counts == {"train": (6, 6, 6), "val": (3, 3, 3)}


def test_the_built_in_dataset_passes_without_being_touched(compose_train, synthetic_cache) -> None:
    before = sorted(synthetic_cache.rglob("*"))
    report = check_training_run(validate(compose_train()))
    assert report.problems == [] and report.splits == {}
    assert report.class_names is not None and len(report.class_names) == 3  # experiment=tiny: 3 classes
    assert sorted(synthetic_cache.rglob("*")) == before  # nothing generated, nothing scanned


def test_a_typo_in_the_validation_csv_path_is_named_with_the_likely_file(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    typo = root / "annotations" / "validat.csv"
    report, message = errors_of(kinetics_conf(root, f"data.val_annotation={typo}"))
    assert [p.where for p in report.errors] == ["data.val_annotation"]
    assert f"{str(typo)!r} not found" in message
    assert f"did you mean {str(root / 'annotations' / 'validate.csv')!r}" in message


def test_the_validation_split_is_not_checked_when_nothing_evaluates_it(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    conf = kinetics_conf(root, f"data.val_annotation={root / 'nope.csv'}", "trainer.eval_after_train=false")
    assert check_training_run(conf).problems == []


@pytest.mark.parametrize("classes_json", [True, False], ids=["classes_json", "derived_from_train"])
def test_a_validation_label_missing_from_the_class_index_names_file_and_row(tmp_path, clip, kinetics_conf,
                                                                             classes_json) -> None:
    root = make_kinetics(tmp_path, clip, classes_json=classes_json)
    val_csv = root / "annotations" / "validate.csv"
    rows = list(csv.reader(val_csv.open()))
    rows[3][0] = "unicycling"  # file line 4: the header, then rows 2, 3, 4
    rows.append(["unicycling", "val099", "0", "10", "validate"])
    val_csv.write_text("".join(",".join(r) + "\n" for r in rows))
    report, message = errors_of(kinetics_conf(root))
    assert len(report.errors) == 1
    assert report.errors[0].where == f"{val_csv}:4"
    index = (f"{root / 'annotations' / 'classes.json'}, 3 classes" if classes_json
             else "derived from the labels of train.csv, 3 classes")
    assert f"{val_csv}:4: label 'unicycling' (and 1 more row) is not in the class index ({index})" in message


def test_a_label_is_found_in_its_row_when_the_csv_split_filters_rows(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    val_csv = root / "annotations" / "validate.csv"
    write_csv(val_csv, [("archery", "val000", 0, 10, "validate"), ("bowling", "x", 0, 10, "test"),
                        ("unicycling", "val001", 0, 10, "validate")])
    report, _ = errors_of(kinetics_conf(root, "data.val_split=validate"))
    assert [p.where for p in report.errors] == [f"{val_csv}:4"]


def test_a_wrong_data_root_is_one_clear_error(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    ann = root / "annotations"
    report, message = errors_of(kinetics_conf(
        tmp_path / "kk", f"data.train_annotation={ann / 'train.csv'}", f"data.val_annotation={ann / 'validate.csv'}"
    ))
    assert [p.where for p in report.errors] == ["data.root"]  # not also one per split folder under it
    assert f"{str(tmp_path / 'kk')!r} is not a directory (did you mean {str(root)!r}?)" in message


def test_an_empty_video_folder_says_none_of_the_videos_was_found(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    shutil.rmtree(root / "train")
    (root / "train").mkdir()
    report, message = errors_of(kinetics_conf(root))
    assert [p.where for p in report.errors] == ["data.train_dir"]
    first = root / "train" / "train000_000000_000010.mp4"
    assert f"0 of 6 training videos found under {root / 'train'}: e.g. {first}" in message
    assert "holds no video files" in message
    assert report.splits["val"].found == 3


def test_videos_named_otherwise_than_the_pattern_are_shown(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    report, message = errors_of(kinetics_conf(root, "data.filename_pattern='{youtube_id}.mp4'"))
    assert [p.where for p in report.errors] == ["data.train_dir", "data.val_dir"]  # both splits, same cause
    assert "named e.g. 'train000_000000_000010', while the rows ask for names like 'train000'" in message


def test_list_files_whose_paths_repeat_the_split_folder_get_a_hint(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    ann, index = root / "annotations", root / "index"
    build_kinetics_index([ann / "train.csv", ann / "validate.csv"], root, index)  # paths 'train/...', 'val/...'
    lists = [f"data.train_annotation={index / 'train.txt'}", f"data.val_annotation={index / 'validate.txt'}"]
    report, message = errors_of(kinetics_conf(root, *lists))
    assert [p.where for p in report.errors] == ["data.train_dir", "data.val_dir"]
    val = str(report.errors[1])
    assert f"0 of 3 validation videos found under {root / 'val'}" in val
    assert "paths in the list file already start with 'val/'" in val
    assert f"looked for in {root / 'val' / 'val'}/... but exist under {root}" in val
    assert "set data.val_dir=. " in val
    # the fix the message gives works
    fixed = check_training_run(kinetics_conf(root, *lists, "data.train_dir=.", "data.val_dir=."))
    assert fixed.problems == [] and fixed.class_names == CLASSES


def test_some_missing_videos_are_a_warning_with_an_example(tmp_path, clip, kinetics_conf, caplog) -> None:
    root = make_kinetics(tmp_path, clip)
    gone = root / "train" / "bowling" / "train001_000000_000010.mp4"
    gone.unlink()
    with caplog.at_level("WARNING", logger="videogn.engine.preflight"):
        report = check_training_run(kinetics_conf(root))
    assert report.errors == []
    assert [p.where for p in report.warnings] == ["data.train_dir"]
    assert "1 of 6 training videos have no file under" in caplog.text
    assert "train001_000000_000010.mp4" in caplog.text


def test_the_probe_warns_about_some_unreadable_videos_and_refuses_all(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    train = sorted((root / "train").rglob("*.mp4"))
    train[0].write_bytes(b"this is a text file, not a video\n" * 50)
    report = check_training_run(kinetics_conf(root))
    assert report.errors == [] and report.splits["train"].unreadable[0].startswith(str(train[0]))
    assert "1 of 6 sampled training videos are unreadable" in str(report.warnings[0])
    for p in train:
        p.write_bytes(b"")
    report, message = errors_of(kinetics_conf(root))
    assert "all 6 sampled training videos are unreadable" in message
    assert report.splits["val"].unreadable == []


def test_the_probe_opens_only_a_sample(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip, train=12)
    report = check_training_run(kinetics_conf(root), sample_size=4)
    assert (report.splits["train"].found, report.splits["train"].probed) == (12, 4)


def save_checkpoint(path: Path, class_names: list[str]) -> Path:
    state = ckpt.make_checkpoint(
        model_state={"w": torch.zeros(64, 64)}, step=3, class_names=class_names, config="{}",
        **{k: {} for k in ckpt.RESUME_KEYS},
    )
    return ckpt.save_checkpoint(state, path)


def test_a_truncated_resume_checkpoint_is_called_truncated(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    path = save_checkpoint(tmp_path / "step_000000003.pt", CLASSES)
    assert check_training_run(kinetics_conf(root, f"trainer.resume={path}")).problems == []
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    report, message = errors_of(kinetics_conf(root, f"trainer.resume={path}"))
    assert [p.where for p in report.errors] == ["trainer.resume"]
    assert "truncated" in message and str(path) in message


def test_resuming_a_run_of_other_classes_is_refused(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    path = save_checkpoint(tmp_path / "other.pt", ["a", "b"])
    report, message = errors_of(kinetics_conf(root, f"trainer.resume={path}"))
    assert [p.where for p in report.errors] == ["trainer.resume"]
    assert "trained on 2 classes (a, b), this run's data has 3" in message


def test_resume_auto_takes_the_newest_intact_checkpoint_of_the_run_dir(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    run = tmp_path / "run"
    save_checkpoint(ckpt.checkpoint_path(run / "checkpoints", 3), CLASSES)
    newest = ckpt.checkpoint_path(run / "checkpoints", 6)
    newest.write_bytes(b"\0" * 100)  # a damaged newer one is skipped, as the trainer skips it
    assert check_training_run(kinetics_conf(root), output_dir=run).errors == []


def test_several_problems_are_all_reported_at_once(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    (root / "train" / "archery" / "train000_000000_000010.mp4").unlink()  # a warning, not an error
    resume = save_checkpoint(tmp_path / "r.pt", CLASSES)
    resume.write_bytes(resume.read_bytes()[:200])
    weights = tmp_path / "weights.pt"
    weights.write_text("not weights")
    report, message = errors_of(kinetics_conf(
        root, f"data.val_annotation={root / 'annotations' / 'validat.csv'}", f"trainer.resume={resume}",
        f"model.weights={weights}", "model.num_classes=5",
    ))
    assert sorted(p.where for p in report.errors) == [
        "data.val_annotation", "model.num_classes", "model.weights", "trainer.resume",
    ]
    assert message.startswith("the run cannot start: 4 problems found before training")
    assert all(str(p) in message for p in report.errors)
    assert [p.where for p in report.warnings] == ["data.train_dir"]


def test_training_stops_before_any_checkpoint_on_a_bad_validation_csv(tmp_path, clip, compose_train) -> None:
    from videogn.train import run

    root = make_kinetics(tmp_path, clip)
    ann = root / "annotations"
    cfg = compose_train("data=kinetics400", f"data.root={root}", f"data.train_annotation={ann / 'train.csv'}",
                        f"data.val_annotation={ann / 'validat.csv'}", "trainer.device=cpu")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="validat.csv"):
        run(cfg, output_dir=out)
    assert not out.exists()  # refused before train.log or anything else was written: no run dir to clean up


def test_weights_of_another_network_are_refused_before_the_model_is_built(tmp_path, clip, kinetics_conf) -> None:
    root = make_kinetics(tmp_path, clip)
    foreign = tmp_path / "pv.pyth"  # pytorchvideo's key layout, which i3d_tiny does not load
    torch.save({"model_state": {"blocks.0.conv.weight": torch.zeros(8, 3, 1, 3, 3)}}, foreign)
    report, message = errors_of(kinetics_conf(root, f"model.weights={foreign}"))
    assert [p.where for p in report.errors] == ["model.weights"]
    assert "pytorchvideo" in message and "'i3d_tiny'" in message

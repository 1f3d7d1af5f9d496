"""``videogn-predict checkpoint=PATH inputs=PATH``: the top-k classes of new videos (``configs/predict.yaml``).

Each video is tested like an evaluation (:func:`videogn.engine.evaluator.predict`: ``eval.num_clips``
clips spread over the whole video, however long, x ``eval.num_crops`` crops, softmax averaged), with
the model, clip and protocol of the checkpoint's training run (``data.*``/``eval.*`` keys given replace
its values one by one, as for ``videogn-eval``), on the CPU or a GPU:

    videogn-predict checkpoint=outputs/2026-01-01/12-00-00 inputs=clips/            # a run dir, a folder
    videogn-predict checkpoint=run/checkpoints/step_000000400.pt inputs=a.mp4 top_k=3 device=cpu
    videogn-predict checkpoint=run inputs=videos.txt eval.num_clips=10             # a list file of paths
    videogn-predict checkpoint=x3d_s.pyth model=x3d_s norm=bn eval.num_frames=13 eval.stride=6 \\
        class_names=kinetics_classes.json inputs=a.mp4                             # a foreign checkpoint

``inputs``: a video file, a folder (its video files, searched recursively) or a list file (one path
per line, relative to the list file's folder; blank lines and ``#`` comments skipped). Class names come
from the checkpoint, or from ``class_names=PATH`` (a JSON list in output order, or a ``classes.json``
``{name: index}``). Writes ``predictions.json`` into the run dir (or ``output_dir``) and prints a table.
With ``eval.save_view_logits=true`` each predicted video there also holds ``view_logits``: every
view's logits (num_clips x num_crops rows of num_classes, clip-major, as in ``predictions.jsonl`` of
:mod:`videogn.engine.evaluator`). Unreadable videos are listed there and never stop the run; the exit
status is 0 when any video was predicted, 2 when none could be read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig

from videogn.cli import hydra_entry, job_context
from videogn.config import ConfigError, PredictConfig, validate
from videogn.config.schema import given_fields

__all__ = ["PREDICT_FILE", "PREDICT_SCHEMA_VERSION", "format_table", "main", "read_class_names", "resolve_inputs", "run"]

logger = logging.getLogger("videogn.predict")

PREDICT_FILE = "predictions.json"
PREDICT_SCHEMA_VERSION = 1  # predictions.json's "schema_version"
INPUTS_LIST = "inputs.txt"  # the videos of a run, as the dataset reads them (written into the run dir)


def resolve_inputs(inputs: str | Path) -> list[Path]:
    """The videos of ``inputs`` (module docstring), in a stable order; listed files that do not
    exist are kept (the run reports them as unreadable).

    Raises:
        ConfigError: ``inputs`` does not exist or holds no video.
    """
    from videogn.data.annotations import VIDEO_EXTENSIONS

    p = Path(inputs).expanduser()
    if p.is_dir():
        videos = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
        where = f"the folder {str(inputs)!r} has no video file ({', '.join(VIDEO_EXTENSIONS)})"
    elif p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
        videos, where = [p], ""
    elif p.is_file():  # a list file
        lines = [x.strip() for x in p.read_text(encoding="utf-8", errors="replace").splitlines()]
        videos = [(p.parent / x).expanduser() for x in lines if x and not x.startswith("#")]
        where = f"the list file {str(inputs)!r} names no video (one path per line)"
    else:
        raise ConfigError(f"inputs must be a video file, a folder or a list file, got {str(inputs)!r} (not found)")
    if not videos:
        raise ConfigError(f"inputs: {where}")
    return [v.absolute() for v in videos]


def read_class_names(path: str | Path) -> list[str]:
    """Class names in the classifier's output order from a JSON list or a ``{name: index}`` file.

    Raises:
        ConfigError: naming the file and what is wrong with it.
    """
    from videogn.data.annotations import load_class_index

    p = Path(path).expanduser()
    try:
        value = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            return list(value)
        index = load_class_index(value) if isinstance(value, dict) else None
    except (OSError, ValueError) as e:
        raise ConfigError(f"class_names={str(path)!r} cannot be read: {e}") from None
    if index is None:
        raise ConfigError(f"class_names={str(path)!r} must hold a JSON list of names or a {{name: index}} mapping, "
                          f"got {type(value).__name__}")
    return sorted(index, key=index.__getitem__)


def run(cfg: DictConfig | PredictConfig, output_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Predict the classes of ``cfg.inputs`` with ``cfg.checkpoint``; rank 0 writes
    ``predictions.json`` and prints the table. Returns what ``predictions.json`` holds.

    Raises:
        ConfigError: a bad checkpoint, inputs or class names. NoReadableVideosError: no video could
            be read (both: exit status 2).
    """
    from videogn.checkpoint import CheckpointError, read_weights
    from videogn.engine.build import DataSources, build_dataset, build_model
    from videogn.engine.evaluator import NoReadableVideosError, predict, protocol_of
    from videogn.evaluate import checkpoint_train_config, load_into, resolve_checkpoint

    pc: PredictConfig = validate(cfg)
    if pc.precision == "fp16" and pc.device == "cpu":
        raise ConfigError("precision must be 'fp32' or 'bf16' on the CPU, got 'fp16'")
    videos = resolve_inputs(pc.inputs)
    path = resolve_checkpoint(pc.checkpoint)
    try:
        weights = read_weights(path)
    except CheckpointError as e:
        raise ConfigError(f"checkpoint: {e}") from None
    if weights.checkpoint is not None:
        train_cfg = checkpoint_train_config(weights.checkpoint, pc, path)  # type: ignore[arg-type]  # EvalConfig's fields
        class_names = list(weights.checkpoint["class_names"])
    else:
        if pc.class_names is None:
            raise ConfigError(f"class_names must be given for {str(path)!r}, a checkpoint without class names "
                              "(class_names=PATH: a JSON list in output order, or a classes.json)")
        # no dataset is read: the data section only carries normalisation and decoding settings
        data = pc.data if given_fields(pc.data) else dataclasses.replace(pc.data, name="synthetic")
        train_cfg = checkpoint_train_config(None, dataclasses.replace(pc, data=data), path)  # type: ignore[arg-type]
        class_names = []
    if pc.class_names is not None:
        class_names = read_class_names(pc.class_names)
    model = build_model(train_cfg.model, train_cfg.norm, len(class_names), load_weights=False)
    load_into(model, weights, train_cfg.model.name, path, fits=f" with {len(class_names)} classes")

    with job_context(pc.device, pc.dist_backend, output_dir or pc.output_dir, "predict.log") as (info, out):
        # the videos as a list file (absolute paths, no labels): the test-mode dataset of an evaluation
        listing = out / INPUTS_LIST
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            listing.write_text("".join(f"{v} -1\n" for v in videos), encoding="utf-8")
        from videogn.engine.distributed import all_gather_objects

        all_gather_objects(None)  # the list is written before any rank reads it
        sources = DataSources(train_root=out, train_annotation=listing, val_root=out, val_annotation=listing)
        data = dataclasses.replace(train_cfg.data, val_split=None)
        dataset = build_dataset(data, train_cfg.budget, sources, "val", mode="test", protocol=train_cfg.eval,
                                class_index={n: i for i, n in enumerate(class_names)})
        if info.is_main:
            logger.info("predicting %d videos with %s: %d clips x %d crops of %d frames (stride %d), crop %d",
                        len(videos), path, dataset.num_clips, dataset.num_crops, dataset.num_frames, dataset.stride,
                        dataset.crop_size)
        workers = train_cfg.data.num_workers if pc.num_workers is None else pc.num_workers
        preds = predict(model.to(info.device), dataset, batch_size=train_cfg.eval.batch_size, num_workers=int(workers),
                        device=info.device, precision=pc.precision, dist_info=info, progress=pc.progress_bar,
                        view_logits=train_cfg.eval.save_view_logits)
        k = min(pc.top_k, len(class_names))
        result: dict[str, Any] = {
            "schema_version": PREDICT_SCHEMA_VERSION, "checkpoint": str(path), "classes": class_names, "top_k": k,
            "protocol": protocol_of(dataset), "num_videos": len(preds.paths),
            "num_predicted": int(preds.valid.sum()), "num_unreadable": int((~preds.valid).sum()),
            "predictions": [], "unreadable": [],
        }
        for n, (p, ok, err, row) in enumerate(zip(preds.paths, preds.valid.tolist(), preds.errors, preds.scores)):
            if ok:
                top = row.topk(k)
                entry: dict[str, Any] = {"path": p, "top_k": [
                    {"class": class_names[j], "prob": round(float(v), 6)} for v, j in zip(top.values, top.indices.tolist())
                ]}
                if preds.view_logits is not None:  # eval.save_view_logits
                    entry["view_logits"] = [[round(x, 6) for x in view] for view in preds.view_logits[n].tolist()]
                result["predictions"].append(entry)
            else:
                result["unreadable"].append({"path": p, "error": err})
        if info.is_main:
            (out / PREDICT_FILE).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
            print(format_table(result))
            logger.info("%d of %d videos predicted (%d unreadable) -> %s", result["num_predicted"], len(preds.paths),
                        result["num_unreadable"], out / PREDICT_FILE)
    if not result["num_predicted"]:
        first = result["unreadable"][0]
        raise NoReadableVideosError(
            f"not one of the {len(preds.paths)} input videos could be read (e.g. {first['path']}: {first['error']}); "
            f"they are listed in {out / PREDICT_FILE}"
        )
    return result


def format_table(result: dict[str, Any], width: Optional[int] = None) -> str:
    """``predictions.json``'s content as a terminal table: one row per video, its top-k classes
    with probabilities, then the unreadable videos and why."""
    rows: list[tuple[str, str]] = [
        (p["path"], ", ".join(f"{c['class']} {100 * c['prob']:.1f}%" for c in p["top_k"])) for p in result["predictions"]
    ]
    rows += [(u["path"], f"UNREADABLE: {' '.join(u['error'].split())}") for u in result["unreadable"]]
    return _table(["video", f"top-{result['top_k']}"], rows, width)


def _table(header: Sequence[str], rows: Sequence[tuple[str, str]], width: Optional[int]) -> str:
    w = max(len(header[0]), *(len(r[0]) for r in rows)) if rows else len(header[0])
    w = min(w, width or 60)  # very long paths are shortened from the left: the file name stays
    short = [(r[0] if len(r[0]) <= w else "..." + r[0][-(w - 3):], r[1]) for r in rows]
    return "\n".join(f"{a:<{w}}  {b}" for a, b in [tuple(header), *short])


main = hydra_entry("predict", run)  # console script videogn-predict

if __name__ == "__main__":
    from videogn.threads import ensure_passive_openmp

    ensure_passive_openmp()  # torch is loaded by now (python -m imports the package): re-executes once
    main()

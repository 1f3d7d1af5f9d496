"""``videogn-eval checkpoint=PATH``: multi-view testing of a trained checkpoint (``configs/eval.yaml``).

Model, data and test protocol come from the checkpoint's own training config; each ``data.*`` and
``eval.*`` key given replaces that one value of it:

    videogn-eval checkpoint=outputs/2026-01-01/12-00-00           # a run dir: its newest checkpoint
    videogn-eval checkpoint=run/checkpoints/step_000000400.pt eval.num_clips=10 eval.num_crops=3
    videogn-eval checkpoint=run data.root=/new/place data.val_annotation=/new/place/annotations/val.csv
    videogn-eval checkpoint=k400.pt model=x3d_s norm=bn data=kinetics400 data.root=/data/k400 \\
        data.train_annotation=/data/k400/annotations/train.csv data.val_annotation=/data/k400/annotations/validate.csv
    torchrun --standalone --nproc_per_node=8 -m videogn.evaluate checkpoint=k400.pt   # videos sharded over GPUs

Writes ``report.json``, ``predictions.jsonl`` and ``report_confusion_matrix.png`` into the run dir
(or ``output_dir``); their keys: :mod:`videogn.engine.evaluator`. A killed evaluation rerun with the
same run dir (``hydra.run.dir=...``) evaluates only the videos not yet predicted there, provided the
checkpoint and settings are the same (``resume=false`` starts afresh); rebuild a report from the
saved predictions, or ensemble runs, with ``python scripts/ensemble_predictions.py RUN_DIR ...``.

User mistakes stop before any video is read, with one message and exit status 2 (a checkpoint that
is missing, truncated or of another architecture or norm; a data folder or annotation that does
not exist; a label outside the classes; a classifier whose size is not the data's class count,
unless ``allow_class_mismatch=true``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videogn.cli import hydra_entry, job_context
from videogn.config import ConfigError, EvalConfig, TrainConfig, validate
from videogn.config.schema import given_fields, upgrade_train_config

__all__ = ["checkpoint_train_config", "load_into", "main", "resolve_checkpoint", "run"]

logger = logging.getLogger("videogn.evaluate")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run dir / checkpoints dir: its newest intact checkpoint."""
    from videogn.checkpoint import find_latest_checkpoint

    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for d in (p / "checkpoints", p):
            hit = find_latest_checkpoint(d)
            if hit is not None:
                logger.info("checkpoint: %s (the newest intact checkpoint in %s)", hit[0], d)
                return hit[0]
        raise ConfigError(f"checkpoint must be a checkpoint file or a run dir holding one, got {str(path)!r} (no intact checkpoint in it)")
    raise ConfigError(f"checkpoint must be an existing file or run dir, got {str(path)!r}")


def run(cfg: DictConfig | EvalConfig, output_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Evaluate ``cfg.checkpoint`` (:func:`videogn.engine.evaluator.evaluate_split`); rank 0 writes
    the files. Returns the report."""
    from videogn.checkpoint import CheckpointError, read_weights
    from videogn.data.annotations import AnnotationError
    from videogn.engine.build import build_model, resolve_data, training_classes
    from videogn.engine.evaluator import EvalOptions, EvalTarget, evaluate_split

    ec: EvalConfig = validate(cfg)
    path = resolve_checkpoint(ec.checkpoint)
    try:
        weights = read_weights(path)
    except CheckpointError as e:
        raise ConfigError(f"checkpoint: {e}") from None
    train_cfg = checkpoint_train_config(weights.checkpoint, ec, path)
    if ec.precision == "fp16" and ec.device == "cpu":
        raise ConfigError("precision must be 'fp32' or 'bf16' on the CPU, got 'fp16'")
    # every start-up check before the run dir gets its log file: a refusal leaves no run dir behind
    sources = resolve_data(train_cfg.data)
    _check_data(train_cfg.data, sources, ec.split, class_index_used=weights.checkpoint is None)
    if weights.checkpoint is not None:
        class_names = _checkpoint_classes(weights.checkpoint, ec)
    else:
        try:
            class_names = training_classes(train_cfg.data, sources)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"the class order of a foreign checkpoint comes from data.class_index or "
                              f"data.train_annotation: {e}") from None
    model = build_model(train_cfg.model, train_cfg.norm, len(class_names), load_weights=False)
    new_head = _class_mismatch(model, weights.state_dict, class_names, ec, path)
    load_into(model, weights, train_cfg.model.name, path, new_head=new_head)
    with job_context(ec.device, ec.dist_backend, output_dir or ec.output_dir, "eval.log") as (info, out):
        target = EvalTarget(model=model.to(info.device), class_names=class_names, data=train_cfg.data,
                            budget=train_cfg.budget, sources=sources, protocol=train_cfg.eval)
        step = weights.checkpoint["step"] if weights.checkpoint is not None else None
        try:
            result = evaluate_split(target, EvalOptions(
                split=ec.split, device=info.device, precision=ec.precision, num_workers=ec.num_workers, dist_info=info,
                progress=ec.progress_bar, output_dir=out, resume=ec.resume,
                extra={"checkpoint": str(path), "step": int(step) if step is not None else None, "name": train_cfg.name,
                       "model": train_cfg.model.name, "norm": train_cfg.norm.name},
            ))
        except AnnotationError as e:  # a bad row or a label outside the classes: the message names file and row
            raise ConfigError(f"data.{ec.split}_annotation: {e}") from None
    return result.report


def load_into(model: Any, weights: Any, name: str, path: Path, *, new_head: bool = False, fits: str = "") -> None:
    """Load ``weights`` (:func:`videogn.checkpoint.read_weights` of ``path``) into ``model``, the
    registered model ``name``: a videogn checkpoint as saved, a foreign one through
    :func:`videogn.models.load_weights` (its layout checked; ``new_head``: the classifier kept fresh).

    Raises:
        ConfigError: another architecture, norm or class count (``fits`` adds what the model was built for).
    """
    from videogn.models import load_weights

    try:
        if weights.checkpoint is not None and not new_head:
            model.load_state_dict(weights.state_dict)
        else:
            load_weights(model, weights.state_dict, name=name, strict=True, new_head=new_head)
    except (RuntimeError, ValueError) as e:  # another architecture, norm or class count
        raise ConfigError(f"checkpoint {str(path)!r} does not fit model {name!r}{fits}: {e}") from None


def _check_data(data: Any, sources: Any, split: str, *, class_index_used: bool) -> None:
    """The evaluated split's folder and annotation, ``data.exclude``'s lists and (when the classes
    come from it: a foreign checkpoint) ``data.class_index`` exist; every problem in one ConfigError
    naming the keys. The built-in dataset is generated by videogn: only ``data.exclude`` is checked."""
    problems = [f"data.exclude: {p!r} not found — give scan.py's report, or data.exclude=null"
                for p in data.exclude or [] if not Path(p).expanduser().is_file()]
    if data.name != "synthetic":
        root = Path(str(data.root)).expanduser()
        split_root = sources.val_root if split == "val" else sources.train_root
        annotation = sources.val_annotation if split == "val" else sources.train_annotation
        if not root.is_dir():
            problems.append(f"data.root: {str(root)!r} is not a directory — set data.root=/where/the/videos/are")
        elif not split_root.is_dir():
            problems.append(f"data.{split}_dir: {str(split_root)!r} is not a directory — set data.{split}_dir "
                            f"(a folder under data.root, or . for data.root itself)")
        if not annotation.is_file():
            problems.append(f"data.{split}_annotation: {str(annotation)!r} not found — set data.{split}_annotation")
        if class_index_used and data.class_index and not Path(str(data.class_index)).expanduser().is_file():
            problems.append(f"data.class_index: {str(data.class_index)!r} not found — give a classes.json, "
                            "or data.class_index=null")
    if problems:
        raise ConfigError("the evaluation's data cannot be read:\n  - " + "\n  - ".join(problems))


def _checkpoint_classes(checkpoint: dict[str, Any], ec: EvalConfig) -> list[str]:
    """A videogn checkpoint's classes; a ``data.class_index`` given here must list the same ones,
    unless it has another count and ``allow_class_mismatch`` (then its classes are evaluated)."""
    from videogn.data.annotations import load_class_index

    own = list(checkpoint["class_names"])
    given = given_fields(ec.data).get("class_index")
    if not given:
        return own
    try:
        mapping = load_class_index(Path(str(given)).expanduser())
    except (OSError, ValueError) as e:
        raise ConfigError(f"data.class_index {str(given)!r} cannot be used: {e}") from None
    theirs = sorted(mapping, key=mapping.__getitem__)
    if len(theirs) == len(own) and theirs != own:
        first = next(i for i, (a, b) in enumerate(zip(own, theirs)) if a != b)
        raise ConfigError(
            f"data.class_index {str(given)!r} does not list the checkpoint's classes in its order (class {first}: "
            f"{theirs[first]!r}, the checkpoint's {own[first]!r}) — leave data.class_index out: a videogn checkpoint "
            "has its own classes"
        )
    return theirs


def _class_mismatch(model: Any, state: dict[str, Any], class_names: list[str], ec: EvalConfig, path: Path) -> bool:
    """Whether the checkpoint's classifier has another size than the data's class count: refused,
    unless ``allow_class_mismatch`` (then True: the classifier starts random, said in a warning)."""
    from videogn.models import classifier_name

    head = classifier_name(model)
    weight = state.get(f"{head}.weight") if head else None
    if weight is None or weight.shape[0] == len(class_names):
        return False
    outputs, classes = int(weight.shape[0]), len(class_names)
    if not ec.allow_class_mismatch:
        raise ConfigError(
            f"checkpoint {str(path)!r} has a classifier of {outputs} outputs ({head}.weight), the data has "
            f"{classes} classes: its scores would be meaningless — evaluate it on the data it was trained on "
            f"(data.class_index / data.train_annotation), or pass allow_class_mismatch=true to evaluate with a "
            f"new, random classifier of {classes} outputs"
        )
    logger.warning("allow_class_mismatch=true: the checkpoint's classifier (%d outputs) is replaced by a random one "
                   "of %d: expect chance accuracy", outputs, classes)
    return True


def checkpoint_train_config(checkpoint: Optional[dict[str, Any]], ec: EvalConfig, path: Path) -> TrainConfig:
    """The training config to evaluate (videogn-eval) or predict (videogn-predict) with: a videogn
    checkpoint's own (``ec.model``/``norm`` must stay null), or for a foreign state dict the
    schema's defaults with ``ec.model``/``norm`` — then ``ec.data`` and ``ec.eval`` laid over it
    field by field and the whole validated."""
    from videogn.config import NormConfig

    data, protocol = given_fields(ec.data), given_fields(ec.eval)
    if checkpoint is not None:
        for key, value in (("model", ec.model), ("norm", ec.norm)):
            if value is not None:
                raise ConfigError(f"{key} must stay null for a videogn checkpoint ({str(path)!r} has its own), got {value.name!r}")
        base = upgrade_train_config(OmegaConf.to_container(OmegaConf.create(checkpoint["config"])))  # type: ignore[arg-type]
    else:
        if ec.model is None or not data:
            raise ConfigError(
                f"model and data must be set for {str(path)!r}, a checkpoint without a videogn training config "
                "(e.g. model=x3d_s norm=bn data=kinetics400 ...)"
            )
        if protocol.get("num_frames") is None:
            raise ConfigError(
                f"eval.num_frames must be given for {str(path)!r}, a checkpoint without a videogn training config "
                "(the clip length it was trained on, e.g. eval.num_frames=8 eval.stride=8)"
            )
        # no training run: the budget only carries the clip (batches are eval.batch_size videos)
        clip = {"num_frames": protocol["num_frames"], "batch_size": 1}
        if protocol.get("stride") is not None:
            clip["stride"] = protocol["stride"]
        base = {"model": OmegaConf.structured(ec.model), "norm": OmegaConf.structured(ec.norm or NormConfig()),
                "budget": clip}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), base, {"data": data, "eval": protocol})
    except OmegaConfBaseException as e:  # a value of the wrong type for its key
        raise ConfigError(f"invalid value at {getattr(e, 'full_key', None) or 'the checkpoint config'}: {e}") from None
    return validate(merged)


main = hydra_entry("eval", run)  # console script videogn-eval

if __name__ == "__main__":
    from videogn.threads import ensure_passive_openmp

    ensure_passive_openmp()  # torch is loaded by now (python -m imports the package): re-executes once
    main()

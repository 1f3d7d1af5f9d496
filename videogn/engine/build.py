"""Build the model and datasets of a run from its (validated) config.

The built-in dataset and Kinetics take the same path: both end as a :class:`KineticsDataset`
over a folder of mp4 files and a Kinetics-style CSV; for ``data.name=synthetic`` the folder is
generated (once, then cached) first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from videogn.config.schema import BudgetConfig, DataConfig, EvalProtocolConfig, ModelConfig, NormConfig, OptimConfig

__all__ = [
    "DataSources", "build_dataset", "build_model", "build_optimizer", "excluded_videos", "report_missing_videos",
    "resolve_data", "training_classes",
]


@dataclass(frozen=True)
class DataSources:
    """Where each split's videos and annotation are, and the class order (None: from the CSV)."""

    train_root: Path
    train_annotation: Path
    val_root: Path
    val_annotation: Path
    classes: Optional[list[str]] = None


def resolve_data(data: DataConfig) -> DataSources:
    """Paths of both splits; generates the synthetic dataset on first use (safe under DDP: one
    process generates, the others wait on a file lock)."""
    if data.name == "synthetic":
        from videogn.data.synthetic import ensure_synthetic_dataset

        if data.synthetic is None:
            raise ValueError("data.synthetic must be set when data.name is 'synthetic', got None")
        spec = data.synthetic.to_spec()
        root = ensure_synthetic_dataset(spec, data.synthetic.cache_dir or data.root)
        return DataSources(
            train_root=root / "train",
            train_annotation=root / "annotations" / "train.csv",
            val_root=root / "val",
            val_annotation=root / "annotations" / "val.csv",
            classes=spec.classes,
        )
    root = Path(str(data.root)).expanduser()
    return DataSources(
        train_root=root / data.train_dir,
        train_annotation=Path(str(data.train_annotation)).expanduser(),
        val_root=root / data.val_dir,
        val_annotation=Path(str(data.val_annotation)).expanduser(),
    )


def training_classes(data: DataConfig, sources: DataSources) -> list[str]:
    """The class order a run on ``data`` trains with: the built-in dataset's, else the training
    annotation's by the data package's one class-index policy
    (:func:`videogn.data.annotations.load_annotations`: ``data.class_index`` or a ``classes.json``
    beside the annotation, else sorted labels) — the order the trainer's training set gets."""
    if sources.classes is not None:
        return list(sources.classes)
    from videogn.data.annotations import load_annotations

    return load_annotations(sources.train_root, sources.train_annotation, split=data.train_split,
                            class_index=_class_index_file(data), filename_pattern=data.filename_pattern).classes


def _class_index_file(data: DataConfig) -> Optional[Path]:
    """``data.class_index`` as a path (None: not given)."""
    return Path(str(data.class_index)).expanduser() if data.class_index else None


def excluded_videos(data: DataConfig) -> frozenset[str]:
    """The videos ``data.exclude`` lists (:func:`videogn.data.annotations.read_exclude_list`).

    Raises:
        ConfigError: a listed report does not exist.
    """
    if not data.exclude:
        return frozenset()
    from videogn.config.schema import ConfigError
    from videogn.data.annotations import read_exclude_list

    try:
        return frozenset(read_exclude_list(list(data.exclude)))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"data.exclude: {e} — give scan.py's --out file, or data.exclude=null") from None


def build_dataset(
    data: DataConfig,
    budget: BudgetConfig,
    sources: DataSources,
    split: str,
    *,
    mode: str,
    protocol: Optional[EvalProtocolConfig] = None,
    class_index: Optional[dict[str, int]] = None,
    bad_video_log: Optional[Path] = None,
):
    """A :class:`KineticsDataset` of ``split`` ("train" | "val") in ``mode`` ("train" | "test"),
    giving uint8 clips (normalised on the training device by :func:`videogn.data.normalize_batch`).

    Train mode samples clips of ``budget``'s length and stride; test mode takes its views, scale,
    crop and clip length from ``protocol`` (required then; a null clip length or stride: ``budget``'s).

    The classes are ``class_index`` when given (an evaluation: the checkpoint's), else the built-in
    dataset's, else ``data.class_index``, else the annotation's by the data package's policy. The
    videos ``data.exclude`` lists are left out (one log line says how many).
    """
    from videogn.data import KineticsDataset

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    sampling: dict[str, Any] = {"num_frames": budget.num_frames, "stride": budget.stride, "crop_size": data.crop_size,
                                "clips_per_decode": data.clips_per_decode}
    if mode == "test":
        if protocol is None:
            raise ValueError("build_dataset(mode='test') needs the evaluation protocol (protocol=cfg.eval)")
        p = protocol
        sampling = {
            "num_frames": p.num_frames if p.num_frames is not None else budget.num_frames,
            "stride": p.stride if p.stride is not None else budget.stride,
            # test views are test_scale crops by default (fully convolutional testing)
            "crop_size": p.test_crop_size or p.test_scale,
            "num_clips": p.num_clips, "num_crops": p.num_crops, "test_scale": p.test_scale,
        }
    root = sources.train_root if split == "train" else sources.val_root
    annotation = sources.train_annotation if split == "train" else sources.val_annotation
    csv_split = data.train_split if split == "train" else data.val_split
    if class_index is None and sources.classes is not None:
        class_index = {name: i for i, name in enumerate(sources.classes)}
    excluded = excluded_videos(data)
    dataset = KineticsDataset(
        root,
        annotation,
        split=csv_split,
        mode=mode,
        **sampling,
        target_fps=data.target_fps,
        train_scale=tuple(data.train_scale),
        flip=data.flip,
        mean=tuple(data.mean),
        std=tuple(data.std),
        class_index=class_index if class_index is not None else _class_index_file(data),
        filename_pattern=data.filename_pattern,
        backend=data.backend,
        bad_video_log=bad_video_log,
        max_retries=data.max_retries,
        dtype="uint8",  # raw pixels to the device: the trainer and evaluator normalise there
        exclude=excluded or None,
    )
    if data.exclude:  # said even when none of this split's videos is listed: the option was read
        import logging

        logging.getLogger(__name__).info(
            "data.exclude: %d of the %s split's videos left out (%d listed in %s)",
            dataset.excluded, split, len(excluded), ", ".join(map(str, data.exclude)),
        )
    if data.cache_decoded:  # decode every video once (reused by later runs on the same files)
        from videogn.data.clip_cache import attach_decoded_cache

        # beside the built-in dataset when it has its own cache folder, else in the videogn cache
        own = data.synthetic.cache_dir if data.name == "synthetic" and data.synthetic is not None else None
        attach_decoded_cache(dataset, cache_dir=Path(own).expanduser() / "decoded" if own else None)
    return dataset


def build_model(model: ModelConfig, norm: NormConfig, num_classes: int, *, load_weights: bool = True) -> nn.Module:
    """The registered architecture ``model.name`` with ``norm``; empty ``norm.kwargs`` keeps the
    model's own defaults (e.g. fewer groups for narrow models).

    With ``load_weights``, ``model.weights`` (a video checkpoint, see
    :func:`videogn.models.load_weights`) is loaded or ``model.weights_2d`` (a 2-D ResNet state dict,
    torchvision or timm naming) is inflated into it, strictly (the classifier excepted). A file
    that is missing, unreadable or of another architecture raises :class:`ConfigError` naming the
    field and the path; so does a ``model.weights`` classifier of another class count unless
    ``model.new_head`` (then the classifier starts fresh). Pass ``load_weights=False`` when a
    checkpoint replaces every weight anyway (evaluation of a trained run, whose files may not exist
    on the evaluating machine).

    ``model.freeze_stages=N`` then freezes the first N of the model's declared stages
    (:func:`videogn.models.freeze_stages`: 1 the stem, 2 stem + res2, ...), with or without weights.
    """
    from videogn.models import create_model

    net = create_model(
        model.name,
        num_classes=model.num_classes or num_classes,
        norm=norm.name,
        norm_kwargs=dict(norm.kwargs) or None,
        act_layer=model.act_layer,
        dropout=model.dropout,
        zero_init_last=model.zero_init_last,
        **dict(model.kwargs),
    )
    if model.weight_standardization:
        from videogn.layers import standardize_convs

        standardize_convs(net)  # before any weights load: WSConv3d keeps nn.Conv3d's keys
    if load_weights:
        _load_model_weights(net, model)
    if model.freeze_stages:
        import logging

        from videogn.config.schema import ConfigError
        from videogn.models import freeze_stages

        try:  # after every module swap: freezing marks the modules the model finally has
            frozen = freeze_stages(net, model.name, model.freeze_stages)
        except ValueError as err:
            raise ConfigError(f"model.{err}") from None
        logging.getLogger(__name__).info("model.freeze_stages=%d: %d parameter tensors frozen (%s ... %s)",
                                         model.freeze_stages, len(frozen), frozen[0], frozen[-1])
    return net


def _load_model_weights(net: nn.Module, model: ModelConfig) -> None:
    """``model.weights`` loaded or ``model.weights_2d`` inflated into ``net``; user mistakes as ConfigError."""
    import logging
    import pickle

    from videogn.config.schema import ConfigError
    from videogn.checkpoint import read_weights
    from videogn.models import inflate_from_2d, load_weights as load

    for key, value in (("model.weights", model.weights), ("model.weights_2d", model.weights_2d)):
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"{key} must be an existing checkpoint file, got {value!r} (not found)")
        try:
            if key == "model.weights":
                load(net, path, name=model.name, strict=model.weights_strict, new_head=model.new_head)
            else:  # strict: another architecture is an error, not a partial load
                report = inflate_from_2d(net, read_weights(path).state_dict, strict=True,
                                         name=model.name)
                logging.getLogger(__name__).info("%s: %s", key, report)
        except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as err:
            raise ConfigError(f"{key}={value!r} cannot be used: {type(err).__name__}: {err}") from err


def build_optimizer(optim: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``optim.name``'s optimizer over ``model``'s trainable parameters (frozen stages left out),
    its classifier (:func:`videogn.models.classifier_name`) at ``optim.lr x optim.head_lr_mult``.
    ``model`` is the bare network (unwrapped from DDP)."""
    from videogn.models import classifier_name
    from videogn.optim import create_optimizer

    head = classifier_name(model)
    return create_optimizer(
        model, optim.name, optim.lr, momentum=optim.momentum, nesterov=optim.nesterov, betas=tuple(optim.betas),
        weight_decay=optim.weight_decay, norm_weight_decay=optim.norm_weight_decay,
        head=model.get_submodule(head) if head else None, head_lr_mult=optim.head_lr_mult,
    )


def report_missing_videos(dataset, path: Optional[Path], split: str) -> None:
    """Log how many annotation rows of ``dataset`` have no video file and list them in ``path``
    (an empty file when none is missing; nothing is written when ``path`` is None: ranks > 0)."""
    import logging

    from videogn.data import write_missing_videos

    if path is None:
        return
    write_missing_videos(dataset.missing, path)
    if dataset.missing:
        # a test set keeps them as unreadable items (misses); a training set leaves them out
        fate = "counted as misses" if dataset.mode == "test" else "left out of training"
        logging.getLogger(__name__).warning(
            "%d of the %s split's annotated videos have no video file (%s); listed in %s",
            len(dataset.missing), split, fate, path,
        )

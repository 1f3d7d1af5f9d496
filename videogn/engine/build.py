"""Build the model and datasets of a run from its (validated) config.

The built-in dataset and Kinetics take the same path: both end as a :class:`KineticsDataset`
over a folder of mp4 files and a Kinetics-style CSV; for ``data.name=synthetic`` the folder is
generated (once, then cached) first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from videogn.config.schema import BudgetConfig, DataConfig, ModelConfig, NormConfig

__all__ = ["DataSources", "build_dataset", "build_model", "report_missing_videos", "resolve_data"]


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


def build_dataset(
    data: DataConfig,
    budget: BudgetConfig,
    sources: DataSources,
    split: str,
    *,
    mode: str,
    class_index: Optional[dict[str, int]] = None,
    bad_video_log: Optional[Path] = None,
    num_clips: Optional[int] = None,
    num_crops: Optional[int] = None,
):
    """A :class:`KineticsDataset` of ``split`` ("train" | "val") in ``mode`` ("train" | "test"),
    giving uint8 clips (normalised on the training device by :func:`videogn.data.normalize_batch`)."""
    from videogn.data import KineticsDataset

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = sources.train_root if split == "train" else sources.val_root
    annotation = sources.train_annotation if split == "train" else sources.val_annotation
    csv_split = data.train_split if split == "train" else data.val_split
    if class_index is None and sources.classes is not None:
        class_index = {name: i for i, name in enumerate(sources.classes)}
    return KineticsDataset(
        root,
        annotation,
        split=csv_split,
        mode=mode,
        num_frames=budget.num_frames,
        stride=budget.stride,
        target_fps=data.target_fps,
        num_clips=num_clips if num_clips is not None else data.num_clips,
        num_crops=num_crops if num_crops is not None else data.num_crops,
        train_scale=tuple(data.train_scale),
        # test views are test_scale crops by default (fully convolutional testing)
        crop_size=data.crop_size if mode == "train" else (data.test_crop_size or data.test_scale),
        test_scale=data.test_scale,
        flip=data.flip,
        mean=tuple(data.mean),
        std=tuple(data.std),
        class_index=class_index,
        filename_pattern=data.filename_pattern,
        backend=data.backend,
        bad_video_log=bad_video_log,
        max_retries=data.max_retries,
        dtype="uint8",  # raw pixels to the device: the trainer and evaluator normalise there
    )


def build_model(model: ModelConfig, norm: NormConfig, num_classes: int, *, load_weights: bool = True) -> nn.Module:
    """The registered architecture ``model.name`` with ``norm``; empty ``norm.kwargs`` keeps the
    model's own defaults (e.g. fewer groups for narrow models).

    With ``load_weights``, ``model.weights`` (a video checkpoint, see
    :func:`videogn.models.load_weights`) is loaded or ``model.weights_2d`` (a 2-D ResNet state dict,
    torchvision or timm naming) is inflated into it, strictly (the classifier excepted). A file
    that is missing, unreadable or of another architecture raises :class:`ConfigError` naming the
    field and the path. Pass ``load_weights=False`` when a checkpoint replaces every weight anyway
    (evaluation of a trained run, whose files may not exist on the evaluating machine).
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
    if not load_weights:
        return net
    import logging
    import pickle

    import torch

    from videogn.config.schema import ConfigError
    from videogn.models import inflate_from_2d, load_weights as load

    for key, value in (("model.weights", model.weights), ("model.weights_2d", model.weights_2d)):
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"{key} must be an existing checkpoint file, got {value!r} (not found)")
        try:
            if key == "model.weights":
                load(net, path, name=model.name, strict=model.weights_strict)
            else:  # strict: another architecture is an error, not a partial load
                report = inflate_from_2d(net, torch.load(path, map_location="cpu", weights_only=True), strict=True)
                logging.getLogger(__name__).info("%s: %s", key, report)
        except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as err:
            raise ConfigError(f"{key}={value!r} cannot be used: {type(err).__name__}: {err}") from err
    return net


def report_missing_videos(dataset, path: Optional[Path], split: str) -> None:
    """Log how many annotation rows of ``dataset`` have no video file and list them in ``path``
    (an empty file when none is missing; nothing is written when ``path`` is None: ranks > 0)."""
    import logging

    from videogn.data import write_missing_videos

    if path is None:
        return
    write_missing_videos(dataset.missing, path)
    if dataset.missing:
        logging.getLogger(__name__).warning(
            "%d of the %s split's annotated videos have no video file (not used); listed in %s",
            len(dataset.missing), split, path,
        )

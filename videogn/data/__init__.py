"""Video data: encoding/decoding, annotations (Kinetics CSVs, list files, class folders), the clip
dataset, sampling, transforms."""

from videogn.data.decode import VideoDecodeError, VideoReader, available_backends, check_video
from videogn.data.encode import SUPPORTED_CODECS, resize_video, write_video
from videogn.data.annotations import (
    Annotations,
    MissingVideo,
    VideoRecord,
    build_kinetics_index,
    find_videos,
    load_annotations,
    load_class_index,
    missing_videos,
    read_kinetics_csv,
    read_list_file,
    resolve_csv_records,
    scan_class_folders,
    write_class_index,
    write_missing_videos,
)
from videogn.data.dataset import KineticsDataset, collate_clips, make_worker_init_fn
from videogn.data.sampling import SHORT_VIDEO_RULES, clip_span, clip_step, eval_clip_indices, train_clip_indices
from videogn.data.transforms import (
    KINETICS_MEAN,
    KINETICS_STD,
    eval_transform,
    normalize,
    normalize_batch,
    resize_short_side,
    spatial_crops,
    train_transform,
)

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "SHORT_VIDEO_RULES",
    "SUPPORTED_CODECS",
    "Annotations",
    "KineticsDataset",
    "MissingVideo",
    "VideoDecodeError",
    "VideoReader",
    "VideoRecord",
    "available_backends",
    "build_kinetics_index",
    "check_video",
    "clip_span",
    "clip_step",
    "collate_clips",
    "eval_clip_indices",
    "eval_transform",
    "find_videos",
    "load_annotations",
    "load_class_index",
    "make_worker_init_fn",
    "missing_videos",
    "normalize",
    "normalize_batch",
    "read_kinetics_csv",
    "read_list_file",
    "resize_short_side",
    "resize_video",
    "resolve_csv_records",
    "scan_class_folders",
    "spatial_crops",
    "train_clip_indices",
    "train_transform",
    "write_class_index",
    "write_missing_videos",
    "write_video",
]
from videogn.data.synthetic import SyntheticSpec, ensure_synthetic_dataset  # noqa: E402  (built-in dataset)

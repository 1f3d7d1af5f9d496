"""Vectorised clip transforms in torch: uint8 (T, H, W, 3) in, float (C, T, H, W) out.

All frames of a clip share one geometry (scale, crop box, flip), applied to the whole clip as one
tensor op -- no per-frame PIL. Training crops in source coordinates first and resizes only the
crop, which is the same geometry as "scale the short side to S, then crop" at a fraction of the
interpolation work; :func:`sample_train_crop` draws that box up front, so the dataset has its
reader copy out only the box of each frame (:func:`apply_train_crop` finishes the clip).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from videogn.checks import check_int
from videogn.defaults import KINETICS_MEAN, KINETICS_STD  # the default everywhere a clip is normalised

__all__ = ["KINETICS_MEAN", "KINETICS_STD", "TrainCrop", "sample_train_crop", "apply_train_crop", "train_transform", "eval_transform", "normalize",
           "normalize_batch", "resize_short_side", "spatial_crops"]


def _check_clip(clip: torch.Tensor) -> None:
    if not isinstance(clip, torch.Tensor) or clip.dtype != torch.uint8:
        raise TypeError(f"clip must be a uint8 tensor (T, H, W, 3), got {type(clip).__name__} "
                        f"{getattr(clip, 'dtype', '')}")
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"clip must have shape (T, H, W, 3), got {tuple(clip.shape)}")


def _resize_thwc(
    clip: torch.Tensor, size: tuple[int, int], *, flip: bool = False, out: torch.Tensor | None = None
) -> torch.Tensor:
    """(T, H, W, 3) -> (T, h, w, 3) bilinear, antialiased when shrinking, same dtype; ``flip``
    also mirrors it left-right. ``out``: a (T, h, w, 3) tensor of the clip's dtype, contiguous in
    its last three dimensions (e.g. one clip of a preallocated item), written in place and returned.

    uint8 clips stay uint8: torch's CPU kernel for uint8 channels-last images (which a THWC clip
    viewed as (T, 3, H, W) is) is several times faster than converting to float first."""
    if tuple(clip.shape[1:3]) == tuple(size):
        y = clip.flip(2) if flip else clip
        return out.copy_(y) if out is not None else y
    x = clip.permute(0, 3, 1, 2)  # (T, 3, H, W), channels-last strides, no copy
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    try:
        # Flip the input, not the output: the kernel copies a strided crop view into a contiguous
        # one anyway (the flip replaces that copy), and when upscaling the input is the smaller one.
        # Its fixed-point weights are mirror-symmetric, so this is bit-exact on the x86 kernels
        # measured (tests/data/test_clip_transforms.py allows 1 level for other builds).
        x = x.flip(3) if flip else x
        if out is not None:
            # the kernel's out= variant writes the clip where it belongs: no copy into the item
            resize = torch.ops.aten._upsample_bilinear2d_aa.out if shrink else torch.ops.aten.upsample_bilinear2d.out
            o = out.permute(0, 3, 1, 2)
            if resize(x, list(size), False, None, None, out=o).data_ptr() == o.data_ptr():
                return out
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    except RuntimeError:  # a build/device without the uint8 kernel; float rounding is not mirror-exact
        y = F.interpolate(clip.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False,
                          antialias=shrink)
        y = y.round_().clamp_(0, 255).to(clip.dtype) if clip.dtype == torch.uint8 else y
        y = y.flip(3) if flip else y
    y = y.permute(0, 2, 3, 1)  # (T, h, w, 3)
    return out.copy_(y) if out is not None else y


def normalize(
    clip: torch.Tensor, mean: Sequence[float], std: Sequence[float], *, channels_last: bool = False
) -> torch.Tensor:
    """(T, H, W, 3) uint8 (or float in [0, 255]) -> float (3, T, H, W) ``(x / 255 - mean) / std``.

    With ``channels_last`` the result keeps channels as the innermost dimension in memory (a batch
    stacked from such clips by :func:`~videogn.data.collate_clips` is ``torch.channels_last_3d``)."""
    _check_mean_std(mean, std)
    scale = torch.tensor([1.0 / (255.0 * v) for v in std])
    shift = torch.tensor([m / v for m, v in zip(mean, std)])
    if channels_last:
        out = clip.to(torch.float32, copy=True)  # (T, H, W, 3)
        return out.mul_(scale).sub_(shift).permute(3, 0, 1, 2)  # (3, T, H, W) view, C innermost
    t, h, w, _ = clip.shape
    out = torch.empty((3, t, h, w), dtype=torch.float32)
    out.copy_(clip.permute(3, 0, 1, 2))  # convert + transpose in one pass
    return out.mul_(scale.view(3, 1, 1, 1)).sub_(shift.view(3, 1, 1, 1))  # (3, T, H, W)


def _check_mean_std(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values, got mean={tuple(mean)}, std={tuple(std)}")
    if min(std) <= 0:
        raise ValueError(f"std must be > 0, got {tuple(std)}")


def normalize_batch(
    video: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.preserve_format,
) -> torch.Tensor:
    """uint8 clips (..., 3, T, H, W) -> ``dtype`` ``(x / 255 - mean) / std``, on ``video``'s device.

    For datasets built with ``dtype="uint8"``: the float conversion then runs where the model does
    (a quarter of the bytes cross worker pipes and the host-to-device copy). The memory layout is
    kept (a ``channels_last_3d`` batch stays so), or is ``memory_format`` when given: the layout
    changes in the same pass as the conversion, not in a copy of the float batch afterwards.
    Equals :func:`normalize` on the same clip.
    """
    if not isinstance(video, torch.Tensor) or video.dtype != torch.uint8:
        raise TypeError(f"video must be a uint8 tensor (..., 3, T, H, W), got {type(video).__name__} "
                        f"{getattr(video, 'dtype', '')}")
    if video.ndim < 4 or video.shape[-4] != 3:
        raise ValueError(f"video must have shape (..., 3, T, H, W), got {tuple(video.shape)}")
    _check_mean_std(mean, std)
    # same arithmetic as normalize: x * (1 / (255 std)) - mean / std, in float32
    scale = torch.tensor([1.0 / (255.0 * v) for v in std], device=video.device).view(3, 1, 1, 1)
    shift = torch.tensor([m / v for m, v in zip(mean, std)], device=video.device).view(3, 1, 1, 1)
    out = torch.empty_like(video, dtype=torch.float32, memory_format=memory_format)
    out.copy_(video)  # convert (and change the layout) in one pass
    return out.mul_(scale).sub_(shift).to(dtype)


class TrainCrop(NamedTuple):
    """A training view in source pixels: the box that becomes the ``crop_size`` square, and
    whether it is mirrored."""

    top: int
    left: int
    height: int
    width: int
    flip: bool

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(top, left, height, width), e.g. the ``window`` of :meth:`VideoReader.get_frames`."""
        return self.top, self.left, self.height, self.width


def sample_train_crop(
    height: int,
    width: int,
    *,
    scale: tuple[int, int] = (256, 320),
    crop_size: int = 224,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> TrainCrop:
    """Draws :func:`train_transform`'s geometry for ``height`` x ``width`` frames: short-side scale
    S ~ U{scale[0]..scale[1]}, a random ``crop_size`` square at that scale, flip with p=0.5.

    Knowing the box before decoding lets a reader return just that region of each frame."""
    lo, hi = scale
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 < lo <= hi):
        raise ValueError(f"scale must be two ints 0 < lo <= hi, got {scale!r}")
    check_int("crop_size", crop_size)
    s = int(torch.randint(lo, hi + 1, (1,), generator=generator))
    # The crop, measured in source pixels: crop_size at short side s is crop_size * min(h, w) / s
    # (capped to the frame when s < crop_size would need more than the frame).
    side = crop_size * min(height, width) / s
    ch, cw = min(height, max(1, round(side))), min(width, max(1, round(side)))
    y0 = int(torch.randint(0, height - ch + 1, (1,), generator=generator))
    x0 = int(torch.randint(0, width - cw + 1, (1,), generator=generator))
    mirror = flip and bool(torch.rand((1,), generator=generator) < 0.5)
    return TrainCrop(y0, x0, ch, cw, mirror)


def apply_train_crop(
    window: torch.Tensor,
    crop: TrainCrop,
    *,
    crop_size: int = 224,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
    channels_last: bool = False,
    normalized: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The pixels of ``crop``'s box, uint8 (T, crop.height, crop.width, 3), to the training clip:
    resized to ``crop_size`` squared, mirrored if ``crop.flip``, normalised (see :func:`train_transform`).

    ``out`` (only with ``normalized=False``): a uint8 (T, crop_size, crop_size, 3) tensor the clip is
    written into (e.g. one clip of a K-clip item); the (3, T, crop, crop) view of it is returned."""
    _check_clip(window)
    if tuple(window.shape[1:3]) != (crop.height, crop.width):
        raise ValueError(f"window is {tuple(window.shape[1:3])}, the crop box {(crop.height, crop.width)}")
    if out is not None and normalized:
        raise ValueError("apply_train_crop: out= is for uint8 output (normalized=False)")
    x = _resize_thwc(window, (crop_size, crop_size), flip=crop.flip, out=out)  # (T, crop, crop, 3)
    if not normalized:
        return x.permute(3, 0, 1, 2)  # (3, T, crop, crop) view
    return normalize(x, mean, std, channels_last=channels_last)


def train_transform(
    clip: torch.Tensor,
    *,
    scale: tuple[int, int] = (256, 320),
    crop_size: int = 224,
    flip: bool = True,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
    channels_last: bool = False,
    generator: torch.Generator | None = None,
    normalized: bool = True,
) -> torch.Tensor:
    """Short-side scale jitter S ~ U{scale[0]..scale[1]}, random ``crop_size`` square crop,
    horizontal flip with p=0.5, normalisation (:func:`sample_train_crop` then :func:`apply_train_crop`).

    Args:
        clip: uint8 (T, H, W, 3).
        generator: torch generator (default: global RNG, seeded per DataLoader worker).
        normalized: False returns the uint8 clip (3, T, crop, crop), C innermost in memory, for
            :func:`normalize_batch` on the training device (``mean``/``std``/``channels_last`` unused).

    Returns:
        float (3, T, crop_size, crop_size) (uint8 when not ``normalized``).
    """
    _check_clip(clip)
    crop = sample_train_crop(clip.shape[1], clip.shape[2], scale=scale, crop_size=crop_size, flip=flip,
                             generator=generator)
    window = clip[:, crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]  # view, no copy
    return apply_train_crop(window, crop, crop_size=crop_size, mean=mean, std=std, channels_last=channels_last,
                            normalized=normalized)


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, H', W', 3) with min(H', W') = size, aspect kept."""
    _check_clip(clip)
    check_int("size", size)
    _, h, w, _ = clip.shape
    if h <= w:
        new = (size, max(1, round(w * size / h)))
    else:
        new = (max(1, round(h * size / w)), size)
    return _resize_thwc(clip, new)


def spatial_crops(x: torch.Tensor, crop_size: int, num_crops: int) -> list[torch.Tensor]:
    """Square crops (views) of a (T, H, W, C) clip: 1 = centre; 3 = start, centre and end along the
    longer side (left/centre/right for landscape, top/centre/bottom for portrait)."""
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops!r}")
    h, w = x.shape[1:3]
    if crop_size > min(h, w):
        raise ValueError(f"crop_size={crop_size} is larger than the resized frame {w}x{h}; lower crop_size "
                         f"or raise test_scale")
    cy, cx = (h - crop_size) // 2, (w - crop_size) // 2
    if num_crops == 1:
        boxes = [(cy, cx)]
    elif w >= h:
        boxes = [(cy, 0), (cy, cx), (cy, w - crop_size)]
    else:
        boxes = [(0, cx), (cy, cx), (h - crop_size, cx)]
    return [x[:, y : y + crop_size, xx : xx + crop_size] for y, xx in boxes]


def eval_transform(
    clip: torch.Tensor,
    *,
    scale: int = 256,
    crop_size: int = 224,
    num_crops: int = 1,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
    channels_last: bool = False,
    normalized: bool = True,
) -> torch.Tensor:
    """Test-time views: short side to ``scale``, then 1 (centre) or 3 square crops of ``crop_size``,
    normalised (``normalized=False``: uint8, for :func:`normalize_batch`). (Named ``eval_*`` so that
    pytest never collects it as a test.)

    The paper protocol's fully convolutional test is ``scale=256, crop_size=256, num_crops=3``.

    Returns:
        float (num_crops, 3, T, crop_size, crop_size) (uint8 when not ``normalized``).
    """
    x = resize_short_side(clip, scale)  # (T, H', W', 3)
    crops = spatial_crops(x, crop_size, num_crops)  # each (T, crop, crop, 3)
    if not normalized:
        return torch.stack([c.permute(3, 0, 1, 2) for c in crops])  # (num_crops, 3, T, crop, crop) uint8
    if channels_last:  # (num_crops, 3, T, crop, crop) with C innermost in memory
        return normalize(torch.cat(crops), mean, std, channels_last=True).unflatten(1, (num_crops, -1)).transpose(0, 1)
    return torch.stack([normalize(c, mean, std) for c in crops])  # (num_crops, 3, T, crop, crop)

"""Clip transforms: shapes, normalisation, crop geometry, flip, 1/3 crops, channels-last layout."""

import pytest
import torch
import torch.nn.functional as F

from videogn.data import eval_transform, normalize, resize_short_side, spatial_crops, train_transform
from videogn.data.transforms import _resize_thwc

MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


def ramp_clip(t=4, h=48, w=64):
    """uint8 (T, H, W, 3): red = column, green = row, blue = frame index."""
    x = torch.arange(w).view(1, 1, w).expand(t, h, w)
    y = torch.arange(h).view(1, h, 1).expand(t, h, w)
    z = torch.arange(t).view(t, 1, 1).expand(t, h, w) * 10
    return torch.stack([x * 3, y * 4, z], -1).to(torch.uint8)


def denorm(v):
    m = torch.tensor(MEAN).view(3, 1, 1, 1)
    s = torch.tensor(STD).view(3, 1, 1, 1)
    return (v * s + m) * 255


def test_train_shape_and_normalisation():
    clip = torch.full((5, 40, 60, 3), 200, dtype=torch.uint8)
    out = train_transform(clip, scale=(40, 50), crop_size=32, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 5, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, torch.full_like(out, (200 / 255 - 0.45) / 0.225))


def test_train_identity_geometry_and_flip():
    clip = ramp_clip()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        # scale = short side and crop = short side: the crop is a 48x48 window, no resampling
        out = denorm(train_transform(clip, scale=(48, 48), crop_size=48, generator=g))
        red = out[0, 0, 0]  # columns of the first row
        flipped = bool(red[0] > red[-1])
        seen.add(flipped)
        step = -3 if flipped else 3
        torch.testing.assert_close(red[1:] - red[:-1], torch.full((47,), float(step)), atol=1e-3, rtol=0)
        torch.testing.assert_close(out[1, 0, :, 0], torch.arange(48.0) * 4, atol=1e-3, rtol=0)  # rows intact
        torch.testing.assert_close(out[2, :, 0, 0], torch.arange(4.0) * 10, atol=1e-3, rtol=0)  # time intact
    assert seen == {True, False}  # flip happens, not always
    out = denorm(train_transform(clip, scale=(48, 48), crop_size=48, flip=False, generator=g))
    assert out[0, 0, 0, 0] < out[0, 0, 0, -1]


def test_train_scale_jitter_matches_resize_then_crop():
    # scale 96 (2x) then crop 96: the full upscaled frame width-centred; equals a direct resize of the crop
    clip = ramp_clip(2, 48, 48)
    out = denorm(train_transform(clip, scale=(96, 96), crop_size=96, flip=False))
    ref = F.interpolate(clip.permute(0, 3, 1, 2).float(), size=(96, 96), mode="bilinear", align_corners=False)
    # the uint8 resize rounds to whole levels
    torch.testing.assert_close(out, ref.permute(1, 0, 2, 3), atol=0.51, rtol=0)


def test_resize_short_side_and_crops():
    clip = ramp_clip(2, 48, 64)
    x = resize_short_side(clip, 24)
    assert x.shape == (2, 24, 32, 3) and x.dtype == torch.uint8
    # halving a ramp of step 3 (antialiased) gives a ramp of step 6
    assert (x[0, 0, 1:-1, 0].int() - x[0, 0, :-2, 0].int()).tolist() == [6] * 30  # edge pixel clamps
    portrait = resize_short_side(ramp_clip(2, 64, 48), 24)
    assert portrait.shape == (2, 32, 24, 3)
    crops = spatial_crops(x, 24, 3)
    assert [tuple(c.shape[1:3]) for c in crops] == [(24, 24)] * 3
    assert torch.equal(crops[0], x[:, :, :24]) and torch.equal(crops[2], x[:, :, -24:])
    assert torch.equal(crops[1], x[:, :, 4:28])
    pc = spatial_crops(portrait, 24, 3)
    assert torch.equal(pc[0], portrait[:, :24]) and torch.equal(pc[2], portrait[:, -24:])
    with pytest.raises(ValueError, match="num_crops"):
        spatial_crops(x, 24, 2)
    with pytest.raises(ValueError, match="crop_size=30"):
        spatial_crops(x, 30, 1)


def test_eval_transform_views():
    clip = ramp_clip(3, 48, 64)
    one = eval_transform(clip, scale=48, crop_size=48, num_crops=1)
    three = eval_transform(clip, scale=48, crop_size=48, num_crops=3)
    assert one.shape == (1, 3, 3, 48, 48) and three.shape == (3, 3, 3, 48, 48)
    torch.testing.assert_close(three[1], one[0])
    red = denorm(three[:, :, 0])[:, 0, 0]  # first row red of each crop
    assert red[0, 0] == pytest.approx(0, abs=1e-3) and red[2, -1] == pytest.approx(63 * 3, abs=1e-3)


def test_channels_last_layout():
    clip = ramp_clip(4, 48, 64)
    a = train_transform(clip, scale=(48, 48), crop_size=32, generator=torch.Generator().manual_seed(3))
    b = train_transform(clip, scale=(48, 48), crop_size=32, channels_last=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert b.stride(0) == 1 and b.unsqueeze(0).is_contiguous(memory_format=torch.channels_last_3d)
    v = eval_transform(clip, scale=32, crop_size=32, num_crops=3, channels_last=True)
    assert v.stride(1) == 1
    torch.testing.assert_close(v, eval_transform(clip, scale=32, crop_size=32, num_crops=3))


@pytest.mark.parametrize(
    "fn, kwargs, exc, match",
    [
        (train_transform, {"scale": (300, 256)}, ValueError, "scale"),
        (train_transform, {"crop_size": 0}, ValueError, "crop_size"),
        (resize_short_side, {"size": 0}, ValueError, "size"),
    ],
)
def test_bad_arguments(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(ramp_clip(), **kwargs)
    with pytest.raises(TypeError, match="uint8"):
        train_transform(ramp_clip().float())
    with pytest.raises(ValueError, match="mean and std"):
        normalize(torch.zeros(1, 2, 2, 3), (0.5,), STD)


@pytest.mark.parametrize("src, out", [(179, 224), (200, 224), (223, 224), (240, 224), (97, 112), (120, 24), (31, 48)])
def test_flip_before_resize_equals_flip_after(src, out):
    # train_transform flips the crop before resizing it (cheaper); the uint8 kernel's weights are
    # mirror-symmetric, so this equals flipping the resized clip, up- and downscaling alike (bit-exact
    # on the x86 kernels measured; a build with another uint8 kernel may round a pixel by 1 level)
    g = torch.Generator().manual_seed(src)
    clip = torch.randint(0, 256, (3, src + 5, src + 9, 3), dtype=torch.uint8, generator=g)
    crop = clip[:, 2 : 2 + src, 7 : 7 + src]  # a strided view, like the training crop
    ref = F.interpolate(crop.permute(0, 3, 1, 2), size=(out, out), mode="bilinear", align_corners=False,
                        antialias=src > out).flip(3).permute(0, 2, 3, 1)
    got = _resize_thwc(crop, (out, out), flip=True)
    diff = (got.int() - ref.int()).abs()
    assert got.shape == ref.shape and diff.max() <= 1 and diff.float().mean() < 0.01


def test_train_transform_uint8_matches_crop_resize_flip():
    clip = torch.randint(0, 256, (4, 64, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for seed in range(12):
        out = train_transform(clip, scale=(64, 90), crop_size=56, normalized=False,
                              generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)  # the same draws, in train_transform's order
        s = int(torch.randint(64, 91, (1,), generator=g))
        side = round(56 * 64 / s)
        y0 = int(torch.randint(0, 64 - side + 1, (1,), generator=g))
        x0 = int(torch.randint(0, 80 - side + 1, (1,), generator=g))
        flip = bool(torch.rand((1,), generator=g) < 0.5)
        ref = F.interpolate(clip[:, y0 : y0 + side, x0 : x0 + side].permute(0, 3, 1, 2), size=(56, 56),
                            mode="bilinear", align_corners=False, antialias=side > 56)
        ref = (ref.flip(3) if flip else ref).permute(1, 0, 2, 3)  # (3, T, 56, 56)
        diff = (out.int() - ref.int()).abs()  # bit-exact on x86 kernels; see the flip test above
        assert out.dtype == torch.uint8 and out.shape == ref.shape and diff.max() <= 1


@pytest.mark.parametrize("box", [(40, 36), (20, 18)])  # shrinking (antialiased) and upscaling to 28
@pytest.mark.parametrize("flip", [False, True])
def test_train_crop_written_in_place_equals_the_returned_clip(box, flip):
    """out= (a K-clip item's slot, written by the kernel's out variant) gives the same pixels and
    the same (3, T, crop, crop) C-innermost view as the allocating path."""
    from videogn.data.transforms import TrainCrop, apply_train_crop

    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (5, 48, 50, 3), dtype=torch.uint8, generator=g)
    window = frames[:, 3 : 3 + box[0], 5 : 5 + box[1]]  # a strided view, as the item passes it
    crop = TrainCrop(3, 5, box[0], box[1], flip)
    expected = apply_train_crop(window.contiguous(), crop, crop_size=28, normalized=False)
    item = torch.zeros((2, 5, 28, 28, 3), dtype=torch.uint8)
    got = apply_train_crop(window, crop, crop_size=28, normalized=False, out=item[1])
    assert got.data_ptr() == item[1].data_ptr() and got.shape == (3, 5, 28, 28) and got.stride(0) == 1
    assert torch.equal(got, expected) and not item[0].any()
    with pytest.raises(ValueError, match="out= is for uint8 output"):
        apply_train_crop(window, crop, crop_size=28, normalized=True, out=item[0])

"""videogn.functional.group_norm against float64 F.group_norm: values, gradients, layouts, errors."""

import pytest
import torch
import torch.nn.functional as F

from videogn.functional import group_norm

CL = {4: torch.channels_last, 5: torch.channels_last_3d}


def reference(x, groups, w, b, eps=1e-5, activation=None):
    y = F.group_norm(x.double(), groups, None if w is None else w.double(),
                     None if b is None else b.double(), eps)
    if activation == "relu":
        y = F.relu(y)
    elif activation == "silu":
        y = F.silu(y)
    return y


SHAPES = [
    ((2, 8, 3, 5, 7), 4),
    ((1, 64, 4, 6, 6), 32),
    ((3, 12, 2, 3, 3), 3),   # C/G = 4, odd spatial
    ((2, 10, 5, 1, 1), 2),   # C/G = 5
    ((4, 6, 7, 5), 3),       # 4-D
    ((2, 6, 9), 6),          # 3-D, G = C
    ((5, 4), 2),             # 2-D
]


@pytest.mark.parametrize("shape,groups", SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", [None, "relu", "silu"])
def test_forward_matches_float64_reference(shape, groups, layout, activation):
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 0.5
    if layout == "channels_last":
        if x.dim() not in CL:
            pytest.skip("channels_last applies to 4-D and 5-D tensors")
        x = x.to(memory_format=CL[x.dim()])
    c = shape[1]
    w, b = torch.randn(c), torch.randn(c)
    y = group_norm(x, groups, w, b, 1e-5, activation=activation, backend="native")
    torch.testing.assert_close(y.double(), reference(x, groups, w, b, activation=activation),
                               atol=2e-5, rtol=1e-5)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=CL[x.dim()])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_gradcheck_float64(layout, activation):
    torch.manual_seed(1)
    x = torch.randn(2, 6, 2, 3, 3, dtype=torch.float64)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: group_norm(x, 3, w, b, activation=activation, backend="native"), (x, w, b)
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_fp32_matches_reference_gradients(layout):
    torch.manual_seed(2)
    x = torch.randn(3, 16, 3, 4, 5) * 2 + 1
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last_3d)
    w, b = torch.randn(16), torch.randn(16)
    grad = torch.randn(3, 16, 3, 4, 5)
    inputs = [t.clone().requires_grad_(True) for t in (x, w, b)]
    group_norm(*inputs[:1], 4, inputs[1], inputs[2], activation="relu", backend="native").backward(grad)
    ref_inputs = [t.double().requires_grad_(True) for t in (x, w, b)]
    F.relu(F.group_norm(ref_inputs[0], 4, ref_inputs[1], ref_inputs[2])).backward(grad.double())
    for got, want in zip(inputs, ref_inputs):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_stable_statistics_large_mean_small_spread(layout):
    # Mean ~1000x the spread: E[x^2] - E[x]^2 in fp32 loses every digit here.
    torch.manual_seed(3)
    x = torch.randn(2, 32, 4, 8, 8) * 1.0 + 1000.0
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last_3d)
    w, b = torch.randn(32), torch.randn(32)
    y = group_norm(x, 8, w, b, backend="native")
    err = (y.double() - reference(x, 8, w, b)).abs().max().item()
    assert err < 1e-3, err


def test_empty_batch_and_empty_spatial():
    x = torch.randn(0, 4, 3, 2, 2)
    assert group_norm(x, 2).shape == (0, 4, 3, 2, 2)
    x = torch.randn(0, 4, 3, 2, 2).to(memory_format=torch.channels_last_3d)
    assert group_norm(x, 2).shape == (0, 4, 3, 2, 2)


def test_sample_output_does_not_depend_on_the_batch():
    torch.manual_seed(4)
    a = torch.randn(1, 8, 2, 3, 3)
    others = torch.randn(5, 8, 2, 3, 3) * 10 + 5
    alone = group_norm(a, 4)
    batched = group_norm(torch.cat([others[:2], a, others[2:]]), 4)[2:3]
    torch.testing.assert_close(alone, batched)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_low_precision_keeps_dtype_and_layout(dtype, layout):
    torch.manual_seed(5)
    x = (torch.randn(2, 8, 3, 4, 4) * 4 + 2).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last_3d)
    w, b = torch.randn(8), torch.randn(8)  # fp32 parameters, as under autocast
    y = group_norm(x, 4, w, b)
    assert y.dtype == dtype
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
    tol = 1e-2 if dtype == torch.float16 else 4e-2
    torch.testing.assert_close(y.double(), reference(x, 4, w, b), atol=tol, rtol=tol)


def test_autocast_keeps_input_dtype():
    x = torch.randn(2, 8, 2, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert group_norm(x, 4, torch.ones(8), torch.zeros(8)).dtype == torch.bfloat16
        assert group_norm(x.float(), 4).dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_groups=0), "num_groups"),
        (dict(num_groups=-2), "num_groups"),
        (dict(num_groups=3), "num_groups"),   # 3 does not divide 8
        (dict(num_groups=2.0), "num_groups"),
        (dict(num_groups=2, eps=-1e-5), "eps"),
        (dict(num_groups=2, weight=torch.ones(7)), "weight"),
        (dict(num_groups=2, bias=torch.ones(8, 1)), "bias"),
        (dict(num_groups=2, activation="gelu"), "activation"),
        (dict(num_groups=2, backend="cuda"), "backend"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_argument(kwargs, match):
    x = torch.randn(2, 8, 2, 2, 2)
    num_groups = kwargs.pop("num_groups")
    with pytest.raises(ValueError, match=match):
        group_norm(x, num_groups, **kwargs)


def test_one_dimensional_input_is_rejected():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        group_norm(torch.randn(8), 2)


def test_pytorch_opinfo_sample_inputs():
    """PyTorch's own sample inputs for nn.functional.group_norm give F.group_norm's results."""
    from torch.testing._internal.common_methods_invocations import op_db

    opinfo = next(op for op in op_db if op.name == "nn.functional.group_norm")
    count = 0
    for dtype in (torch.float32, torch.float64):
        for sample in opinfo.sample_inputs("cpu", dtype):
            args, kwargs = list(sample.args), dict(sample.kwargs)
            if kwargs.get("eps", 1e-5) < 0:
                # F.group_norm computes with a negative eps; videogn rejects it by design.
                with pytest.raises(ValueError, match="eps"):
                    group_norm(sample.input, *args, **kwargs)
                continue
            want = F.group_norm(sample.input, *args, **kwargs)
            got = group_norm(sample.input, *args, **kwargs)
            torch.testing.assert_close(got, want)
            assert got.dtype == want.dtype and got.shape == want.shape
            count += 1
    assert count > 5


def test_traceable_channels_last_path_matches_reference_and_gradcheck():
    """The two-pass path that torch.compile/export trace through (no data-dependent branch)."""
    from videogn.functional import _two_pass_channels_last

    torch.manual_seed(6)
    x = (torch.randn(2, 16, 3, 4, 4) + 1000.0).to(memory_format=torch.channels_last_3d)
    w, b = torch.randn(16), torch.randn(16)
    y = _two_pass_channels_last(x, 4, w, b, 1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert (y.double() - reference(x, 4, w, b)).abs().max() < 1e-3
    xd = torch.randn(2, 6, 2, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last_3d)
    wd = torch.randn(6, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x, w: _two_pass_channels_last(x, 3, w, None, 1e-5),
        (xd.requires_grad_(True), wd.requires_grad_(True)),
    )


def test_compiled_channels_last_large_mean_is_stable():
    torch.manual_seed(7)
    x = (torch.randn(2, 16, 3, 4, 4) + 1000.0).to(memory_format=torch.channels_last_3d)
    w, b = torch.randn(16), torch.randn(16)
    fn = torch.compile(lambda x: group_norm(x, 4, w, b), backend="aot_eager", fullgraph=True)
    assert (fn(x).double() - reference(x, 4, w, b)).abs().max() < 1e-3


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradients_stay_accurate_on_large_mean_inputs(layout):
    torch.manual_seed(8)
    x = torch.randn(2, 16, 3, 4, 4) + 1000.0
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last_3d)
    w, b, grad = torch.randn(16), torch.randn(16), torch.randn(2, 16, 3, 4, 4)
    xi = x.clone().requires_grad_(True)
    group_norm(xi, 4, w, b).backward(grad)
    xr = x.double().requires_grad_(True)
    F.group_norm(xr, 4, w.double(), b.double()).backward(grad.double())
    assert (xi.grad.double() - xr.grad).abs().max() < 1e-3


def test_parameters_must_share_the_input_device():
    # the native path would raise a RuntimeError deep in ATen, the Triton path would hand a
    # foreign pointer to the kernel: both get a ValueError naming the parameter
    x = torch.randn(1, 4, 6)
    with pytest.raises(ValueError, match="weight is on meta but input is on cpu"):
        group_norm(x, 2, torch.ones(4, device="meta"), backend="native")
    with pytest.raises(ValueError, match="bias is on meta"):
        group_norm(x, 2, None, torch.zeros(4, device="meta"), backend="native")


def test_relu_keeps_nan_like_f_relu():
    # a NaN bias makes one channel NaN after the affine; ReLU must keep it (not clamp it to 0)
    x = torch.randn(1, 4, 6)
    b = torch.tensor([float("nan"), float("-inf"), 1.0, 0.0])
    y = group_norm(x, 2, None, b, activation="relu", backend="native")
    assert torch.isnan(y[0, 0]).all() and (y[0, 1] == 0).all()
    torch.testing.assert_close(y, reference(x, 2, None, b, activation="relu").float(),
                               equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cancellation_check_reads_the_statistics_exactly(dtype):
    """The channels-last path's check, max |mean * rstd|, read in place (fp32/fp64) or by torch
    ops (other dtypes, non-contiguous statistics): both give the product's maximum."""
    from videogn.functional import _max_abs_product

    torch.manual_seed(9)
    mean, rstd = (torch.randn(3, 8) * 50).to(dtype), torch.rand(3, 8).to(dtype)
    expected = (mean.double() * rstd.double()).abs().max().item()
    rel = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert _max_abs_product(mean, rstd) == pytest.approx(expected, rel=rel)
    assert _max_abs_product(mean.t(), rstd.t()) == pytest.approx(expected, rel=rel)


def test_one_value_per_group_is_refused_as_nn_groupnorm_does():
    from videogn.layers import GroupNorm3d

    x = torch.randn(1, 4, 1, 1, 1)
    with pytest.raises(ValueError, match="more than 1 value"):
        torch.nn.GroupNorm(4, 4)(x)
    with pytest.raises(ValueError, match="more than 1 value"):
        GroupNorm3d(4, num_groups=4)(x)

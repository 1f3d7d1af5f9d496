"""GroupNorm3d: constructor conventions, group policy, equivalences, layouts, compile/export/ONNX."""

import functools
import importlib.util
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videogn import GroupNorm3d
from videogn.layers import resolve_num_groups


def test_is_an_nn_groupnorm_with_the_same_state_dict():
    norm = GroupNorm3d(64)
    assert isinstance(norm, nn.GroupNorm)
    assert (norm.num_channels, norm.num_groups) == (64, 32)
    plain = nn.GroupNorm(32, 64)
    assert norm.state_dict().keys() == plain.state_dict().keys()
    plain.weight.data.normal_()
    norm.load_state_dict(plain.state_dict())
    x = torch.randn(2, 64, 2, 3, 3)
    torch.testing.assert_close(norm(x), plain(x))


@pytest.mark.parametrize(
    "build",
    [
        lambda: GroupNorm3d(256),                                           # torchvision norm_layer(C)
        lambda: GroupNorm3d(num_features=256, eps=1e-5, momentum=0.1),      # pytorchvideo's call
        lambda: GroupNorm3d(256, track_running_stats=True),
        lambda: GroupNorm3d(32, 256),                                       # nn.GroupNorm(G, C) order
        lambda: GroupNorm3d(num_groups=32, num_channels=256),               # nn.GroupNorm keywords
        lambda: GroupNorm3d(256, group_size=8),
    ],
)
def test_calling_conventions(build):
    norm = build()
    assert (norm.num_channels, norm.num_groups) == (256, 32)


def test_group_size_and_num_groups():
    assert GroupNorm3d(64, group_size=16).num_groups == 4
    assert GroupNorm3d(64, num_groups=8).group_size == 8


def test_non_divisible_channels_use_largest_divisor_not_above_request(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_num_groups(45, 32) == 15
    assert resolve_num_groups(144, 32) == 24
    assert resolve_num_groups(230, 32) == 23
    assert resolve_num_groups(460, 32) == 23
    assert resolve_num_groups(921, 32) == 3
    assert resolve_num_groups(45, group_size=16) == 1   # 45 // 16 = 2 requested -> divisor 1
    assert resolve_num_groups(48, group_size=16) == 3
    norm = GroupNorm3d(45)
    assert norm.num_groups == 15 and norm.requested_num_groups == 32
    x = torch.randn(2, 45, 2, 3, 3)
    torch.testing.assert_close(norm(x), F.group_norm(x, 15, norm.weight, norm.bias))


@pytest.mark.parametrize(
    "channels, groups",
    [(24, 12), (45, 15), (1, 1), (2, 1), (3, 1), (16, 8), (32, 16), (64, 32), (96, 32), (921, 3)],
)
def test_default_groups_keep_at_least_two_channels_per_group_where_c_allows(channels, groups):
    # One rule for the bare layer, the norm registry and the model zoo (create_model(..., norm="gn"))
    assert resolve_num_groups(channels) == groups
    norm = GroupNorm3d(channels)
    assert norm.num_groups == groups and norm.requested_num_groups == 32
    assert channels // groups >= min(2, channels)


def test_explicit_groups_that_divide_c_are_used_as_given():
    assert GroupNorm3d(24, num_groups=24).num_groups == 24       # 1 channel per group, as asked
    assert GroupNorm3d(32, num_groups=32).num_groups == 32
    assert GroupNorm3d(24, group_size=1).num_groups == 24
    assert GroupNorm3d(32, strict=True).num_groups == 32         # strict: exactly the (default) request
    assert GroupNorm3d(24, num_groups=32).num_groups == 12       # not a divisor: the rule
    assert resolve_num_groups(24, 32) == resolve_num_groups(24) == 12
    with pytest.raises(ValueError, match="num_groups or group_size, not both"):
        GroupNorm3d(64, num_groups=8, group_size=16)


def test_strict_raises_on_non_divisible_channels():
    with pytest.raises(ValueError, match="num_groups=32 does not divide num_channels=45"):
        GroupNorm3d(45, strict=True)
    with pytest.raises(ValueError, match="group_size=16"):
        GroupNorm3d(45, group_size=16, strict=True)
    with pytest.raises(ValueError, match="num_groups=32 does not divide num_channels=24"):
        GroupNorm3d(24, strict=True)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(num_channels=0), ValueError, "num_channels"),
        (dict(num_channels=64, num_groups=0), ValueError, "num_groups"),
        (dict(num_channels=64, group_size=-1), ValueError, "group_size"),
        (dict(num_channels=64, activation="tanh"), ValueError, "activation"),
        (dict(num_channels=64, backend="cudnn"), ValueError, "backend"),
        (dict(num_channels=64, num_features=32), ValueError, "disagree"),
        (dict(), TypeError, "num_channels"),
        (dict(num_channels=64, bogus=1), TypeError, "bogus"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        GroupNorm3d(**kwargs)


def test_wrong_channel_count_in_forward_names_the_shapes():
    with pytest.raises(ValueError, match=r"\(N, 64, \*\).*\(2, 32, 4, 4, 4\)"):
        GroupNorm3d(64)(torch.randn(2, 32, 4, 4, 4))


def test_g1_equals_layer_norm_over_c_t_h_w():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 4, 5, 5)
    ours = GroupNorm3d(8, num_groups=1, affine=False)(x)
    torch.testing.assert_close(ours, F.layer_norm(x, x.shape[1:], eps=1e-5))


def test_g_equals_c_is_instance_norm3d():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 4, 5, 5)
    gn = GroupNorm3d(8, num_groups=8)
    inorm = nn.InstanceNorm3d(8, affine=True)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
        inorm.weight.copy_(gn.weight)
        inorm.bias.copy_(gn.bias)
    torch.testing.assert_close(gn(x), inorm(x))


def test_train_and_eval_behave_the_same():
    norm = GroupNorm3d(16, num_groups=4)
    x = torch.randn(2, 16, 3, 4, 4)
    y_train = norm.train()(x)
    torch.testing.assert_close(norm.eval()(x), y_train)


def test_fused_activation_matches_separate_relu_and_silu():
    x = torch.randn(2, 16, 3, 4, 4)
    plain = GroupNorm3d(16, num_groups=4)
    for act, fn in (("relu", F.relu), ("silu", F.silu)):
        fused = GroupNorm3d(16, num_groups=4, activation=act)
        torch.testing.assert_close(fused(x), fn(plain(x)))
        assert f"activation='{act}'" in repr(fused)


def test_channels_last_3d_in_channels_last_3d_out_with_same_values():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 4, 6, 6) * 5 + 100
    norm = GroupNorm3d(32, num_groups=8, activation="relu")
    y_cl = norm(x.to(memory_format=torch.channels_last_3d))
    assert y_cl.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y_cl, norm(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_cpu_forward_is_group_norm_exactly(layout, activation):
    """The layer's lean CPU path (no per-call re-check of its own settings) computes exactly what
    videogn.functional.group_norm does, values, gradients and layout."""
    from videogn.functional import group_norm

    torch.manual_seed(0)
    norm = GroupNorm3d(16, num_groups=4, activation=activation)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 16, 3, 4, 5) + 1000.0  # also the large-mean (cancellation) case
    if layout != "contiguous":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    grad = torch.randn_like(x)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1 = norm(x1)
    y2 = group_norm(x2, 4, norm.weight, norm.bias, norm.eps, activation=activation)
    assert torch.equal(y1, y2) and y1.stride() == y2.stride()
    (g1,) = torch.autograd.grad(y1, x1, grad)
    (g2,) = torch.autograd.grad(y2, x2, grad)
    assert torch.equal(g1, g2)


def test_parameters_on_another_device_are_named():
    norm = GroupNorm3d(8, num_groups=4, device="meta")
    with pytest.raises(ValueError, match="weight is on meta but input is on cpu"):
        norm(torch.randn(2, 8, 2, 2, 2))


def test_pytorchvideo_create_resnet_builds_and_runs_with_groupnorm3d():
    from pytorchvideo.models.resnet import create_resnet

    model = create_resnet(
        input_channel=3, model_depth=50, model_num_class=5, norm=GroupNorm3d,
        stem_dim_out=16, stage1_pool=None, head_pool=nn.AdaptiveAvgPool3d, head_pool_kernel_size=None,
        head_output_size=(1, 1, 1),
    )
    norms = [m for m in model.modules() if isinstance(m, GroupNorm3d)]
    assert norms and not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    out = model(torch.randn(1, 3, 4, 32, 32))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 16, 3, padding=1)
        self.norm = GroupNorm3d(16, num_groups=4, activation="relu")
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.norm(self.conv(x))  # (N, 16, T, H, W)
        return self.head(x.mean(dim=(2, 3, 4)))


def test_torch_compile_matches_eager_forward_and_backward():
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(2, 3, 4, 8, 8)
    eager = net(x)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    out.sum().backward()
    assert net.norm.weight.grad is not None and torch.isfinite(net.norm.weight.grad).all()


def test_torch_export_runs_and_matches():
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(2, 3, 4, 8, 8)
    exported = torch.export.export(net, (x,))
    torch.testing.assert_close(exported.module()(x), net(x))


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None,
                    reason="ONNX exporter (onnx + onnxscript) not installed")
def test_onnx_export_contains_a_normalization(tmp_path):
    import onnx

    net = _Net().eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 4, 8, 8),), str(path), dynamo=True)
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert ops & {"GroupNormalization", "InstanceNormalization", "ReduceMean", "LayerNormalization"}, ops


def test_partial_is_a_channel_first_norm_layer():
    norm_layer = functools.partial(GroupNorm3d, num_groups=8, activation="silu")
    norm = norm_layer(64)
    assert (norm.num_groups, norm.activation) == (8, "silu")


def test_default_groups_on_few_channels_never_swaps_arguments():
    # C=16 with the default G=32 is C=16 (groups capped at 16), not nn.GroupNorm's (G=16, C=32).
    norm = GroupNorm3d(16)
    assert (norm.num_channels, norm.num_groups) == (16, 8)  # at least 2 channels per group
    assert GroupNorm3d(num_features=8, num_groups=32).num_channels == 8


def test_keyword_groups_are_never_read_as_nn_groupnorm_order():
    # Found by the norm sweep: norm.kwargs.num_groups=32 on a 16-channel layer built a 32-channel
    # norm (the keyword G was taken for nn.GroupNorm's positional (G, C) order).
    import functools

    for build in (lambda: GroupNorm3d(16, num_groups=32), lambda: functools.partial(GroupNorm3d, num_groups=32)(16),
                  lambda: GroupNorm3d(num_channels=16, num_groups=32)):
        norm = build()
        assert (norm.num_channels, norm.num_groups, norm.requested_num_groups) == (16, 8, 32)
        assert norm(torch.randn(2, 16, 2, 3, 3)).shape == (2, 16, 2, 3, 3)
    assert (GroupNorm3d(16, 32).num_channels, GroupNorm3d(16, 32).num_groups) == (32, 16)  # positional: nn.GroupNorm's
    with pytest.raises(TypeError, match="by position or by keyword"):
        GroupNorm3d(64, 8, num_groups=4)
    with pytest.raises(ValueError, match="disagree"):
        GroupNorm3d(64, num_channels=32)


@pytest.mark.parametrize("name", ["r2plus1d_18", "x3d_s"])
def test_the_model_zoo_follows_the_same_rule(name):
    from videogn.models import create_model

    with torch.device("meta"):  # shapes only
        model = create_model(name, 10)
    norms = [m for m in model.modules() if isinstance(m, GroupNorm3d)]
    assert norms and all(m.num_groups == resolve_num_groups(m.num_channels) for m in norms)
    assert all(m.num_channels // m.num_groups >= 2 for m in norms)
    if name == "r2plus1d_18":
        assert {45, 144, 230, 460, 921} <= {m.num_channels for m in norms}

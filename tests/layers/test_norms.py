"""create_norm / resolve_norm, FrozenBatchNorm, convert_norm on real models, zero-γ init, WSConv3d."""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videogn import (
    NORM_NAMES,
    FrozenBatchNorm,
    GroupNorm3d,
    WSConv3d,
    convert_norm,
    create_norm,
    resolve_norm,
    standardize_convs,
    zero_init_last_norm,
)
from videogn.layers import (
    NORMS,
    TORCH_NORMS,
    NormEntry,
    format_norm_report,
    last_norm_of_block,
    norm_weight_decay,
    register_norm,
)
from videogn.optim import norm_and_bias_parameters


@pytest.mark.parametrize(
    "name,cls,groups",
    [("gn", GroupNorm3d, 32), ("ln", GroupNorm3d, 1), ("in", GroupNorm3d, 64),
     ("bn", nn.BatchNorm3d, None), ("syncbn", nn.SyncBatchNorm, None),
     ("frozen_bn", FrozenBatchNorm, None), ("none", nn.Identity, None)],
)
def test_create_norm_by_name(name, cls, groups):
    norm = create_norm(name, 64)
    assert isinstance(norm, cls)
    if groups is not None:
        assert norm.num_groups == groups
    if name not in ("syncbn",):  # SyncBatchNorm needs a process group in training mode
        out = norm.eval()(torch.randn(2, 64, 2, 3, 3))
        assert out.shape == (2, 64, 2, 3, 3)


def test_create_norm_accepts_classes_partials_and_settings():
    assert create_norm(GroupNorm3d, 64, num_groups=8).num_groups == 8
    assert create_norm(functools.partial(GroupNorm3d, group_size=16), 64).num_groups == 4
    assert create_norm("gn", 64, eps=1e-3).eps == 1e-3
    assert isinstance(create_norm(nn.BatchNorm3d, 8), nn.BatchNorm3d)
    layer = resolve_norm("gn", num_groups=4)
    assert layer(16).num_groups == 4 and layer(32).num_groups == 4


def test_unknown_norm_lists_the_valid_names():
    with pytest.raises(ValueError) as info:
        create_norm("groupnorm", 64)
    for name in NORM_NAMES:
        assert name in str(info.value)
    with pytest.raises(TypeError, match="norm must be"):
        create_norm(3, 64)
    with pytest.raises(ValueError, match='"in" fixes num_groups'):
        create_norm("in", 64, num_groups=4)


def _decayed(model: nn.Module, module: nn.Module) -> dict[str, bool]:
    """Whether the optimizer decays each of ``module``'s own parameters inside ``model``."""
    no_decay = norm_and_bias_parameters(model)
    return {name: id(p) not in no_decay for name, p in module.named_parameters()}


@pytest.mark.parametrize("name", NORMS.names())
def test_every_registered_norm_declares_weight_decay_and_the_optimizer_follows(name):
    entry = NORMS.get(name)
    assert isinstance(entry, NormEntry) and isinstance(entry.weight_decay, bool)
    norm = create_norm(name, 8)
    assert isinstance(norm, entry.modules)  # the entry names what its factory builds
    assert norm_weight_decay(norm) is entry.weight_decay
    model = nn.Sequential(nn.Conv3d(3, 8, 1, bias=False), norm)
    assert _decayed(model, model[0]) == {"weight": True}
    assert _decayed(model, norm) == {n: entry.weight_decay and n != "bias" for n, _ in norm.named_parameters()}


def test_a_norm_that_declares_weight_decay_gets_it(monkeypatch):
    class DecayedNorm(nn.GroupNorm):
        def __init__(self, num_channels: int) -> None:
            super().__init__(2, num_channels)

    # registered for this test only (NORMS has no unregister)
    monkeypatch.setitem(NORMS._entries, "decayed_norm", NormEntry(DecayedNorm, True, (DecayedNorm,)))
    norm = create_norm("decayed_norm", 8)
    model = nn.Sequential(nn.Conv3d(3, 8, 1, bias=False), norm)
    assert _decayed(model, norm) == {"weight": True, "bias": False}  # biases never decay


@pytest.mark.parametrize(
    "build",
    [lambda: nn.BatchNorm1d(4), lambda: nn.BatchNorm2d(4), lambda: nn.BatchNorm3d(4), lambda: nn.SyncBatchNorm(4),
     lambda: nn.GroupNorm(2, 4), lambda: nn.LayerNorm(4), lambda: nn.InstanceNorm3d(4, affine=True),
     lambda: nn.InstanceNorm2d(4, affine=True), lambda: nn.LocalResponseNorm(2)],
)
def test_torchs_own_norms_in_foreign_models_are_declared(build):
    norm = build()
    assert norm_weight_decay(norm) is False
    model = nn.Sequential(nn.Linear(4, 4), norm)
    expected = {} if isinstance(norm, nn.LocalResponseNorm) else {"weight": False, "bias": False}
    assert _decayed(model, norm) == expected
    assert _decayed(model, model[0]) == {"weight": True, "bias": False}


def test_torch_norm_subclasses_inherit_the_declaration():
    class LayerNorm2d(nn.LayerNorm):  # as timm defines it
        pass

    for norm in (LayerNorm2d(4), nn.LazyBatchNorm3d(), nn.LazyInstanceNorm3d(), nn.CrossMapLRN2d(3)):
        assert norm_weight_decay(norm) is False, type(norm).__name__
    assert norm_weight_decay(nn.Conv3d(1, 1, 1)) is None and nn.GroupNorm in TORCH_NORMS


def test_registering_a_norm_without_declaring_weight_decay_fails():
    class MyNorm(nn.GroupNorm):
        def __init__(self, num_channels: int) -> None:
            super().__init__(1, num_channels)

    with pytest.raises(TypeError, match="must declare whether its parameters take weight decay"):
        NORMS.register("my_norm", MyNorm)   # the bare factory, as norms were registered before
    with pytest.raises(TypeError, match="weight_decay"):
        register_norm("my_norm", MyNorm)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="modules="):
        register_norm("my_norm", lambda c: MyNorm(c), weight_decay=False)  # a function: which classes?
    with pytest.raises(TypeError, match="weight_decay must be True or False"):
        register_norm("my_norm", MyNorm, weight_decay=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already declared weight_decay=False"):
        register_norm("my_gn", GroupNorm3d, weight_decay=True)  # one class, one declaration
    assert "my_norm" not in NORMS and "my_gn" not in NORMS


def test_frozen_bn_equals_bn_in_eval_and_has_nothing_to_train():
    torch.manual_seed(0)
    bn = nn.BatchNorm3d(8)
    bn.train()
    for _ in range(3):
        bn(torch.randn(4, 8, 2, 3, 3) * 2 + 1)
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
    frozen = FrozenBatchNorm(8)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped, nothing else missing
    x = torch.randn(2, 8, 2, 3, 3)
    torch.testing.assert_close(frozen(x), bn.eval()(x))
    assert list(frozen.parameters()) == []
    frozen.train()
    torch.testing.assert_close(frozen(x), bn.eval()(x))


def _bn_count(model):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _train_step(model, x, num_classes):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = F.cross_entropy(model(x), torch.arange(x.shape[0]) % num_classes)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    opt.step()
    return loss


def test_convert_torchvision_r2plus1d_with_odd_channel_counts_and_train():
    from torchvision.models.video import r2plus1d_18

    torch.manual_seed(0)
    model = r2plus1d_18(num_classes=5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    bn_params = {n: (m.weight.clone(), m.bias.clone()) for n, m in model.named_modules()
                 if isinstance(m, nn.BatchNorm3d)}
    model, changes = convert_norm(model, "gn", return_report=True)
    assert _bn_count(model) == 0 and len(changes) == len(bn_params)
    channels = {c.num_channels for c in changes}
    assert {45, 144, 230, 460, 921} <= channels
    modules = dict(model.named_modules())
    for name, (w, b) in bn_params.items():
        assert isinstance(modules[name], GroupNorm3d)
        torch.testing.assert_close(modules[name].weight, w)
        torch.testing.assert_close(modules[name].bias, b)
    assert modules[changes[1].name].num_channels % modules[changes[1].name].num_groups == 0
    adjusted = [c for c in changes if "requested" in c.detail]
    assert adjusted and "45" in format_norm_report(changes)
    _train_step(model, torch.randn(2, 3, 4, 32, 32), 5)


def test_convert_pytorchvideo_resnet_and_train():
    from pytorchvideo.models.resnet import create_resnet

    model = create_resnet(
        input_channel=3, model_depth=50, model_num_class=4, stem_dim_out=16, stage1_pool=None,
        head_pool=nn.AdaptiveAvgPool3d, head_pool_kernel_size=None, head_output_size=(1, 1, 1),
    )
    before = _bn_count(model)
    model = convert_norm(model, "gn", num_groups=8)
    assert before > 0 and _bn_count(model) == 0
    assert all(m.num_groups == 8 for m in model.modules() if isinstance(m, GroupNorm3d))
    # pytorchvideo leaves the block-final γ at 1 — zero_init_last_norm fixes it for GN.
    zeroed = zero_init_last_norm(model)
    assert zeroed == 16  # ResNet-50: 3 + 4 + 6 + 3 bottlenecks
    _train_step(model, torch.randn(2, 3, 4, 32, 32), 4)


def test_convert_2d_detection_backbone_and_fpn():
    from torchvision.models import resnet18
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.misc import Conv2dNormActivation

    backbone = resnet18()
    fpn = FeaturePyramidNetwork([64, 128], 32, norm_layer=nn.BatchNorm2d)
    head = nn.Sequential(Conv2dNormActivation(32, 32, norm_layer=nn.BatchNorm2d))
    model = nn.ModuleDict(dict(backbone=backbone, fpn=fpn, head=head))
    model = convert_norm(model, "gn", num_groups=16)
    assert _bn_count(model) == 0
    x = torch.randn(2, 3, 64, 64)
    feats = backbone.layer1(backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x)))))
    out = fpn({"a": feats, "b": backbone.layer2(feats)})
    assert out["a"].shape == (2, 32, 16, 16)
    assert head(out["a"]).shape == (2, 32, 16, 16)


def test_convert_to_frozen_bn_keeps_eval_outputs():
    from torchvision.models.video import r3d_18

    torch.manual_seed(0)
    model = r3d_18(num_classes=3)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 4, 32, 32))  # populate running stats
    model.eval()
    x = torch.randn(1, 3, 4, 32, 32)
    want = model(x)
    model = convert_norm(model, "frozen_bn")
    assert _bn_count(model) == 0
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)


def test_convert_root_batchnorm_and_syncbn_and_non_affine():
    gn = convert_norm(nn.BatchNorm2d(32), "gn")
    assert isinstance(gn, GroupNorm3d) and gn.num_channels == 32
    sync = nn.SyncBatchNorm(16)
    assert isinstance(convert_norm(nn.Sequential(sync), "ln")[0], GroupNorm3d)
    plain = convert_norm(nn.BatchNorm3d(8, affine=False), "gn")
    assert plain.weight is None
    bn1d = convert_norm(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)), "gn", num_groups=2)
    assert bn1d(torch.randn(3, 4)).shape == (3, 8)


def test_convert_keeps_dtype_device_and_mode():
    model = nn.Sequential(nn.Conv3d(3, 8, 1), nn.BatchNorm3d(8)).double().eval()
    model = convert_norm(model, "gn", num_groups=4)
    assert model[1].weight.dtype == torch.float64 and not model[1].training


def test_convert_bad_target_fails_before_touching_the_model():
    model = nn.Sequential(nn.BatchNorm3d(8))
    with pytest.raises(ValueError, match="unknown norm"):
        convert_norm(model, "group")
    assert isinstance(model[0], nn.BatchNorm3d)


def test_zero_init_last_norm_on_torchvision_models():
    from torchvision.models import resnet50
    from torchvision.models.video import r3d_18

    model = convert_norm(resnet50(), "gn")
    assert zero_init_last_norm(model) == 16
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for layer in (model.layer1, model.layer4) for b in layer)
    assert float(model.bn1.weight.detach().sum()) > 0
    video = r3d_18()
    assert zero_init_last_norm(video) == 8
    block = video.layer1[0]
    assert last_norm_of_block(block) is block.conv2[1]


def test_wsconv3d_standardises_weights_and_trains():
    torch.manual_seed(0)
    conv = WSConv3d(4, 6, kernel_size=3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(7).add_(3)
    x = torch.randn(2, 4, 3, 5, 5)
    w = conv.weight.flatten(1)
    w_std = (w - w.mean(1, keepdim=True)) / torch.sqrt(w.var(1, unbiased=False, keepdim=True) + 1e-5)
    want = F.conv3d(x, w_std.view_as(conv.weight), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), want, atol=1e-5, rtol=1e-5)
    out = GroupNorm3d(6, num_groups=3)(conv(x))
    out.sum().backward()
    assert torch.isfinite(conv.weight.grad).all()
    assert conv.state_dict().keys() == nn.Conv3d(4, 6, 3).state_dict().keys()


def test_standardize_convs_turns_every_conv3d_into_ws_keeping_weights():
    from videogn.models import create_model

    torch.manual_seed(0)
    model = create_model("i3d_tiny", num_classes=5, norm="gn", dropout=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_convs = sum(type(m) is nn.Conv3d for m in model.modules())
    assert standardize_convs(model) is model
    assert sum(type(m) is WSConv3d for m in model.modules()) == n_convs > 0
    assert not any(type(m) is nn.Conv3d for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    conv = next(m for m in model.modules() if isinstance(m, WSConv3d))
    x = torch.randn(1, conv.in_channels, 4, 8, 8)
    w = conv.weight.flatten(1)
    w_std = ((w - w.mean(1, keepdim=True)) / torch.sqrt(w.var(1, unbiased=False, keepdim=True) + 1e-5)).view_as(conv.weight)
    torch.testing.assert_close(conv(x), F.conv3d(x, w_std, conv.bias, conv.stride, conv.padding), atol=1e-5, rtol=1e-5)
    assert model(torch.randn(2, 3, 8, 32, 32)).shape == (2, 5)


def test_standardize_convs_refuses_a_model_without_3d_convs():
    with pytest.raises(ValueError, match="Sequential has no nn.Conv3d"):
        standardize_convs(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))

"""Activation checkpointing: the same model, outputs, gradients, BN statistics and state-dict keys,
with the declared blocks recomputed in backward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from videogn.models import ModelSpec, create_model, get_model_spec, list_models
from videogn.models.checkpointing import (
    CHECKPOINT_MODES,
    apply_activation_checkpointing,
    checkpointed_modules,
    is_checkpointed,
)

_CLIP = (2, 3, 8, 32, 32)  # (N, C, T, H, W): every registered model's output stride fits


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward + backward of the mean cross-entropy; the logits and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    nn.functional.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _recomputed_forwards(model: nn.Module) -> list[int]:
    """Counts every forward of the model's modules; the checkpointed ones run twice per step."""
    calls: list[int] = []
    for m in model.modules():
        m.register_forward_pre_hook(lambda mod, args: calls.append(id(mod)))
    return calls


@pytest.mark.parametrize("name", list_models())
def test_every_model_checkpoints_with_the_same_outputs_gradients_and_keys(name):
    torch.manual_seed(0)
    plain = create_model(name, 5, norm="gn", dropout=0.0).train()
    checked = copy.deepcopy(plain)
    n = apply_activation_checkpointing(checked, name, "full")
    spec = get_model_spec(name)
    assert n == len(spec.residual_blocks(checked)) + 1
    assert list(checked.state_dict()) == list(plain.state_dict())  # no wrapper names
    x, y = torch.randn(*_CLIP), torch.tensor([1, 3])
    out, grads = _step(plain, x, y)
    calls = _recomputed_forwards(checked)
    out_c, grads_c = _step(checked, x, y)
    torch.testing.assert_close(out_c, out)
    assert grads_c.keys() == grads.keys()
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-4, atol=1e-6, msg=key)
    # the stem's first layer ran twice: the stem really was recomputed in backward
    first = next(m for m in spec.stem(checked).modules() if not list(m.children()))
    assert calls.count(id(first)) == 2


@pytest.mark.parametrize("name", ["i3d_tiny", "x3d_xs", "r3d_18"])
@pytest.mark.parametrize("mode", ["blocks", "full"])
def test_gn_gradients_equal_the_unchecked_step_in_float64(name, mode):
    torch.manual_seed(0)
    plain = create_model(name, 5, norm="gn", zero_init_last=False).double().train()
    checked = copy.deepcopy(plain)
    apply_activation_checkpointing(checked, name, mode)
    x, y = torch.randn(*_CLIP, dtype=torch.float64), torch.tensor([0, 4])
    torch.manual_seed(1)  # the head's dropout: the same mask in both
    out, grads = _step(plain, x, y)
    torch.manual_seed(1)
    out_c, grads_c = _step(checked, x, y)
    torch.testing.assert_close(out_c, out, rtol=0, atol=0)
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-12, atol=1e-14, msg=key)


@pytest.mark.parametrize("name", ["i3d_tiny", "x3d_xs"])
def test_bn_running_statistics_update_once_per_step(name):
    torch.manual_seed(0)
    plain = create_model(name, 5, norm="bn", zero_init_last=False).double().train()
    checked = copy.deepcopy(plain)
    apply_activation_checkpointing(checked, name, "full")
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (plain, checked)]
    for step in range(2):
        x, y = torch.randn(*_CLIP, dtype=torch.float64), torch.tensor([step, 2])
        for model, opt in zip((plain, checked), opts):
            torch.manual_seed(step)
            _step(model, x, y)
            opt.step()
    ref = plain.state_dict()
    for key, value in checked.state_dict().items():
        torch.testing.assert_close(value, ref[key], rtol=1e-12, atol=1e-14, msg=key)
    tracked = [v for k, v in checked.state_dict().items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) == 2 for v in tracked)  # two steps, not four


class _DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1), nn.Dropout(0.5), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))  # (N, 8, T, H, W)
        return self.fc(x.mean((2, 3, 4)))


_DROPOUT_SPEC = ModelSpec(
    name="dropout_net", description="test", builder=_DropoutNet,
    residual_blocks=lambda m: [(m.block, None)], stem=lambda m: m.stem,
)


def test_dropout_inside_a_block_draws_the_same_mask_when_recomputed():
    torch.manual_seed(0)
    plain = _DropoutNet().double()
    checked = copy.deepcopy(plain)
    assert apply_activation_checkpointing(checked, _DROPOUT_SPEC, "full") == 2
    x, y = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64), torch.tensor([0, 3])
    torch.manual_seed(5)
    out, grads = _step(plain, x, y)
    torch.manual_seed(5)
    out_c, grads_c = _step(checked, x, y)
    torch.testing.assert_close(out_c, out, rtol=0, atol=0)
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-12, atol=1e-14, msg=key)


def test_state_dicts_move_between_runs_with_and_without_checkpointing():
    torch.manual_seed(0)
    checked = create_model("i3d_tiny", 5)
    apply_activation_checkpointing(checked, "i3d_tiny", "blocks")
    with torch.no_grad():
        for p in checked.parameters():
            p.add_(torch.randn_like(p))
    plain = create_model("i3d_tiny", 5)
    plain.load_state_dict(checked.state_dict())  # strict: the same keys
    again = create_model("i3d_tiny", 5)
    apply_activation_checkpointing(again, "i3d_tiny", "full")
    again.load_state_dict(plain.state_dict())
    x = torch.randn(*_CLIP)
    plain.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), plain(x))


def test_modes_switch_back_and_copies_recompute_their_own_weights():
    model = create_model("i3d_tiny", 5)
    spec = get_model_spec("i3d_tiny")
    blocks = [b for b, _ in spec.residual_blocks(model)]
    assert apply_activation_checkpointing(model, "i3d_tiny", "full") == len(blocks) + 1
    assert apply_activation_checkpointing(model, "i3d_tiny", "blocks") == len(blocks)
    assert not is_checkpointed(model.stem) and all(is_checkpointed(b) for b in blocks)
    assert apply_activation_checkpointing(model, "i3d_tiny", "none") == 0
    assert not any(is_checkpointed(m) or "forward" in m.__dict__ for m in model.modules())
    apply_activation_checkpointing(model, "i3d_tiny", "blocks")
    twin = copy.deepcopy(model)
    assert twin.layer1[0].forward.__self__ is twin.layer1[0]  # bound to the copy, not the original
    assert checkpointed_modules(model, "i3d_tiny", "none") == []
    assert [m for m in twin.modules() if is_checkpointed(m)] == [b for b, _ in spec.residual_blocks(twin)]


def test_bad_mode_and_undeclared_blocks_are_refused_naming_the_fix():
    model = create_model("i3d_tiny", 5)
    with pytest.raises(ValueError, match=r"activation_checkpointing must be one of .*'none'.*got 'all'"):
        apply_activation_checkpointing(model, "i3d_tiny", "all")
    bare = ModelSpec(name="bare", description="no declarations")
    with pytest.raises(ValueError, match=r"'bare' declares no residual blocks; declare them"):
        apply_activation_checkpointing(model, bare, "blocks")
    assert CHECKPOINT_MODES == ("none", "blocks", "full")

"""The model registry holds builders: any callable returning a clip -> logits module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videogn.layers import ACTS, NORMS, GroupNorm3d, create_norm_act, fused_act_name, resolve_act
from videogn.models import MODELS, ModelSpec, create_model, list_models, register_model


class _Block(nn.Module):
    def __init__(self, c: int, norm_layer, act) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c, c, 1)
        self.last_norm = norm_layer(c)
        self.act = act()

    def forward(self, x):
        return self.act(x + self.last_norm(self.conv(x)))


def _toy(*, num_classes, norm_layer, act_layer, dropout, in_channels, width=8):
    return nn.Sequential(
        nn.Conv3d(in_channels, width, 1), _Block(width, norm_layer, resolve_act(act_layer)),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes),
    )


def _toy_blocks(model):
    return [(model[1], model[1].last_norm)]


@pytest.fixture
def toy():
    spec = register_model(ModelSpec(
        name="toy_test", description="toy", builder=_toy, family="toy",
        residual_blocks=_toy_blocks, stem=lambda model: model[0],
    ))
    yield spec
    MODELS._entries.pop("toy_test")


def test_a_builder_gets_norm_act_dropout_classes_and_zero_gamma(toy):
    assert "toy_test" in list_models()
    model = create_model("toy_test", 6, norm="gn", norm_kwargs={"num_groups": 4}, act_layer="silu",
                         dropout=0.25, width=16)
    block = model[1]
    assert isinstance(block.last_norm, GroupNorm3d) and block.last_norm.num_groups == 4
    assert not block.last_norm.weight.any()  # zero-γ applied by create_model to the declared blocks
    assert isinstance(block.act, nn.SiLU) and model[4].p == 0.25
    assert model(torch.randn(2, 3, 2, 4, 4)).shape == (2, 6)
    with pytest.raises(TypeError, match="unknown keyword arguments.*'depth'"):
        create_model("toy_test", 6, depth=3)


def test_a_name_can_be_registered_once(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_model(toy)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'i3d_r51'.*i3d_r50"):
        create_model("i3d_r51", 10)
    with pytest.raises(ValueError, match="unknown norm 'gm'.*frozen_bn"):
        create_model("i3d_tiny", 10, norm="gm")


def test_registries_are_the_one_vocabulary():
    assert set(NORMS.names()) == {"gn", "bn", "syncbn", "frozen_bn", "ln", "in", "none"}
    assert set(ACTS.names()) == {"relu", "silu", "gelu", "none"}
    assert fused_act_name("relu") == "relu" and fused_act_name(nn.SiLU) == "silu"
    assert fused_act_name("gelu") is None and fused_act_name("none") is None


def test_norm_act_fuses_into_any_norm_that_offers_an_activation_slot():
    class Slot(nn.Identity):  # not GroupNorm3d: the protocol is the `activation` attribute
        def __init__(self, c):
            super().__init__()
            self.activation = None

    norm, act = create_norm_act(Slot, 4, "silu")
    assert norm.activation == "silu" and isinstance(act, nn.Identity)
    norm, act = create_norm_act(Slot, 4, "silu", fuse=False)
    assert norm.activation is None and isinstance(act, nn.SiLU)
    norm, act = create_norm_act(nn.BatchNorm3d, 4, "relu")
    assert isinstance(act, nn.ReLU)
    norm, act = create_norm_act(GroupNorm3d, 4, None)
    assert norm.activation is None and isinstance(act, nn.Identity)


def test_a_builder_without_declared_blocks_warns_when_zero_init_finds_none():
    def plain(*, num_classes, norm_layer, act_layer, dropout, in_channels):
        return nn.Sequential(nn.Conv3d(in_channels, 4, 1), norm_layer(4), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                             nn.Linear(4, num_classes))

    register_model(ModelSpec(name="plain_test", description="plain", builder=plain, family="plain"))
    try:
        with pytest.warns(UserWarning, match="declare them in its ModelSpec"):
            model = create_model("plain_test", 3, norm="gn", norm_kwargs={"num_groups": 2})
        assert model[1].weight.all()
    finally:
        MODELS._entries.pop("plain_test")


def test_models_package_has_no_module_level_import_cycle():
    """The registry is a leaf: builders register into it, create_model/load_weights read it."""
    import ast
    from pathlib import Path

    import videogn.models

    root = Path(videogn.models.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("videogn.models."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("videogn.models.")}
        graph[path.stem] = deps - {path.stem}

    def reaches(start, target, seen=()):
        return any(d == target or (d not in seen and reaches(d, target, (*seen, d))) for d in graph.get(start, ()))

    cycles = sorted(m for m in graph if m != "__init__" and reaches(m, m))
    assert not cycles, {m: graph[m] for m in cycles}
    assert graph["spec"] <= {"resnet3d"}  # the leaf imports no builder module

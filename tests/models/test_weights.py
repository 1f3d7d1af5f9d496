"""create_model(..., weights=...): videogn checkpoints, strictness, BN vs GN. Foreign checkpoints
(pytorchvideo, torchvision, 2-D ResNets) and their layouts: test_foreign_weights.py."""

from __future__ import annotations

import logging

import pytest
import torch

from videogn.models import create_model


def test_videogn_checkpoint_file_round_trips(tmp_path):
    src = create_model("i3d_tiny", 5, norm="gn")
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    torch.save({"model": src.state_dict(), "step": 3}, tmp_path / "ckpt.pt")
    torch.save(src.state_dict(), tmp_path / "bare.pt")
    x = torch.randn(1, 3, 4, 32, 32)
    for path in ("ckpt.pt", "bare.pt"):
        dst = create_model("i3d_tiny", 5, norm="gn", weights=str(tmp_path / path)).eval()
        with torch.no_grad():
            torch.testing.assert_close(dst(x), src.eval()(x))


def test_bn_checkpoint_into_gn_model_is_an_error_naming_the_fix():
    bn = create_model("i3d_tiny", 5, norm="bn").state_dict()
    with pytest.raises(ValueError, match="BatchNorm statistics.*norm='bn' or norm='frozen_bn'"):
        create_model("i3d_tiny", 5, norm="gn", weights=bn)
    with pytest.raises(ValueError, match="BatchNorm statistics"):
        create_model("i3d_tiny", 5, norm="gn", weights=bn, strict=False)


def test_missing_and_unexpected_keys_raise_unless_not_strict(caplog):
    state = create_model("i3d_tiny", 5, norm="gn").state_dict()
    state.pop("stem.conv.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="1 missing key.*stem.conv.weight.*1 unexpected key.*extra.weight"):
        create_model("i3d_tiny", 5, norm="gn", weights=state)
    with caplog.at_level(logging.WARNING, logger="videogn.models.weights"):
        create_model("i3d_tiny", 5, norm="gn", weights=state, strict=False)
    assert "stem.conv.weight" in caplog.text and "extra.weight" in caplog.text


def test_classifier_of_another_size_needs_new_head_which_reinitialises_it(caplog):
    src = create_model("i3d_tiny", 400, norm="gn")
    wanted = r"classifier 'fc.weight'.*\(400, 128\).*\(7, 128\).*new_head=True \(model.new_head=true\)"
    with pytest.raises(ValueError, match=wanted):
        create_model("i3d_tiny", 7, norm="gn", weights=src.state_dict())
    torch.manual_seed(3)
    fresh = create_model("i3d_tiny", 7, norm="gn")
    torch.manual_seed(3)
    with caplog.at_level(logging.INFO, logger="videogn.models.weights"):
        dst = create_model("i3d_tiny", 7, norm="gn", weights=src.state_dict(), new_head=True)
    assert "new head" in caplog.text and "fc.weight" in caplog.text and "fc.bias" in caplog.text
    assert dst.fc.weight.shape == (7, 128)
    torch.testing.assert_close(dst.fc.weight, fresh.fc.weight)  # its own initialisation, not the checkpoint's
    own, theirs = dst.state_dict(), src.state_dict()
    assert all(torch.equal(own[k], theirs[k]) for k in own if not k.startswith("fc."))
    # same class count: new_head still starts the classifier afresh (a new task with as many classes)
    same = create_model("i3d_tiny", 400, norm="gn", weights=src.state_dict(), new_head=True)
    assert not torch.equal(same.fc.weight, src.fc.weight)
    with pytest.raises(ValueError, match="stem.conv.weight.*shape"):
        create_model("i3d_tiny", 7, norm="gn", weights=src.state_dict(), new_head=True, stem_width=8)

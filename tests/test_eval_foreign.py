"""videogn-eval on a foreign state dict (pytorchvideo layout or bare) with model=, norm=, data and
the protocol (eval.num_frames=, eval.stride=, ...), and on a videogn checkpoint written before the
protocol moved to the ``eval`` section (its ``data.num_clips`` etc. are read as ``eval.*``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videogn.config import ConfigError
from videogn.evaluate import run
from videogn.models import create_model

DATA = ["data=synthetic", "data.synthetic.num_classes=3", "data.synthetic.train_per_class=4",
        "data.synthetic.val_per_class=2", "data.synthetic.frames=12", "data.num_workers=0"]


@pytest.mark.parametrize("wrap", ["model_state", None])
def test_foreign_state_dict_is_evaluated(compose, synthetic_cache: Path, tmp_path: Path, wrap) -> None:
    net = create_model("i3d_tiny", 3, norm="bn")
    sd = net.state_dict()
    path = tmp_path / "foreign.pyth"
    torch.save({wrap: sd} if wrap else sd, path)
    cfg = compose("eval", f"checkpoint={path}", "model=i3d_tiny", "norm=bn", "eval.num_frames=4", "eval.stride=1",
                  "eval.num_clips=2", "eval.num_crops=1", *DATA, f"data.synthetic.cache_dir={synthetic_cache}",
                  f"output_dir={tmp_path / 'out'}", "device=cpu")
    report = run(cfg)
    assert (report["model"], report["norm"], report["step"]) == ("i3d_tiny", "bn", None)
    p = report["protocol"]
    assert (p["num_frames"], p["stride"], p["num_clips"], p["num_crops"]) == (4, 1, 2, 1)
    assert 0.0 <= report["top1"] <= 1.0


def test_foreign_state_dict_without_model_is_refused(compose, tmp_path: Path) -> None:
    path = tmp_path / "foreign.pth"
    torch.save(create_model("i3d_tiny", 3).state_dict(), path)
    with pytest.raises(ConfigError, match="model and data must be set"):
        run(compose("eval", f"checkpoint={path}", f"output_dir={tmp_path / 'out'}"))


def test_foreign_state_dict_needs_its_clip_length(compose, tmp_path: Path) -> None:
    path = tmp_path / "foreign.pth"
    torch.save(create_model("i3d_tiny", 3, norm="bn").state_dict(), path)
    with pytest.raises(ConfigError, match="eval.num_frames must be given"):
        run(compose("eval", f"checkpoint={path}", "model=i3d_tiny", "norm=bn", *DATA, f"output_dir={tmp_path / 'out'}"))


def test_checkpoint_from_before_the_eval_section(compose, synthetic_cache: Path, tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "checkpoint_v1.pt"  # its config: data.num_clips=2, num_crops=1
    report = run(compose("eval", f"checkpoint={fixture}", f"data.synthetic.cache_dir={synthetic_cache}",
                         "eval.num_crops=3", f"output_dir={tmp_path / 'out'}", "device=cpu"))
    p = report["protocol"]
    assert (p["num_clips"], p["num_crops"], p["test_scale"], p["num_frames"]) == (2, 3, 32, 4)  # old values, one replaced
    assert report["step"] == 4 and report["num_videos"] == 6

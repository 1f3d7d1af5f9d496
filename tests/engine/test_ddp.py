"""Two CPU processes (gloo) train one model: identical weights on both ranks, only rank 0 writes,
and evaluation shards the videos and gathers every prediction."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from videogn.config import validate

pytestmark = pytest.mark.ddp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, conf, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from videogn.engine.distributed import init_distributed, shutdown_distributed
    from videogn.engine.evaluator import EvalOptions, evaluate_split
    from videogn.engine.trainer import Trainer

    info = init_distributed("cpu", "gloo")
    try:
        # each rank gets its own output dir, so any file a non-zero rank wrote would show up
        trainer = Trainer(conf, Path(tmp) / f"out_rank{rank}", info)
        trainer.fit()
        # both ranks write their predictions into one run dir (as under torchrun); rank 0 merges them
        report = evaluate_split(trainer.evaluation_target(), EvalOptions(dist_info=info, output_dir=Path(tmp) / "eval")).report
        torch.save(
            {"model": trainer.unwrapped_model.state_dict(), "top1": report["top1"], "n": report["num_videos"],
             "labels": [p["label"] for p in report["predictions"]], "classes": report["classes"]},
            Path(tmp) / f"result_rank{rank}.pt",
        )
    finally:
        shutdown_distributed()


def test_two_process_gloo_training(compose_train, tmp_path: Path) -> None:
    conf = validate(compose_train("trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.device=cpu"))
    from videogn.engine.build import resolve_data

    resolve_data(conf.data)  # generate the dataset once, before the ranks start
    mp.spawn(_worker, args=(2, _free_port(), conf, str(tmp_path)), nprocs=2, join=True)

    r0 = torch.load(tmp_path / "result_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "result_rank1.pt", weights_only=True)
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), f"ranks disagree on {k}"
    assert r0["n"] == r1["n"] == 6 and r0["top1"] == r1["top1"]  # every rank sees the gathered result
    assert r0["labels"] == [r0["classes"][i] for i in (0, 1, 2, 0, 1, 2)]  # gathered back into dataset order
    assert not (tmp_path / "out_rank1").exists()  # rank 1 wrote nothing
    lines = [json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [x["index"] for x in lines] == list(range(6)) and [x["label"] for x in lines] == r0["labels"]
    assert sorted(p.name for p in (tmp_path / "eval").glob("predictions*")) == ["predictions.jsonl"]  # shards merged
    out0 = tmp_path / "out_rank0"
    assert (out0 / "metrics.csv").is_file() and (out0 / "checkpoints" / "step_000000004.pt").is_file()
    state = torch.load(out0 / "checkpoints" / "step_000000004.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # every rank's RNG, for exact resume
    for k, v in state["model"].items():
        assert torch.equal(v, r0["model"][k])

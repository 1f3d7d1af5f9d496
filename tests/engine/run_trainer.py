"""A training process for the signal and fault tests: ``python run_trainer.py CONFIG.yaml RUN_DIR
[UNTIL_STEP]``. Reads a resolved train config, trains (resuming from RUN_DIR's newest checkpoint),
and exits like ``videogn-train``: 0 when done, EXIT_PREEMPTED after a stop signal. Under a
torchrun-style environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) it joins the process group.
Each rank writes ``pid_rank<R>`` into RUN_DIR's parent first, so a test can signal one rank."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from videogn.config import TrainConfig, validate
from videogn.engine.distributed import init_distributed, shutdown_distributed
from videogn.engine.preemption import EXIT_PREEMPTED, TrainingPreempted
from videogn.engine.trainer import Trainer


def main() -> int:
    config, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
    until = int(sys.argv[3]) if len(sys.argv) > 3 else None
    logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] %(message)s")
    torch.set_num_threads(1)
    conf = validate(OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(config)))
    info = init_distributed(conf.trainer.device, conf.trainer.dist_backend, conf.trainer.dist_timeout_s)
    (run_dir.parent / f"pid_rank{info.rank}").write_text(str(os.getpid()))
    try:
        Trainer(conf, run_dir, info).fit(until_step=until)
    except TrainingPreempted:
        return EXIT_PREEMPTED
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())

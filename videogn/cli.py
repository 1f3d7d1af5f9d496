"""The scaffold both console scripts share (``videogn-train``, ``videogn-eval``).

Hydra finds the configs as package data (``pkg://videogn.configs``: the repo's ``configs/`` folder,
mapped into the wheel), so the scripts work from any directory after ``pip install``; a folder of
your own configs is added with ``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]``.

Start-up, in order (OpenMP's passive wait is set before this, by the console scripts' launcher
``_videogn_launch`` or the ``python -m`` block: :func:`videogn.threads.ensure_passive_openmp`): the
command-line keys are checked against the schema before Hydra runs (a typo
such as ``trainer.epoch=1`` or ``+trainer.epoch=1`` names the key and the closest valid one and
creates no run dir); the composed config is validated (a failure removes the run dir Hydra made,
which then holds only ``.hydra/``); then the job runs with its log file in the run dir. A user
mistake (:class:`ConfigError`) ends in one message, printed by rank 0 only under torchrun, and exit
status 2; ``--version`` prints videogn's version before Hydra starts.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from videogn.config import ConfigError, EvalConfig, PredictConfig, TrainConfig, register_configs
from videogn.config.validation import unknown_key_error, unknown_keys
from videogn.runtime import env_rank

__all__ = [
    "CONFIG_MODULE",
    "CONFIG_PATH",
    "add_log_file",
    "check_overrides",
    "config_dir",
    "group_options",
    "hydra_entry",
    "job_context",
    "release_scratch_dir",
]

logger = logging.getLogger("videogn")

CONFIG_MODULE = "videogn.configs"  # the repo's configs/ (package-dir mapping in pyproject.toml)
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def config_dir() -> Path:
    """The folder of the shipped configs (for tools that want a path, e.g. ``initialize_config_dir``)."""
    import importlib.resources

    return Path(str(importlib.resources.files(CONFIG_MODULE)))


def group_options(group: str) -> str:
    """The shipped options of a config group, comma-separated (for ``--help`` texts)."""
    return ", ".join(sorted(p.stem for p in (config_dir() / group).glob("*.yaml")))


def add_log_file(path: Path) -> logging.Handler:
    """Also log to ``path`` (rank 0 only, so the ranks of a job never write one file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def release_scratch_dir(run_dir: Path) -> None:
    """Ranks > 0 of a torchrun job were given an empty scratch dir by Hydra (they use rank 0's
    run dir): remove it, so they leave nothing behind."""
    if not HydraConfig.initialized():
        return
    own = Path(HydraConfig.get().runtime.output_dir)
    if own.resolve() != run_dir.resolve():
        try:
            own.rmdir()  # only if empty: never deletes anything written
        except OSError:
            pass


@contextlib.contextmanager
def job_context(
    device: str, dist_backend: str, output_dir: Optional[str | Path], log_name: str, timeout_s: Optional[float] = None,
    *, check: Optional[Callable[[Any, Path], None]] = None,
) -> Iterator[tuple[Any, Path]]:
    """Join the process group, agree on rank 0's run dir and log into it; undo all of it on exit.

    ``check(dist_info, run_dir)``, when given, runs before the log file is opened: a start-up check
    that refuses the run (a ConfigError) leaves the run dir holding only ``.hydra/``, so it is removed.
    What the check logs (e.g. its warnings) also goes into the log file once it is open.

    Yields:
        ``(dist_info, run_dir)``.
    """
    from videogn.engine.distributed import broadcast_object, init_distributed, shutdown_distributed

    info = init_distributed(device, dist_backend, **({} if timeout_s is None else {"timeout_s": timeout_s}))
    handler = None
    try:
        if output_dir is None:
            output_dir = HydraConfig.get().runtime.output_dir
        out = Path(broadcast_object(str(output_dir)))
        release_scratch_dir(out)
        early = logging.handlers.BufferingHandler(capacity=sys.maxsize)  # keeps every record, never flushes
        if check is not None:
            # what the check logs (its warnings) is kept, and written to the log file once the run
            # is accepted and the file opened: a run's log holds everything said about it
            logging.getLogger().addHandler(early)
            try:
                check(info, out)
            finally:
                logging.getLogger().removeHandler(early)
        handler = add_log_file(out / log_name) if info.is_main else None
        if handler is not None:
            for record in early.buffer:
                handler.handle(record)
        yield info, out
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        shutdown_distributed()


def _config_groups(extra_dirs: Sequence[str]) -> set[str]:
    dirs = [config_dir(), *(Path(d) for d in extra_dirs)]
    return {p.name for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir()}


def check_overrides(args: Sequence[str], schema: type) -> None:
    """Refuse command-line keys the schema does not have, before Hydra makes a run dir.

    ``+key=value`` is checked too: Hydra would add the key and the job would silently ignore it.

    Raises:
        ConfigError: naming the key and the closest valid one.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config_dirs = [a.split("=", 1)[1] for a in args if a.startswith("--config-dir=")]
    config_dirs += [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config-dir", "-cd")]
    # overrides hold "=" (or are "~key" deletions); other words are values of flags such as --cfg job
    overrides = [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - malformed overrides: Hydra's own parser explains them
        return
    groups = _config_groups(config_dirs)
    for ov in parsed:
        key = ov.key_or_group
        if key.split(".")[0].split("/")[0] == "hydra" or ov.is_delete() or "@" in key:
            continue
        if "." not in key and (key in groups or "/" in key):
            continue  # a config group choice, e.g. model=i3d_r50 or experiment=tiny
        if "." not in key and config_dirs:
            continue  # may be a group of the user's own config folder: Hydra decides
        node = OmegaConf.create()
        OmegaConf.update(node, key, None, force_add=True)
        for bad, near in unknown_keys(node, schema)[:1]:
            raise unknown_key_error(bad, near)


def _discard_run_dir() -> None:
    """Remove the run dir of a job that failed at start-up, if it holds nothing but ``.hydra/``."""
    if env_rank() != 0 or not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def hydra_entry(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A console-script ``main()``: Hydra over ``configs/<config_name>.yaml`` running ``task(cfg)``.

    A :class:`ConfigError` (at start-up or from the task) is logged and exits with status 2; a run
    stopped by SIGTERM/SIGUSR1 exits with status 75 after its checkpoint.
    """
    register_configs()
    OmegaConf.register_new_resolver("videogn_group_options", group_options, replace=True)  # --help texts
    schema = {"eval": EvalConfig, "predict": PredictConfig}.get(config_name, TrainConfig)

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
    def _hydra_main(cfg: DictConfig) -> None:
        from videogn.engine.preemption import EXIT_PREEMPTED, TrainingPreempted

        try:
            task(cfg)
        except ConfigError as e:
            if env_rank() == 0:  # every rank stops; one says why
                logger.error("config error: %s", e)
            _discard_run_dir()
            sys.exit(2)
        except TrainingPreempted as e:
            logger.warning("%s; continue with trainer.resume=auto in the same run dir", e)
            sys.exit(EXIT_PREEMPTED)

    def main() -> None:
        if "--version" in sys.argv[1:]:  # videogn's, not Hydra's
            from videogn import __version__

            print(f"videogn {__version__}")
            sys.exit(0)
        try:
            check_overrides(sys.argv[1:], schema)
        except ConfigError as e:
            if env_rank() == 0:
                print(f"config error: {e}", file=sys.stderr)
            sys.exit(2)
        _hydra_main()

    return main

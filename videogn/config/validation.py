"""Start-up validation of a composed config: every key known (also those added with Hydra's ``+``),
every value typed and in range (the dataclasses' ``__post_init__`` checks), errors that name the field."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videogn.config.schema import ConfigError, EvalConfig, PredictConfig, TrainConfig, closest

__all__ = ["unknown_key_error", "unknown_keys", "validate"]


def _schema_of(tp: Any) -> Optional[type]:
    """The dataclass behind a field type (``Optional[X]`` unwrapped), or None for a leaf or a dict."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    tp = args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp
    return tp if dataclasses.is_dataclass(tp) else None


def unknown_keys(cfg: Any, schema: type, prefix: str = "") -> list[tuple[str, Optional[str]]]:
    """Keys of ``cfg`` that ``schema`` does not declare, each with the closest declared key.

    Hydra's struct mode rejects a typo such as ``trainer.epoch=1`` but lets ``+trainer.epoch=1`` add
    it; this walk catches both. Free-form fields (``Dict[str, Any]``, e.g. ``norm.kwargs``) take any key.
    """
    if not isinstance(cfg, DictConfig):
        return []
    hints = typing.get_type_hints(schema)
    out: list[tuple[str, Optional[str]]] = []
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key not in hints:
            near = closest(str(key), hints)
            out.append((path, f"{prefix}{near}" if near else None))
            continue
        sub = _schema_of(hints[key])
        if sub is not None:
            out += unknown_keys(cfg._get_node(key), sub, f"{path}.")
    return out


def unknown_key_error(key: str, near: Optional[str]) -> ConfigError:
    """The error for a key the schema does not have: names it and the closest valid one."""
    hint = f"; did you mean {near}?" if near else ""
    return ConfigError(f"{key} is not a config key{hint} (see videogn/config/schema.py for every key)")


def validate(cfg: DictConfig | TrainConfig | EvalConfig | PredictConfig) -> Any:
    """Turn a composed config into its dataclass, checking every range and choice.

    Raises:
        ConfigError: naming the offending field and value (missing ``???`` values included).
    """
    if isinstance(cfg, (TrainConfig, EvalConfig, PredictConfig)):
        obj = cfg
    else:
        schema = PredictConfig if "inputs" in cfg else EvalConfig if "checkpoint" in cfg else TrainConfig
        for key, near in unknown_keys(cfg, schema)[:1]:
            raise unknown_key_error(key, near)
        try:
            obj = OmegaConf.to_object(cfg)
        except ConfigError:
            raise
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None)
            cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else None
            if cause is not None:
                raise cause from None
            if "missing mandatory value" in str(e).lower():  # OmegaConf words it both ways
                raise ConfigError(f"{key} must be given (it is '???' in the config), e.g. {key}=...") from None
            raise ConfigError(f"invalid config value at {key}: {e}") from None
    if not isinstance(obj, (TrainConfig, EvalConfig, PredictConfig)):
        raise ConfigError(f"expected a train, eval or predict config, got {type(obj).__name__}")
    return obj

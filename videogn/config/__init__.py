"""Structured configs (Hydra ConfigStore schemas, ``schema.py``) and their start-up validation
(``validation.py``)."""

from videogn.config import schema as _schema
from videogn.config.schema import *  # noqa: F401,F403  (the schema's public names: its __all__)
from videogn.config.validation import validate

__all__ = [*_schema.__all__, "validate"]

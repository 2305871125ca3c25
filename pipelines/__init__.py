"""The shipped pipeline definitions (``pipelines.yaml``), installed as package data.

The schema is documented in ``conductor_server.domain.schema``.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["default_definitions"]


def default_definitions() -> Traversable:
    """The shipped ``pipelines.yaml`` (a file on disk in a normal install; read it with
    ``read_text``)."""
    return resources.files(__name__) / "pipelines.yaml"

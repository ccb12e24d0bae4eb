"""Logging and progress settings shared by the library and the command line.

``configure(verbosity)`` is called once by the CLI: -1 is ``--quiet`` (errors only, no progress
bars), 0 the default (warnings and progress bars on a terminal), 1 ``-v`` (info), 2 ``-vv``
(debug). Library code logs through ``logging.getLogger(__name__)`` and wraps long loops in
:func:`progress`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["configure", "get_verbosity", "progress"]

T = TypeVar("T")
_VERBOSITY = 0


def configure(verbosity: int = 0) -> None:
    """Set the log level and progress-bar policy for this process."""
    global _VERBOSITY
    _VERBOSITY = verbosity
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger("geoseg")
    logger.setLevel(level)
    if not any(getattr(h, "_geoseg", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._geoseg = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False


def get_verbosity() -> int:
    """The verbosity set by :func:`configure` (0 when never called)."""
    return _VERBOSITY


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | float | None = None,
    desc: str | None = None,
    unit: str = "it",
    **kwargs: Any,
) -> Any:
    """A tqdm progress bar on stderr; silent under ``--quiet``, ``GEOSEG_PROGRESS=0`` or no TTY."""
    disable: bool | None = None  # tqdm: None = off when stderr is not a terminal
    if _VERBOSITY < 0 or os.environ.get("GEOSEG_PROGRESS") == "0":
        disable = True
    elif os.environ.get("GEOSEG_PROGRESS") == "1":
        disable = False
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False, **kwargs)

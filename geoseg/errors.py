"""One exception tree for geoseg.

Every error raised on bad input is a :class:`GeosegError` that also derives from the
matching builtin, so callers can catch ``ValueError`` or ``FileNotFoundError`` as usual.
Messages name the offending file or value and say how to fix it; the command line prints
them as one line, without a traceback.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Base class of every error geoseg raises on purpose."""


class InputFileNotFoundError(GeosegError, FileNotFoundError):
    """An input path does not exist."""


class RasterReadError(GeosegError, OSError):
    """A file cannot be opened or read as a raster (corrupt, truncated, not a raster)."""


class VectorReadError(GeosegError, OSError):
    """A file cannot be opened or read as vector data."""


class GridError(GeosegError, ValueError):
    """A raster grid cannot be used: no CRS, rotated or sheared transform, grids that do not meet."""


class CRSError(GridError):
    """A CRS is missing or cannot be used."""


class ChipSizeError(GeosegError, ValueError):
    """Chip size, overlap or stride is invalid (e.g. overlap >= size)."""


class BandMismatchError(GeosegError, ValueError):
    """The bands of a scene do not match what a model expects."""


class LabelError(GeosegError, ValueError):
    """Labels cannot be used: missing class column, empty file, outside the scene, bad class ids."""


class ClassMapError(GeosegError, ValueError):
    """A class map (ids, names, colours) is invalid or inconsistent."""


class ModelBundleError(GeosegError, ValueError):
    """A model file is not a geoseg bundle, is corrupt, or was written by a newer geoseg."""


class ConfigError(GeosegError, ValueError):
    """A workflow or training configuration is invalid."""


class OutputExistsError(GeosegError, FileExistsError):
    """An output exists and ``overwrite`` was not asked for."""


class OutputWriteError(GeosegError, OSError):
    """An output cannot be written (folder not writable, disk full)."""


class EmptyResultError(GeosegError, ValueError):
    """The work has nothing to do (e.g. every chip skipped, AOI outside the scene)."""


class GeosegWarning(UserWarning):
    """Base class of geoseg's warnings."""


class NodataWarning(GeosegWarning):
    """A raster has no nodata value set where one would be expected."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name), at most ``limit`` chars.

    For wrapping a library's error into a one-line geoseg message.
    """
    lines = str(exc).strip().splitlines()
    msg = lines[0].strip() if lines else type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."

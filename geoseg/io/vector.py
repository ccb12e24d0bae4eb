"""Reading vector files (labels, AOIs) with one set of checks and one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geoseg.errors import InputFileNotFoundError, VectorReadError

__all__ = ["PARQUET_SUFFIXES", "read_polygons", "read_vector"]

PARQUET_SUFFIXES = frozenset({".parquet", ".geoparquet"})


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def read_vector(path: str | os.PathLike[str], *, layer: str | None = None) -> Any:
    """A GeoDataFrame from any OGR vector file or GeoParquet.

    Raises:
        InputFileNotFoundError: no such file.
        VectorReadError: unreadable (the message says what GDAL/pyarrow said and the fix).
    """
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise InputFileNotFoundError(f"{p}: no such file; check the path")
    try:
        if p.suffix.lower() in PARQUET_SUFFIXES:
            return gpd.read_parquet(p)
        return gpd.read_file(p, layer=layer, engine="pyogrio")
    except ImportError as exc:
        raise VectorReadError(
            f"{p}: reading GeoParquet needs pyarrow ({exc}); `pip install pyarrow`"
        ) from exc
    except Exception as exc:
        raise VectorReadError(
            f"{p}: cannot be read as vector data ({_first_line(exc)}); "
            "re-export it as GeoPackage or GeoJSON"
        ) from exc


def read_polygons(path: str | os.PathLike[str], *, what: str = "AOI") -> Any:
    """The (multi)polygon features of a vector file, which must have a CRS.

    ``what`` names the file's role in messages ("AOI").

    Raises:
        InputFileNotFoundError, VectorReadError: missing, unreadable, no CRS, no polygons.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileNotFoundError(f"{p}: no such {what} file; check the path")
    frame = read_vector(p)
    if frame.crs is None:
        raise VectorReadError(f"{p}: {what} has no CRS; set one (e.g. `ogr2ogr -a_srs EPSG:4326`)")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    frame = frame[frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        raise VectorReadError(f"{p}: has no polygons; an {what} file needs polygon features")
    return frame

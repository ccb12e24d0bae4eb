"""Tiny generated label files (vectors in several formats and CRSs) for the label/tiler tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
from shapely.geometry import box

# Scene of tests.data.rasters.write_raster defaults: 10 m pixels, origin (500000, 5000000), UTM 33N.
ORIGIN = (500000.0, 5000000.0)


def pixel_box(col0: float, row0: float, col1: float, row1: float, res: float = 10.0) -> Any:
    """A box in map coordinates from pixel coordinates of the default test grid."""
    x0, y0 = ORIGIN
    return box(x0 + col0 * res, y0 - row1 * res, x0 + col1 * res, y0 - row0 * res)


def write_vector(
    path: Path,
    geoms: Sequence[Any],
    *,
    crs: str = "EPSG:32633",
    to_crs: str | None = None,
    layer: str | None = None,
    **columns: Sequence[Any],
) -> Path:
    """Write polygons (with optional attribute columns) in the format the suffix names."""
    frame = gpd.GeoDataFrame(dict(columns), geometry=list(geoms), crs=crs)
    if to_crs is not None:
        frame = frame.to_crs(to_crs)
    if path.suffix in (".parquet", ".geoparquet"):
        frame.to_parquet(path)
    else:
        frame.to_file(path, layer=layer, engine="pyogrio")
    return path

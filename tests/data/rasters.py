"""Generators of tiny GeoTIFFs for unit tests (next to the tests that use them, as torchgeo does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine


def write_raster(
    path: Path,
    data: np.ndarray | None = None,
    *,
    width: int = 64,
    height: int = 48,
    count: int = 3,
    dtype: str = "uint16",
    crs: Any = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
    seed: int = 0,
    **profile: Any,
) -> Path:
    """Write a GeoTIFF; random data (reproducible by seed) unless ``data`` is given."""
    if data is None:
        rng = np.random.default_rng(seed)
        if np.dtype(dtype).kind == "f":
            data = rng.normal(size=(count, height, width)).astype(dtype)
        else:
            hi = min(np.iinfo(dtype).max, 10000)
            data = rng.integers(0, hi, size=(count, height, width)).astype(dtype)
    if data.ndim == 2:
        data = data[np.newaxis]
    count, height, width = data.shape
    if transform is None:
        transform = Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)
    meta = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        **profile,
    }
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
    return path


def write_corrupt(path: Path, source: Path) -> Path:
    """A GeoTIFF truncated in the middle of its data."""
    raw = source.read_bytes()
    path.write_bytes(raw[: max(16, len(raw) // 3)])
    return path

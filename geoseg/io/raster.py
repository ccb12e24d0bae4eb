"""Reading rasters with clear errors, and describing them (``geoseg info``)."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError, RasterioIOError

from geoseg.classes import ClassMap
from geoseg.errors import (
    CRSError,
    GridError,
    InputFileNotFoundError,
    RasterReadError,
    first_line,
)
from geoseg.grid import Grid

__all__ = [
    "RasterInfo",
    "band_validity",
    "check_grid",
    "colour_table",
    "open_raster",
    "raster_classes",
    "raster_info",
    "valid_from_data",
]


def _missing(path: str | os.PathLike[str]) -> bool:
    s = str(path)
    if s.startswith("/vsi") or "://" in s:
        return False
    return not Path(s).exists()


@contextlib.contextmanager
def open_raster(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Open ``path`` with rasterio for reading; raise a one-line geoseg error when it cannot be.

    Raises :class:`InputFileNotFoundError` for a missing path and :class:`RasterReadError` for
    anything GDAL cannot read as a raster (corrupt, truncated, a vector file, a text file).
    """
    stacked = os.fspath(path).startswith("<VRTDataset")  # geoseg.io.scene.StackedScene
    if not stacked and _missing(path):
        raise InputFileNotFoundError(f"{path}: no such file; check the path")
    if not stacked and Path(str(path)).is_dir():
        raise RasterReadError(
            f"{path}: is a folder, not a raster file; give the path of a GeoTIFF (or any GDAL raster)"
        )
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterReadError(
            f"{path}: cannot be read as a raster ({first_line(exc)}); "
            "it may be corrupt, truncated or not a raster: re-export it as GeoTIFF"
        ) from exc
    except RasterioError as exc:  # pragma: no cover - other GDAL failures
        raise RasterReadError(f"{path}: cannot be opened ({first_line(exc)})") from exc
    try:
        yield ds
    finally:
        ds.close()


def check_grid(grid: Grid, path: str | os.PathLike[str], *, require_crs: bool = True) -> None:
    """Raise a clear error when a scene's grid cannot be used for georeferenced work.

    A scene needs a CRS (unless ``require_crs`` is false) and a transform without rotation or
    shear. A geographic CRS is allowed (areas are then computed on the ellipsoid by callers).
    """
    if require_crs and grid.crs is None:
        raise CRSError(
            f"{path}: has no CRS; assign one, e.g. `gdal_edit.py -a_srs EPSG:32633 {path}` "
            "or `rio edit-info --crs EPSG:32633`"
        )
    if not grid.is_rectilinear:
        t = grid.transform
        raise GridError(
            f"{path}: transform is rotated or sheared (b={t.b}, d={t.d}); "
            f"warp it north-up first, e.g. `gdalwarp {path} northup.tif`"
        )
    if grid.transform.a == 0 or grid.transform.e == 0:
        raise GridError(
            f"{path}: has no georeferencing (identity or zero pixel size); georeference it first"
        )


def colour_table(ds: Any, band: int = 1) -> dict[int, tuple[int, ...]]:
    """The colour table of a band of an open dataset (``{}`` where it has none)."""
    try:
        return {int(k): tuple(v) for k, v in ds.colormap(band).items()}
    except ValueError:
        return {}


def raster_classes(
    ds: Any, band: int = 1, *, found: Sequence[int] | None = None
) -> ClassMap | None:
    """Class names and colours of an open class raster: the one reader of them.

    Its ``CLASS_IDS`` / ``CLASS_NAMES`` tags and colour table
    (:meth:`~geoseg.classes.ClassMap.from_tags`); without them, the class ids ``found``,
    named by ``CLASS_<id>=name`` tags where the raster has them (else ``class_<id>``) and
    coloured from the colour table; else None.
    """
    cmap = colour_table(ds, band)
    tags = ds.tags(band)
    tagged = ClassMap.from_tags(tags, cmap)
    if tagged is not None or not found:
        return tagged
    return ClassMap.from_ids(found, _category_names(tags)).recoloured(cmap)


def _category_names(tags: dict[str, str]) -> dict[int, str]:
    """Class names in ``CLASS_<id>=name`` (or ``class<id>``) tags, as some rasters carry them."""
    out: dict[int, str] = {}
    for key, value in tags.items():
        m = re.fullmatch(r"(?:CLASS|class)_?(\d+)", key)
        if m and value:
            out[int(m.group(1))] = str(value)
    return out


@dataclass(frozen=True)
class RasterInfo:
    """What ``geoseg info`` reports about a raster."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: list[str]
    band_descriptions: list[str | None]
    nodata: float | None
    crs: str | None
    crs_name: str | None
    resolution: tuple[float, float]
    bounds: tuple[float, float, float, float]
    transform: list[float]
    block_shapes: list[tuple[int, int]]
    compression: str | None
    overviews: list[int]
    colorinterp: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (NaN nodata becomes the string "nan")."""
        d = asdict(self)
        if isinstance(self.nodata, float) and self.nodata != self.nodata:
            d["nodata"] = "nan"
        return d


def raster_info(path: str | os.PathLike[str]) -> RasterInfo:
    """Describe a raster: driver, size, bands (with descriptions), dtype, nodata, CRS, grid."""
    with open_raster(path) as ds:
        grid = Grid.from_dataset(ds)
        crs = ds.crs
        crs_name = None
        if crs is not None:
            with contextlib.suppress(Exception):
                from pyproj import CRS as ProjCRS

                crs_name = ProjCRS.from_wkt(crs.to_wkt()).name
        compression = ds.compression.value if ds.compression is not None else None
        return RasterInfo(
            path=str(path),
            driver=ds.driver,
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtypes=list(ds.dtypes),
            band_descriptions=list(ds.descriptions),
            nodata=ds.nodata,
            crs=crs.to_string() if crs is not None else None,
            crs_name=crs_name,
            resolution=grid.resolution,
            bounds=tuple(grid.bounds),
            transform=list(tuple(ds.transform)[:6]),
            block_shapes=[tuple(b) for b in ds.block_shapes],
            compression=compression,
            overviews=ds.overviews(1) if ds.count else [],
            colorinterp=[c.name for c in ds.colorinterp],
        )


def valid_from_data(
    ds: Any, data: np.ndarray, window: Any, *, indexes: Sequence[int] | None = None
) -> np.ndarray:
    """Valid pixels of ``data`` just read from ``ds`` in ``window``, without reading again.

    ``data`` holds the bands ``indexes`` (1-based; ``None``: the dataset mask of all bands,
    ``data`` then holds the bands that mask is taken over or a subset of them). GDAL's mask for
    a nodata value is "valid where any band differs from nodata", so it is computed from
    ``data``; masks and alpha bands fall back to GDAL. NaN is nodata in float bands.
    """
    from rasterio.enums import MaskFlags

    bands = list(indexes) if indexes is not None else list(range(1, ds.count + 1))
    flags = [ds.mask_flag_enums[i - 1] for i in bands]
    nodatas = {str(ds.nodatavals[i - 1]) for i in bands}
    arr = data if data.ndim == 3 else data[np.newaxis]
    if all(f == [MaskFlags.all_valid] for f in flags):
        valid = np.ones(arr.shape[-2:], dtype=bool)
    elif all(MaskFlags.nodata in f for f in flags) and len(nodatas) == 1:
        nodata = ds.nodatavals[bands[0] - 1]
        valid = (arr != nodata).any(axis=0)  # always true for a NaN nodata: see below
    elif indexes is None:
        return np.asarray(ds.dataset_mask(window=window) > 0)
    else:
        return np.any([ds.read_masks(i, window=window) > 0 for i in bands], axis=0)
    if arr.dtype.kind == "f":
        valid &= ~np.isnan(arr).all(axis=0)
    return valid


def band_validity(
    ds: Any, data: np.ndarray, window: Any, *, indexes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(all_valid, any_valid)`` (h, w) of ``data`` (the bands ``indexes`` of ``ds`` in ``window``).

    A pixel is valid for a model only where **every** band it reads has data: not the band's
    nodata value, not NaN, not masked by a mask band. ``any_valid`` is where at least one band
    has data, so ``any_valid & ~all_valid`` are the partially-valid pixels (a band that covers
    less area than the others). Nodata and NaN are computed from ``data``; mask and alpha bands
    are read from GDAL (once per distinct mask).
    """
    from rasterio.enums import ColorInterp, MaskFlags

    arr = data if data.ndim == 3 else data[np.newaxis]
    # an "alpha" band the model reads (a NIR band tagged as alpha, e.g. RGBN saved as RGBA)
    # is data, not a mask: masking by it would drop every pixel where that band is 0
    alpha_read = [i for i in indexes if ds.colorinterp[i - 1] == ColorInterp.alpha]
    if alpha_read:
        warnings.warn(
            f"{ds.name}: band {alpha_read[0]} is tagged as alpha but is one of the model's "
            "bands: read as data, not as a mask (retag it, e.g. `gdal_edit.py -colorinterp_"
            f"{alpha_read[0]} undefined {ds.name}`, to silence this)",
            stacklevel=2,
        )
    all_valid = np.ones(arr.shape[-2:], dtype=bool)
    any_valid = np.zeros(arr.shape[-2:], dtype=bool)
    masks: dict[tuple[str, ...], np.ndarray] = {}
    for k, i in enumerate(indexes):
        flags = ds.mask_flag_enums[i - 1]
        band = arr[k]
        if MaskFlags.nodata in flags:
            nodata = ds.nodatavals[i - 1]
            ok = ~np.isnan(band) if np.isnan(nodata) else band != nodata
        elif flags == [MaskFlags.all_valid] or (alpha_read and MaskFlags.alpha in flags):
            ok = np.ones(band.shape, dtype=bool)
        else:  # a per-dataset mask or an alpha band: the same mask for every band, read once
            key = (
                tuple(sorted(f.name for f in flags))
                if MaskFlags.per_dataset in flags
                else (str(i),)
            )
            if key not in masks:
                masks[key] = np.asarray(ds.read_masks(i, window=window) > 0)
            ok = masks[key]
        if band.dtype.kind == "f":
            ok = ok & ~np.isnan(band)
        all_valid &= ok
        any_valid |= ok
    return all_valid, any_valid

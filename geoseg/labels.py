"""Label sources: class masks read on any grid, from vectors or from a class raster.

:func:`load_labels` opens the labels once and returns a :class:`LabelSource`; its
:meth:`~LabelSource.read_mask` gives a ``uint8`` mask of class **ids** on any :class:`Grid`
(any CRS, any resolution), with :data:`~geoseg.classes.IGNORE_INDEX` (255) where there is no
label. Memory is bounded by the grid asked for, not by the labels' extent.

Vector labels (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet):

* ``class_column`` given: the class of each feature is in that column, as names (strings)
  or as integer ids (0..254).
* no ``class_column``: one class per file (or per layer, for a multi-layer GeoPackage); the
  class name is the file stem (or layer name) with the prefix and suffix common to all of them
  removed at a ``_``/``-``/``.`` boundary: ``cls_forest_smpls.gpkg``, ``cls_water_smpls.gpkg``
  -> ``forest``, ``water``.

Polygons are reprojected to the grid's CRS and rasterized per grid with ``all_touched=False``
(a pixel is labelled when its centre is inside a polygon). Where polygons of different classes
overlap, the feature read last wins (files in the order given, features in file order).

Raster labels: one class raster, warped onto the grid with nearest-neighbour resampling
(a plain windowed read where the grids are aligned); its nodata becomes 255.

Class ids: with ``classes`` given its ids and colours are kept and new names are appended
with new ids (existing ids never move); otherwise names get ids ``1, 2, ...`` in sorted
order, and integer ids are kept as they are.
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from geoseg.classes import IGNORE_INDEX, ClassInfo, ClassMap, default_color
from geoseg.errors import (
    CRSError,
    InputFileNotFoundError,
    LabelError,
)
from geoseg.grid import Grid
from geoseg.io.raster import check_grid, open_raster
from geoseg.io.vector import PARQUET_SUFFIXES, read_vector, spatial_layers

__all__ = [
    "RASTER_SUFFIXES",
    "VECTOR_SUFFIXES",
    "LabelSource",
    "RasterLabels",
    "VectorLabels",
    "aligned_window",
    "class_names_from_stems",
    "load_labels",
    "read_on_grid",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Bounds = tuple[float, float, float, float]

VECTOR_SUFFIXES = frozenset(
    {".gpkg", ".geojson", ".json", ".shp", ".parquet", ".geoparquet", ".fgb", ".gml", ".kml"}
)
RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc"})
_PARQUET = PARQUET_SUFFIXES


class LabelSource(ABC):
    """Labels that can be read as a class-id mask on any grid.

    Attributes:
        classes: the class map (ids, names, colours) of the values :meth:`read_mask` returns.
        paths: the files the labels come from.
    """

    classes: ClassMap
    paths: tuple[Path, ...]

    @abstractmethod
    def read_mask(self, grid: Grid) -> np.ndarray:
        """A ``uint8`` ``(height, width)`` mask of class ids on ``grid``; 255 where unlabelled."""

    @abstractmethod
    def bounds_in(self, crs: CRS | str | int) -> Bounds:
        """Extent ``(left, bottom, right, top)`` of the labels in ``crs``."""

    def overlaps(self, grid: Grid) -> bool:
        """True when the labels' extent meets the grid's extent."""
        if grid.crs is None:
            raise CRSError("the scene has no CRS; labels cannot be placed on it")
        left, bottom, right, top = self.bounds_in(grid.crs)
        g = grid.bounds
        return left < g.right and right > g.left and bottom < g.top and top > g.bottom

    def outside(self, grid: Grid) -> int:
        """How many label features lie wholly outside ``grid`` (0: a raster has none)."""
        return 0

    def require_overlap(self, grid: Grid, *, scene: str = "the scene") -> None:
        """Raise :class:`LabelError` when the labels lie entirely outside ``grid``."""
        if not self.overlaps(grid):
            names = ", ".join(str(p) for p in self.paths)
            raise LabelError(
                f"{names}: labels lie entirely outside {scene} "
                f"(labels {_fmt_bounds(self.bounds_in(grid.crs))} vs scene "  # type: ignore[arg-type]
                f"{_fmt_bounds(tuple(grid.bounds))} in {_crs_name(grid.crs)}); "
                "check that labels and scene cover the same area"
            )

    def __repr__(self) -> str:
        files = ", ".join(p.name for p in self.paths)
        return f"{type(self).__name__}([{files}], classes={self.classes.names})"


# ---- vector labels ----------------------------------------------------------------------------
class VectorLabels(LabelSource):
    """Polygon labels rasterized on demand (reprojected per CRS, cached per CRS)."""

    def __init__(self, frame: Any, classes: ClassMap, paths: Sequence[Path]) -> None:
        self._frame = frame  # GeoDataFrame with an integer ``_class_id`` column
        self.classes = classes
        self.paths = tuple(paths)
        self._by_crs: dict[str, Any] = {}

    @property
    def crs(self) -> CRS:
        """CRS the labels were read in."""
        return CRS.from_user_input(self._frame.crs)

    def __len__(self) -> int:
        return len(self._frame)

    def outside(self, grid: Grid) -> int:
        """How many features lie wholly outside ``grid`` (they can never be compared)."""
        if grid.crs is None:
            return 0
        from shapely.geometry import box

        frame = self._in_crs(grid.crs)
        return int((~frame.geometry.intersects(box(*grid.bounds))).sum())

    def _in_crs(self, crs: CRS) -> Any:
        key = crs.to_wkt()
        frame = self._by_crs.get(key)
        if frame is None:
            frame = self._frame if self.crs == crs else self._frame.to_crs(key)
            frame = frame[~(frame.geometry.is_empty | frame.geometry.isna())].reset_index(drop=True)
            self._by_crs[key] = frame
        return frame

    def read_mask(self, grid: Grid) -> np.ndarray:
        """Rasterize the polygons meeting ``grid`` (centre-in-polygon); 255 elsewhere."""
        if grid.crs is None:
            raise CRSError("the grid has no CRS; labels cannot be placed on it")
        frame = self._in_crs(grid.crs)
        out = np.full(grid.shape, IGNORE_INDEX, dtype=np.uint8)
        if len(frame) == 0:
            return out
        from shapely.geometry import box

        hits = np.sort(frame.sindex.query(box(*grid.bounds), predicate="intersects"))
        if hits.size == 0:
            return out
        sub = frame.iloc[hits]
        shapes = zip(sub.geometry.values, sub["_class_id"].to_numpy(), strict=True)
        return rasterize(
            shapes,
            out_shape=grid.shape,
            transform=grid.transform,
            fill=IGNORE_INDEX,
            all_touched=False,
            dtype="uint8",
        )

    def bounds_in(self, crs: CRS | str | int) -> Bounds:
        """Extent of the polygons in ``crs``."""
        left, bottom, right, top = (float(v) for v in self._frame.total_bounds)
        dst = CRS.from_user_input(crs)
        if dst == self.crs:
            return (left, bottom, right, top)
        return tuple(transform_bounds(self.crs, dst, left, bottom, right, top, densify_pts=21))  # type: ignore[return-value]


# ---- raster labels ----------------------------------------------------------------------------
class RasterLabels(LabelSource):
    """A class raster read onto any grid: windowed read when aligned, else nearest warp."""

    def __init__(
        self, path: Path, classes: ClassMap, *, nodata: float | None, src_grid: Grid
    ) -> None:
        self.path = path
        self.paths = (path,)
        self.classes = classes
        self.nodata = nodata
        self.grid = src_grid
        self._lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for cid in classes.ids:
            self._lut[cid] = cid

    def read_mask(self, grid: Grid) -> np.ndarray:
        """The class raster on ``grid`` (nearest); its nodata and pixels outside it are 255."""
        if grid.crs is None:
            raise CRSError("the grid has no CRS; labels cannot be placed on it")
        with open_raster(self.path) as ds:
            raw = read_on_grid(ds, 1, grid, resampling=Resampling.nearest)
        values = np.ma.filled(raw.astype(np.int64), -1)
        out = np.full(grid.shape, IGNORE_INDEX, dtype=np.uint8)
        ok = (values >= 0) & (values < 256)
        out[ok] = self._lut[values[ok]]
        return out

    def bounds_in(self, crs: CRS | str | int) -> Bounds:
        """Extent of the class raster in ``crs``."""
        b = tuple(self.grid.bounds)
        dst = CRS.from_user_input(crs)
        if self.grid.crs == dst:
            return b  # type: ignore[return-value]
        return tuple(transform_bounds(self.grid.crs, dst, *b, densify_pts=21))  # type: ignore[return-value]


def aligned_window(src: Grid, dst: Grid) -> Window | None:
    """The window of ``src`` that is exactly ``dst``, when their pixels coincide; else None.

    Pixels coincide when both grids share CRS and pixel size, are north-up, and ``dst``'s
    origin lies on a pixel corner of ``src`` (the window may extend past ``src``).
    """
    t, s = dst.transform, src.transform
    if dst.crs != src.crs or not (
        math.isclose(t.a, s.a, rel_tol=1e-9)
        and math.isclose(t.e, s.e, rel_tol=1e-9)
        and t.b == s.b == 0
        and t.d == s.d == 0
    ):
        return None
    col = (t.c - s.c) / s.a
    row = (t.f - s.f) / s.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return Window(round(col), round(row), dst.width, dst.height)


def read_on_grid(
    ds: Any,
    band: int | Sequence[int],
    grid: Grid,
    *,
    resampling: Resampling = Resampling.nearest,
) -> np.ma.MaskedArray:
    """Band(s) ``band`` of the open dataset ``ds`` on ``grid``, masked where there is no data.

    Where the grids are aligned (:func:`aligned_window`) this is a plain windowed read;
    otherwise only the part of ``ds`` under ``grid`` is read and warped with ``resampling``.
    The mask is true at the dataset's nodata and outside its extent, so memory and I/O are
    bounded by ``grid``, not by the dataset. A sequence of bands gives ``(bands, h, w)``,
    read in one call (a pixel-interleaved file decompresses each block once, not per band).
    """
    indexes = [band] if isinstance(band, int) else [int(b) for b in band]
    src_grid = Grid.from_dataset(ds)
    window = aligned_window(src_grid, grid)
    if window is not None:
        out = ds.read(indexes, window=window, boundless=True, masked=True)
    else:
        out = _warp_bands(ds, indexes, grid, resampling)
    return out[0] if isinstance(band, int) else out


def _warp_bands(
    ds: Any, indexes: list[int], grid: Grid, resampling: Resampling
) -> np.ma.MaskedArray:
    """The part of ``ds`` under ``grid``, warped onto it: ``(bands, h, w)``, masked."""
    dtype = ds.dtypes[indexes[0] - 1]
    nodata = ds.nodata if ds.nodata is not None else _free_value(dtype)
    dst = np.full((len(indexes), *grid.shape), nodata, dtype=dtype)
    left, bottom, right, top = transform_bounds(grid.crs, ds.crs, *grid.bounds, densify_pts=21)
    src_win = _pad_clip(
        from_bounds(left, bottom, right, top, ds.transform)
        .round_offsets(op="floor")
        .round_lengths(op="ceil"),
        ds.width,
        ds.height,
        pad=2,
    )
    if src_win is not None:
        reproject(
            ds.read(indexes, window=src_win),
            dst,
            src_transform=ds.window_transform(src_win),
            src_crs=ds.crs,
            src_nodata=nodata,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=nodata,
            resampling=resampling,
        )
    invalid = np.isnan(dst) if np.isnan(nodata) else dst == nodata
    return np.ma.MaskedArray(dst, mask=invalid)


def _free_value(dtype: str) -> float:
    """A value to mark 'no data' in a warp of a raster that has none."""
    dt = np.dtype(dtype)
    return float(np.iinfo(dt).max) if dt.kind in "ui" else float("nan")


def _pad_clip(win: Window, width: int, height: int, *, pad: int) -> Window | None:
    c0 = max(0, int(win.col_off) - pad)
    r0 = max(0, int(win.row_off) - pad)
    c1 = min(width, int(win.col_off + win.width) + pad)
    r1 = min(height, int(win.row_off + win.height) + pad)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


# ---- loading ----------------------------------------------------------------------------------
def load_labels(
    paths: Sequence[PathLike] | PathLike,
    *,
    class_column: str | None = None,
    classes: ClassMap | None = None,
) -> LabelSource:
    """Open labels from vector files or one class raster.

    Args:
        paths: vector files (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet), or one
            class raster (GeoTIFF or any GDAL raster).
        class_column: the attribute holding each feature's class (names or integer ids);
            without it, each file (or layer) is one class named after it.
        classes: a class map fixing ids and colours; names it lacks are appended.

    Returns:
        A :class:`LabelSource`: :class:`VectorLabels` or :class:`RasterLabels`.

    Raises:
        InputFileNotFoundError: a path does not exist.
        LabelError: missing class column, empty file, bad class ids, mixed raster and vectors.
        VectorReadError: a vector file cannot be read.
        CRSError: labels without a CRS.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files = [Path(p) for p in paths]
    if not files:
        raise LabelError(
            "no label files given; pass label files (vectors or a class raster): "
            "tile --labels FILE, evaluate --reference FILE"
        )
    for f in files:
        if not f.exists():
            raise InputFileNotFoundError(f"{f}: no such label file; check the path")
    kinds = {_kind(f) for f in files}
    if kinds == {"raster"}:
        if len(files) > 1:
            raise LabelError(
                f"{files[1]}: only one class raster can be given; mosaic them first "
                "(e.g. `gdalbuildvrt labels.vrt *.tif`) and pass the VRT"
            )
        if class_column is not None:
            log.warning("--class-column is ignored for a class raster (%s)", files[0])
        return _load_raster(files[0], classes)
    if kinds != {"vector"}:
        raise LabelError(
            f"{', '.join(str(f) for f in files)}: mixes class rasters and vector files; "
            "give either vector files or one class raster"
        )
    return _load_vectors(files, class_column, classes)


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in VECTOR_SUFFIXES or path.is_dir():
        return "vector"
    if suffix in RASTER_SUFFIXES:
        return "raster"
    try:
        import pyogrio

        pyogrio.read_info(path)
        return "vector"
    except Exception:
        return "raster"


def class_names_from_stems(stems: Sequence[str]) -> list[str]:
    """Class names from file stems: strip the prefix and suffix common to all of them.

    The common part is cut back to a ``_``, ``-`` or ``.`` boundary, so ``cls_grass_smpls``
    and ``cls_grain_smpls`` give ``grass`` and ``grain``. A single stem is kept whole.
    """
    unique = sorted(set(stems))
    if len(unique) < 2:
        return list(stems)
    prefix = _common_prefix(unique)
    cut = max(prefix.rfind(c) for c in "_-.") + 1
    prefix = prefix[:cut]
    suffix = _common_prefix([s[::-1] for s in unique])[::-1]
    cut = min((i for i in (suffix.find(c) for c in "_-.") if i >= 0), default=len(suffix))
    suffix = suffix[cut:]
    out = []
    for s in stems:
        name = s[len(prefix) : len(s) - len(suffix)] if len(prefix) + len(suffix) < len(s) else s
        out.append(name or s)
    return out


def _common_prefix(strings: Sequence[str]) -> str:
    first, last = min(strings), max(strings)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _layers(path: Path) -> list[str | None]:
    if path.suffix.lower() in _PARQUET:
        return [None]
    layers = spatial_layers(path)  # a GeoPackage's layer_styles table is no class
    return list(layers) if len(layers) > 1 else [None]


def _one_layer(path: Path, class_column: str) -> str | None:
    """The one feature layer read with a class column; several are refused with the fix."""
    layers = _layers(path)
    if len(layers) > 1:
        names = ", ".join(str(n) for n in layers)
        raise LabelError(
            f"{path}: has {len(layers)} layers with geometries ({names}); with --class-column "
            f"{class_column} the labels are one layer: keep it (`ogr2ogr one{path.suffix} {path} "
            f"{layers[0]}`), or drop --class-column to make each layer one class"
        )
    return layers[0]


def _load_vectors(
    files: list[Path], class_column: str | None, classes: ClassMap | None
) -> VectorLabels:
    import geopandas as gpd
    import pandas as pd

    parts: list[Any] = []  # (frame, source name)
    stems: list[str] = []
    for f in files:
        layers = _layers(f) if class_column is None else [_one_layer(f, class_column)]
        for layer in layers:
            frame = read_vector(f, layer=layer)
            where = f"{f}" + (f" (layer {layer})" if layer else "")
            if len(frame) == 0 or frame.geometry.isna().all() or frame.geometry.is_empty.all():
                raise LabelError(f"{where}: has no features; remove it or give a labelled file")
            if frame.crs is None:
                raise CRSError(
                    f"{where}: has no CRS; assign one, e.g. "
                    f"`ogr2ogr -a_srs EPSG:32633 fixed{f.suffix} {f}`"
                )
            if class_column is not None and class_column not in frame.columns:
                cols = [c for c in frame.columns if c != frame.geometry.name]
                raise LabelError(
                    f"{where}: has no column {class_column!r}; available columns: "
                    f"{', '.join(map(str, cols)) or '(none)'}; pass one with --class-column"
                )
            parts.append((frame, where))
            stems.append(layer if layer else f.stem)

    crs = CRS.from_user_input(parts[0][0].crs)
    frames = []
    for frame, _ in parts:
        frames.append(frame if CRS.from_user_input(frame.crs) == crs else frame.to_crs(crs))

    if class_column is None:
        names = class_names_from_stems(stems)
        cmap = _map_for_names(sorted(set(names)), classes)
        for frame, name in zip(frames, names, strict=True):
            frame["_class_id"] = cmap.by_name(name).id
        cols = ["_class_id"]
    else:
        values = pd.concat([fr[class_column] for fr in frames], ignore_index=True)
        cmap, ids = _classes_from_values(values, class_column, parts, classes)
        start = 0
        for frame in frames:
            frame["_class_id"] = ids[start : start + len(frame)]
            start += len(frame)
        cols = ["_class_id"]

    merged = gpd.GeoDataFrame(
        pd.concat(
            [fr[[*cols]].assign(geometry=fr.geometry.values) for fr in frames], ignore_index=True
        ),
        geometry="geometry",
        crs=crs,
    )
    merged = merged[~(merged.geometry.isna() | merged.geometry.is_empty)]
    unclassed = int((merged["_class_id"] == IGNORE_INDEX).sum())
    if unclassed:
        log.warning(
            "%s: %d of %d feature(s) have no class in %r and are not used as labels",
            ", ".join(w for _, w in parts),
            unclassed,
            len(merged),
            class_column,
        )
    merged = merged[merged["_class_id"] != IGNORE_INDEX].reset_index(drop=True)
    invalid = ~merged.geometry.is_valid
    if invalid.any():
        merged.loc[invalid, "geometry"] = merged.geometry[invalid].make_valid()
    merged["_class_id"] = merged["_class_id"].astype(np.uint8)
    return VectorLabels(merged, cmap, files)


def _map_for_names(names: Sequence[str], classes: ClassMap | None) -> ClassMap:
    if classes is None:
        return ClassMap.from_names(names, start=1)
    return classes.merged_with(names)


def _classes_from_values(
    values: Any, column: str, parts: list[Any], classes: ClassMap | None
) -> tuple[ClassMap, np.ndarray]:
    import pandas as pd

    where = ", ".join(w for _, w in parts)
    present = values.dropna()
    if len(present) == 0:
        raise LabelError(f"{where}: column {column!r} is empty; fill it with class names or ids")
    numeric = pd.api.types.is_numeric_dtype(present) or all(
        isinstance(v, int | np.integer) for v in present
    )
    if numeric:
        arr = present.to_numpy(dtype=np.float64)
        bad = arr[(arr != np.round(arr)) | (arr < 0) | (arr > 254)]
        if bad.size:
            raise LabelError(
                f"{where}: class ids in {column!r} must be integers 0..254 (255 means unlabelled), "
                f"got {bad[0]:g}; recode them or use class names"
            )
        ids = np.full(len(values), IGNORE_INDEX, dtype=np.int64)
        mask = values.notna().to_numpy()
        ids[mask] = arr.astype(np.int64)
        found = sorted({int(v) for v in arr})
        return _map_for_ids(found, classes), ids
    names = present.astype(str).str.strip()
    cmap = _map_for_names(sorted(set(names)), classes)
    lookup = {c.name.lower(): c.id for c in cmap}
    ids = np.array(
        [IGNORE_INDEX if pd.isna(v) else lookup[str(v).strip().lower()] for v in values],
        dtype=np.int64,
    )
    return cmap, ids


def _map_for_ids(ids: Sequence[int], classes: ClassMap | None) -> ClassMap:
    if classes is None:
        return ClassMap.from_ids(ids)
    known = set(classes.ids)
    extra = [i for i in ids if i not in known]
    if not extra:
        return classes
    out = list(classes.classes)
    names = {c.name for c in out}
    for i in extra:
        name = f"class_{i}" if f"class_{i}" not in names else f"class_{i}_{len(out)}"
        out.append(ClassInfo(id=i, name=name, color=default_color(name, len(out))))
    return ClassMap(tuple(out))


def _load_raster(path: Path, classes: ClassMap | None) -> RasterLabels:
    from geoseg.io.raster import raster_classes

    with open_raster(path) as ds:
        grid = Grid.from_dataset(ds)
        check_grid(grid, path)
        nodata = ds.nodata
        found: set[int] = set()
        bad: float | None = None
        for _, window in ds.block_windows(1):
            block = ds.read(1, window=window)
            vals = np.unique(block)
            if nodata is not None:
                vals = vals[vals != nodata] if not np.isnan(nodata) else vals[~np.isnan(vals)]
            if vals.size == 0:
                continue
            wrong = vals[(vals != np.round(vals)) | (vals < 0) | (vals > 254)]
            if wrong.size:
                bad = float(wrong[0])
                break
            found.update(int(v) for v in vals)
        if bad is not None:
            raise LabelError(
                f"{path}: class values must be integers 0..254 (255 means unlabelled), got {bad:g}; "
                "recode the raster or set its nodata (e.g. `gdal_edit.py -a_nodata 255`)"
            )
        if not found:
            raise LabelError(f"{path}: has no labelled pixels (all nodata); give another raster")
        own = raster_classes(ds, found=sorted(found))
    if classes is None:
        cmap = _found_classes(sorted(found), own)
    else:
        missing = sorted(found - set(classes.ids))
        if missing:
            raise LabelError(
                f"{path}: holds class values {missing} that the class map lacks "
                f"(ids {classes.ids}); add them to the class map given (tile --classes FILE)"
            )
        cmap = classes
    return RasterLabels(path, cmap, nodata=nodata, src_grid=grid)


def _found_classes(found: list[int], own: ClassMap | None) -> ClassMap:
    """The classes of the values found in a label raster, named and coloured as it says.

    Classes the raster's own class map (:func:`geoseg.io.raster.raster_classes`) lists but
    that hold no pixel are left out; values it lacks become ``class_<id>``.
    """
    kept = [c for c in own.classes if c.id in set(found)] if own is not None else []
    return _map_for_ids(found, ClassMap(tuple(kept)) if kept else None)


def _fmt_bounds(b: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


def _crs_name(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:40]

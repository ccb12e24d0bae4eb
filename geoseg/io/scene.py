"""One way to open a scene for tile, train and predict: a raster, a folder of bands, a STAC item.

A *scene* is

* one raster file (GeoTIFF, VRT, JP2, ...), read as it is;
* a folder of single-band rasters (e.g. a Sentinel-2 ``IMG_DATA`` folder) stacked as bands in
  file-name order, each band named after its file (the part that differs between the names:
  ``B02``, ``B8A``...);
* a STAC Item, ItemCollection or saved search result (``.json``, a file or an ``http(s)`` URL;
  :mod:`geoseg.io.stac`): its data assets are the bands, named by asset key, matched by asset
  key, ``eo:bands`` name or common name (``blue``, ``nir``, ``swir16``...); several items of
  one date on one CRS are mosaicked.

Bands at several resolutions are resampled (bilinear) onto one grid: the finest band's grid,
or a grid of ``resolution`` over the same extent. :func:`open_scene` describes a scene
(:class:`Scene`: bands and target grid) without reading pixels; :func:`stack_vrt` turns a
multi-file scene into one GDAL VRT (XML, nothing written to disk) that any windowed reader
opens, so the bands are read lazily, window by window, each from its own file at its own
resolution (:class:`StackedScene` carries it: ``rasterio.open(stacked)`` opens the VRT,
``str(stacked)`` is the folder or STAC file, for messages).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from geoseg.errors import (
    BandMismatchError,
    GridError,
    InputFileNotFoundError,
    RasterReadError,
)
from geoseg.grid import Grid
from geoseg.io.raster import check_grid, open_raster
from geoseg.labels import RASTER_SUFFIXES, class_names_from_stems

__all__ = [
    "Scene",
    "SceneBand",
    "StackedScene",
    "describe_crs",
    "is_stac",
    "open_scene",
    "resample_grid",
    "scene_bands",
    "scene_files",
    "scene_source",
    "select_bands",
    "stack_vrt",
    "utm_crs",
]

PathLike = str | os.PathLike[str]
#: Opened as STAC (an Item, ItemCollection or saved search result).
STAC_SUFFIXES = (".json", ".geojson")
#: Numpy dtype name -> GDAL VRT dataType.
_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class SceneBand:
    """One band of a scene: file, band index in that file (1-based), name and nodata value.

    ``path`` is a local path or a GDAL path (``/vsicurl/https://...`` for a remote STAC
    asset). STAC bands also carry their ``eo`` common name and band name (``B02`` of the
    asset ``blue``), the ``raster:bands`` scale and offset, and ``mosaic``: the same band in the further items of an ItemCollection (drawn
    over ``path`` in order, where they have data).
    """

    path: Path | str
    index: int
    name: str
    nodata: float | None = None
    common_name: str | None = None
    band_name: str | None = None
    scale: float | None = None
    offset: float | None = None
    mosaic: tuple[Path | str, ...] = ()

    @property
    def files(self) -> tuple[Path | str, ...]:
        """Every file this band is read from (one, or the items of a mosaic)."""
        return (self.path, *self.mosaic)

    @property
    def label(self) -> str:
        """``name`` with its common name, for messages (``B02 (blue)``)."""
        c = self.common_name
        return f"{self.name} ({c})" if c and c.lower() != self.name.lower() else self.name


@dataclass(frozen=True)
class Scene:
    """A scene: selected bands (possibly from several files) on one target grid.

    ``nodata`` is the value chips carry as nodata: the bands' common nodata value, NaN for a
    float scene without one, None where the bands have none (or different ones).
    """

    name: str
    path: Path
    bands: tuple[SceneBand, ...]
    grid: Grid
    dtype: str
    nodata: float | None = None
    #: the grid of each file the bands are read from
    file_grids: dict[Path | str, Grid] = field(default_factory=dict, compare=False, repr=False)
    #: the band data types of each file
    file_dtypes: dict[Path | str, list[str]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def band_names(self) -> list[str]:
        """Band descriptions, in output order."""
        return [b.name for b in self.bands]

    @property
    def single_file(self) -> bool:
        """Whether every band is read from one file on its own grid (no stack needed)."""
        files = {f for b in self.bands for f in b.files}
        if len(files) != 1:
            return False
        (f,) = files
        return self.file_grids.get(f) == self.grid and not any(
            b.scale is not None or b.offset is not None for b in self.bands
        )


# ---- what a scene path is ---------------------------------------------------------------------
def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def is_stac(path: PathLike) -> bool:
    """Whether ``path`` names STAC JSON (by its suffix: ``.json`` / ``.geojson``, file or URL)."""
    s = str(path).split("?", 1)[0].lower()
    return s.endswith(STAC_SUFFIXES)


def scene_files(path: Path) -> list[Path]:
    """The raster files of a scene: the file itself, or a folder's rasters in name order."""
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()
        )
        if not files:
            raise RasterReadError(
                f"{path}: folder holds no raster files ({', '.join(sorted(RASTER_SUFFIXES))}); "
                "give a raster file or a folder of band files"
            )
        return files
    if not path.exists():
        raise InputFileNotFoundError(f"{path}: no such scene file or folder; check the path")
    return [path]


def scene_bands(path: PathLike) -> list[SceneBand]:
    """Every band a scene offers, before any selection (files are opened, pixels not read)."""
    if is_stac(path):
        from geoseg.io.stac import stac_bands

        return stac_bands(path)
    p = Path(path)
    files = scene_files(p)
    out: list[SceneBand] = []
    for f in files:
        with open_raster(f) as ds:
            descs = list(ds.descriptions)
            for i in range(1, ds.count + 1):
                out.append(SceneBand(f, i, descs[i - 1] or "", ds.nodatavals[i - 1]))
    if len(files) > 1:  # a folder of band files: unnamed bands are named after their files
        stems = dict(zip(files, class_names_from_stems([f.stem for f in files]), strict=True))
        out = [b if b.name else replace(b, name=stems[Path(b.path)]) for b in out]
    return [b if b.name else replace(b, name=f"band_{k}") for k, b in enumerate(out, start=1)]


# ---- band selection ---------------------------------------------------------------------------
def _matches(available: Sequence[SceneBand], sel: str) -> list[SceneBand]:
    """Bands named ``sel`` (case-insensitive): by name, then ``eo`` band name, then common name."""
    key = sel.strip().lower()
    for attr in ("name", "band_name"):
        found = [b for b in available if (getattr(b, attr) or "").lower() == key]
        if found:
            return found
    by_common = [b for b in available if (b.common_name or "").lower() == key]
    single = [b for b in by_common if _band_count(available, b) == 1]
    return single or by_common


def _band_count(available: Sequence[SceneBand], band: SceneBand) -> int:
    return sum(1 for b in available if b.path == band.path)


def select_bands(
    available: Sequence[SceneBand], bands: Sequence[int | str] | None, path: PathLike
) -> list[SceneBand]:
    """The bands ``bands`` selects: 1-based indexes or names (name, then common name)."""
    if not bands:
        return list(available)
    shown = ", ".join(b.label for b in available)
    out: list[SceneBand] = []
    for sel in bands:
        if isinstance(sel, int) or (isinstance(sel, str) and sel.strip().isdigit()):
            k = int(sel)
            if not 1 <= k <= len(available):
                raise BandMismatchError(
                    f"{path}: band {k} does not exist (the scene has {len(available)} bands: "
                    f"{shown}); bands are numbered from 1"
                )
            out.append(available[k - 1])
            continue
        found = _matches(available, str(sel))
        if not found:
            raise BandMismatchError(
                f"{path}: no band named {sel!r}; available: {shown}; "
                "select bands by name, common name or 1-based index"
            )
        out.append(found[0])
    return out


def match_model_bands(
    available: Sequence[SceneBand],
    model_bands: Sequence[str],
    common_names: Sequence[str | None],
) -> list[SceneBand] | None:
    """The scene band of each model band (by its name, else its common name); None if any lacks one."""
    out: list[SceneBand] = []
    for name, common in zip(model_bands, common_names, strict=True):
        found = _matches(available, name) or (_matches(available, common) if common else [])
        if not found:
            return None
        out.append(found[0])
    return out


# ---- the scene --------------------------------------------------------------------------------
def open_scene(
    path: PathLike,
    *,
    bands: Sequence[int | str] | None = None,
    resolution: float | None = None,
    available: Sequence[SceneBand] | None = None,
    grid_bands: int | None = None,
) -> Scene:
    """Describe a scene: its bands (selected by 1-based index or name) and target grid.

    Args:
        path: a raster file, a folder of rasters stacked as bands (file-name order), or STAC
            JSON (:mod:`geoseg.io.stac`).
        bands: band indices (1-based, over all bands of the scene) or names (band
            descriptions, asset keys or common names, case-insensitive); all bands when None.
        resolution: pixel size of the target grid in CRS units; the finest band's
            resolution when None.
        available: the scene's bands when already listed (:func:`scene_bands`).
        grid_bands: only the first ``grid_bands`` selected bands choose the grid (the
            finest of them); the others are resampled onto it.

    Raises:
        InputFileNotFoundError, RasterReadError, GridError, BandMismatchError.
    """
    p = Path(path)
    listed = list(available) if available is not None else scene_bands(path)
    selected = select_bands(listed, bands, path)
    files = list(dict.fromkeys(f for b in selected for f in b.files))
    grids, dtypes, nodatas = _file_grids(files)
    selected = [  # STAC bands without a nodata value take the file's
        b if b.nodata is not None else replace(b, nodata=nodatas[b.path][b.index - 1])
        for b in selected
    ]
    if len({grids[f].crs for f in files}) > 1:
        crss = sorted({str(grids[f].crs) for f in files})
        raise GridError(
            f"{path}: bands are in different CRSs ({', '.join(crss)}); warp them to one CRS "
            f"first (gdalwarp -t_srs {crss[0]}) or give them as separate scenes"
        )
    chooser = selected[:grid_bands] if grid_bands else selected
    grid = _target_grid([grids[f] for b in chooser for f in b.files], files, grids, resolution)
    dtype = np.result_type(*(dtypes[b.path][b.index - 1] for b in selected)).name
    return Scene(
        name=p.stem if p.suffix else p.name,
        path=p,
        bands=tuple(selected),
        grid=grid,
        dtype=dtype,
        nodata=_chip_nodata(selected, dtype),
        file_grids=grids,
        file_dtypes=dtypes,
    )


def _file_grids(
    files: Sequence[Path | str],
) -> tuple[
    dict[Path | str, Grid], dict[Path | str, list[str]], dict[Path | str, list[float | None]]
]:
    """Grid, band data types and nodata values of each file (headers only)."""
    grids: dict[Path | str, Grid] = {}
    dtypes: dict[Path | str, list[str]] = {}
    nodatas: dict[Path | str, list[float | None]] = {}
    for f in files:
        with open_raster(f) as ds:
            g = Grid.from_dataset(ds)
            check_grid(g, f)
            grids[f] = g
            dtypes[f] = list(ds.dtypes)
            nodatas[f] = list(ds.nodatavals)
    return grids, dtypes, nodatas


def _target_grid(
    chooser: Sequence[Grid],
    files: Sequence[Path | str],
    grids: dict[Path | str, Grid],
    resolution: float | None,
) -> Grid:
    """The finest grid of ``chooser`` (extended over every file of a mosaic), or ``resolution``."""
    finest = min(chooser, key=lambda g: g.resolution[0])
    if len(files) == 1 or all(grids[f].bounds == finest.bounds for f in files):
        base = finest
    else:  # a mosaic, or bands of different extents: the union, snapped to the finest grid
        xres, yres = finest.resolution
        x0, y1 = finest.transform.c, finest.transform.f
        b = [grids[f].bounds for f in files]
        left = x0 + math.floor((min(v[0] for v in b) - x0) / xres + 1e-9) * xres
        top = y1 - math.floor((y1 - max(v[3] for v in b)) / yres + 1e-9) * yres
        right, bottom = max(v[2] for v in b), min(v[1] for v in b)
        base = Grid.from_bounds((left, bottom, right, top), (xres, yres), finest.crs)
    if resolution is None:
        return base
    if resolution <= 0:
        raise GridError(f"resolution must be positive, got {resolution}; e.g. --resolution 10")
    return Grid.from_bounds(tuple(base.bounds), resolution, base.crs)


def _chip_nodata(bands: Sequence[SceneBand], dtype: str) -> float | None:
    """The bands' common nodata value; NaN for a float scene without one; else None."""
    values = {("nan" if b.nodata is not None and math.isnan(b.nodata) else b.nodata) for b in bands}
    if len(values) == 1:
        (value,) = values
        if value == "nan":
            return float("nan")
        if value is not None:
            return float(value)
    if values == {None} and np.dtype(dtype).kind == "f":
        return float("nan")
    return None


# ---- one GDAL dataset for a multi-file scene ---------------------------------------------------
@dataclass(frozen=True)
class StackedScene:
    """A multi-file scene as one GDAL dataset: the VRT of :func:`stack_vrt`.

    ``os.fspath`` gives the VRT XML (what GDAL opens: ``rasterio.open(stacked)``); ``str``
    gives the folder or STAC file the scene came from (for messages and reports).
    """

    path: Path | str
    vrt: str = field(repr=False)
    scene: Scene = field(repr=False, compare=False)

    def __fspath__(self) -> str:
        """The VRT XML, which GDAL opens as a dataset."""
        return self.vrt

    def __str__(self) -> str:
        """The folder or STAC file of the scene."""
        return str(self.path)

    def on_grid(self, grid: Grid) -> StackedScene:
        """The same bands stacked onto another grid of the same CRS (each read once, bilinear)."""
        scene = replace(self.scene, grid=grid)
        return StackedScene(self.path, stack_vrt(scene), scene)


def _num(v: float) -> str:
    return repr(float(v))


def _source(f: Path | str, band: SceneBand, g: Grid, grid: Grid, dtype: str) -> str:
    """One ``ComplexSource``: band ``band.index`` of ``f`` placed on ``grid`` (bilinear)."""
    xres, yres = grid.resolution
    left, top = grid.transform.c, grid.transform.f
    fl, ft = g.transform.c, g.transform.f
    x_off = (fl - left) / xres
    y_off = (top - ft) / yres
    x_size = g.width * g.resolution[0] / xres
    y_size = g.height * g.resolution[1] / yres
    nodata = f"<NODATA>{_num(band.nodata)}</NODATA>" if band.nodata is not None else ""
    resampling = "" if g.resolution == grid.resolution else ' resampling="bilinear"'
    return (
        f"<ComplexSource{resampling}>"
        f'<SourceFilename relativeToVRT="0">{escape(str(f))}</SourceFilename>'
        f"<SourceBand>{band.index}</SourceBand>"
        f'<SourceProperties RasterXSize="{g.width}" RasterYSize="{g.height}" '
        f'DataType="{_GDAL_TYPES[dtype]}"/>'
        f'<SrcRect xOff="0" yOff="0" xSize="{g.width}" ySize="{g.height}"/>'
        f'<DstRect xOff="{_num(x_off)}" yOff="{_num(y_off)}" xSize="{_num(x_size)}" '
        f'ySize="{_num(y_size)}"/>'
        f"{nodata}</ComplexSource>"
    )


def stack_vrt(scene: Scene) -> str:
    """The VRT XML of ``scene``: its bands, in order, each resampled (bilinear) onto its grid.

    Nothing is read or written: GDAL reads each window from the band files when asked
    (``gdalbuildvrt -separate -r bilinear`` does the same). Band descriptions are the band
    names; nodata, ``raster:bands`` scale and offset are kept per band; a mosaic band draws
    its items in order, later ones over earlier ones where they have data.
    """
    grid = scene.grid
    if grid.crs is None:  # pragma: no cover - check_grid refuses scenes without a CRS first
        raise GridError(f"{scene.path}: has no CRS")
    t = grid.transform
    parts = [
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">',
        f"<SRS>{escape(grid.crs.to_wkt())}</SRS>",
        f"<GeoTransform>{_num(t.c)}, {_num(t.a)}, 0, {_num(t.f)}, 0, {_num(t.e)}</GeoTransform>",
    ]
    gdal_type = _GDAL_TYPES[scene.dtype]
    for k, b in enumerate(scene.bands, start=1):
        parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="{k}">')
        parts.append(f"<Description>{escape(b.name)}</Description>")
        if b.nodata is not None:
            parts.append(f"<NoDataValue>{_num(b.nodata)}</NoDataValue>")
        if b.scale is not None or b.offset is not None:
            parts.append(f"<Offset>{_num(b.offset or 0.0)}</Offset>")
            parts.append(f"<Scale>{_num(1.0 if b.scale is None else b.scale)}</Scale>")
        for f in b.files:
            src_dtype = scene.file_dtypes[f][b.index - 1]
            parts.append(_source(f, b, scene.file_grids[f], grid, src_dtype))
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


def scene_source(
    path: PathLike,
    *,
    bands: Sequence[int | str] | None = None,
    model_bands: Sequence[str] | None = None,
    common_names: Sequence[str | None] | None = None,
) -> tuple[PathLike, Sequence[int | str] | None]:
    """What a reader opens for ``path``, and the ``bands`` to select in it.

    A raster file is returned as it is (with ``bands``). A folder of band files becomes a
    :class:`StackedScene` of all its bands (band descriptions = file names; ``bands`` then
    select among them as in a single file). A STAC scene becomes a :class:`StackedScene`
    holding first the bands ``bands`` names (asset keys, ``eo`` names or common names, or
    1-based indexes over the item's data bands), or else the model's bands matched by name
    or common name, then every other data band (for a cloud model); the returned selection
    is then the first bands, by index.

    Raises:
        BandMismatchError: a STAC scene lacks a band the model or ``bands`` asks for; the
            message names the file, lists the item's bands and says how to choose.
    """
    if not is_stac(path) and not Path(path).is_dir():
        return path, bands
    available = scene_bands(path)
    where: Path | str = str(path) if _is_url(str(path)) else Path(path)
    if not is_stac(path):
        scene = open_scene(path, available=available)
        return StackedScene(where, stack_vrt(scene), scene), bands
    chosen = _stac_choice(path, available, bands, model_bands, common_names)
    rest = [b for b in available if b not in chosen]
    scene = open_scene(path, bands=None, available=[*chosen, *rest], grid_bands=len(chosen) or None)
    return StackedScene(where, stack_vrt(scene), scene), tuple(range(1, len(chosen) + 1)) or None


def _stac_choice(
    path: PathLike,
    available: Sequence[SceneBand],
    bands: Sequence[int | str] | None,
    model_bands: Sequence[str] | None,
    common_names: Sequence[str | None] | None,
) -> list[SceneBand]:
    if bands:
        return select_bands(available, bands, path)
    if not model_bands:
        return []
    commons = list(common_names) if common_names else [None] * len(model_bands)
    found = match_model_bands(available, model_bands, commons)
    if found is not None:
        return found
    missing = [
        m if not c or c == m else f"{m} ({c})"
        for m, c in zip(model_bands, commons, strict=True)
        if match_model_bands(available, [m], [c]) is None
    ]
    raise BandMismatchError(
        f"{path}: no asset for the model's band(s) {', '.join(missing)}; the item's bands: "
        f"{', '.join(b.label for b in available)}; choose them with --bands (asset keys or "
        "common names, one per model band) or use an item that has them"
    )


# ---- the grid a scene is resampled onto ---------------------------------------------------------
def utm_crs(grid: Grid) -> Any:
    """The WGS 84 UTM CRS of the centre of ``grid`` (``None`` beyond 84 N / 80 S: no UTM zone)."""
    from rasterio.crs import CRS
    from rasterio.warp import transform

    left, bottom, right, top = grid.bounds
    xs, ys = transform(grid.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
    lon, lat = float(xs[0]), float(ys[0])
    if not -80.0 <= lat <= 84.0:
        return None
    zone = min(60, max(1, int((lon + 180.0) // 6) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def resample_grid(grid: Grid, resolution: tuple[float, float], *, path: PathLike) -> Grid:
    """The grid of ``grid`` resampled to ``resolution`` (metres for a geographic ``grid``).

    A projected grid keeps its CRS and extent. A geographic grid (degrees) is warped to the UTM
    zone of its centre (:func:`utm_crs`), covering the whole scene, its pixel edges on
    multiples of ``resolution`` (``gdalwarp -tap``).

    Raises:
        GridError: a geographic scene beyond the UTM zones (polar); the message gives the
            ``gdalwarp`` command that makes it usable.
    """
    if grid.crs is None or not grid.crs.is_geographic:
        return Grid.from_bounds(tuple(grid.bounds), resolution, grid.crs)
    from rasterio.warp import transform_bounds

    utm = utm_crs(grid)
    if utm is None:
        north = grid.bounds[3] > 0
        raise GridError(
            f"{path}: is geographic and polar (no UTM zone); warp it first: gdalwarp -t_srs "
            f"{'EPSG:3413' if north else 'EPSG:3031'} -tr {resolution[0]:g} {resolution[1]:g} "
            f"-r bilinear {path} {Path(str(path)).stem}_polar.tif"
        )
    left, bottom, right, top = transform_bounds(grid.crs, utm, *grid.bounds, densify_pts=21)
    xres, yres = resolution
    left, right = math.floor(left / xres) * xres, math.ceil(right / xres) * xres
    bottom, top = math.floor(bottom / yres) * yres, math.ceil(top / yres) * yres
    return Grid.from_bounds((left, bottom, right, top), resolution, utm)


def describe_crs(crs: Any) -> str:
    """``UTM zone 33N (EPSG:32633)``-style name of a CRS, for messages."""
    epsg = crs.to_epsg()
    if epsg and 32601 <= epsg <= 32760:
        return f"UTM zone {epsg % 100}{'N' if epsg < 32700 else 'S'} (EPSG:{epsg})"
    return crs.to_string()

"""Class rasters to land-cover polygons: blocked polygonize, exact seam merge, coverage simplify.

The raster is polygonized block by block (rows of blocks in parallel on worker processes),
in *pixel coordinates* so that every vertex is an integer and unions are exact. Polygons that do not
touch an inner block edge are final; the others ("pieces") are merged across the seams: two
pieces of the same class are one region when their boundaries share a segment of positive
length on the seam (4-connectivity, as GDAL's default). Blocks are handled one block row at a
time and a merged region is emitted as soon as it no longer touches the next seam, so memory
holds one block row of pixels plus the output polygons. The result is the same polygon set
as polygonizing the whole raster at once.

The ``min_area`` sieve is GDAL's (``rasterio.features.sieve``, 4-connectivity): a region
with fewer than ``min_pixels`` pixels takes the class of its largest neighbour; nodata is
never a neighbour. It runs on each full-width row of blocks read with :func:`sieve_halo` rows
more above and below, before polygonizing, so a region crossing a seam is measured whole (see
:func:`sieve` for the exact rule); the strips go to the same worker processes.

Ctrl-C is honoured between features and between rows of blocks: the worker processes are
terminated at once and no output is written.

Simplification runs once over the whole coverage (``shapely.coverage_simplify``), so shared
boundaries are simplified once and neighbours stay free of gaps and overlaps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.area import densify_length, pixel_area_m2, polygon_areas_m2
from geoseg.classes import ClassMap
from geoseg.errors import ConfigError, EmptyResultError, RasterReadError
from geoseg.grid import Grid, block_windows
from geoseg.io.raster import valid_from_data
from geoseg.io.vector import FORMATS, vector_format, vector_outputs, write_vector

__all__ = [
    "FORMATS",
    "VectorFormat",
    "VectorizeReport",
    "class_polygons",
    "parse_area",
    "polygonize_array",
    "sieve",
    "sieve_halo",
    "sieve_size",
    "vectorize",
]

log = logging.getLogger(__name__)

VectorFormat = Literal["gpkg", "parquet", "fgb", "geojson"]

_AREA_RE = re.compile(
    r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>px|pixels?|m2|m²|sqm|ha|km2|km²)?\s*$"
)
_UNIT_M2 = {"m2": 1.0, "m²": 1.0, "sqm": 1.0, "ha": 1e4, "km2": 1e6, "km²": 1e6}


# ---- areas ------------------------------------------------------------------------------------
def parse_area(value: float | str, pixel_area: float) -> float:
    """A minimum area as a number of pixels.

    Args:
        value: a number (pixels) or a string with a unit: ``"20px"``, ``"500m2"``, ``"0.5ha"``,
            ``"1km2"``.
        pixel_area: area of one pixel in square metres (for a geographic CRS, an
            approximation such as the pixel area at the scene centre).

    Returns:
        The threshold in pixels (may be fractional): regions with fewer pixels are sieved.

    Raises:
        ConfigError: the value cannot be parsed or is negative.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0 or not math.isfinite(value):
            raise ConfigError(f"min area must be a non-negative number, got {value}")
        return float(value)
    m = _AREA_RE.match(str(value).lower())
    if m is None:
        raise ConfigError(
            f"cannot read min area {value!r}; use pixels, m2 or ha, e.g. 20px, 500m2 or 0.5ha"
        )
    num = float(m.group("num"))
    unit = m.group("unit") or "px"
    if unit in _UNIT_M2:
        if pixel_area <= 0:
            raise ConfigError(f"pixel area must be positive to convert {value!r} to pixels")
        return num * _UNIT_M2[unit] / pixel_area
    return num


# ---- the sieve rule (GDAL's) -------------------------------------------------------------------
def sieve_size(min_pixels: float) -> int:
    """GDAL's sieve size for "regions with fewer than ``min_pixels`` pixels": ``ceil``."""
    return max(0, math.ceil(min_pixels))


def sieve_halo(size: int) -> int:
    """Rows read above and below a strip so the strip's sieve equals the whole raster's.

    A region below ``size`` pixels that touches the strip lies within ``size - 1`` rows of it,
    so its size is measured whole; any region it touches reaches at most ``size`` rows out,
    and one cut by the halo still shows at least ``size`` pixels (it is never mistaken for a
    small one). See :func:`sieve` for the one case where the halo can matter.
    """
    return 2 * size + 2 if size > 1 else 0


def sieve(array: np.ndarray, min_pixels: float, *, mask: np.ndarray | None = None) -> np.ndarray:
    """Sieve an in-memory class array with GDAL's sieve (``rasterio.features.sieve``).

    Regions (4-connected) with fewer than ``min_pixels`` pixels take the class of their
    largest neighbour (GDAL's ``GDALSieveFilter``); nodata pixels (``mask`` False) are left
    unchanged and are never neighbours, so a small region in nodata stays. Use
    :func:`parse_area` to turn ``"0.5ha"`` into pixels. ``vectorize(min_area=...)`` applies
    the same sieve to full-width strips of :func:`sieve_halo` rows more above and below;
    that equals this whole-array sieve except where the largest neighbour of a small region
    is cut by the halo and then ranks below another neighbour (tested on speckle).

    Args:
        array: 2-D integer class array.
        min_pixels: the threshold in pixels.
        mask: valid pixels (True); others are nodata, left unchanged and never neighbours.

    Returns:
        A new array of the same shape and dtype.
    """
    from rasterio.features import sieve as gdal_sieve

    a = np.asarray(array)
    if a.ndim != 2:
        raise ConfigError(f"sieve needs a 2-D class array, got shape {a.shape}")
    # GDAL needs a size below the pixel count; a region that small is the whole array anyway
    size = min(sieve_size(min_pixels), a.size - 1)
    if size <= 1:
        return a.copy()
    work = a if a.dtype.name in ("uint8", "uint16", "int16", "int32") else a.astype(np.int32)
    m = None if mask is None else np.asarray(mask, dtype=bool)
    out = gdal_sieve(work, size, mask=m, connectivity=4)
    if m is not None:  # GDAL leaves masked pixels alone; make sure of it
        out = np.where(m, out, work)
    return out.astype(a.dtype, copy=False)


# ---- polygonize --------------------------------------------------------------------------------
#: Features turned into shapely polygons at a time (bounds the GeoJSON lists held).
_SHAPES_CHUNK = 20_000


def _shapes(
    array: np.ndarray, mask: np.ndarray | None, transform: Affine
) -> tuple[np.ndarray, np.ndarray]:
    """``rasterio.features.shapes`` as shapely polygons, built in vectorized calls.

    The GeoJSON rings of up to :data:`_SHAPES_CHUNK` features go into one flat coordinate
    list and ``shapely.from_ragged_array`` (about five times faster than
    ``shapely.geometry.shape`` per feature, and the lists stay small).
    """
    from rasterio.features import shapes

    parts: list[np.ndarray] = []
    values: list[float] = []
    coords: list[Any] = []
    ring_len: list[int] = []
    poly_rings: list[int] = []
    for geom, value in shapes(array, mask=mask, connectivity=4, transform=transform):
        rings = geom["coordinates"]
        poly_rings.append(len(rings))
        for r in rings:
            ring_len.append(len(r))
            coords.extend(r)
        values.append(value)
        if len(poly_rings) == _SHAPES_CHUNK:
            parts.append(_ragged_polygons(coords, ring_len, poly_rings))
            coords, ring_len, poly_rings = [], [], []
    if poly_rings:
        parts.append(_ragged_polygons(coords, ring_len, poly_rings))
    if not values:
        return np.empty(0, dtype=object), np.zeros(0, dtype=np.int64)
    return np.concatenate(parts), np.asarray(values, dtype=np.int64)


def _ragged_polygons(coords: list[Any], ring_len: list[int], poly_rings: list[int]) -> Any:
    xy = np.asarray(coords, dtype=np.float64)
    offsets = (np.cumsum([0, *ring_len]), np.cumsum([0, *poly_rings]))
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, offsets)


def polygonize_array(
    array: np.ndarray, grid: Grid | None = None, *, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Polygonize a whole in-memory class array at once (4-connectivity).

    Args:
        array: 2-D integer class array.
        grid: the array's grid; ``None`` gives pixel coordinates (column, row).
        mask: valid pixels (True); nodata pixels give no polygon.

    Returns:
        ``(geometries, class_ids)``: shapely polygons (normalized) sorted by their first pixel
        in row-major order, and their class ids.
    """
    pix, vals = _shapes(np.asarray(array), mask, Affine.identity())
    pix = shapely.normalize(pix)
    order = _rank_order(pix)
    pix, vals = pix[order], vals[order]
    if grid is not None:
        pix = shapely.normalize(_to_crs_coords(pix, grid.transform))
    return pix, vals


def _first_pixel(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each polygon's first pixel in row-major order (pixel coordinates).

    The first pixel's top-left corner is the leftmost exterior vertex on the top row (no
    sort: one pass over the coordinates).
    """
    if len(geoms) == 0:
        return np.zeros(0), np.zeros(0)
    xy, idx = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
    top = shapely.bounds(geoms)[:, 1]
    on_top = xy[:, 1] == top[idx]
    cols = np.full(len(geoms), np.inf)
    np.minimum.at(cols, idx[on_top], xy[on_top, 0])
    return top, cols


def _rank_order(geoms: np.ndarray) -> np.ndarray:
    rows, cols = _first_pixel(geoms)
    return np.lexsort((cols, rows))


def _to_crs_coords(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    t = transform
    return shapely.transform(
        geoms, lambda c: np.column_stack([t.a * c[:, 0] + t.c, t.e * c[:, 1] + t.f])
    )


def _pack(geoms: np.ndarray) -> Any:
    return shapely.to_ragged_array(geoms) if len(geoms) else None


def _unpack(packed: Any) -> np.ndarray:
    return shapely.from_ragged_array(*packed) if packed is not None else np.empty(0, object)


@dataclass
class _Block:
    """Result of polygonizing one block, in pixel coordinates.

    Pickled as flat coordinate arrays (shapely's ragged arrays) between processes: about
    six times faster than pickling each polygon.
    """

    final: np.ndarray
    final_cls: np.ndarray
    pieces: np.ndarray
    pieces_cls: np.ndarray

    def __getstate__(self) -> dict[str, Any]:
        return {
            "final": _pack(self.final),
            "final_cls": self.final_cls,
            "pieces": _pack(self.pieces),
            "pieces_cls": self.pieces_cls,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.final = _unpack(state["final"])
        self.final_cls = state["final_cls"]
        self.pieces = _unpack(state["pieces"])
        self.pieces_cls = state["pieces_cls"]


def _polygonize_block(
    data: np.ndarray, mask: np.ndarray, window: Window, inner: tuple[bool, bool, bool, bool]
) -> _Block:
    """Polygonize one block (its class array and valid mask); split final polygons / seam pieces."""
    c0, r0 = int(window.col_off), int(window.row_off)
    c1, r1 = c0 + int(window.width), r0 + int(window.height)
    geoms, vals = _shapes(data, mask if not mask.all() else None, Affine.translation(c0, r0))
    if len(geoms) == 0:
        return _Block(geoms, vals, geoms, vals)
    b = shapely.bounds(geoms)
    left, top, right, bottom = inner
    edge = (
        (left & (b[:, 0] == c0))
        | (top & (b[:, 1] == r0))
        | (right & (b[:, 2] == c1))
        | (bottom & (b[:, 3] == r1))
    )
    return _Block(geoms[~edge], vals[~edge], geoms[edge], vals[edge])


def _polygonize_row(
    path: str, band: int, row_windows: Sequence[Window], shape: tuple[int, int], sieve_px: int = 0
) -> list[_Block]:
    """Read one row of blocks once, sieve it (``sieve_px`` > 1) and polygonize its blocks.

    Stripped files (most class rasters made outside geoseg) then decompress each strip once,
    not once per block; a task holds one row of blocks (plus the sieve's halo rows).
    """
    height, width = shape
    row_off, h = int(row_windows[0].row_off), int(row_windows[0].height)
    data, valid = _read_strip(path, band, row_off, h, height, sieve_px)
    blocks = []
    for w in row_windows:
        c0, c1 = int(w.col_off), int(w.col_off) + int(w.width)
        inner = (c0 > 0, row_off > 0, c1 < width, row_off + h < height)
        blocks.append(_polygonize_block(data[:, c0:c1], valid[:, c0:c1], w, inner))
    return blocks


def _read_strip(
    path: str, band: int, row_off: int, h: int, height: int, sieve_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``row_off .. row_off + h`` of the class band and its valid mask, sieved by GDAL.

    The sieve sees :func:`sieve_halo` rows more above and below (clipped to the raster).
    """
    import rasterio

    halo = sieve_halo(sieve_px)
    top, bottom = max(0, row_off - halo), min(height, row_off + h + halo)
    with rasterio.open(path) as ds:
        window = Window(0, top, ds.width, bottom - top)
        data = ds.read(band, window=window)
        valid = valid_from_data(ds, data, window, indexes=[band])
    if data.dtype.name not in ("uint8", "uint16", "int16", "int32"):
        data = data.astype(np.int32)
    if sieve_px > 1:
        data = sieve(data, sieve_px, mask=valid)
    core = slice(row_off - top, row_off - top + h)
    return data[core], valid[core]


def _seam_intervals(geoms: np.ndarray, cls: np.ndarray, axis: int, value: float) -> np.ndarray:
    """Segments of the exterior rings lying on the line ``coord[axis] == value``.

    Returns rows ``(piece_index, class, lo, hi)`` along the other axis.
    """
    if len(geoms) == 0:
        return np.zeros((0, 4))
    xy, idx = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
    p, q = xy[:-1], xy[1:]
    same = idx[:-1] == idx[1:]
    on = same & (p[:, axis] == value) & (q[:, axis] == value)
    other = 1 - axis
    lo = np.minimum(p[on, other], q[on, other])
    hi = np.maximum(p[on, other], q[on, other])
    i = idx[:-1][on]
    return np.column_stack([i, cls[i], lo, hi])


def _match(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of pieces (a-index, b-index) of one class whose seam intervals overlap.

    On one side of a seam the intervals of one class are disjoint, so a sweep over both sides
    sorted by (class, start) finds every overlap in linear time.
    """
    out: list[tuple[int, int]] = []
    if len(a) == 0 or len(b) == 0:
        return out
    a = a[np.lexsort((a[:, 2], a[:, 1]))].tolist()
    b = b[np.lexsort((b[:, 2], b[:, 1]))].tolist()
    i = j = 0
    while i < len(a) and j < len(b):
        ai, bj = a[i], b[j]
        if ai[1] != bj[1]:
            if ai[1] < bj[1]:
                i += 1
            else:
                j += 1
            continue
        if min(ai[3], bj[3]) > max(ai[2], bj[2]):
            out.append((int(ai[0]), int(bj[0])))
        if ai[3] <= bj[3]:
            i += 1
        else:
            j += 1
    return out


def _merge(members: list[Any]) -> Any:
    """Union of seam pieces of one region (they share seam segments, never overlap).

    Only the shells are unioned: a piece's holes lie inside its own block, so no other piece
    can fill them; they are added back as they are (about five times faster than a union of
    the whole pieces on speckle, and the same polygon).
    """
    if len(members) == 1:
        return members[0]
    g = np.asarray(members, dtype=object)
    shells = shapely.union_all(shapely.polygons(shapely.get_exterior_ring(g)))
    # drop the collinear vertices left where the seams were
    shells = shapely.simplify(shells, 0.0, preserve_topology=True)
    if shells.geom_type != "Polygon":  # pragma: no cover - pieces of a region always join
        merged = shapely.union_all(g)
        return shapely.normalize(shapely.simplify(merged, 0.0, preserve_topology=True))
    holes = [shapely.get_coordinates(r) for r in shells.interiors]
    holes += [shapely.get_coordinates(r) for p in members for r in p.interiors]
    return shapely.normalize(shapely.Polygon(shapely.get_coordinates(shells.exterior), holes))


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    """Member indices of each label, labels in increasing order, members in input order."""
    if len(labels) == 0:
        return []
    order = np.argsort(labels, kind="stable")
    starts = np.unique(labels[order], return_index=True)[1]
    return np.split(order, starts[1:])


def _components(n: int, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes (union-find; no scipy import)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.asarray([find(i) for i in range(n)], dtype=np.int64)


def _merge_row(
    row_off: int,
    row_windows: Sequence[Window],
    blocks: Sequence[_Block],
    pend: np.ndarray,
    pend_cls: np.ndarray,
    shape: tuple[int, int],
    finals: list[np.ndarray],
    finals_cls: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Join one row's seam pieces with each other and with the pieces pending from above.

    Appends the polygons that are complete to ``finals``; returns those still touching the
    row's bottom edge (pending for the next row).
    """
    height = shape[0]
    row_end = row_off + int(row_windows[0].height)
    for blk in blocks:
        finals.append(blk.final)
        finals_cls.append(blk.final_cls)
    # nodes: pending pieces first, then this row's pieces block by block
    geoms = [pend] + [blk.pieces for blk in blocks]
    clss = [pend_cls] + [blk.pieces_cls for blk in blocks]
    offsets = np.cumsum([0] + [len(g) for g in geoms])
    edges: list[tuple[int, int]] = []
    # horizontal seam on top of this row: pending bottoms vs this row's tops
    if row_off > 0 and len(pend):
        a = _seam_intervals(pend, pend_cls, 1, row_off)
        for k, blk in enumerate(blocks):
            b = _seam_intervals(blk.pieces, blk.pieces_cls, 1, row_off)
            off = offsets[k + 1]
            edges += [(i, j + off) for i, j in _match(a, b)]
    # vertical seams inside this row
    for k in range(len(blocks) - 1):
        x = int(row_windows[k + 1].col_off)
        a = _seam_intervals(blocks[k].pieces, blocks[k].pieces_cls, 0, x)
        b = _seam_intervals(blocks[k + 1].pieces, blocks[k + 1].pieces_cls, 0, x)
        oa, ob = offsets[k + 1], offsets[k + 2]
        edges += [(i + oa, j + ob) for i, j in _match(a, b)]
    all_geoms = np.concatenate(geoms) if offsets[-1] else np.empty(0, dtype=object)
    all_cls = np.concatenate(clss) if offsets[-1] else np.empty(0, dtype=np.int64)
    lab = _components(len(all_geoms), edges)
    merged: list[Any] = []
    merged_cls: list[int] = []
    for idx in _groups(lab):
        merged.append(_merge(list(all_geoms[idx])))
        merged_cls.append(int(all_cls[idx[0]]))
    mg = np.empty(len(merged), dtype=object)
    mg[:] = merged
    mc = np.asarray(merged_cls, dtype=np.int64)
    if row_end < height and len(mg):
        touching = shapely.bounds(mg)[:, 3] == row_end
    else:
        touching = np.zeros(len(mg), dtype=bool)
    finals.append(mg[~touching])
    finals_cls.append(mc[~touching])
    return mg[touching], mc[touching]


#: Rasters with fewer pixels are polygonized in-process: starting worker processes (about
#: half a second) costs more than it saves below this size.
PROCESS_MIN_PIXELS = 8_000_000


@contextlib.contextmanager
def _row_results(
    workers: int | None, shape: tuple[int, int], tasks: Sequence[tuple[Any, ...]]
) -> Iterator[Iterator[list[_Block]]]:
    """The row tasks' results, in row order, as they complete.

    rasterio's polygonize holds the GIL: on threads, blocks run slower than on one thread
    (measured: 3.0 s vs 2.7 s on the 8000 x 8000 CDL raster). Rows of large rasters therefore
    go to a pool of ``workers`` spawned processes (``imap``: the parent merges each row while
    the workers polygonize the next ones); small rasters, ``workers=1`` and daemonic
    processes (Dask workers, which may not have children) run in-process.
    """
    import multiprocessing

    n = min(workers if workers is not None else (os.cpu_count() or 1), len(tasks))
    if (
        n <= 1
        or shape[0] * shape[1] < PROCESS_MIN_PIXELS
        or multiprocessing.current_process().daemon
    ):
        yield (_row_task(t) for t in tasks)
        return
    pool = None
    try:
        with _sigint_held():
            pool = _make_pool(n)
        yield pool.imap(_row_task, tasks, chunksize=1)
    except BaseException:
        # Ctrl-C or an error: kill the workers now instead of waiting for their rows.
        # multiprocessing.Pool, not ProcessPoolExecutor: a worker killed while sending its
        # result leaves the executor's manager thread blocked forever, and Python's exit
        # joins that thread; Pool.terminate() is made for this.
        if pool is not None:
            pool.terminate()
        raise
    pool.close()
    pool.join()


def _row_task(args: tuple[Any, ...]) -> list[_Block]:
    """One row task (a module-level function, for the worker processes)."""
    return _polygonize_row(*args)


def _make_pool(n: int) -> Any:
    """``n`` spawned worker processes that leave Ctrl-C to the parent (see :func:`_sigint_held`)."""
    import multiprocessing

    return multiprocessing.get_context("spawn").Pool(n, initializer=_ignore_sigint)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Processes started inside are born ignoring Ctrl-C (it is the parent's to handle).

    An ignored signal stays ignored across ``exec``: a Ctrl-C reaching a worker still
    importing printed that worker's traceback. Meanwhile SIGINT is also blocked in this
    thread, so a Ctrl-C aimed at it stays pending (Linux queues a blocked signal even while it
    is ignored) and is raised on exit; one that another thread of the process (BLAS, GDAL)
    takes during the pool's start is lost, and the user presses Ctrl-C again. Off the main
    thread (no handlers can be set there) nothing changes.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (it terminates the workers)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _polygonize_blocked(
    path: str,
    shape: tuple[int, int],
    block_size: int,
    workers: int | None,
    band: int = 1,
    sieve_px: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Polygonize a raster file in blocks (sieved by GDAL first when ``sieve_px`` > 1).

    Seam pieces are merged; pixel coordinates, rank order.
    """
    from geoseg.grid import windows_by_row
    from geoseg.log import progress

    windows = block_windows(shape, block_size)
    rows = list(windows_by_row(windows))
    finals: list[np.ndarray] = []
    finals_cls: list[np.ndarray] = []
    pend = np.empty(0, dtype=object)
    pend_cls = np.empty(0, dtype=np.int64)
    tasks = [(path, band, rw, shape, sieve_px) for _, rw in rows]
    bar = progress(total=len(windows), desc="vectorize", unit="block")
    with _row_results(workers, shape, tasks) as results:
        for (row_off, row_windows), blocks in zip(rows, results, strict=True):
            bar.update(len(blocks))
            pend, pend_cls = _merge_row(
                row_off, row_windows, blocks, pend, pend_cls, shape, finals, finals_cls
            )
    bar.close()
    geoms_all = np.concatenate(finals) if finals else np.empty(0, dtype=object)
    cls_all = np.concatenate(finals_cls) if finals_cls else np.empty(0, dtype=np.int64)
    finals.clear()  # the normalized copy replaces them
    geoms_all = shapely.normalize(geoms_all)
    order = _rank_order(geoms_all)
    return geoms_all[order], cls_all[order], len(windows)


# ---- classes, attributes, writing ------------------------------------------------------------
def _class_map(ds: Any, band: int, found: Sequence[int]) -> ClassMap:
    """The raster's classes (:func:`geoseg.io.raster.raster_classes`), else ``class_<id>``."""
    from geoseg.io.raster import raster_classes

    tagged = raster_classes(ds, band)
    if tagged is not None:
        return tagged
    bad = [v for v in found if not 0 <= v <= 254]
    if bad:
        raise ConfigError(
            f"{ds.name}: class values {bad[:5]} are outside 0..254; pass classes= or "
            "rescale the raster to class ids"
        )
    return raster_classes(ds, band, found=found) or ClassMap.from_ids(found)


def _geodesic(geoms: np.ndarray, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
    from pyproj import CRS as ProjCRS

    geod = ProjCRS.from_wkt(crs.to_wkt()).get_geod()
    areas = np.empty(len(geoms))
    perims = np.empty(len(geoms))
    for i, g in enumerate(geoms):
        a, p = geod.geometry_area_perimeter(g)
        areas[i], perims[i] = abs(a), p
    return areas, perims


def _unit_factor(crs: CRS | None) -> float:
    if crs is None:
        return 1.0
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # CRS without linear units
        return 1.0


@dataclass(frozen=True)
class VectorizeReport:
    """What :func:`vectorize` wrote."""

    path: Path
    format: str
    layer: str
    features: int
    blocks: int
    crs: str | None
    class_area_ha: dict[str, float]
    seconds: float
    sidecars: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "path": str(self.path),
            "format": self.format,
            "layer": self.layer,
            "features": self.features,
            "blocks": self.blocks,
            "crs": self.crs,
            "class_area_ha": self.class_area_ha,
            "seconds": self.seconds,
            "sidecars": [str(p) for p in self.sidecars],
        }


def vectorize(
    raster: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    min_area: float | str | None = None,
    simplify: float | None = None,
    format: str | None = None,
    to_crs: Any = None,
    overwrite: bool = False,
    block_size: int = 2048,
    classes: ClassMap | None = None,
    workers: int | None = None,
    layer: str | None = None,
) -> VectorizeReport:
    """Polygonize a class raster into styled land-cover polygons.

    The result equals polygonizing the whole raster at once (4-connectivity), whatever the
    block size; memory holds one row of blocks per worker plus the output polygons.

    Args:
        raster: a single-band integer class raster (nodata / mask pixels are left out).
        out: output file; the format follows the suffix (.gpkg, .parquet, .fgb, .geojson).
        min_area: sieve threshold: pixels as a number, or ``"20px"``, ``"500m2"``, ``"0.5ha"``.
            Smaller regions take the class of their largest neighbour (module docstring).
        simplify: tolerance in CRS units for ``shapely.coverage_simplify`` (shared boundaries
            simplified once: no gaps, no overlaps, valid geometries).
        format: ``gpkg``, ``parquet``, ``fgb`` or ``geojson``; ``None`` takes the suffix.
        to_crs: output CRS (anything pyproj reads); areas are computed before reprojecting.
        overwrite: replace an existing output.
        block_size: block edge in pixels.
        classes: class names and colours; default: the raster's CLASS_NAMES / CLASS_IDS tags
            and colour table, else ``class_<id>``.
        workers: processes polygonizing rows of blocks (default: the CPU count); rasters
            under ``PROCESS_MIN_PIXELS`` pixels, ``workers=1`` and calls from daemonic
            processes (Dask workers) run in-process. Scripts using more than one worker
            need the usual ``if __name__ == "__main__":`` guard (spawned processes).
        layer: layer name (default: the output's stem).

    Returns:
        A :class:`VectorizeReport`.

    Raises:
        GeosegError: unreadable raster, bad options, existing output without ``overwrite``.
    """
    from geoseg.io.outputs import check_outputs

    t0 = time.perf_counter()
    out_p = Path(out)
    fmt = vector_format(out_p, format)
    planned = {f"--out {out_p}": vector_outputs(out_p, fmt)}
    check_outputs(planned, inputs={"class raster": raster}, overwrite=overwrite)
    gdf, classes, nblocks = class_polygons(
        raster,
        min_area=min_area,
        simplify=simplify,
        block_size=block_size,
        classes=classes,
        workers=workers,
    )
    if to_crs is not None:
        gdf = gdf.to_crs(to_crs)
    layer_name = layer or out_p.stem
    paths = _write(gdf, out_p, classes, layer=layer_name, fmt=fmt, overwrite=overwrite)
    per_class = gdf.groupby("class_name", sort=True)["area_ha"].sum()
    return VectorizeReport(
        path=out_p,
        format=fmt,
        layer=layer_name,
        features=len(gdf),
        blocks=nblocks,
        crs=gdf.crs.to_string() if gdf.crs is not None else None,
        class_area_ha={str(k): float(v) for k, v in per_class.items()},
        seconds=time.perf_counter() - t0,
        sidecars=paths[1:],
    )


def _write(
    gdf: Any, out: Path, classes: ClassMap, *, layer: str, fmt: str, overwrite: bool
) -> list[Path]:
    """Write the polygons with the QGIS style of the classes present; the paths written."""
    from geoseg.io.style import vector_qml

    present = set(gdf["class_id"].tolist())
    qml = vector_qml(ClassMap(tuple(c for c in classes if c.id in present)))
    return list(write_vector(gdf, out, qml=qml, layer=layer, format=fmt, overwrite=overwrite))


def class_polygons(
    raster: str | os.PathLike[str],
    *,
    min_area: float | str | None = None,
    simplify: float | None = None,
    block_size: int = 2048,
    classes: ClassMap | None = None,
    workers: int | None = None,
) -> tuple[Any, ClassMap, int]:
    """The polygons :func:`vectorize` writes, as a GeoDataFrame in the raster's CRS.

    Columns ``class_id``, ``class_name``, ``area_ha`` (true area, :mod:`geoseg.area`) and
    ``perimeter_m``; arguments as :func:`vectorize`.

    Returns:
        ``(frame, classes, blocks)``: the polygons, the class map (with any ids the raster has
        beyond ``classes``) and the number of blocks polygonized.
    """
    _check_options(block_size, simplify)
    geoms, vals, nblocks, grid, classes = _polygonize_raster(
        raster, min_area=min_area, block_size=int(block_size), classes=classes, workers=workers
    )
    if len(geoms) == 0:
        raise EmptyResultError(f"{raster}: every pixel is nodata; nothing to vectorize")
    local_length, crs_geoms = _place(geoms, grid.transform, simplify)
    del geoms  # one copy of the polygons at a time (speckle: 590k polygons)
    classes = _with_missing(classes, vals)
    return _frame(local_length, crs_geoms, vals, grid, classes), classes, nblocks


def _check_options(block_size: int, simplify: float | None) -> None:
    if block_size <= 0 or int(block_size) != block_size:
        raise ConfigError(f"block size must be a positive integer, got {block_size}")
    if simplify is not None and (simplify < 0 or not math.isfinite(simplify)):
        raise ConfigError(f"simplify tolerance must be a non-negative number, got {simplify}")


def _polygonize_raster(
    raster: str | os.PathLike[str],
    *,
    min_area: float | str | None,
    block_size: int,
    classes: ClassMap | None,
    workers: int | None,
) -> tuple[np.ndarray, np.ndarray, int, Grid, ClassMap]:
    """Check the class raster, sieve and polygonize it in blocks (pixel coordinates)."""
    from geoseg.io.raster import check_grid, open_raster

    with open_raster(raster) as ds:
        grid = Grid.from_dataset(ds)
        check_grid(grid, raster, require_crs=False)
        if ds.count != 1:
            log.info("%s: %d bands; vectorizing band 1", raster, ds.count)
        dtype = np.dtype(ds.dtypes[0])
        if dtype.kind not in "iu":
            raise RasterReadError(
                f"{raster}: band 1 is {dtype}, not an integer class raster; "
                "give a class map (e.g. the output of geoseg predict)"
            )
        if dtype.itemsize > 4:
            raise RasterReadError(f"{raster}: {dtype} is not supported; use uint8/16 or int16/32")
        min_pixels = parse_area(min_area, pixel_area_m2(grid)) if min_area is not None else 0.0
        geoms, vals, nblocks = _polygonize_blocked(
            str(raster), grid.shape, block_size, workers, sieve_px=sieve_size(min_pixels)
        )
        if classes is None:
            classes = _class_map(ds, 1, sorted({int(v) for v in np.unique(vals)}) or [0])
    return geoms, vals, nblocks, grid, classes


def _place(geoms: np.ndarray, t: Affine, simplify: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel polygons -> ``(local lengths, crs geometries)``, simplified once when asked.

    Lengths and simplification are computed on CRS offsets from the grid origin (exact);
    only the CRS geometries are kept.
    """
    if simplify:
        # node the coverage: GDAL leaves no vertex where a neighbour's corner meets a straight
        # edge, and coverage_simplify needs shared edges with the same vertices
        geoms = shapely.segmentize(geoms, 1.0)
    local = shapely.transform(geoms, lambda c: np.column_stack([t.a * c[:, 0], t.e * c[:, 1]]))
    if simplify:
        local = shapely.coverage_simplify(local, simplify, simplify_boundary=True)
        local = shapely.normalize(shapely.make_valid(local))
    length = np.asarray(shapely.length(local), dtype=np.float64)
    crs_geoms = shapely.normalize(shapely.transform(local, lambda c: c + np.array([t.c, t.f])))
    return length, crs_geoms


def _with_missing(classes: ClassMap, vals: np.ndarray) -> ClassMap:
    """``classes`` plus a ``class_<id>`` entry for every id of ``vals`` it lacks."""
    missing = sorted({int(v) for v in vals} - set(classes.ids))
    if not missing:
        return classes
    return ClassMap(classes.classes + ClassMap.from_ids(missing).classes)


def _frame(
    local_length: np.ndarray,
    crs_geoms: np.ndarray,
    vals: np.ndarray,
    grid: Grid,
    classes: ClassMap,
) -> Any:
    """The GeoDataFrame of the polygons with their class, true area and perimeter."""
    import geopandas as gpd

    crs = grid.crs
    # true areas, the same as the pixels' (geoseg.area)
    # polygons up to 2 km across: centroid scale (vectorized, 1e-8); larger ones exactly
    local_below = 2000.0 / _unit_factor(crs) if crs is not None and not crs.is_geographic else 0.02
    area_m2 = polygon_areas_m2(
        crs_geoms, crs, densify=densify_length(grid), local_below=local_below
    )
    if crs is not None and crs.is_geographic:
        _, perim_m = _geodesic(crs_geoms, crs)
    else:
        perim_m = local_length * _unit_factor(crs)
    names = {c.id: c.name for c in classes}
    return gpd.GeoDataFrame(
        {
            "class_id": vals.astype(np.int32),
            "class_name": np.array([names[int(v)] for v in vals], dtype=object),
            "area_ha": area_m2 / 1e4,
            "perimeter_m": perim_m,
        },
        geometry=crs_geoms,
        crs=crs,
    )

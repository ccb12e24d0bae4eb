"""True areas of pixels and polygons: the one area function of geoseg.

Every command that reports hectares (``geoseg run`` class areas, ``vectorize``, ``change``,
``evaluate``, ``predict``'s km²/h, the demo) takes them from here, so the same pixels give the
same hectares everywhere, in any CRS.

Areas are measured on the CRS's ellipsoid. A pixel (or a polygon) is mapped into the
cylindrical equal-area projection of that ellipsoid (``X = a·λ``, ``Y = a·q(φ)/2`` with ``q``
the authalic function), where planar area *is* true area, and measured there:

* geographic grids (north-up): each row's cells are bounded by meridians and parallels, which
  are straight in that projection, so the area is exact (one value per row);
* other projections (UTM, Web/World Mercator, Lambert conformal...): the pixel's four corners
  are mapped and the quadrilateral measured. Pixel areas are computed exactly on every row at
  fixed columns of the grid, whatever the window (every :data:`LATTICE` m, at most every 64th
  column), and interpolated linearly between them: in cylindrical projections (Mercator) they
  do not vary along a row at all; in UTM the interpolation error is about 1e-8;
* equal-area projections (Lambert azimuthal / cylindrical equal area, Albers, Equal Earth,
  Mollweide, Sinusoidal...) and ``planar=True``: the planar pixel area in metres.

A grid without a CRS has nominal areas in squared CRS units.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from rasterio.windows import Window

from geoseg.grid import Grid

__all__ = [
    "LATTICE",
    "area_m2",
    "densify_length",
    "is_equal_area",
    "pixel_area_m2",
    "pixel_areas_m2",
    "polygon_areas_m2",
]

#: Column spacing (metres) of the exactly computed pixel areas (at most 64 columns apart).
LATTICE = 1000.0
#: Longest polygon edge (metres, at least one pixel) measured as a straight line: see
#: :func:`densify_length`.
EDGE_M = 30.0
_EQUAL_AREA_METHODS = (
    "equal area",
    "equal earth",
    "mollweide",
    "sinusoidal",
    "eckert iv",
    "eckert vi",
    "goode homolosine",
)


@functools.lru_cache(maxsize=32)
def _crs_info(key: str | int) -> tuple[Any, float, float, bool, bool, float]:
    """``(to_lonlat, a, e², geographic, equal_area, unit_m)`` of a CRS (cached)."""
    from pyproj import CRS as ProjCRS
    from pyproj import Transformer

    pcrs = ProjCRS.from_user_input(key)
    ell = pcrs.ellipsoid
    a = float(ell.semi_major_metre) if ell is not None else 6378137.0
    inv_f = float(ell.inverse_flattening) if ell is not None else 298.257223563
    f = 1.0 / inv_f if inv_f and math.isfinite(inv_f) and inv_f > 0 else 0.0
    e2 = f * (2.0 - f)
    geographic = bool(pcrs.is_geographic)
    op = pcrs.coordinate_operation
    method = (op.method_name if op is not None else "").lower()
    equal_area = any(m in method for m in _EQUAL_AREA_METHODS)
    unit_m = 1.0
    if not geographic and pcrs.axis_info:
        unit_m = float(pcrs.axis_info[0].unit_conversion_factor or 1.0)
    geodetic = pcrs.geodetic_crs or ProjCRS.from_epsg(4326)
    to_lonlat = Transformer.from_crs(pcrs, geodetic, always_xy=True)
    return to_lonlat, a, e2, geographic, equal_area, unit_m


def _info(crs: Any) -> tuple[Any, float, float, bool, bool, float]:
    return _crs_info(crs if isinstance(crs, str | int) else crs.to_wkt())


def is_equal_area(crs: Any) -> bool:
    """True when ``crs`` is an equal-area projection (planar areas are true areas)."""
    return crs is not None and _info(crs)[4]


def _authalic_y(lat_deg: np.ndarray, a: float, e2: float) -> np.ndarray:
    """``a·q(φ)/2``: the northing of the cylindrical equal-area projection of the ellipsoid."""
    s = np.sin(np.radians(np.clip(lat_deg, -90.0, 90.0)))
    if e2 <= 0.0:
        return a * s
    e = math.sqrt(e2)
    q = (1.0 - e2) * (s / (1.0 - e2 * s * s) - np.log((1.0 - e * s) / (1.0 + e * s)) / (2.0 * e))
    return a * q / 2.0


def _to_cea(xs: np.ndarray, ys: np.ndarray, info: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    """CRS coordinates -> cylindrical equal-area ``(X, Y)`` in metres.

    Points spread over more than 180° of longitude are unwrapped relative to the first one,
    so the antimeridian tears nothing.
    """
    to_lonlat, a, e2 = info[0], info[1], info[2]
    lon, lat = to_lonlat.transform(np.asarray(xs, dtype=np.float64), np.asarray(ys, np.float64))
    lon = np.asarray(lon, dtype=np.float64)
    if lon.size and float(np.ptp(lon)) > 180.0:  # across the antimeridian
        lon = lon[0] + (lon - lon[0] + 180.0) % 360.0 - 180.0
    return a * np.radians(lon), _authalic_y(np.asarray(lat, dtype=np.float64), a, e2)


def _quad_areas(
    grid: Grid, rows: np.ndarray, cols: np.ndarray, info: tuple[Any, ...]
) -> np.ndarray:
    """True area (m²) of pixels ``(rows[i], cols[j])``, shape ``(len(rows), len(cols))``."""
    t = grid.transform
    r = rows.astype(np.float64)[:, None]
    c = cols.astype(np.float64)[None, :]
    corners = [(c, r), (c + 1, r), (c + 1, r + 1), (c, r + 1)]
    xy = [
        t * (np.broadcast_to(cc, (r.size, c.size)), np.broadcast_to(rr, (r.size, c.size)))
        for cc, rr in corners
    ]
    flat_x = np.concatenate([np.ravel(x) for x, _ in xy])
    flat_y = np.concatenate([np.ravel(y) for _, y in xy])
    big_x, big_y = _to_cea(flat_x, flat_y, info)
    n = r.size * c.size
    px = [big_x[i * n : (i + 1) * n] for i in range(4)]
    py = [big_y[i * n : (i + 1) * n] for i in range(4)]
    period = 2.0 * math.pi * info[1]
    # the diagonals' cross product: exact for a planar quadrilateral
    d1x = (px[2] - px[0] + period / 2) % period - period / 2
    d2x = (px[3] - px[1] + period / 2) % period - period / 2
    area = 0.5 * np.abs(d1x * (py[3] - py[1]) - d2x * (py[2] - py[0]))
    return area.reshape(r.size, c.size)


def _geographic_rows(grid: Grid, rows: np.ndarray, info: tuple[Any, ...]) -> np.ndarray:
    """Exact area (m²) of a north-up geographic grid's cells in ``rows``, shape ``(h, 1)``."""
    t = grid.transform
    a, e2 = info[1], info[2]
    lat0 = t.f + t.e * rows.astype(np.float64)
    lat1 = lat0 + t.e
    dlon = math.radians(abs(t.a))
    area = dlon * a * np.abs(_authalic_y(lat0, a, e2) - _authalic_y(lat1, a, e2))
    return area[:, None]


def _lattice_step(grid: Grid, geographic: bool, unit_m: float) -> int:
    """Columns between exactly measured pixels: about :data:`LATTICE` metres, 1 to 64."""
    size_m = grid.resolution[0] * (111_000.0 if geographic else unit_m)
    return int(min(64, max(1, LATTICE // max(size_m, 1e-9))))


def pixel_areas_m2(grid: Grid, window: Window, *, planar: bool = False) -> np.ndarray:
    """True area (m²) of the pixels of ``window``, broadcastable to ``(height, width)``.

    The shape is ``(h, 1)`` where the area varies only by row (geographic grids, equal-area
    and planar), else ``(h, w)``. The values do not depend on how a grid is split into
    windows. See the module docstring for the method.

    Args:
        grid: the grid the window belongs to.
        window: the pixels to measure.
        planar: take the planar pixel area (CRS units converted to metres) even where the CRS
            is not equal-area.
    """
    h, w = int(window.height), int(window.width)
    r0, c0 = int(window.row_off), int(window.col_off)
    if grid.crs is None:
        return np.full((h, 1), grid.pixel_area, dtype=np.float64)
    info = _info(grid.crs)
    geographic, equal_area, unit_m = info[3], info[4], info[5]
    if not geographic and (planar or equal_area):
        return np.full((h, 1), grid.pixel_area * unit_m * unit_m, dtype=np.float64)
    rows = np.arange(r0, r0 + h)
    if geographic and grid.is_rectilinear and not planar:
        return _geographic_rows(grid, rows, info)
    if geographic:  # planar degrees mean nothing; measure the cells
        pass
    step = _lattice_step(grid, geographic, unit_m)
    first = (c0 // step) * step
    last = -(-(c0 + w - 1) // step) * step
    lattice = np.arange(first, last + 1, step)
    exact = _quad_areas(grid, rows, lattice, info)
    if lattice.size == 1:
        return np.broadcast_to(exact, (h, w)).copy()
    cols = np.arange(c0, c0 + w)
    k = np.minimum((cols - first) // step, lattice.size - 2)
    frac = ((cols - lattice[k]) / step)[None, :]
    return exact[:, k] * (1.0 - frac) + exact[:, k + 1] * frac


def pixel_area_m2(grid: Grid, *, planar: bool = False) -> float:
    """True area (m²) of the grid's centre pixel (for converting ``0.5ha`` to pixels)."""
    centre = Window(grid.width // 2, grid.height // 2, 1, 1)
    return float(np.ravel(pixel_areas_m2(grid, centre, planar=planar))[0])


def area_m2(
    grid: Grid, window: Window | None = None, *, planar: bool = False, rows: int = 1024
) -> float:
    """True area (m²) of all the pixels of ``window`` (default: the whole grid), by row bands."""
    win = window if window is not None else grid.full_window
    r0, c0 = int(win.row_off), int(win.col_off)
    h, w = int(win.height), int(win.width)
    total = 0.0
    for r in range(r0, r0 + h, rows):
        band = Window(c0, r, w, min(rows, r0 + h - r))
        total += float(
            np.broadcast_to(pixel_areas_m2(grid, band, planar=planar), (int(band.height), w)).sum()
        )
    return total


def densify_length(grid: Grid) -> float:
    """The edge length (CRS units) to split polygons of ``grid``'s pixels at before measuring.

    A straight edge in a projection is slightly curved on the ellipsoid (UTM: about 1.5e-7
    per metre); split at one pixel, a polygon of whole pixels measures exactly the sum of its
    pixels, split every :data:`EDGE_M` metres it measures within about 2e-7 of it per class
    (3 m pixels, Iowa) at a fraction of the vertices.
    """
    if grid.crs is None:
        return min(grid.resolution)
    info = _info(grid.crs)
    unit_m = 111_000.0 if info[3] else info[5]
    return max(min(grid.resolution), EDGE_M / unit_m)


def polygon_areas_m2(
    geoms: np.ndarray,
    crs: Any,
    *,
    densify: float | None = None,
    planar: bool = False,
    local_below: float | None = None,
) -> np.ndarray:
    """True area (m²) of each polygon (in ``crs`` coordinates), as :func:`pixel_areas_m2`.

    Args:
        geoms: shapely polygons / multipolygons.
        crs: their CRS (rasterio or pyproj); ``None`` gives planar areas in squared units.
        densify: add vertices so no edge is longer than this (CRS units) before measuring; with
            the pixel size, a polygon of whole pixels measures exactly the sum of its pixels'
            :func:`pixel_areas_m2`.
        planar: planar areas (units converted to metres) even where the CRS is not equal-area.
        local_below: polygons whose bounding box is at most this wide and high (CRS units)
            are measured as their planar area times the true / planar area ratio of a
            ``densify``-sized square at their centroid: vectorized, no densifying, and
            within ``(L / R)² / 8`` of the exact value for a polygon of extent ``L`` (R: the
            Earth's radius; 2 km: 1e-8). Larger polygons are measured exactly.
    """
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) == 0:
        return np.zeros(0, dtype=np.float64)
    if crs is None:
        return np.asarray(shapely.area(geoms), dtype=np.float64)
    info = _info(crs)
    geographic, equal_area, unit_m = info[3], info[4], info[5]
    if not geographic and (planar or equal_area):
        return np.asarray(shapely.area(geoms), dtype=np.float64) * unit_m * unit_m
    if local_below is not None and densify:
        return _areas_by_ring(geoms, crs, densify, local_below, info)
    if densify:
        geoms = shapely.segmentize(geoms, densify)
    coords = shapely.get_coordinates(geoms)
    if coords.size == 0:
        return np.zeros(len(geoms), dtype=np.float64)
    big_x, big_y = _to_cea(coords[:, 0], coords[:, 1], info)
    cea = np.column_stack([big_x - big_x.mean(), big_y - big_y.mean()])
    return np.asarray(shapely.area(shapely.set_coordinates(geoms.copy(), cea)), np.float64)


def _area_ratio(xy: np.ndarray, h: float, info: tuple[Any, ...]) -> np.ndarray:
    """True area (m²) per planar CRS unit² of an ``h``-sided square centred at each point."""
    if len(xy) == 0:
        return np.zeros(0, dtype=np.float64)
    x, y = xy[:, 0], xy[:, 1]
    d = h / 2.0
    cx = np.concatenate([x - d, x + d, x + d, x - d])
    cy = np.concatenate([y - d, y - d, y + d, y + d])
    big_x, big_y = _to_cea(cx, cy, info)
    n = len(x)
    px = [big_x[i * n : (i + 1) * n] for i in range(4)]
    py = [big_y[i * n : (i + 1) * n] for i in range(4)]
    area = 0.5 * np.abs((px[2] - px[0]) * (py[3] - py[1]) - (px[3] - px[1]) * (py[2] - py[0]))
    return area / (h * h)


def _areas_by_ring(
    geoms: np.ndarray, crs: Any, densify: float, local_below: float, info: tuple[Any, ...]
) -> np.ndarray:
    """Areas as the shells' minus the holes', each ring measured locally when it is small.

    A large polygon of a speckled raster is mostly small holes: they go through the
    vectorized centroid rule, and only its large rings are densified and measured exactly.
    """
    import shapely

    parts, owner = shapely.get_parts(geoms, return_index=True)
    rings, part = shapely.get_rings(parts, return_index=True)
    sign = np.where(np.r_[True, part[1:] != part[:-1]], 1.0, -1.0)  # exterior first
    polys = shapely.polygons(rings)
    b = shapely.bounds(polys)
    local = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) <= local_below
    area = np.empty(len(polys), dtype=np.float64)
    xy = shapely.get_coordinates(shapely.centroid(polys[local]))
    area[local] = shapely.area(polys[local]) * _area_ratio(xy, densify, info)
    area[~local] = polygon_areas_m2(polys[~local], crs, densify=densify)
    return np.bincount(owner[part], weights=sign * area, minlength=len(geoms))

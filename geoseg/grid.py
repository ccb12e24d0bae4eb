"""The grid core: an immutable raster grid and pure chip-window arithmetic.

A :class:`Grid` is a value (CRS, affine transform, shape) in the manner of odc-geo's
``GeoBox``: hashable, comparable, and every operation returns a new value. The functions
below plan chip windows over a grid and build the blend weights that stitch overlapping
predictions back together; they are pure and have no I/O, so they are tested directly
(including with hypothesis).

Axis order is always explicit: ``shape`` is ``(height, width)`` = ``(rows, cols)``;
resolutions and coordinates are ``(x, y)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from geoseg.errors import ChipSizeError, GridError

__all__ = [
    "TRIM_WEIGHT",
    "Grid",
    "axis_spans",
    "axis_starts",
    "blend_weights",
    "block_windows",
    "check_chip_size",
    "min_edge_chip",
    "plan_windows",
    "ramp",
    "windows_by_row",
]


@dataclass(frozen=True, slots=True)
class Grid:
    """An immutable raster grid: CRS, affine transform and shape ``(height, width)``.

    Two grids are equal when their CRS, transform and shape are equal, so
    ``Grid.from_dataset(out) == Grid.from_dataset(src)`` is the "same grid" check.
    """

    crs: CRS | None
    transform: Affine
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        h, w = self.shape
        if int(h) != h or int(w) != w or h <= 0 or w <= 0:
            raise GridError(
                f"grid shape must be two positive integers (height, width), got {self.shape}"
            )
        object.__setattr__(self, "shape", (int(h), int(w)))
        if not isinstance(self.transform, Affine):
            object.__setattr__(self, "transform", Affine(*tuple(self.transform)[:6]))

    def __hash__(self) -> int:
        crs_key = self.crs.to_wkt() if self.crs is not None else None
        return hash((crs_key, tuple(self.transform)[:6], self.shape))

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, dataset: Any) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(
            crs=dataset.crs, transform=dataset.transform, shape=(dataset.height, dataset.width)
        )

    @classmethod
    def from_bounds(
        cls,
        bounds: Sequence[float],
        resolution: float | tuple[float, float],
        crs: CRS | str | int | None,
    ) -> Grid:
        """A north-up grid covering ``bounds`` (left, bottom, right, top) at ``resolution``.

        The grid is anchored at the top-left corner; the last row and column are included
        even where the bounds are not a whole number of pixels.
        """
        xres, yres = (resolution, resolution) if isinstance(resolution, int | float) else resolution
        if xres <= 0 or yres <= 0:
            raise GridError(f"resolution must be positive, got {resolution}")
        left, bottom, right, top = bounds
        width = max(1, math.ceil((right - left) / xres - 1e-9))
        height = max(1, math.ceil((top - bottom) / yres - 1e-9))
        return cls(
            crs=_as_crs(crs), transform=Affine(xres, 0, left, 0, -yres, top), shape=(height, width)
        )

    # ---- properties ---------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Number of rows."""
        return self.shape[0]

    @property
    def width(self) -> int:
        """Number of columns."""
        return self.shape[1]

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units, both positive."""
        t = self.transform
        return (math.hypot(t.a, t.d), math.hypot(t.b, t.e))

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in squared CRS units."""
        t = self.transform
        return abs(t.a * t.e - t.b * t.d)

    @property
    def bounds(self) -> BoundingBox:
        """Bounds of the whole grid ``(left, bottom, right, top)``."""
        return BoundingBox(*window_bounds(self.full_window, self.transform))

    @property
    def full_window(self) -> Window:
        """The window covering the whole grid."""
        return Window(0, 0, self.width, self.height)

    @property
    def is_rectilinear(self) -> bool:
        """True when the transform has no rotation or shear (north-up or south-up)."""
        return self.transform.b == 0 and self.transform.d == 0

    # ---- derived grids ------------------------------------------------------------------
    def window_grid(self, window: Window) -> Grid:
        """The sub-grid of a window (which may extend past the grid: useful for padding)."""
        return Grid(
            crs=self.crs,
            transform=window_transform(window, self.transform),
            shape=(int(window.height), int(window.width)),
        )

    def window_bounds(self, window: Window) -> BoundingBox:
        """Bounds ``(left, bottom, right, top)`` of a window of this grid."""
        return BoundingBox(*window_bounds(window, self.transform))

    def with_crs(self, crs: CRS | str | int | None) -> Grid:
        """The same grid labelled with another CRS (no reprojection)."""
        return Grid(crs=_as_crs(crs), transform=self.transform, shape=self.shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description of the grid."""
        return {
            "crs": self.crs.to_string() if self.crs is not None else None,
            "transform": list(tuple(self.transform)[:6]),
            "shape": list(self.shape),
        }

    def __repr__(self) -> str:
        crs = self.crs.to_string() if self.crs is not None else None
        return f"Grid(crs={crs!r}, shape={self.shape}, res={self.resolution}, bounds={tuple(self.bounds)})"


def _as_crs(crs: CRS | str | int | None) -> CRS | None:
    if crs is None or isinstance(crs, CRS):
        return crs
    if isinstance(crs, int):
        return CRS.from_epsg(crs)
    return CRS.from_user_input(crs)


# ---- chip windows ---------------------------------------------------------------------------
def check_chip_size(size: int, overlap: int) -> None:
    """Raise :class:`ChipSizeError` unless ``size > 0`` and ``0 <= overlap < size``."""
    if int(size) != size or size <= 0:
        raise ChipSizeError(
            f"chip size must be a positive integer, got {size}; use e.g. --size 256"
        )
    if int(overlap) != overlap or overlap < 0:
        raise ChipSizeError(
            f"overlap must be a non-negative integer, got {overlap}; use e.g. --overlap 32"
        )
    if overlap >= size:
        raise ChipSizeError(
            f"overlap ({overlap}) must be smaller than the chip size ({size}); "
            f"use e.g. --overlap {size // 4}"
        )


def min_edge_chip(size: int, overlap: int) -> int:
    """Shortest ragged last chip (:func:`axis_spans`): half a chip, at least twice the overlap."""
    return min(size, max(size // 2, 2 * overlap))


def axis_spans(
    length: int, size: int, overlap: int, *, ragged: bool = False
) -> list[tuple[int, int]]:
    """``(start, length)`` of the chips of at most ``size`` along an axis of ``length``.

    Chips step by ``size - overlap`` and neighbours overlap by at least ``overlap``. The last
    chip ends exactly at ``length``, so every pixel is covered and every chip lies inside the
    axis. By default every chip is ``size`` long: the last one is shifted back (its overlap
    with the previous chip may then be larger than asked). With ``ragged`` the last chip keeps
    its place on the stride and is shorter, so fewer pixels are inferred twice; it is never
    shorter than :func:`min_edge_chip` (half a chip), so it still sees context. An axis shorter
    than ``size`` gets one chip ``(0, length)``.
    """
    check_chip_size(size, overlap)
    if length <= 0:
        raise ChipSizeError(f"axis length must be positive, got {length}")
    if length <= size:
        return [(0, length)]
    stride = size - overlap
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        last = starts[-1] + stride if ragged else length - size
        # the previous chip ends before ``length - size``, so this start stays after it
        starts.append(min(last, length - min_edge_chip(size, overlap)))
    return [(s, min(size, length - s)) for s in starts]


def axis_starts(length: int, size: int, overlap: int, *, ragged: bool = False) -> list[int]:
    """Start offsets of the chips of :func:`axis_spans` (same arguments)."""
    return [s for s, _ in axis_spans(length, size, overlap, ragged=ragged)]


def plan_windows(
    shape: tuple[int, int], size: int, overlap: int, *, ragged: bool = False
) -> list[Window]:
    """Chip windows of ``size`` x ``size`` with ``overlap`` over a grid of ``shape`` (h, w).

    Row-major order. Every pixel is covered, including the last row and column; every window
    lies inside the grid; neighbours overlap by at least ``overlap``. Where the grid is smaller
    than ``size`` along an axis, the windows are clipped to the grid along that axis. With
    ``ragged``, the last row and column of chips are shorter instead of shifted back
    (:func:`axis_spans`): for models that take any input size, it saves their redundant pixels.
    """
    height, width = shape
    rows = axis_spans(height, size, overlap, ragged=ragged)
    cols = axis_spans(width, size, overlap, ragged=ragged)
    return [Window(c, r, cw, rh) for r, rh in rows for c, cw in cols]


def windows_by_row(windows: Sequence[Window]) -> Iterator[tuple[int, list[Window]]]:
    """Group row-major windows by their row offset: yields ``(row_off, windows)``."""
    current: list[Window] = []
    row: int | None = None
    for w in windows:
        if row is not None and int(w.row_off) != row:
            yield row, current
            current = []
        row = int(w.row_off)
        current.append(w)
    if row is not None:
        yield row, current


# ---- blend weights --------------------------------------------------------------------------
BlendKind = Literal["hann", "linear", "flat"]


def ramp(n: int, kind: BlendKind = "hann") -> np.ndarray:
    """Rising weights over ``n`` pixels, strictly inside (0, 1).

    ``hann`` is a raised-cosine (sin²) ramp, so a rising and a falling ramp over the same
    pixels sum to exactly 1 (a partition of unity); ``linear`` likewise for a straight ramp.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.float64)
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    if kind == "hann":
        return np.sin(0.5 * np.pi * t) ** 2
    if kind == "linear":
        return t
    return np.ones(n, dtype=np.float64)


#: Weight of trimmed edge pixels (and floor of every ramp): ~0 but strictly positive.
TRIM_WEIGHT = 1e-6


def _axis_weights(
    start: int, length: int, total: int, overlap: int, kind: BlendKind, trim: int = 0
) -> np.ndarray:
    w = np.ones(length, dtype=np.float64)
    n = min(overlap, length)
    if n <= 0 or kind == "flat":
        return w
    t = min(trim, n // 2)
    edge = np.concatenate([np.full(t, TRIM_WEIGHT), np.maximum(ramp(n - t, kind), TRIM_WEIGHT)])
    if start > 0:  # an inner edge: fade in; the scene's own border keeps full weight
        w[:n] = np.minimum(w[:n], edge)
    if start + length < total:
        w[length - n :] = np.minimum(w[length - n :], edge[::-1])
    return w


def blend_weights(
    window: Window,
    shape: tuple[int, int],
    overlap: int,
    kind: BlendKind = "hann",
    *,
    trim: int = 0,
) -> np.ndarray:
    """Blend weights (float32, window-shaped) for a chip ``window`` of a grid of ``shape``.

    Weights fall smoothly to near 0 over ``overlap`` pixels on each edge that borders another
    chip, and stay at 1 on edges that lie on the scene's own border, so border pixels are not
    down-weighted. Weights are strictly positive (at least :data:`TRIM_WEIGHT`); accumulate
    ``sum(w * p) / sum(w)``. ``trim`` outermost pixels of each inner edge get
    :data:`TRIM_WEIGHT` (at most half the ramp).
    """
    height, width = shape
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    wy = _axis_weights(r0, h, height, overlap, kind, trim)
    wx = _axis_weights(c0, w, width, overlap, kind, trim)
    return np.outer(wy, wx).astype(np.float32)


def block_windows(shape: tuple[int, int], size: int = 1024) -> list[Window]:
    """Non-overlapping windows of at most ``size`` x ``size`` covering ``shape`` (h, w), row-major.

    The one block-window helper (change, evaluate, vectorize, aligned reads): the last row and
    column of blocks are smaller where ``size`` does not divide the shape.
    """
    if size <= 0:
        raise GridError(f"block size must be positive, got {size}")
    height, width = shape
    return [
        Window(col, row, min(size, width - col), min(size, height - row))
        for row in range(0, height, size)
        for col in range(0, width, size)
    ]

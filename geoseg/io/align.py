"""Aligning a raster onto another grid, block by block.

:class:`AlignedRaster` reads any raster as if it lay on a target :class:`~geoseg.grid.Grid`:
the same grid is read directly; any other grid or CRS is warped on the fly (GDAL warped VRT,
nearest neighbour by default, so class ids are never mixed). Every read returns the values and
a validity mask (False where the source has nodata or does not cover the target), so callers
stream whole scenes one block at a time.

Blocks come from :func:`geoseg.grid.block_windows` (non-overlapping, for accumulating counts,
where overlapping chip windows would count pixels twice); true pixel areas from
:mod:`geoseg.area`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Literal

import numpy as np
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg.errors import GridError
from geoseg.grid import Grid, block_windows
from geoseg.io.raster import check_grid, open_raster

__all__ = ["AlignedRaster", "grids_overlap"]

AlignResampling = Literal["nearest", "mode"]


def grids_overlap(a: Grid, b: Grid) -> bool:
    """True when the footprints of two grids meet (``b`` is brought into ``a``'s CRS)."""
    bb = tuple(b.bounds)
    if a.crs is not None and b.crs is not None and a.crs != b.crs:
        try:
            bb = transform_bounds(b.crs, a.crs, *bb, densify_pts=21)
        except Exception:  # pragma: no cover - bounds that cannot be transformed
            return False
    left, bottom, right, top = a.bounds
    return bool(bb[0] < right and bb[2] > left and bb[1] < top and bb[3] > bottom)


class AlignedRaster:
    """One band of a raster read on a target grid, block by block.

    Use as a context manager::

        with AlignedRaster(path, grid=target) as src:
            for window in block_windows(target.shape):
                values, valid = src.read(window)

    Args:
        path: the raster to read.
        grid: the target grid.
        band: the band to read (1-based).
        resampling: ``nearest`` (default; right for class rasters) or ``mode``.
        nodata: the source nodata value; defaults to the file's own.

    Raises:
        GridError: when the raster has no usable georeferencing or does not overlap ``grid``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        grid: Grid,
        band: int = 1,
        resampling: AlignResampling = "nearest",
        nodata: float | None = None,
    ) -> None:
        self.path = path
        self.grid = grid
        self.band = band
        self.resampling = resampling
        self._nodata = nodata
        self._stack = contextlib.ExitStack()
        self._reader: Any = None
        self.source_grid: Grid | None = None
        self.nodata: float | None = None
        self.tags: dict[str, str] = {}
        self.band_tags: dict[str, str] = {}
        self.dtype: str = "uint8"

    @property
    def same_grid(self) -> bool:
        """True when the source already lies on the target grid (no warping)."""
        return self.source_grid == self.grid

    def __enter__(self) -> AlignedRaster:
        src = self._stack.enter_context(open_raster(self.path))
        try:
            self.source_grid = Grid.from_dataset(src)
            check_grid(self.source_grid, self.path)
            if not 1 <= self.band <= src.count:
                raise GridError(f"{self.path}: has no band {self.band} (it has {src.count})")
            self.nodata = self._nodata if self._nodata is not None else src.nodata
            self.tags = dict(src.tags())
            self.band_tags = dict(src.tags(self.band))
            self.dtype = src.dtypes[self.band - 1]
            if self.same_grid:
                self._reader = src
                return self
            if not grids_overlap(self.grid, self.source_grid):
                raise GridError(
                    f"{self.path}: does not overlap the target grid "
                    f"(bounds {tuple(round(v, 3) for v in self.source_grid.bounds)} in "
                    f"{self.source_grid.crs}); give rasters that cover the same area"
                )
            vrt_opts: dict[str, Any] = {
                "crs": self.grid.crs,
                "transform": self.grid.transform,
                "width": self.grid.width,
                "height": self.grid.height,
                "resampling": Resampling[self.resampling],
            }
            if self.nodata is not None:
                vrt_opts["src_nodata"] = self.nodata
                vrt_opts["nodata"] = self.nodata
            else:
                vrt_opts["add_alpha"] = True
            self._reader = self._stack.enter_context(WarpedVRT(src, **vrt_opts))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._reader = None
        self._stack.close()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Values and validity (bool) of ``window`` of the target grid, both window-shaped."""
        if self._reader is None:
            raise RuntimeError("AlignedRaster.read called outside its context")
        values = self._reader.read(self.band, window=window)
        valid = self._reader.read_masks(self.band, window=window) > 0
        if self.nodata is not None and not np.isnan(self.nodata):
            valid &= values != np.asarray(self.nodata).astype(values.dtype)
        return values, valid

    def blocks(self, size: int = 1024) -> Iterator[tuple[Window, np.ndarray, np.ndarray]]:
        """``(window, values, valid)`` for every block of the target grid."""
        for window in block_windows(self.grid.shape, size):
            values, valid = self.read(window)
            yield window, values, valid

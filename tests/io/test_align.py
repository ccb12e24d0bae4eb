from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import GridError
from geoseg.grid import Grid
from geoseg.io.align import AlignedRaster, grids_overlap


def test_same_grid_reads_directly_with_nodata(raster_factory: Callable[..., Path]) -> None:
    data = np.arange(48 * 64, dtype="uint8").reshape(48, 64) % 5
    path = raster_factory("c.tif", data, nodata=0)
    with rasterio.open(path) as ds:
        grid = Grid.from_dataset(ds)
    with AlignedRaster(path, grid=grid) as src:
        assert src.same_grid
        values, valid = src.read(grid.full_window)
    assert (values == data).all() and (valid == (data != 0)).all()


def test_other_crs_is_warped_nearest_and_uncovered_is_invalid(
    raster_factory: Callable[..., Path],
) -> None:
    data = np.repeat(np.arange(1, 5, dtype="uint8"), 16)[None, :].repeat(48, 0)
    path = raster_factory("src.tif", data)  # no nodata: validity from coverage
    target = Grid.from_bounds((499800, 4999600, 500500, 5000200), 20, "EPSG:32633")
    with AlignedRaster(path, grid=target) as src:
        values, valid = src.read(target.full_window)
    assert set(np.unique(values[valid])) <= {1, 2, 3, 4}
    assert not valid[:, :10].any() and valid[15, 20]


def test_no_overlap_is_a_clear_error(raster_factory: Callable[..., Path]) -> None:
    path = raster_factory("src.tif", np.ones((10, 10), "uint8"))
    far = Grid.from_bounds((0, 0, 100, 100), 10, "EPSG:32633")
    assert not grids_overlap(far, Grid.from_bounds((500000, 4999900, 500100, 5000000), 10, 32633))
    with pytest.raises(GridError, match="does not overlap"):
        AlignedRaster(path, grid=far).__enter__()

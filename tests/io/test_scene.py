"""geoseg.io.scene: one opener for a raster, a folder of band files or STAC; the lazy VRT stack."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg.errors import GridError, RasterReadError
from geoseg.grid import Grid
from geoseg.io.scene import (
    StackedScene,
    open_scene,
    resample_grid,
    scene_source,
    stack_vrt,
    utm_crs,
)
from tests.data.rasters import write_raster

T10 = Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)
T20 = Affine(20.0, 0, 500000.0, 0, -20.0, 5000000.0)


def band_folder(folder: Path, *, nodata: float | None = None) -> Path:
    """S2-like band files: B02, B03 at 10 m (60 x 80), B11 at 20 m (30 x 40), in one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for name, t, shape in (("B02", T10, (60, 80)), ("B03", T10, (60, 80)), ("B11", T20, (30, 40))):
        data = rng.integers(1, 5000, size=(1, *shape)).astype("uint16")
        write_raster(folder / f"T33UUU_{name}.tif", data, transform=t, nodata=nodata)
    return folder


def test_folder_scene_is_named_by_file_and_on_the_finest_grid(tmp_path: Path) -> None:
    scene = open_scene(band_folder(tmp_path / "bands"))
    assert scene.band_names == ["B02", "B03", "B11"]
    assert scene.grid.resolution == (10.0, 10.0)
    assert scene.grid.shape == (60, 80)
    assert not scene.single_file


def test_stack_equals_each_band_resampled_by_hand(tmp_path: Path) -> None:
    """The VRT stack = every band read onto the finest grid with GDAL's bilinear, band by band."""
    folder = band_folder(tmp_path / "bands")
    scene = open_scene(folder)
    with rasterio.open(stack_vrt(scene)) as ds:
        stacked = ds.read()
        assert ds.descriptions == ("B02", "B03", "B11")
        assert Grid.from_dataset(ds) == scene.grid
    for k, f in enumerate(sorted(folder.glob("*.tif"))):
        with rasterio.open(f) as src:
            by_hand = src.read(1, out_shape=scene.grid.shape, resampling=Resampling.bilinear)
        np.testing.assert_array_equal(stacked[k], by_hand)


def test_stack_read_in_windows_equals_the_whole_read(tmp_path: Path) -> None:
    """Streaming: windows of the stack (as predict reads it) hold exactly the whole-scene values."""
    scene = open_scene(band_folder(tmp_path / "bands"))
    coarse = scene.grid
    for grid in (coarse, Grid.from_bounds(tuple(coarse.bounds), 30.0, coarse.crs)):
        with rasterio.open(stack_vrt(replace(scene, grid=grid))) as ds:
            whole = ds.read()
            parts = np.zeros_like(whole)
            for r in range(0, ds.height, 7):
                for c in range(0, ds.width, 9):
                    w = Window(c, r, min(9, ds.width - c), min(7, ds.height - r))
                    parts[:, r : r + w.height, c : c + w.width] = ds.read(window=w)
        np.testing.assert_array_equal(parts, whole)


def test_scene_source_passes_a_raster_through_and_stacks_a_folder(tmp_path: Path) -> None:
    tif = write_raster(tmp_path / "one.tif", count=2)
    assert scene_source(tif, bands=[2]) == (tif, [2])
    stacked, bands = scene_source(band_folder(tmp_path / "bands"), bands=["B11"])
    assert isinstance(stacked, StackedScene)
    assert bands == ["B11"]  # selected in the stack as in a single file
    assert str(stacked) == str(tmp_path / "bands")  # messages name the folder
    with rasterio.open(stacked) as ds:
        assert ds.count == 3


def test_folder_nodata_is_kept_per_band(tmp_path: Path) -> None:
    stacked, _ = scene_source(band_folder(tmp_path / "bands", nodata=0))
    with rasterio.open(stacked) as ds:
        assert ds.nodatavals == (0.0, 0.0, 0.0)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RasterReadError, match="folder holds no raster files"):
        scene_source(tmp_path / "empty")


def test_band_files_in_different_crss_are_refused(tmp_path: Path) -> None:
    folder = band_folder(tmp_path / "bands")
    write_raster(folder / "T33UUU_B12.tif", count=1, crs="EPSG:32632")
    with pytest.raises(GridError, match=r"different CRSs \(EPSG:32632, EPSG:32633\).*gdalwarp"):
        open_scene(folder)


def test_resample_grid_warps_a_geographic_grid_to_utm_covering_it() -> None:
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    geo = Grid(CRS.from_epsg(4326), Affine(0.001, 0, 15.2, 0, -0.001, 45.1), (100, 200))
    assert utm_crs(geo) == CRS.from_epsg(32633)
    g = resample_grid(geo, (10.0, 10.0), path="scene.tif")
    assert g.crs == CRS.from_epsg(32633)
    assert g.resolution == (10.0, 10.0)
    left, bottom, right, top = transform_bounds(geo.crs, g.crs, *geo.bounds, densify_pts=21)
    gl, gb, gr, gt = g.bounds
    assert gl <= left and gb <= bottom and gr >= right and gt >= top  # covers the scene
    assert gr - gl < right - left + 20 and gt - gb < top - bottom + 20  # and not much more
    assert gl % 10 == 0 and gt % 10 == 0  # pixel edges on multiples of the pixel size
    south = Grid(CRS.from_epsg(4326), Affine(0.001, 0, -70.5, 0, -0.001, -33.0), (10, 10))
    assert utm_crs(south) == CRS.from_epsg(32719)


def test_resample_grid_refuses_a_polar_scene_with_the_command() -> None:
    from rasterio.crs import CRS

    polar = Grid(CRS.from_epsg(4326), Affine(0.01, 0, 10.0, 0, -0.01, 88.0), (10, 10))
    with pytest.raises(GridError, match="gdalwarp -t_srs EPSG:3413 -tr 10 10"):
        resample_grid(polar, (10.0, 10.0), path="polar.tif")


def test_resample_grid_keeps_a_projected_grid() -> None:
    from rasterio.crs import CRS

    g = Grid(CRS.from_epsg(32633), T10, (60, 80))
    assert resample_grid(g, (30.0, 30.0), path="x") == Grid.from_bounds(
        tuple(g.bounds), 30.0, g.crs
    )


def test_a_stac_item_opens_as_the_folder_of_its_band_files(tmp_path: Path) -> None:
    """One way to open a scene: the item over the folder's files = the folder (tile, train)."""
    import pickle

    from tests.data.stac import item, write_json

    folder = band_folder(tmp_path / "bands")
    files = {f.stem.split("_")[-1]: f for f in sorted(folder.glob("*.tif"))}
    stac = write_json(tmp_path / "item.json", item("it", files))
    a, b = open_scene(folder), open_scene(stac)
    assert a.grid == b.grid and a.band_names == b.band_names and a.dtype == b.dtype
    sa, _ = scene_source(folder)
    sb, _ = scene_source(stac)
    with rasterio.open(sa) as da, rasterio.open(sb) as db:
        np.testing.assert_array_equal(da.read(), db.read())
    again = pickle.loads(pickle.dumps(sb))  # travels to Dask workers
    assert again == sb and str(again) == str(stac)

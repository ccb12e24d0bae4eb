"""geoseg.area: true pixel and polygon areas, and the same hectares from every command."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Geod, Transformer
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.area import area_m2, is_equal_area, pixel_area_m2, pixel_areas_m2, polygon_areas_m2
from geoseg.grid import Grid

WGS84 = Geod(ellps="WGS84")


def geod_pixel_area(grid: Grid, row: int, col: int) -> float:
    """The geodesic area of one pixel's corners (pyproj Geod): an independent reference."""
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    t = grid.transform
    pts = [t * (col, row), t * (col + 1, row), t * (col + 1, row + 1), t * (col, row + 1)]
    lon, lat = to_ll.transform([p[0] for p in pts], [p[1] for p in pts])
    return abs(WGS84.polygon_area_perimeter(lon, lat)[0])


def mercator_16n(crs: str = "EPSG:3857", size: int = 100, res: float = 100.0) -> Grid:
    """A ``size`` x ``size`` grid whose top edge lies at 16° N."""
    _, top = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(-61.0, 16.0)
    return Grid(
        crs=CRS.from_user_input(crs),
        transform=Affine(res, 0, -6790000, 0, -res, top),
        shape=(size, size),
    )


SCENES = {
    "utm": Grid(
        crs=CRS.from_epsg(32620),
        transform=Affine(100, 0, 640000, 0, -100, 1780000),
        shape=(100, 100),
    ),
    "geographic": Grid(
        crs=CRS.from_epsg(4326),
        transform=Affine(0.001, 0, -61.5, 0, -0.001, 16.2),
        shape=(100, 100),
    ),
    "web_mercator": mercator_16n(),
}


@pytest.mark.parametrize("name", sorted(SCENES))
def test_pixel_areas_match_geodesic_pixels(name: str) -> None:
    grid = SCENES[name]
    areas = np.broadcast_to(pixel_areas_m2(grid, grid.full_window), grid.shape)
    for row, col in [(0, 0), (0, 99), (57, 31), (99, 99)]:
        assert areas[row, col] == pytest.approx(geod_pixel_area(grid, row, col), rel=1e-6)


def test_windows_do_not_change_the_areas() -> None:
    grid = Grid(
        crs=CRS.from_epsg(32633), transform=Affine(10, 0, 250000, 0, -10, 5e6), shape=(300, 700)
    )
    whole = pixel_areas_m2(grid, grid.full_window)
    part = pixel_areas_m2(grid, Window(130, 40, 333, 77))
    np.testing.assert_allclose(part, whole[40:117, 130:463], rtol=1e-12)
    assert area_m2(grid) == pytest.approx(float(whole.sum()), rel=1e-12)
    # 250 km west of the central meridian, UTM pixels are larger on the map than on the ground
    assert whole[0, 0] < 100.0 * 1.0 and whole[0, 0] != whole[0, -1]


def test_equal_area_and_planar() -> None:
    laea = Grid.from_bounds((4e6, 3e6, 4e6 + 1000, 3e6 + 1000), 10, "EPSG:3035")
    assert is_equal_area(CRS.from_epsg(3035)) and not is_equal_area(CRS.from_epsg(3857))
    assert area_m2(laea) == 1000.0 * 1000.0
    merc = mercator_16n()
    assert area_m2(merc, planar=True) == pytest.approx(1e8)
    assert area_m2(merc) == pytest.approx(1e8 * 0.9188, rel=1e-3)


def test_polygons_of_whole_pixels_measure_their_pixels() -> None:
    for grid in SCENES.values():
        t = grid.transform
        x0, y1 = t * (10, 20)
        x1, y0 = t * (60, 90)
        box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        got = polygon_areas_m2(np.array([box]), grid.crs, densify=min(grid.resolution))[0]
        assert got == pytest.approx(area_m2(grid, Window(10, 20, 50, 70)), rel=1e-8)
    assert pixel_area_m2(SCENES["utm"]) == pytest.approx(1e4, rel=2e-3)


# ---- the same hectares from every command -------------------------------------------------------
def _class_map(grid: Grid) -> np.ndarray:
    rng = np.random.default_rng(3)
    arr = np.zeros(grid.shape, dtype=np.uint8)
    arr[:, 30:] = 1
    arr[rng.random(grid.shape) < 0.1] = 2
    arr[40:60, 45:80] = 255
    return arr


@pytest.mark.parametrize("name", sorted(SCENES))
def test_every_command_reports_the_same_hectares(
    name: str, raster_factory: Callable[..., Path], tmp_path: Path
) -> None:
    from geoseg.batch import class_areas
    from geoseg.change import change
    from geoseg.evaluate import evaluate
    from geoseg.vectorize import vectorize

    grid = SCENES[name]
    arr = _class_map(grid)
    kw = {"crs": grid.crs, "transform": grid.transform, "nodata": 255, "dtype": "uint8"}
    before = raster_factory("before.tif", arr, **kw)
    after = raster_factory("after.tif", np.where(arr == 255, 255, 0).astype("uint8"), **kw)
    truth = {
        cid: float(
            np.broadcast_to(pixel_areas_m2(grid, grid.full_window), grid.shape)[arr == cid].sum()
        )
        / 1e4
        for cid in (0, 1, 2)
    }

    batch = {a["class_id"]: a["area_ha"] for a in class_areas(before)}
    vec = vectorize(before, tmp_path / "v.gpkg", workers=1).class_area_ha
    lost = change(before, after, out=tmp_path / "loss.tif", from_classes=[1])
    ev = evaluate(before, reference=before, out=tmp_path / "eval")
    mapped = {
        int(cid): c["mapped_area"]
        for cid, c in zip(ev.class_ids, ev.area_adjusted["per_class"].values(), strict=True)
    }
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["area_adjusted"]["area_unit"] == "ha"
    for cid in (0, 1, 2):
        assert batch[cid] == pytest.approx(truth[cid], abs=1e-4)
        assert vec[f"class_{cid}"] == pytest.approx(truth[cid], rel=1e-7)
        assert mapped[cid] == pytest.approx(truth[cid], rel=1e-9)
    assert lost.loss_ha == pytest.approx(truth[1], rel=1e-9)


def test_issue_case_web_mercator_at_16n(
    raster_factory: Callable[..., Path], tmp_path: Path
) -> None:
    """The issue's case: 100 x 100 px of 1 ha nominal at 16° N are about 9,190 ha, never 10,000."""
    from geoseg.batch import class_areas
    from geoseg.change import change
    from geoseg.vectorize import vectorize

    grid = mercator_16n()
    kw = {"crs": grid.crs, "transform": grid.transform, "nodata": 255, "dtype": "uint8"}
    ones = raster_factory("t1.tif", np.ones(grid.shape, "uint8"), **kw)
    zeros = raster_factory("t2.tif", np.zeros(grid.shape, "uint8"), **kw)
    batch_ha = class_areas(ones)[0]["area_ha"]
    vec_ha = vectorize(ones, tmp_path / "v.gpkg", workers=1).class_area_ha["class_1"]
    change_ha = change(ones, zeros, out=tmp_path / "c.tif", from_classes=[1]).loss_ha
    assert 9150 < change_ha < 9200
    assert batch_ha == pytest.approx(change_ha, abs=1e-4)
    assert vec_ha == pytest.approx(change_ha, rel=1e-7)

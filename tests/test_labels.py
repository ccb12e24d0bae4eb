from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import InputFileNotFoundError, LabelError
from geoseg.grid import Grid
from geoseg.labels import (
    RasterLabels,
    VectorLabels,
    class_names_from_stems,
    load_labels,
)
from tests.data.labels import pixel_box, write_vector

UTM = Grid("EPSG:32633", Affine(10, 0, 500000, 0, -10, 5000000), (48, 64))


def _grid() -> Grid:
    from rasterio.crs import CRS

    return Grid(CRS.from_epsg(32633), UTM.transform, UTM.shape)


def test_class_names_from_stems() -> None:
    assert class_names_from_stems(["cls_forest_smpls", "cls_grass_smpls", "cls_grain_smpls"]) == [
        "forest",
        "grass",
        "grain",
    ]
    assert class_names_from_stems(["T1_B02", "T1_B8A"]) == ["B02", "B8A"]
    assert class_names_from_stems(["buildings"]) == ["buildings"]


def test_one_file_per_class_ids_names_and_mask(tmp_path: Path) -> None:
    water = write_vector(tmp_path / "cls_water_smpls.gpkg", [pixel_box(2, 2, 10, 8)])
    forest = write_vector(tmp_path / "cls_forest_smpls.geojson", [pixel_box(20, 10, 30, 40)])
    src = load_labels([water, forest])
    assert isinstance(src, VectorLabels)
    assert src.classes.names == ["forest", "water"] and src.classes.ids == [1, 2]
    mask = src.read_mask(_grid())
    assert mask.dtype == np.uint8 and mask.shape == (48, 64)
    assert (mask[2:8, 2:10] == 2).all() and (mask[10:40, 20:30] == 1).all()
    assert np.count_nonzero(mask != IGNORE_INDEX) == 6 * 8 + 30 * 10


def test_class_column_names_with_fixed_classes_and_other_crs(tmp_path: Path) -> None:
    # Labels stored in EPSG:4326 must land on the UTM grid.
    path = write_vector(
        tmp_path / "labels.shp",
        [pixel_box(4.3, 4.3, 20.2, 20.7), pixel_box(30, 5, 50, 30)],
        to_crs="EPSG:4326",
        kind=["urban", "Water"],
    )
    fixed = ClassMap.from_records([{"id": 7, "name": "water"}, {"id": 3, "name": "forest"}])
    src = load_labels([path], class_column="kind", classes=fixed)
    assert src.classes.by_name("water").id == 7 and src.classes.by_name("forest").id == 3
    urban = src.classes.by_name("urban").id
    assert urban == 8  # appended after the fixed ids
    mask = src.read_mask(_grid())
    # Pixel centres inside the boxes (reprojection moves edges by far less than a pixel here).
    assert (mask[5:20, 5:20] == urban).all() and (mask[5:30, 30:50] == 7).all()
    assert mask[0:4, :].max() == IGNORE_INDEX and (mask[:, 55:] == IGNORE_INDEX).all()
    assert np.count_nonzero(mask == 7) == 25 * 20


def test_integer_codes_and_bad_codes(tmp_path: Path) -> None:
    ok = write_vector(tmp_path / "a.gpkg", [pixel_box(0, 0, 5, 5)], code=[12])
    src = load_labels([ok], class_column="code")
    assert src.classes.ids == [12] and src.read_mask(_grid())[0, 0] == 12
    bad = write_vector(tmp_path / "b.gpkg", [pixel_box(0, 0, 5, 5)], code=[300])
    with pytest.raises(LabelError, match=r"0\.\.254"):
        load_labels([bad], class_column="code")


def test_mask_equals_direct_rasterization_on_any_window(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    boxes = [pixel_box(a, c, b, d) for a, b, c, d in (rng.uniform(0, 60, 4) for _ in range(12))]
    names = [str(n) for n in rng.choice(["a", "b", "c"], 12)]
    path = write_vector(tmp_path / "l.gpkg", boxes, cls=names)
    src = load_labels([path], class_column="cls")
    lut = {c.name: c.id for c in src.classes}
    full = rasterize(
        [(g, lut[n]) for g, n in zip(boxes, names, strict=True) if not g.is_empty],
        out_shape=(48, 64),
        transform=UTM.transform,
        fill=255,
        dtype="uint8",
    )
    g = _grid()
    for win in (Window(0, 0, 64, 48), Window(7, 3, 20, 30), Window(40, 20, 24, 28)):
        part = src.read_mask(g.window_grid(win))
        np.testing.assert_array_equal(part, full[win.toslices()])


def test_errors(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    path = write_vector(tmp_path / "l.gpkg", [pixel_box(0, 0, 5, 5)], fclass=["x"], code=[1])
    with pytest.raises(LabelError, match="available columns: fclass, code"):
        load_labels([path], class_column="landcover")
    empty = write_vector(tmp_path / "empty.gpkg", [], fclass=[])
    with pytest.raises(LabelError, match="no features"):
        load_labels([empty])
    with pytest.raises(InputFileNotFoundError, match=r"missing\.gpkg"):
        load_labels([tmp_path / "missing.gpkg"])
    far = write_vector(tmp_path / "far.gpkg", [pixel_box(0, 0, 5, 5, res=1e4)])
    far_src = load_labels([far])
    far_src.require_overlap(_grid())  # overlaps at the origin corner
    outside = load_labels([write_vector(tmp_path / "out.gpkg", [pixel_box(500, 500, 510, 510)])])
    with pytest.raises(LabelError, match="entirely outside"):
        outside.require_overlap(_grid(), scene="scene.tif")
    tif = raster_factory("cls.tif", np.full((1, 48, 64), 300, dtype="uint16"))
    with pytest.raises(LabelError, match=r"0\.\.254"):
        load_labels([tif])
    with pytest.raises(LabelError, match="mixes"):
        load_labels([tif, path])


def test_raster_labels_same_grid_nodata_and_beyond(raster_factory: Callable[..., Path]) -> None:
    data = np.random.default_rng(0).integers(0, 5, size=(1, 48, 64)).astype("uint8")
    tif = raster_factory("lc.tif", data, nodata=0)
    src = load_labels(tif)
    assert isinstance(src, RasterLabels) and src.classes.ids == [1, 2, 3, 4]
    g = _grid()
    win = Window(50, 40, 20, 10)  # runs past the right and bottom edges
    mask = src.read_mask(g.window_grid(win))
    inside = data[0, 40:48, 50:64]
    expect = np.where(inside == 0, 255, inside)
    np.testing.assert_array_equal(mask[:8, :14], expect)
    assert (mask[8:, :] == 255).all() and (mask[:, 14:] == 255).all()
    fixed = ClassMap.from_ids([1, 2, 3])
    with pytest.raises(LabelError, match=r"\[4\]"):
        load_labels(tif, classes=fixed)


def test_raster_labels_take_the_rasters_class_names_and_colours(tmp_path: Path) -> None:
    # A geoseg class COG (CLASS_IDS/CLASS_NAMES + colour table) as labels: its names and
    # colours, only the classes with pixels; a plain raster: CLASS_<id> tags and its colours.
    from geoseg.io.cog import CogWriter

    classes = ClassMap.from_records(
        [
            {"id": 1, "name": "forest", "color": [0, 100, 0]},
            {"id": 2, "name": "grass", "color": [120, 200, 60]},
            {"id": 4, "name": "water", "color": [0, 0, 255]},
        ]
    )
    g = _grid()
    data = np.where(np.arange(64)[None, :] < 32, 1, 4).repeat(48, axis=0).astype("uint8")
    data[0, 0] = 7  # a value the class map lacks
    cog = tmp_path / "lc.tif"
    with CogWriter(cog, grid=g, dtype="uint8", nodata=255, classes=classes) as w:
        w.write(data, g.full_window)
    got = load_labels(cog).classes
    assert got.ids == [1, 4, 7] and got.names == ["forest", "water", "class_7"]
    assert got.by_id(4).color == (0, 0, 255)
    plain = tmp_path / "plain.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 48, "count": 1, "dtype": "uint8"}
    with rasterio.open(plain, "w", **profile, crs=g.crs, transform=g.transform, nodata=0) as ds:
        ds.write(data, 1)
        ds.update_tags(1, CLASS_1="forest", CLASS_4="water")
        ds.write_colormap(1, {1: (1, 2, 3, 255), 4: (4, 5, 6, 255)})
    got = load_labels(plain).classes
    assert got.names == ["forest", "water", "class_7"] and got.by_id(1).color == (1, 2, 3)


def test_raster_labels_in_another_crs(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    # A blocky class map in UTM, warped to EPSG:4326 (nearest), read back onto the UTM grid.
    data = np.kron(np.arange(1, 13, dtype="uint8").reshape(3, 4), np.ones((16, 16), "uint8"))
    g = _grid()
    transform, w, h = calculate_default_transform(g.crs, "EPSG:4326", 64, 48, *g.bounds)
    warped = np.zeros((h, w), "uint8")
    reproject(
        data,
        warped,
        src_transform=g.transform,
        src_crs=g.crs,
        dst_transform=transform,
        dst_crs="EPSG:4326",
        resampling=Resampling.nearest,
        dst_nodata=0,
    )
    path = tmp_path / "lc4326.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=transform,
        nodata=0,
    ) as dst:
        dst.write(warped, 1)
    mask = load_labels(path).read_mask(g)
    agree = np.mean(mask == data)
    assert agree > 0.9, agree
    # Block interiors (2 px from any edge) are exact.
    for r in range(3):
        for c in range(4):
            inner = mask[r * 16 + 2 : r * 16 + 14, c * 16 + 2 : c * 16 + 14]
            assert (inner == r * 4 + c + 1).all()


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
def test_geoparquet(tmp_path: Path) -> None:
    path = write_vector(tmp_path / "l.parquet", [pixel_box(0, 0, 4, 4)], fclass=["water"])
    src = load_labels([path], class_column="fclass")
    assert src.classes.names == ["water"] and np.count_nonzero(src.read_mask(_grid()) == 1) == 16


def test_real_aber_vectors_and_raster(shared_data: Path) -> None:
    aber = shared_data / "aber-s2"
    src = load_labels(sorted((aber / "vectors").glob("cls_*_smpls.gpkg")))
    assert src.classes.names == ["forest", "grass", "urban", "water"]
    with rasterio.open(aber / "s2_10band.tif") as ds:
        grid = Grid.from_dataset(ds)
    mask = src.read_mask(grid)
    assert set(np.unique(mask)) == {1, 2, 3, 4, 255}
    lc = load_labels(aber / "landcover.tif")
    with rasterio.open(aber / "landcover.tif") as ds:
        raw = ds.read(1)
    np.testing.assert_array_equal(lc.read_mask(grid), np.where(raw == 0, 255, raw))
    # Hand-drawn water polygons agree mostly with the classifier's water.
    water = mask == 4
    assert np.mean(raw[water] == 4) > 0.9


def test_features_without_a_class_are_counted(tmp_path: Path) -> None:
    """Polygons with a null class are not labels, and the log says how many were left out."""
    import logging

    path = write_vector(
        tmp_path / "labels.gpkg",
        [pixel_box(0, 0, 10, 10), pixel_box(20, 0, 30, 10), pixel_box(40, 0, 50, 10)],
        kind=["water", None, "forest"],
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("geoseg.labels")
    level = logger.level  # a CLI test run earlier (-q) may have raised geoseg's level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        src = load_labels([path], class_column="kind")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [c.name for c in src.classes] == ["forest", "water"]
    msgs = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert any("1 of 3 feature(s) have no class in 'kind'" in m for m in msgs), msgs

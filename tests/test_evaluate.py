from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

from geoseg.errors import EmptyResultError, OutputExistsError
from geoseg.evaluate import area_adjusted_accuracy, evaluate, report_paths


def test_olofsson_2014_worked_example() -> None:
    # Olofsson et al. 2014 (RSE 148), Table 8: rows = map, cols = reference; 30 m pixels.
    n = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
    mapped_ha = np.array([200_000, 150_000, 3_200_000, 6_450_000]) * 0.09
    r = area_adjusted_accuracy(n, mapped_ha, names=["def", "gain", "sf", "snf"])
    d = r["per_class"]["def"]
    assert d["area"] == pytest.approx(21_158, abs=1) and d["area_ci"] == pytest.approx(6_158, abs=1)
    assert d["users_accuracy"] == pytest.approx(0.88) and d["users_accuracy_ci"] == pytest.approx(
        0.074, abs=5e-4
    )
    assert d["producers_accuracy"] == pytest.approx(0.75, abs=5e-3)
    assert d["producers_accuracy_ci"] == pytest.approx(0.21, abs=5e-3)
    g = r["per_class"]["gain"]
    assert g["area"] == pytest.approx(11_686, abs=1) and g["area_ci"] == pytest.approx(3_756, abs=1)
    assert r["overall_accuracy"] == pytest.approx(0.947, abs=5e-4)
    assert r["overall_accuracy_ci"] == pytest.approx(0.018, abs=5e-4)
    assert sum(c["area"] for c in r["per_class"].values()) == pytest.approx(mapped_ha.sum())


def test_small_case_by_hand(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    # 10 px: ref/pred of classes 1 and 2, one px ignored (ref nodata), one px pred nodata.
    ref = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 0, 1]], dtype="uint8")
    pred = np.array([[1, 1, 1, 2, 2, 2, 2, 1, 1, 0]], dtype="uint8")
    p = raster_factory("pred.tif", pred, nodata=0)
    r_ = raster_factory("ref.tif", ref, nodata=0)
    rep = evaluate(p, reference=r_, out=tmp_path / "rep")
    # compared: 8 px; cm rows=ref [[3,1],[1,3]]
    assert rep.confusion.tolist() == [[3, 1], [1, 3]] and rep.pixels_compared == 8
    assert rep.pixel_accuracy == pytest.approx(0.75)
    assert rep.scores["per_class"]["class_1"]["iou"] == pytest.approx(3 / 5)
    assert rep.miou == pytest.approx(0.6)
    assert rep.kappa == pytest.approx((0.75 - 0.5) / 0.5)
    # mapped area: pred class 1 on 5 px (incl. the ref-nodata px), class 2 on 4 px, 100 m² px
    aa = rep.area_adjusted
    assert aa["per_class"]["class_1"]["mapped_area"] == pytest.approx(0.05, rel=2e-3)
    w1, w2 = 5 / 9, 4 / 9
    assert aa["overall_accuracy"] == pytest.approx(w1 * 3 / 4 + w2 * 3 / 4)
    assert aa["per_class"]["class_1"]["area_proportion"] == pytest.approx(w1 * 3 / 4 + w2 * 1 / 4)
    paths = report_paths(tmp_path / "rep")
    assert all(p_.exists() for p_ in paths.values())
    d = json.loads(paths["json"].read_text())
    assert d["confusion_matrix"]["counts"] == [[3, 1], [1, 3]]
    assert "| class_1 |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OutputExistsError):
        evaluate(p, reference=r_, out=tmp_path / "rep.json")


def test_report_paths(tmp_path: Path) -> None:
    assert report_paths(tmp_path / "a.json")["md"] == tmp_path / "a.md"
    assert report_paths(tmp_path)["png"] == tmp_path / "evaluation.png"


def test_polygon_and_point_references(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    import geopandas as gpd
    from shapely.geometry import Point, box

    pred = np.ones((48, 64), "uint8")
    pred[:, 32:] = 2
    p = raster_factory("pred.tif", pred, nodata=0)
    x0, y0 = 500000.0, 5000000.0
    polys = gpd.GeoDataFrame(
        {"cls": [1, 2]},
        geometry=[box(x0, y0 - 100, x0 + 100, y0), box(x0 + 330, y0 - 100, x0 + 430, y0)],
        crs="EPSG:32633",
    )
    polys.to_file(tmp_path / "ref.gpkg")
    rep = evaluate(p, reference=tmp_path / "ref.gpkg", class_column="cls", out=tmp_path / "poly")
    assert rep.confusion.tolist() == [[100, 0], [0, 100]]
    pts = gpd.GeoDataFrame(
        {"cls": [1, 1, 2]},
        geometry=[Point(x0 + 5, y0 - 5), Point(x0 + 335, y0 - 5), Point(x0 + 405, y0 - 55)],
        crs="EPSG:32633",
    ).to_crs("EPSG:4326")
    pts.to_file(tmp_path / "pts.gpkg")
    rep = evaluate(p, reference=tmp_path / "pts.gpkg", class_column="cls", out=tmp_path / "pts")
    assert rep.confusion.tolist() == [[1, 1], [0, 1]]


def test_no_common_pixels(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    pred = np.ones((8, 8), "uint8")
    pred[:, :4] = 0
    p = raster_factory("pred.tif", pred, nodata=0)
    r_ = raster_factory("ref.tif", np.where(pred == 0, 1, 0).astype("uint8"), nodata=0)
    with pytest.raises(EmptyResultError):
        evaluate(p, reference=r_, out=tmp_path / "rep")


def _reprojected(src_path: Path, dst_path: Path, *, flip: float, seed: int) -> None:
    with rasterio.open(src_path) as src:
        t, w, h = calculate_default_transform(
            src.crs, "EPSG:32630", src.width, src.height, *src.bounds, resolution=10
        )
        arr = np.zeros((h, w), "uint16")
        reproject(
            rasterio.band(src, 1),
            arr,
            dst_transform=t,
            dst_crs="EPSG:32630",
            resampling=Resampling.nearest,
            src_nodata=0,
            dst_nodata=0,
        )
    rng = np.random.default_rng(seed)
    hit = (rng.random(arr.shape) < flip) & (arr > 0)
    arr[hit] = rng.integers(1, 5, size=int(hit.sum()))
    with rasterio.open(
        dst_path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="uint16",
        crs="EPSG:32630",
        transform=t,
        nodata=0,
    ) as dst:
        dst.write(arr, 1)


def test_landcover_against_perturbed_reprojected_copy(shared_data: Path, tmp_path: Path) -> None:
    lc = shared_data / "aber-s2" / "landcover.tif"
    _reprojected(lc, tmp_path / "ref.tif", flip=0.1, seed=0)
    rep = evaluate(lc, reference=tmp_path / "ref.tif", out=tmp_path / "rep")
    assert rep.class_ids == [1, 2, 3, 4]
    # ~10 % of reference pixels redrawn uniformly over 4 classes -> ~7.5 % disagreement
    assert 0.90 < rep.pixel_accuracy < 0.95 and 0.8 < rep.kappa < 0.95
    assert rep.pixels_compared > 800_000


def test_real_prediction_against_landcover(
    shared_data: Path, aber_training: dict[str, Any], tmp_path: Path
) -> None:
    """train -> predict -> evaluate on aber-s2: the report agrees with a direct comparison."""
    from geoseg.predict import predict

    aber = shared_data / "aber-s2"
    pred = tmp_path / "pred.tif"
    predict(aber / "s2_10band.tif", out=pred, model=aber_training["bundle"])
    rep = evaluate(pred, reference=aber / "landcover.tif", out=tmp_path / "r")
    with rasterio.open(pred) as p, rasterio.open(aber / "landcover.tif") as r:
        a, b = p.read(1), r.read(1)
    both = (a != 255) & (b != 0)
    assert rep.pixels_compared == int(both.sum())
    assert rep.pixel_accuracy == pytest.approx(float((a[both] == b[both]).mean()), abs=1e-9)
    assert rep.pixel_accuracy > 0.7  # a 40-step U-Net: well above the 0.25 of chance


def test_one_class_says_its_scores_mean_nothing(
    tmp_path: Path, raster_factory: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    """One class in prediction and reference: mIoU 1.000 is reported with a warning."""
    ones = np.ones((8, 8), "uint8")
    p = raster_factory("pred.tif", ones, nodata=0)
    r_ = raster_factory("ref.tif", ones.copy(), nodata=0)
    import logging

    with caplog.at_level(logging.WARNING, logger="geoseg"):
        rep = evaluate(p, reference=r_, out=tmp_path / "rep")
    assert rep.miou == 1.0
    assert rep.one_class_note and "only one class" in rep.one_class_note
    assert "only one class" in rep.summary()
    assert json.loads((tmp_path / "rep.json").read_text())["warning"] == rep.one_class_note
    two = ones.copy()
    two[:4] = 2
    rep2 = evaluate(raster_factory("p2.tif", two, nodata=0), reference=r_, out=tmp_path / "r2")
    assert rep2.one_class_note is None


def test_reference_points_outside_are_counted(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    """Issue 19 item 7: reference points outside the prediction are said, not silently lost."""
    import logging

    import geopandas as gpd
    from shapely.geometry import Point

    p = raster_factory("pred.tif", np.ones((48, 64), "uint8"), nodata=0)
    x0, y0 = 500000.0, 5000000.0
    inside = [Point(x0 + 5 + 10 * i, y0 - 5) for i in range(3)]
    outside = [Point(x0 + 5000, y0 + 5000), Point(x0 - 900, y0 - 50)]
    gpd.GeoDataFrame({"cls": [1] * 5}, geometry=inside + outside, crs="EPSG:32633").to_file(
        tmp_path / "pts.gpkg"
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("geoseg.evaluate")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        rep = evaluate(p, reference=tmp_path / "pts.gpkg", class_column="cls", out=tmp_path / "e")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert rep.pixels_compared == 3
    msgs = [r.getMessage() for r in records]
    assert any("2 of 5 reference feature(s) lie outside" in m for m in msgs), msgs

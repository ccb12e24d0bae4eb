from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.change import change, change_codes, date_of
from geoseg.errors import ClassMapError, EmptyResultError, GridError, OutputExistsError

AOI = Path(__file__).resolve().parents[1] / "aoi" / "guadeloupe.geojson"


def test_change_codes_rule() -> None:
    before = np.array([[1, 1, 0, 0, 2, 1]])
    after = np.array([[1, 0, 1, 0, 1, 2]])
    valid = np.array([[True, True, True, True, True, False]])
    assert change_codes(before, after, valid, from_classes=[1]).tolist() == [[0, 1, 2, 0, 2, 255]]
    # with --to: loss only from 1 into 2, gain only from 2 into 1
    got = change_codes(before, after, valid, from_classes=[1], to_classes=[2])
    assert got.tolist() == [[0, 0, 0, 0, 2, 255]]


def test_date_of_tags_names_and_stems() -> None:
    assert date_of("a.tif", {"TIFFTAG_DATETIME": "2021:05:27 10:00:00"}) == "2021-05-27"
    assert date_of("s2_20210527_pred.tif") == "2021-05-27"
    assert date_of("forest_2015.tif") == "2015"
    assert date_of("forest_t1.tif") == "forest_t1"


def test_change_on_other_grid_with_nodata(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    before = np.ones((40, 40), "uint8")
    before[:, 20:] = 0
    before[0, 0] = 255
    after = before.copy()
    after[10:20, 0:10] = 0  # 100 px loss
    after[30:35, 25:30] = 1  # 25 px gain
    b = raster_factory("f_2019.tif", before, nodata=255)
    # AFTER: the same data at half the pixel size (80x80), same CRS
    a = raster_factory(
        "f_2021.tif",
        after.repeat(2, 0).repeat(2, 1),
        nodata=255,
        transform=Affine(5.0, 0, 500000.0, 0, -5.0, 5000000.0),
    )
    r = change(b, a, out=tmp_path / "chg.tif", from_classes=[1])
    assert (r.loss_pixels, r.gain_pixels, r.nodata_pixels) == (100, 25, 1)
    assert r.loss_ha == pytest.approx(1.0, rel=5e-3) and r.gain_ha == pytest.approx(0.25, rel=5e-3)
    assert (r.date_before, r.date_after) == ("2019", "2021")
    with rasterio.open(tmp_path / "chg.tif") as ds:
        out = ds.read(1)
        assert ds.nodata == 255 and ds.tags()["DATE_AFTER"] == "2021"
        assert ds.colormap(1)[1][:3] == (215, 25, 28)
    assert (out[10:20, 0:10] == 1).all() and out[0, 0] == 255
    assert (tmp_path / "chg.qml").exists()
    with pytest.raises(OutputExistsError):
        change(b, a, out=tmp_path / "chg.tif", from_classes=[1])
    d = r.to_dict()
    assert d["loss_pixels"] == 100 and d["from_classes"] == [1]


def test_change_errors(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    b = raster_factory("b.tif", np.ones((10, 10), "uint8"))
    far = raster_factory(
        "far.tif", np.ones((10, 10), "uint8"), transform=Affine(10, 0, 0, 0, -10, 100)
    )
    with pytest.raises(GridError, match="does not overlap"):
        change(b, far, out=tmp_path / "x.tif", from_classes=[1])
    with pytest.raises(ClassMapError, match="class names"):
        change(b, b, out=tmp_path / "x.tif", from_classes=["forest"])
    with pytest.raises(ClassMapError, match="disjoint"):
        change(b, b, out=tmp_path / "x.tif", from_classes=[1], to_classes=[1])
    assert not (tmp_path / "x.tif").exists()


def test_aoi_outside_is_clear_error(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    b = raster_factory("b.tif", np.ones((10, 10), "uint8"))
    with pytest.raises(EmptyResultError, match="overlaps"):
        change(b, b, out=tmp_path / "x.tif", from_classes=[1], aoi=AOI)


def _fcc_check(shared_data: Path, tmp_path: Path, t0: str, t1: str, code: int) -> None:
    d = shared_data / "forest-guadeloupe"
    r = change(
        d / f"{t0}.tif", d / f"{t1}.tif", out=tmp_path / "loss.tif", from_classes=[1], aoi=AOI
    )
    with rasterio.open(tmp_path / "loss.tif") as ds, rasterio.open(d / "fcc123.tif") as ref:
        got, fcc = ds.read(1), ref.read(1)
    expected = fcc == code
    assert r.loss_pixels == int(expected.sum()) > 0
    assert np.array_equal(got == 1, expected)  # same count and same locations
    assert r.gain_pixels == 0
    # areas are ellipsoidal: ~8 % under the nominal 900 m² World Mercator pixels
    assert 0.9 * r.loss_pixels * 0.09 < r.loss_ha < 0.94 * r.loss_pixels * 0.09
    rows = list(csv.DictReader((tmp_path / "loss.csv").open()))
    assert [row["name"] for row in rows] == ["Basse-Terre", "Grande-Terre", "Marie-Galante"]
    in_aoi = sum(float(row["loss_ha"]) for row in rows)
    assert 0.95 * r.loss_ha < in_aoi <= r.loss_ha + 1e-6  # the boxes miss a few islets


def test_guadeloupe_period1_matches_fcc123(shared_data: Path, tmp_path: Path) -> None:
    _fcc_check(shared_data, tmp_path, "forest_t1", "forest_t2", 1)


def test_guadeloupe_period2_matches_fcc123(shared_data: Path, tmp_path: Path) -> None:
    _fcc_check(shared_data, tmp_path, "forest_t2", "forest_t3", 2)


def test_min_area_and_vector(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    import geopandas as gpd

    before = np.ones((40, 40), "uint8")
    after = before.copy()
    after[10:20, 0:10] = 0  # 100 px = 1 ha loss: kept
    after[30, 30] = 0  # 1 px loss: sieved by --min-area 0.05ha (5 px)
    b = raster_factory("b.tif", before, nodata=255)
    a = raster_factory("a.tif", after, nodata=255)
    r = change(
        b,
        a,
        out=tmp_path / "chg.tif",
        from_classes=[1],
        min_area="0.05ha",
        vector=tmp_path / "chg.gpkg",
        before_date="2019",
        after_date="2021",
    )
    assert r.loss_pixels == 100
    gdf = gpd.read_file(tmp_path / "chg.gpkg")
    assert len(gdf) == 1 and gdf["change"].tolist() == ["loss"]
    assert gdf["area_ha"].iloc[0] == pytest.approx(1.0, rel=5e-3)
    assert (gdf["date_before"].iloc[0], gdf["date_after"].iloc[0]) == ("2019", "2021")


def test_vector_keeps_its_qgis_style(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    """`change --vector` stores the loss/gain style in the GeoPackage (it used to be dropped)."""
    import geopandas as gpd

    from geoseg.io.vector import read_style

    before = np.ones((20, 20), "uint8")
    after = before.copy()
    after[:5, :5] = 0
    before[15:, 15:] = 0
    out = tmp_path / "chg.gpkg"
    change(
        raster_factory("b.tif", before, nodata=255),
        raster_factory("a.tif", after, nodata=255),
        out=tmp_path / "chg.tif",
        from_classes=[1],
        vector=out,
    )
    gdf = gpd.read_file(out, layer="chg")
    assert sorted(gdf["change"]) == ["gain", "loss"]
    qml = read_style(out, "chg")
    assert qml is not None and "<qgis" in qml
    assert 'value="loss"' in qml and 'value="gain"' in qml and 'value="stable"' not in qml


# ---- cloud masks ----------------------------------------------------------------------------
def test_cloud_in_after_date_is_never_loss(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    before = np.ones((40, 40), "uint8")
    after = before.copy()
    after[0:10, 0:10] = 0  # real clearing: 100 px loss
    after[20:30, 20:30] = 0  # a cloud misread as non-forest
    b = raster_factory("forest_2019.tif", before, nodata=255)
    a = raster_factory("forest_2021.tif", after, nodata=255)
    # the mask of the after date at 20 m (a csmask COG: 0 clear, 1 cloud, 2 shadow, 255 nodata)
    mask = np.zeros((20, 20), "uint8")
    mask[10:15, 10:15] = 1  # cloud over [20:30, 20:30]
    mask[15:18, 0:5] = 2  # shadow over stable forest [30:36, 0:10]
    mask[19, 19] = 255  # mask nodata over [38:40, 38:40]: not observed either
    m = raster_factory(
        "mask_2021.tif", mask, nodata=255, transform=Affine(20.0, 0, 500000.0, 0, -20.0, 5e6)
    )
    plain = change(b, a, out=tmp_path / "plain.tif", from_classes=[1])
    assert plain.loss_pixels == 200 and plain.unobserved_pixels == 0
    r = change(b, a, out=tmp_path / "masked.tif", from_classes=[1], after_mask=m)
    assert r.loss_pixels == 100
    assert r.unobserved_pixels == 100 + 60 + 4 == r.nodata_pixels
    assert r.unobserved_ha == pytest.approx(1.64, rel=5e-3)
    assert r.loss_ha == pytest.approx(plain.loss_ha - 1.0, rel=5e-3)
    with rasterio.open(tmp_path / "masked.tif") as ds:
        out = ds.read(1)
        assert ds.tags()["AFTER_MASK"] == "mask_2021.tif" and "BEFORE_MASK" not in ds.tags()
    assert (out[20:30, 20:30] == 255).all() and (out[30:36, 0:10] == 255).all()
    assert (out[0:10, 0:10] == 1).all()
    assert "Not observed (cloud masks): 1.64 ha (164 px)" in r.summary()
    assert r.to_dict()["after_mask"] == str(m)


def test_masks_only_remove_pixels_property(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(7)
    before = rng.integers(0, 3, (50, 60)).astype("uint8")
    after = rng.integers(0, 3, (50, 60)).astype("uint8")
    mb = (rng.random((50, 60)) < 0.2).astype("uint8") * rng.integers(1, 3, (50, 60)).astype("uint8")
    ma = (rng.random((50, 60)) < 0.3).astype("uint8")
    paths = {
        k: raster_factory(f"{k}.tif", v, nodata=255)
        for k, v in {"b": before, "a": after, "mb": mb, "ma": ma}.items()
    }
    change(paths["b"], paths["a"], out=tmp_path / "p.tif", from_classes=[1])
    r = change(
        paths["b"],
        paths["a"],
        out=tmp_path / "m.tif",
        from_classes=[1],
        before_mask=paths["mb"],
        after_mask=paths["ma"],
    )
    with rasterio.open(tmp_path / "p.tif") as p, rasterio.open(tmp_path / "m.tif") as m:
        plain, masked = p.read(1), m.read(1)
    cloudy = (mb != 0) | (ma != 0)
    assert (masked[cloudy] == 255).all()
    assert np.array_equal(masked[~cloudy], plain[~cloudy])
    assert r.unobserved_pixels == int(cloudy.sum())
    assert r.loss_pixels == int(((plain == 1) & ~cloudy).sum())


def test_mask_values_select_what_is_not_observed(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    before = np.ones((20, 20), "uint8")
    after = np.zeros((20, 20), "uint8")  # everything lost
    fmask = np.zeros((20, 20), "uint8")
    fmask[:5] = 1  # water: observed
    fmask[5:10] = 4  # cloud
    fmask[10:12] = 2  # shadow
    b = raster_factory("b.tif", before, nodata=255)
    a = raster_factory("a.tif", after, nodata=255)
    m = raster_factory("fmask.tif", fmask)
    r = change(b, a, out=tmp_path / "c.tif", from_classes=[1], after_mask=m, mask_values=[2, 4])
    assert (r.loss_pixels, r.unobserved_pixels) == (400 - 140, 140)
    r = change(
        b, a, out=tmp_path / "c.tif", from_classes=[1], before_mask=m, overwrite=True
    )  # default: every nonzero value is not observed
    assert (r.loss_pixels, r.unobserved_pixels) == (400 - 240, 240)
    with pytest.raises(GridError, match="does not overlap"):
        far = raster_factory("far.tif", fmask, transform=Affine(10, 0, 0, 0, -10, 100))
        change(b, a, out=tmp_path / "x.tif", from_classes=[1], after_mask=far)
    assert not (tmp_path / "x.tif").exists()

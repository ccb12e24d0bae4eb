"""The model contract: band matching (names, common names), reflectance scaling, the chip transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.bundle import Normalization
from geoseg.classes import ClassMap
from geoseg.errors import BandMismatchError
from geoseg.runtime.contract import (
    REFLECTANCE_PRESETS,
    ModelContract,
    check_scene,
    fits_bands,
    resolve_bands,
    resolve_scaling,
)
from tests.data.rasters import write_raster

SIX = ("blue", "green", "red", "nir", "swir16", "swir22")


def reflectance_contract(**kw: object) -> ModelContract:
    return ModelContract(
        name="clouds",
        source="csmask",
        bands=SIX,
        common_names=SIX,
        classes=ClassMap.from_names(["clear", "cloud"], start=0),
        normalization=Normalization("meanstd", (0.2,) * 6, (0.1,) * 6),
        input="reflectance",
        resolution=(30.0, 30.0),
        **kw,  # type: ignore[arg-type]
    )


def raw_contract() -> ModelContract:
    return ModelContract(
        name="lc.pt",
        source="bundle",
        bands=("B2", "B3"),
        classes=ClassMap.from_names(["a", "b"]),
        normalization=Normalization("meanstd", (100.0, 100.0), (10.0, 10.0)),
        dtype="uint16",
    )


# ---- bands --------------------------------------------------------------------------------------
def test_sentinel2_names_match_common_names_in_model_order() -> None:
    desc = ["B01", "B02", "B03", "B04", "B05", "B08", "B8A", "B11", "B12"]
    idx = resolve_bands(descriptions=desc, model_bands=SIX, common_names=SIX)
    assert idx == (2, 3, 4, 6, 8, 9)  # B02 B03 B04 B08 B11 B12


def test_unpadded_sentinel2_names_match_when_the_scene_is_recognisably_sentinel2() -> None:
    desc = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]  # aber-s2
    assert resolve_bands(descriptions=desc, model_bands=SIX, common_names=SIX) == (
        1,
        2,
        3,
        7,
        9,
        10,
    )


def test_bare_landsat_names_are_never_guessed() -> None:
    """B2 is green in Landsat 5/7 and blue in Landsat 8: without a Sentinel-2 sign, no guess."""
    desc = ["B1", "B2", "B3", "B4", "B5", "B7", "B6"]
    with pytest.raises(BandMismatchError, match=r"has 7 band\(s\).*expects 6"):
        resolve_bands(descriptions=desc, model_bands=SIX, common_names=SIX)
    assert not fits_bands(reflectance_contract(), desc)


def test_common_names_as_descriptions_and_positions() -> None:
    desc = ["nir", "red", "green", "blue", "swir22", "swir16"]
    assert resolve_bands(descriptions=desc, model_bands=SIX, common_names=SIX) == (4, 3, 2, 1, 6, 5)
    assert resolve_bands(descriptions=[None] * 6, model_bands=SIX, common_names=SIX) == (
        1,
        2,
        3,
        4,
        5,
        6,
    )


# ---- reflectance --------------------------------------------------------------------------------
def _scene(path: Path, *, dtype: str = "uint16", scales: tuple[float, ...] | None = None) -> Path:
    p = write_raster(
        path,
        count=6,
        dtype=dtype,
        transform=Affine(30.0, 0, 500000.0, 0, -30.0, 5000000.0),
        descriptions=["B02", "B03", "B04", "B08", "B11", "B12"],
    )
    if scales is not None:
        with rasterio.open(p, "r+") as ds:
            ds.scales = scales
            ds.offsets = (-0.1,) * 6
    return p


def test_presets_and_explicit_scaling(tmp_path: Path) -> None:
    c = reflectance_contract()
    with rasterio.open(_scene(tmp_path / "s.tif")) as ds:
        idx = tuple(range(1, 7))
        assert resolve_scaling(ds, idx, c, reflectance="s2") == ((1e-4,) * 6, (-0.1,) * 6)
        assert resolve_scaling(ds, idx, c, reflectance="S2-pre04") == ((1e-4,) * 6, (0.0,) * 6)
        assert resolve_scaling(ds, idx, c, scale=2e-5, offset=-0.1) == ((2e-5,) * 6, (-0.1,) * 6)
        assert resolve_scaling(ds, idx, c, scale=[1e-4] * 6) == ((1e-4,) * 6, (0.0,) * 6)
        with pytest.raises(BandMismatchError, match=r"--scale gives 2 values for 6 model band"):
            resolve_scaling(ds, idx, c, scale=[1.0, 2.0])
        with pytest.raises(
            BandMismatchError, match=r"--reflectance 'sentinel' is unknown; use one of s2"
        ):
            resolve_scaling(ds, idx, c, reflectance="sentinel")
        with pytest.raises(BandMismatchError, match=r"not both"):
            resolve_scaling(ds, idx, c, reflectance="s2", scale=1.0)
        with pytest.raises(BandMismatchError, match=r"uint16 without a scale/offset"):
            resolve_scaling(ds, idx, c)
    assert set(REFLECTANCE_PRESETS) >= {"s2", "s2-pre04", "landsat-c2-l2", "none"}


def test_scaling_from_gdal_band_metadata(tmp_path: Path) -> None:
    with rasterio.open(_scene(tmp_path / "s.tif", scales=(1e-4,) * 6)) as ds:
        got = resolve_scaling(ds, (1, 2, 3, 4, 5, 6), reflectance_contract())
    assert got == ((1e-4,) * 6, (-0.1,) * 6)


@pytest.mark.parametrize(("baseline", "offset"), [("04.00", -0.1), ("05.09", -0.1), ("02.04", 0.0)])
def test_scaling_from_the_sentinel2_processing_baseline(
    tmp_path: Path, baseline: str, offset: float
) -> None:
    p = _scene(tmp_path / "s.tif")
    with rasterio.open(p, "r+") as ds:
        ds.update_tags(PROCESSING_BASELINE=baseline)
    with rasterio.open(p) as ds:
        got = resolve_scaling(ds, (1, 2, 3, 4, 5, 6), reflectance_contract())
    assert got == ((1e-4,) * 6, (offset,) * 6)


def test_float_bands_are_taken_as_reflectance(tmp_path: Path) -> None:
    with rasterio.open(_scene(tmp_path / "s.tif", dtype="float32")) as ds:
        assert resolve_scaling(ds, (1, 2, 3, 4, 5, 6), reflectance_contract()) is None


def test_a_raw_value_model_refuses_a_scaling(tmp_path: Path) -> None:
    with rasterio.open(_scene(tmp_path / "s.tif")) as ds:
        with pytest.raises(BandMismatchError, match=r"lc.pt takes the raw band values"):
            resolve_scaling(ds, (1, 2), raw_contract(), reflectance="s2")
        assert resolve_scaling(ds, (1, 2), raw_contract()) is None


def test_check_scene_binds_scaling_and_resample(tmp_path: Path) -> None:
    with rasterio.open(_scene(tmp_path / "s.tif")) as ds:
        fit = check_scene(ds, reflectance_contract(), reflectance="s2")
    assert fit.indexes == (1, 2, 3, 4, 5, 6) and fit.resample_to is None
    assert fit.contract.reflectance_scale == (1e-4,) * 6
    ten = write_raster(tmp_path / "ten.tif", count=6, descriptions=list(SIX))
    with rasterio.open(ten) as ds:
        with pytest.raises(BandMismatchError, match=r"pixel size is 10 x 10 .* expects 30 x 30"):
            check_scene(ds, reflectance_contract(), reflectance="s2")
        fit = check_scene(ds, reflectance_contract(), reflectance="s2", resample=True)
    assert fit.resample_to == (30.0, 30.0)


# ---- the chip transform -------------------------------------------------------------------------
def test_prepare_scales_then_normalises_then_zeroes_nodata() -> None:
    c = reflectance_contract(reflectance_scale=(1e-4,) * 6, reflectance_offset=(-0.1,) * 6)
    x = np.full((1, 6, 2, 2), 4000, dtype=np.uint16)
    valid = np.array([[[True, False], [True, True]]])
    y = c.prepare(x, valid)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0, :, 0, 0], ((4000 - 1000) / 10000 - 0.2) / 0.1, rtol=1e-5)
    assert (y[0, :, 0, 1] == 0).all()
    raw = raw_contract().prepare(
        np.full((1, 2, 1, 1), 120, dtype=np.uint16), np.ones((1, 1, 1), bool)
    )
    np.testing.assert_allclose(raw, 2.0)


def test_pad_target() -> None:
    assert raw_contract().pad_target(50, 64) == (64, 64)
    assert reflectance_contract(input_size=256).pad_target(100, 256) == (256, 256)

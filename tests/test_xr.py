"""geoseg.xr: a DataArray in, the class map as a DataArray out, equal to predict on the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.bundle import ModelBundle
from geoseg.classes import ClassMap
from geoseg.errors import GridError
from geoseg.predict import predict
from geoseg.xr import predict_dataarray

BANDS = ("B2", "B3", "B4")


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return ModelBundle.random_init(
        arch="fcn",
        encoder="mobilenet_v2",
        bands=BANDS,
        classes=ClassMap.from_names(["forest", "water"]),
        seed=0,
        chip_size=32,
        overlap=8,
        dtype="uint16",
    )


def test_dataarray_round_trip_equals_predict(
    raster_factory, tmp_path: Path, bundle: ModelBundle
) -> None:
    import rioxarray

    scene = raster_factory("s.tif", count=3, descriptions=list(BANDS), nodata=0)
    da = rioxarray.open_rasterio(scene)
    got = predict_dataarray(da, model=bundle, threads=1)
    predict(scene, out=tmp_path / "ref.tif", model=bundle, threads=1)
    with rasterio.open(tmp_path / "ref.tif") as ref:
        want = ref.read(1)
        assert got.rio.crs == ref.crs and got.rio.transform() == ref.transform
    assert got.dims == ("y", "x") and got.name == "classes"
    np.testing.assert_array_equal(got.values, want)
    assert got.attrs["CLASS_NAMES"] == "forest,water"
    np.testing.assert_array_equal(got["x"].values, da["x"].values)
    # bands by name: a DataArray whose band coordinate holds the names works the same
    named = da.assign_coords(band=list(BANDS))
    np.testing.assert_array_equal(predict_dataarray(named, model=bundle).values, want)


def test_dataarray_without_crs_is_a_clear_error(bundle: ModelBundle) -> None:
    import xarray as xr

    da = xr.DataArray(np.zeros((3, 8, 8), "uint16"), dims=("band", "y", "x"))
    with pytest.raises(GridError, match="write_crs"):
        predict_dataarray(da, model=bundle)

"""Predict on awkward real-world inputs (issue 19): partial-band pixels, outputs, band folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from geoseg.predict import predict
from tests.data.rasters import write_raster
from tests.test_predict import BANDS, smooth_scene, tiny_bundle


def _partial_scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 4-band scene whose last band covers only the left 100 of 170 columns."""
    data = smooth_scene(90, 170)
    data[3, :, 100:] = 0  # the last band (e.g. SWIR2) is missing on the right
    data[:, :5, :] = 0  # all bands missing in the top rows
    path = write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=list(BANDS))
    return path, data


def test_partial_band_pixels_are_nodata_and_counted(tmp_path: Path) -> None:
    scene, data = _partial_scene(tmp_path)
    report = predict(scene, out=tmp_path / "out.tif", model=tiny_bundle())
    with rasterio.open(tmp_path / "out.tif") as ds:
        cls = ds.read(1)
    all_valid = (data != 0).all(axis=0)
    some_valid = (data != 0).any(axis=0)
    assert ((cls != 255) == all_valid).all()  # classified exactly where every band has data
    assert report.partial_pixels == int((some_valid & ~all_valid).sum()) == 85 * 70
    assert report.valid_pixels == int(all_valid.sum())
    assert "some bands missing" in report.summary()


def test_train_masks_pixels_with_any_band_missing(tmp_path: Path) -> None:
    """Train (``SceneData``) labels only pixels where every band has data, as predict and tile."""
    from geoseg.classes import IGNORE_INDEX
    from geoseg.data import SceneData

    scene, data = _partial_scene(tmp_path)
    lab = np.ones((1, *data.shape[1:]), np.uint8)
    labels = write_raster(tmp_path / "labels.tif", lab, nodata=0)
    sd = SceneData(scenes=[scene], labels=[[labels]])
    try:
        with rasterio.open(sd.mask_paths[0]) as ds:
            labelled = ds.read(1) != IGNORE_INDEX
    finally:
        sd.close()
    assert (labelled == (data != 0).all(axis=0)).all()

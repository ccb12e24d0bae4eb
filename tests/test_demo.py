"""The demo: quick-look PNG with legend, run_demo end to end, and ``python -m geoseg.demo``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.area import pixel_areas_m2
from geoseg.bundle import ModelBundle, Normalization
from geoseg.classes import ClassMap
from geoseg.datasets import LANDSAT_BANDS, NC_CLASSES
from geoseg.demo import _default_rgb, _read_classes, main, quicklook, run_demo
from geoseg.grid import Grid
from geoseg.io.cog import CogWriter
from tests.data.rasters import write_raster

HAS_VECTORIZE = importlib.util.find_spec("geoseg.vectorize") is not None


def _scene_and_classes(tmp_path: Path) -> tuple[Path, Path, ClassMap]:
    classes = ClassMap.from_names(["forest", "water", "urban"])
    transform = Affine(30.0, 0, 500000.0, 0, -30.0, 4000000.0)
    rng = np.random.default_rng(0)
    img = rng.integers(1, 255, size=(6, 40, 50)).astype("uint8")
    img[:, :, :5] = 0  # nodata strip
    scene = tmp_path / "scene.tif"
    with rasterio.open(
        scene,
        "w",
        driver="GTiff",
        width=50,
        height=40,
        count=6,
        dtype="uint8",
        crs="EPSG:32617",
        transform=transform,
        nodata=0,
    ) as ds:
        ds.write(img)
        for i, b in enumerate(LANDSAT_BANDS, start=1):
            ds.set_band_description(i, b)
    lc = np.where(np.arange(50)[None, :] < 25, 1, 2).repeat(40, axis=0).astype("uint8")
    lc[:, :5] = 255
    lc[:10, 30:] = 3
    out = tmp_path / "lc.tif"
    grid = Grid(crs="EPSG:32617", transform=transform, shape=(40, 50))
    with CogWriter(out, grid=grid, count=1, dtype="uint8", nodata=255, classes=classes) as w:
        w.write(lc[None], rasterio.windows.Window(0, 0, 50, 40))
    return scene, out, classes


def test_quicklook_writes_png_and_class_areas(tmp_path: Path) -> None:
    scene, lc, classes = _scene_and_classes(tmp_path)
    png = tmp_path / "q.png"
    areas = quicklook(scene, lc, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with rasterio.open(lc) as ds:
        lc_a, grid = ds.read(1), Grid.from_dataset(ds)
    km2 = np.broadcast_to(pixel_areas_m2(grid, grid.full_window), lc_a.shape) / 1e6
    # true areas (geoseg.area): UTM 17N pixels of 900 m² nominal, near 900 m² on the ground
    assert areas == {
        "forest": pytest.approx(km2[lc_a == 1].sum(), abs=1e-4),
        "water": pytest.approx(km2[lc_a == 2].sum(), abs=1e-4),
        "urban": pytest.approx(km2[lc_a == 3].sum(), abs=1e-4),
    }
    assert areas["forest"] == pytest.approx(20 * 40 * 900 / 1e6, rel=2e-3)
    assert _read_classes(rasterio.open(lc)) == classes
    with pytest.raises(FileExistsError):
        quicklook(scene, lc, png, overwrite=False)


def test_default_rgb_prefers_false_colour() -> None:
    assert _default_rgb(list(LANDSAT_BANDS), 6) == (4, 3, 2)
    assert _default_rgb([None, None, None, None], 4) == (1, 2, 3)
    assert _default_rgb([None], 1) == (1, 1, 1)


def test_cli_help() -> None:
    assert main(["--help"]) == 0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained bundle with the default model's contract (fast to run)."""
    b = ModelBundle.random_init(
        arch="fcn",
        encoder="mobilenet_v2",
        bands=LANDSAT_BANDS,
        classes=NC_CLASSES,
        normalization=Normalization("meanstd", (70.0,) * 6, (20.0,) * 6),
        dtype="uint8",
        resolution=(28.5, 28.5),
        chip_size=256,
        overlap=32,
    )
    return b.save(tmp_path_factory.mktemp("model") / "tiny.pt")


def test_run_demo_end_to_end(tmp_path: Path, tiny_model: Path, sample_cache: Path) -> None:
    out = tmp_path / "outputs"
    s = run_demo(out, sample_cache, model=tiny_model, vector=HAS_VECTORIZE)
    names = {p.name for p in out.iterdir()}
    assert {"landcover.tif", "landcover.qml", "quicklook.png", "demo.json"} <= names
    if HAS_VECTORIZE:
        assert "landcover.gpkg" in names
    with rasterio.open(out / "landcover.tif") as ds, rasterio.open(s["scene"]) as sc:
        assert (ds.crs, ds.transform, ds.shape) == (sc.crs, sc.transform, sc.shape)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert set(s["class_area_km2"]) == set(NC_CLASSES.names)
    assert json.loads((out / "demo.json").read_text())["seconds"]["total"] > 0
    # A second run replaces the outputs (overwrite=True is the default).
    run_demo(out, sample_cache, model=tiny_model, vector=False)


def test_run_demo_refuses_to_overwrite(
    tmp_path: Path, tiny_model: Path, sample_cache: Path
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "landcover.tif").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        run_demo(out, sample_cache, overwrite=False, model=tiny_model, vector=False)
    assert (out / "landcover.tif").read_bytes() == b"keep"


def test_shipped_default_model_contract() -> None:
    from geoseg.datasets import DEFAULT_MODEL_DESCRIPTION
    from geoseg.predict import default_model_path

    path = default_model_path()
    assert path.stat().st_size <= 30 * 2**20
    b = ModelBundle.load(path)
    assert b.bands == LANDSAT_BANDS
    assert b.classes == NC_CLASSES
    assert (b.dtype, tuple(b.resolution or ())) == ("uint8", (28.5, 28.5))
    assert b.description == DEFAULT_MODEL_DESCRIPTION
    assert 0 < b.metrics["heldout"]["test"]["miou"] <= 1


def test_run_demo_with_the_default_model(tmp_path: Path, sample_cache: Path) -> None:
    s = run_demo(tmp_path, sample_cache, vector=False)
    assert s["model"] == "default"
    areas = s["class_area_km2"]
    # The scene is mostly forest and developed land; the default model must see both.
    assert areas["forest"] > 10 and areas["developed"] > 10


def test_default_model_refusal_says_what_it_is_for(tmp_path: Path) -> None:
    from geoseg.errors import BandMismatchError
    from geoseg.predict import predict

    s2 = write_raster(tmp_path / "s2.tif", count=4, descriptions=["B2", "B3", "B4", "B8"])
    out = tmp_path / "o.tif"
    with pytest.raises(BandMismatchError) as info:
        predict(s2, out=out)
    msg = str(info.value)
    assert "\n" not in msg and str(s2) in msg
    assert "Landsat 7 ETM+" in msg and "geoseg train" in msg
    assert not out.exists()

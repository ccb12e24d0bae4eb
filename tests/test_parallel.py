"""geoseg.parallel: band-parallel predict on a real LocalCluster, byte-identical to predict."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import BandMismatchError, OutputExistsError
from geoseg.grid import Grid, axis_starts
from geoseg.parallel import BandJob, BandResult, predict_band, predict_parallel, split_rows
from geoseg.predict import predict
from tests.data.rasters import write_raster

BANDS = ("B2", "B3", "B4")
SIDE_FILES = ("", ".aux.xml")


# ---- band tasks that fail once (importable by the workers) ------------------------------------
def _marker(job: BandJob, name: str) -> Path:
    return Path(job.folder).parent / name


def kill_once(job: BandJob, index: int, rows: tuple[int, int]) -> BandResult:
    """Band 1 kills its worker process mid-band the first time (while its files are written)."""
    marker = _marker(job, "kill-once")
    if index != 1 or not marker.exists():
        return predict_band(job, index, rows)
    marker.unlink()

    def kill_when_writing() -> None:
        folder = Path(job.folder)
        while not any(".geoseg-tmp-" in p.name for p in folder.iterdir()):
            time.sleep(0.001)
        os._exit(1)

    threading.Thread(target=kill_when_writing, daemon=True).start()
    predict_band(job, index, rows)
    os._exit(1)  # the band finished first: die before reporting it all the same


def raise_once(job: BandJob, index: int, rows: tuple[int, int]) -> BandResult:
    """Every band raises an unexpected error the first time."""
    marker = _marker(job, f"raise-once-{index}")
    if not marker.exists():
        marker.touch()
        raise RuntimeError("transient failure")
    return predict_band(job, index, rows)


def bundle_reads() -> int:
    """This worker's bundle reads (run on every worker with client.run)."""
    from geoseg.runtime.sources import bundle_reads as reads

    return reads()


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A real LocalCluster: 2 single-threaded worker processes (the CI has 2 cores)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c.scheduler_address


def _bundle(path: Path, seed: int = 0) -> Path:
    from geoseg.bundle import ModelBundle
    from geoseg.classes import ClassMap

    ModelBundle.random_init(
        arch="fcn",
        encoder="mobilenet_v2",
        bands=BANDS,
        classes=ClassMap.from_names(["forest", "grass", "water"]),
        seed=seed,
        chip_size=64,
        overlap=16,
        dtype="uint16",
    ).save(path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("model") / "tiny.pt")


def _scene(path: Path, height: int, width: int, *, nodata_rows: slice | None = None) -> Path:
    data = np.random.default_rng(height).integers(1, 10000, size=(3, height, width))
    if nodata_rows is not None:
        data[:, nodata_rows] = 0
    return write_raster(
        path, data.astype("uint16"), nodata=0 if nodata_rows else None, descriptions=list(BANDS)
    )


def _outputs(out: Path) -> dict[str, bytes]:
    """Every file written for ``out`` (the COGs and their sidecars), by suffix."""
    return {
        p.name.replace(out.stem, "OUT", 1): p.read_bytes()
        for p in sorted(out.parent.iterdir())
        if p.name.startswith(out.stem)
    }


def _reference(scene: Path, model: Path, folder: Path, **kw: object) -> dict[str, bytes]:
    folder.mkdir()
    out = folder / "classes.tif"
    proba = {"probabilities": folder / "classes_proba.tif"} if kw.pop("proba", False) else {}
    predict(scene, out=out, model=model, **proba, **kw)  # type: ignore[arg-type]
    return _outputs(out)


# ---- the plan ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "parts"), [(233, 1), (233, 3), (233, 50), (64, 4), (1000, 7)])
def test_split_rows_tiles_the_scene_at_chip_rows(height: int, parts: int) -> None:
    starts = axis_starts(height, 64, 16)
    bands = split_rows(starts, height, parts)
    assert bands[0][0] == 0 and bands[-1][1] == height
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bands))
    assert len(bands) == min(parts, len(starts))
    assert all(a in starts for a, _ in bands)


def test_default_bands_two_per_worker_unless_the_bands_get_thin() -> None:
    from geoseg.parallel import MIN_BAND_CHIP_ROWS, default_bands

    assert default_bands(2, 104) == 4  # 20000 rows of 256/32 chips
    assert default_bands(2, 18) == 2  # 4000 rows: 4 bands would be under 8 chip rows each
    assert default_bands(2, 4 * MIN_BAND_CHIP_ROWS) == 4
    assert default_bands(3, 2) == 2 and default_bands(1, 1) == 1


# ---- predict(rows=): one band -----------------------------------------------------------------
def test_predict_rows_is_those_rows_of_the_whole_scene(tmp_path: Path, model: Path) -> None:
    from rasterio.windows import Window

    scene = _scene(tmp_path / "scene.tif", 233, 150)
    predict(scene, out=tmp_path / "all.tif", model=model)
    with rasterio.open(tmp_path / "all.tif") as ds:
        whole, grid = ds.read(1), Grid.from_dataset(ds)
    for rows in [(0, 50), (50, 130), (130, 233), (17, 18)]:
        out = tmp_path / f"rows_{rows[0]}.tif"
        predict(scene, out=out, model=model, rows=rows)
        with rasterio.open(out) as ds:
            assert Grid.from_dataset(ds) == grid.window_grid(
                Window(0, rows[0], 150, rows[1] - rows[0])
            )
            assert np.array_equal(ds.read(1), whole[rows[0] : rows[1]])


def test_predict_rows_refuses_what_a_band_cannot_do(tmp_path: Path, model: Path) -> None:
    from geoseg.errors import ConfigError

    scene = _scene(tmp_path / "scene.tif", 100, 80)
    with pytest.raises(ConfigError, match="not inside the 100 rows"):
        predict(scene, out=tmp_path / "a.tif", model=model, rows=(50, 101))
    with pytest.raises(ConfigError, match="no cloud mask or vector"):
        predict(
            scene, out=tmp_path / "a.tif", model=model, rows=(0, 10), vector=tmp_path / "v.gpkg"
        )
    assert not list(tmp_path.glob("a*"))


def test_a_band_stitcher_holds_only_the_band(tmp_path: Path) -> None:
    from geoseg.grid import plan_windows
    from geoseg.stitch import ChipStitcher

    windows = [w for w in plan_windows((2000, 300), 64, 16) if 1500 <= w.row_off < 1700]
    span = (int(windows[0].row_off), int(windows[-1].row_off + windows[-1].height))
    st = ChipStitcher(shape=(2000, 300), num_classes=2, overlap=16, windows=windows, rows=span)
    bands = []
    for w in windows:
        bands += st.add(w, np.full((2, 64, 64), 0.5, np.float32), np.ones((64, 64), bool))
    bands += st.finish()
    assert min(int(b.window.row_off) for b in bands) == span[0]
    assert sum(int(b.window.height * b.window.width) for b in bands) == (span[1] - span[0]) * 300
    assert all(b.covered.all() for b in bands)
    # the overlap rows and a few chips, not the rows above the band
    assert st.peak_pixels <= 16 * 300 + 3 * 64 * 64


# ---- identity ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "width", "parts"), [(233, 150, 2), (233, 150, 4), (161, 71, 3)])
def test_bands_give_the_single_process_bytes(
    tmp_path: Path, model: Path, scheduler: str, height: int, width: int, parts: int
) -> None:
    scene = _scene(tmp_path / "scene.tif", height, width)
    want = _reference(scene, model, tmp_path / "ref", proba=True)
    (tmp_path / "par").mkdir()
    out = tmp_path / "par" / "classes.tif"
    rep = predict_parallel(
        scene,
        out=out,
        model=model,
        scheduler=scheduler,
        row_bands=parts,
        probabilities=tmp_path / "par" / "classes_proba.tif",
    )
    got = _outputs(out)
    assert sorted(got) == sorted(want)  # .tif, .qml, .aux.xml of classes and probabilities
    assert [k for k in got if got[k] != want[k]] == []
    assert len(rep.bands) == parts and rep.windows_predicted > rep.windows  # halos recomputed
    with rasterio.open(out) as a, rasterio.open(scene) as s:
        assert Grid.from_dataset(a) == Grid.from_dataset(s)
    assert not [p for p in out.parent.iterdir() if ".geoseg-tmp-" in p.name]


def test_nodata_band_aoi_and_confidence_give_the_same_bytes(
    tmp_path: Path, model: Path, scheduler: str
) -> None:
    import geopandas as gpd
    from shapely import box

    scene = _scene(tmp_path / "scene.tif", 301, 90, nodata_rows=slice(0, 150))  # bands of nodata
    aoi = tmp_path / "aoi.geojson"
    with rasterio.open(scene) as ds:
        b = ds.bounds
    gpd.GeoDataFrame(
        geometry=[box(b.left, b.bottom, b.right, b.bottom + (b.top - b.bottom) * 0.3)],
        crs=ds.crs,
    ).to_file(aoi)
    for kw in ({"confidence": True}, {"aoi": aoi, "probability_dtype": "float16", "proba": True}):
        name = "aoi" if "aoi" in kw else "conf"
        want = _reference(scene, model, tmp_path / f"ref-{name}", **dict(kw))
        (tmp_path / name).mkdir()
        out = tmp_path / name / "classes.tif"
        proba = {"probabilities": out.with_name("classes_proba.tif")} if kw.pop("proba", 0) else {}
        predict_parallel(
            scene, out=out, model=model, scheduler=scheduler, row_bands=4, **proba, **kw
        )  # type: ignore[arg-type]
        got = _outputs(out)
        assert sorted(got) == sorted(want), name
        assert [k for k in got if got[k] != want[k]] == [], name


# ---- faults -----------------------------------------------------------------------------------
def test_a_worker_killed_mid_band_gives_the_same_bytes(
    tmp_path: Path, model: Path, scheduler: str
) -> None:
    scene = _scene(tmp_path / "scene.tif", 233, 150)
    want = _reference(scene, model, tmp_path / "ref")
    (tmp_path / "par").mkdir()
    (tmp_path / "par" / "kill-once").touch()
    out = tmp_path / "par" / "classes.tif"
    predict_parallel(
        scene, out=out, model=model, scheduler=scheduler, row_bands=3, band_task=kill_once
    )
    assert not (tmp_path / "par" / "kill-once").exists()  # the worker did die
    assert _outputs(out) == want
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["classes.tif", "classes.qml", "classes.tif.aux.xml"]
    )


def test_a_band_that_raises_is_retried(tmp_path: Path, model: Path, scheduler: str) -> None:
    scene = _scene(tmp_path / "scene.tif", 150, 80)
    want = _reference(scene, model, tmp_path / "ref")
    (tmp_path / "par").mkdir()
    out = tmp_path / "par" / "classes.tif"
    predict_parallel(
        scene, out=out, model=model, scheduler=scheduler, row_bands=2, band_task=raise_once
    )
    assert len(list(out.parent.glob("raise-once-*"))) == 2
    assert _outputs(out) == want


def test_an_input_error_is_raised_once_and_leaves_nothing(
    tmp_path: Path, model: Path, scheduler: str
) -> None:
    scene = write_raster(tmp_path / "scene.tif", width=80, height=150, count=2)
    out = tmp_path / "par" / "classes.tif"
    with pytest.raises(BandMismatchError):
        predict_parallel(scene, out=out, model=model, scheduler=scheduler, row_bands=2)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        predict_parallel(scene, out=out, model=model, scheduler=scheduler)


def test_each_worker_reads_the_model_once(tmp_path: Path, scheduler: str) -> None:
    from distributed import Client

    fresh = _bundle(tmp_path / "fresh.pt", seed=3)
    scene = _scene(tmp_path / "scene.tif", 400, 70)
    with Client(scheduler) as client:
        before = client.run(bundle_reads)
        rep = predict_parallel(
            scene, out=tmp_path / "c.tif", model=fresh, client=client, row_bands=6
        )
        after = client.run(bundle_reads)
    used = set(rep.band_workers.values())
    assert len(rep.bands) == 6
    assert {w: after[w] - before[w] for w in used} == dict.fromkeys(used, 1)


def test_a_local_cluster_by_default(tmp_path: Path, model: Path) -> None:
    scene = _scene(tmp_path / "scene.tif", 120, 60)
    want = _reference(scene, model, tmp_path / "ref")
    (tmp_path / "par").mkdir()
    out = tmp_path / "par" / "classes.tif"
    rep = predict_parallel(scene, out=out, model=model, workers=2)
    assert rep.workers == 2 and rep.threads_per_worker >= 1
    assert _outputs(out) == want

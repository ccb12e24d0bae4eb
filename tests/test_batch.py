"""Batch workflows on Dask distributed: manifest, resume, failures, summary, a real kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from geoseg.batch import (
    Manifest,
    StageResult,
    Unit,
    class_areas,
    plan_units,
    run_workflow,
    sha256_file,
)
from geoseg.classes import ClassMap
from geoseg.errors import ConfigError
from geoseg.workflow import Workflow
from tests.data.rasters import write_corrupt, write_raster

ROOT = Path(__file__).resolve().parents[1]
BANDS = ("B2", "B3", "B4")
CLASSES = ClassMap.from_names(["forest", "grass", "water"])


# ---- helpers -------------------------------------------------------------------------------
def make_scenes(folder: Path, n: int, *, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    from affine import Affine

    return [
        write_raster(
            folder / f"scene_{i}.tif",
            width=size,
            height=size,
            count=3,
            seed=i,
            descriptions=list(BANDS),
            transform=Affine(10.0, 0, 500000.0 + i * size * 10, 0, -10.0, 5000000.0),
        )
        for i in range(n)
    ]


def write_workflow(path: Path, **doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def trivial_stage(
    unit: Unit, workflow: Workflow, folder: Path, *, device: str | None, threads: int | None
) -> StageResult:
    """A stand-in for predict: class = band 1 mod 3 + 1, written with plain rasterio."""
    from geoseg.io.raster import open_raster

    with open_raster(unit.inputs[0]) as src:
        data = (src.read(1) % 3 + 1).astype("uint8")
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": 1,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "nodata": 255,
        }
    out = folder / f"{unit.id}_classes.tif"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)
    return StageResult(
        raster=out, classes=CLASSES, areas=class_areas(out, classes=CLASSES), seconds={"x": 0.0}
    )


def output_files(root: Path) -> dict[str, bytes]:
    """Every output file under ``root`` except the manifest (it holds timings)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A real LocalCluster with 2 single-threaded worker processes, shared by tests here."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geoseg.bundle import ModelBundle

    p = tmp_path_factory.mktemp("model") / "tiny.pt"
    ModelBundle.random_init(
        arch="fcn",
        encoder="mobilenet_v2",
        bands=BANDS,
        classes=CLASSES,
        seed=0,
        chip_size=64,
        overlap=16,
        dtype="uint16",
    ).save(p)
    return p


# ---- pure parts ----------------------------------------------------------------------------
def test_plan_units_ids_are_unique_and_safe(tmp_path: Path) -> None:
    wf = Workflow.model_validate(
        {
            "output": str(tmp_path / "o"),
            "scenes": [str(tmp_path / "a" / "s 1.tif"), str(tmp_path / "b" / "s 1.tif")],
            "stages": ["areas"],
        }
    )
    assert [u.id for u in plan_units(wf)] == ["s_1", "b_s_1"]


def test_class_areas_projected(tmp_path: Path) -> None:
    data = np.array([[1, 1, 2], [3, 255, 1]], dtype="uint8")
    p = write_raster(tmp_path / "c.tif", data, nodata=255)  # 10 m pixels
    rows = class_areas(p, classes=CLASSES)
    assert rows == [
        {"class_id": 1, "class_name": "forest", "pixels": 3, "area_ha": 0.03},
        {"class_id": 2, "class_name": "grass", "pixels": 1, "area_ha": 0.01},
        {"class_id": 3, "class_name": "water", "pixels": 1, "area_ha": 0.01},
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


def test_manifest_round_trip_and_errors(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "manifest.json")
    f = tmp_path / "units" / "a" / "x.tif"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"abc")
    m.units["a"] = {
        "status": "done",
        "fingerprint": "fp",
        "outputs": {"units/a/x.tif": sha256_file(f)},
    }
    m.save()
    m2 = Manifest.load(tmp_path / "manifest.json")
    assert m2.is_done("a", "fp", tmp_path)
    assert not m2.is_done("a", "other", tmp_path)
    f.write_bytes(b"abd")
    assert not m2.is_done("a", "fp", tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"manifest.json: manifest cannot be read.*--no-resume"):
        Manifest.load(tmp_path / "manifest.json")
    assert not [p for p in tmp_path.iterdir() if ".geoseg-tmp-" in p.name]


# ---- on a real cluster -------------------------------------------------------------------------
def test_bad_scenes_are_reported_and_the_others_finish_then_resume(
    tmp_path: Path, cluster: str
) -> None:
    scenes = make_scenes(tmp_path / "scenes", 4)
    write_corrupt(tmp_path / "scenes" / "corrupt.tif", scenes[0])
    wf_path = write_workflow(
        tmp_path / "wf.yaml",
        name="trivial",
        output="out",
        scenes=["scenes/scene_*.tif", "scenes/corrupt.tif", "scenes/missing.tif"],
        stages=["areas"],
    )
    messages: list[str] = []
    rep = run_workflow(wf_path, scheduler=cluster, runner=trivial_stage, echo=messages.append)
    assert rep.done == [f"scene_{i}" for i in range(4)]
    assert set(rep.failed) == {"corrupt", "missing"}
    assert "missing.tif: no such file" in rep.failed["missing"]
    assert "cannot be read as a raster" in rep.failed["corrupt"]
    assert any(m.startswith("Dask dashboard:") for m in messages) or rep.dashboard is None
    out = tmp_path / "out"
    man = json.loads((out / "manifest.json").read_text())
    rec = man["units"]["scene_0"]
    assert rec["status"] == "done" and rec["seconds"]["total"] >= 0
    assert rec["outputs"] == {
        "units/scene_0/scene_0_classes.tif": sha256_file(out / "units/scene_0/scene_0_classes.tif")
    }
    assert man["units"]["missing"]["status"] == "failed"
    # summary: areas CSV, index with footprints and status, overview PNG
    csv_text = (out / "summary/class_areas.csv").read_text().splitlines()
    assert csv_text[0] == "scene,class_id,class_name,pixels,area_ha"
    assert len(csv_text) == 1 + 4 * 3
    import geopandas as gpd

    idx = gpd.read_file(out / "summary/index.gpkg")
    assert list(idx["unit"]) == ["scene_0", "scene_1", "scene_2", "scene_3", "corrupt", "missing"]
    assert list(idx["status"]) == ["done"] * 4 + ["failed"] * 2
    assert idx.geometry.iloc[:4].notna().all() and idx.crs.to_epsg() == 4326
    assert (out / "summary/overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.geoseg-tmp-*"))
    before = output_files(out)

    # rerun: the 4 done scenes are verified and skipped; the failures are retried
    rep2 = run_workflow(wf_path, scheduler=cluster, runner=trivial_stage)
    assert rep2.skipped == [f"scene_{i}" for i in range(4)] and rep2.done == []
    assert set(rep2.failed) == {"corrupt", "missing"}
    assert output_files(out) == before

    # a tampered output is detected by its checksum and only that scene is redone
    (out / "units/scene_2/scene_2_classes.tif").write_bytes(b"junk")
    rep3 = run_workflow(wf_path, scheduler=cluster, runner=trivial_stage)
    assert rep3.done == ["scene_2"]
    assert output_files(out) == before

    # --no-resume recomputes everything, identically
    rep4 = run_workflow(wf_path, scheduler=cluster, runner=trivial_stage, resume=False)
    assert len(rep4.done) == 4 and not rep4.skipped
    assert output_files(out) == before


def test_real_stages_four_scenes_on_a_local_cluster_of_two_workers(
    tmp_path: Path, bundle_path: Path
) -> None:
    make_scenes(tmp_path / "scenes", 4, size=96)
    wf_path = write_workflow(
        tmp_path / "wf.yaml",
        name="tiny",
        output="out",
        model=str(bundle_path),
        scenes=["scenes/*.tif"],
        stages=["predict", "vectorize", "areas"],
    )
    rep = run_workflow(wf_path, workers=2)
    assert rep.ok and rep.workers == 2 and len(rep.done) == 4
    assert rep.dashboard and rep.dashboard.startswith("http")
    out = tmp_path / "out"
    man = json.loads((out / "manifest.json").read_text())
    workers = {man["units"][u]["worker"] for u in rep.done}
    assert len(workers) >= 1
    for u in rep.done:
        files = sorted(man["units"][u]["outputs"])
        assert f"units/{u}/{u}_classes.tif" in files and f"units/{u}/{u}_classes.gpkg" in files
        assert set(man["units"][u]["seconds"]) >= {"predict", "vectorize", "areas", "total"}
        with rasterio.open(out / f"units/{u}/{u}_classes.tif") as src:
            assert src.width == 96
    rows = (out / "summary/class_areas.csv").read_text().splitlines()[1:]
    assert {r.split(",")[0] for r in rows} == set(rep.done)
    # the pixels of each scene add up
    assert all(
        sum(int(r.split(",")[3]) for r in rows if r.startswith(u + ",")) == 96 * 96
        for u in rep.done
    )


def _run_cli(wf: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GEOSEG_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "geoseg", "run", str(wf), "--workers", "2", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes the workers too
    )


def test_killed_run_resumes_to_byte_identical_outputs(tmp_path: Path, bundle_path: Path) -> None:
    scenes_dir = tmp_path / "scenes"
    make_scenes(scenes_dir, 6, size=128)
    doc = {
        "name": "kill",
        "model": str(bundle_path),
        "scenes": [str(scenes_dir / "*.tif")],
        "stages": ["predict", "vectorize", "areas"],
    }
    ref = write_workflow(tmp_path / "ref.yaml", output="ref", **doc)
    proc = _run_cli(ref)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()

    wf = write_workflow(tmp_path / "wf.yaml", output="out", **doc)
    out = tmp_path / "out"
    proc = _run_cli(wf)
    deadline = time.monotonic() + 240
    killed_mid_run = False
    while time.monotonic() < deadline and proc.poll() is None:
        done = 0
        if (out / "manifest.json").exists():
            units = json.loads((out / "manifest.json").read_text())["units"]
            done = sum(r.get("status") == "done" for r in units.values())
        if done >= 1 or list((out / "units").glob(".*geoseg-tmp-*")):
            os.killpg(proc.pid, signal.SIGKILL)
            killed_mid_run = True
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_mid_run, "the run ended before it could be killed"
    time.sleep(0.5)  # let the killed workers' files settle
    units = json.loads((out / "manifest.json").read_text())["units"]
    assert sum(r.get("status") == "done" for r in units.values()) < 6
    # the summary is written only at the end
    assert not (out / "summary").exists() or not list((out / "summary").glob("[!.]*.gpkg"))

    proc = _run_cli(wf)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert not list(out.rglob("*.geoseg-tmp-*"))
    got, want = output_files(out), output_files(tmp_path / "ref")
    assert sorted(got) == sorted(want)
    assert [k for k in got if got[k] != want[k]] == []


def _worker_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}


def test_local_workers_keep_glibc_malloc_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dask's MALLOC_TRIM_THRESHOLD_=65536 makes every chip array a fresh mmap (+50 % predict time)
    from geoseg.batch import _client

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with _client(None, 1, 2, False) as (client, n):
        envs = list(client.run(_worker_env).values())
    assert n == 1
    assert envs == [{"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "2"}]


def test_shipped_landcover_workflow_runs(tmp_path: Path, sample_cache: Path) -> None:
    # workflows/landcover.yaml as documented (default model, sample scene), output moved to tmp
    from geoseg.workflow import load_workflow

    wf = load_workflow(ROOT / "workflows" / "landcover.yaml")
    wf = wf.model_copy(update={"output": tmp_path / "landcover"})
    rep = run_workflow(wf, workers=2)
    assert rep.ok and len(rep.done) == 1, rep.failed
    (unit,) = rep.done
    scene = wf.scenes[0]
    classes_tif = tmp_path / "landcover" / "units" / unit / f"{unit}_classes.tif"
    with rasterio.open(scene) as sc, rasterio.open(classes_tif) as out:
        assert (out.crs, out.transform, out.shape) == (sc.crs, sc.transform, sc.shape)
        valid = int((sc.dataset_mask() > 0).sum())
        pixel_ha = abs(sc.transform.a * sc.transform.e) / 1e4
    rows = list(csv.DictReader((tmp_path / "landcover" / "summary" / "class_areas.csv").open()))
    assert sum(int(r["pixels"]) for r in rows) == valid  # every valid pixel has one class
    assert sum(float(r["area_ha"]) for r in rows) == pytest.approx(valid * pixel_ha, rel=1e-6)
    assert (classes_tif.with_suffix(".gpkg")).exists()

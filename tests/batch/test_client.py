"""geoseg.batch.client: runs on a real Dask cluster: failures, resume, a real kill, workers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.area import pixel_areas_m2
from geoseg.batch import run_workflow, sha256_file
from geoseg.grid import Grid
from tests.batch.helpers import (
    ROOT,
    _worker_env,
    make_scenes,
    output_files,
    trivial_stage,
    write_workflow,
)
from tests.data.rasters import write_corrupt


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
    # each worker read the model file once, whatever the number of scenes it ran
    reads: dict[str, int] = {}
    for u in rep.done:
        w = man["units"][u]["worker"]
        reads[w] = max(reads.get(w, 0), man["units"][u]["model_reads"])
    assert set(reads.values()) == {1}
    assert all(man["units"][u]["seconds"]["cpu"] > 0 for u in rep.done)
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


def test_local_workers_keep_glibc_malloc_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dask's MALLOC_TRIM_THRESHOLD_=65536 makes every chip array a fresh mmap (+50 % predict time)
    from geoseg.batch.client import dask_client

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with dask_client(None, 1, 2, dashboard=False) as (client, n):
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
        mask = sc.dataset_mask() > 0
        valid = int(mask.sum())
        grid = Grid.from_dataset(sc)
    px_ha = np.broadcast_to(pixel_areas_m2(grid, grid.full_window), mask.shape) / 1e4
    rows = list(csv.DictReader((tmp_path / "landcover" / "summary" / "class_areas.csv").open()))
    assert sum(int(r["pixels"]) for r in rows) == valid  # every valid pixel has one class
    # true areas (geoseg.area), the same hectares vectorize, change and evaluate report
    assert sum(float(r["area_ha"]) for r in rows) == pytest.approx(px_ha[mask].sum(), rel=1e-6)
    assert (classes_tif.with_suffix(".gpkg")).exists()


def test_row_bands_spread_one_scene_and_give_the_predict_bytes(
    tmp_path: Path, bundle_path: Path
) -> None:
    from geoseg.predict import predict

    (scene,) = make_scenes(tmp_path / "scenes", 1, size=150)
    wf_path = write_workflow(
        tmp_path / "wf.yaml",
        output="out",
        model=str(bundle_path),
        scenes=["scenes/*.tif"],
        stages=["predict", "areas"],
        predict={"row_bands": 3},
    )
    rep = run_workflow(wf_path, workers=2)
    assert rep.ok, rep.failed
    (uid,) = rep.done
    predict(scene, out=tmp_path / "ref.tif", model=bundle_path)
    got = tmp_path / "out" / "units" / uid / f"{uid}_classes.tif"
    assert got.read_bytes() == (tmp_path / "ref.tif").read_bytes()
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(man["units"][uid]["reports"]["predict"]["bands"]) == 3

"""Shared helpers of the batch tests (importable by Dask workers: runners are sent by name)."""

from __future__ import annotations

import os
from pathlib import Path

import rasterio
import yaml

from geoseg.batch import StageResult, Unit, class_areas
from geoseg.classes import ClassMap
from geoseg.workflow import Workflow
from tests.data.rasters import write_raster

ROOT = Path(__file__).resolve().parents[2]
BANDS = ("B2", "B3", "B4")
CLASSES = ClassMap.from_names(["forest", "grass", "water"])


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


def _worker_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}

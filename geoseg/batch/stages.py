"""The work of one unit, on a worker: its stages, its class areas, its staging folder."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.batch.manifest import OGR_DATE, UNITS_DIR, Unit, _now, sha256_file
from geoseg.classes import ClassMap
from geoseg.errors import ConfigError, GeosegError, first_line
from geoseg.io.atomic import temporary_path
from geoseg.workflow import Workflow

__all__ = [
    "ModelNotFound",
    "StageResult",
    "StageRunner",
    "class_areas",
    "process_unit",
    "run_stages",
    "unit_error",
]

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """What the stages of one unit produced (returned by a :data:`StageRunner`).

    Attributes:
        raster: the class (or change) raster to map in the overview; inside the staging
            folder when the unit wrote it, else an input.
        classes: the classes of ``raster`` (ids, names, colours) for the legend.
        areas: rows of per-class areas (``class_id``, ``class_name``, ``pixels``, ``area_ha``).
        aoi: rows of per-AOI change (``aoi``, ``loss_ha``, ``gain_ha``, ...).
        reports: each stage's report as a plain dictionary.
        seconds: wall time of each stage.
    """

    raster: Path | None = None
    classes: ClassMap | None = None
    areas: list[dict[str, Any]] = field(default_factory=list)
    aoi: list[dict[str, Any]] = field(default_factory=list)
    reports: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


#: ``runner(unit, workflow, staging_folder, device=, threads=) -> StageResult``: the stages.
StageRunner = Callable[..., StageResult]


class ModelNotFound(GeosegError, FileNotFoundError):
    """The workflow's model file does not exist."""


def _classes(path: Path) -> ClassMap:
    """The classes of the model bundle at ``path``; the bundle is read once per worker process.

    (:mod:`geoseg.runtime.sources` keeps the bundles a process read, keyed by path, size and
    mtime; predict then takes the path, so the outputs' provenance is that of ``geoseg
    predict --model PATH``.)
    """
    from geoseg.runtime import sources

    if not path.exists():
        hint = (
            "the default model is not installed; give `model:` a bundle path"
            if path.name == "default_model.pt"
            else "check `model:` in the workflow"
        )
        raise ModelNotFound(f"{path}: no such model file; {hint}")
    return sources.contract_of(path).classes


def _report_dict(report: Any) -> Any:
    to_dict = getattr(report, "to_dict", None)
    value = to_dict() if callable(to_dict) else report
    return json.loads(json.dumps(value, default=str))


# ---- the stages -------------------------------------------------------------------------------
def run_stages(
    unit: Unit,
    workflow: Workflow,
    folder: Path,
    *,
    device: str | None = None,
    threads: int | None = None,
) -> StageResult:
    """Run the workflow's stages on one unit, writing every output into ``folder``.

    Scenes go through ``predict`` -> ``vectorize`` -> ``areas`` (without ``predict`` the scene
    is taken as a class raster); pairs go through ``change``.
    """
    res = StageResult()
    if unit.kind == "pair":
        _change_stage(unit, workflow, folder, res)
        return res
    stages = workflow.stages
    raster, classes = unit.inputs[0], None
    if "predict" in stages:
        raster, classes = _predict_stage(unit, workflow, folder, res, device, threads)
    if "vectorize" in stages:
        _vectorize_stage(unit, workflow, folder, res, raster, classes, threads)
    if "areas" in stages:
        t0 = time.perf_counter()
        res.areas = class_areas(raster, classes=classes)
        res.seconds["areas"] = time.perf_counter() - t0
    res.raster = raster
    res.classes = classes
    return res


def _change_stage(unit: Unit, workflow: Workflow, folder: Path, res: StageResult) -> None:
    from geoseg.change import CHANGE_CLASSES, change

    copts = workflow.change
    if copts is None:  # pragma: no cover - validated by the Workflow model
        raise ConfigError("the change stage needs `change:` options")
    t0 = time.perf_counter()
    out = folder / f"{unit.id}_change.tif"
    creport = change(
        unit.inputs[0],
        unit.inputs[1],
        out=out,
        from_classes=list(copts.from_classes),
        to_classes=list(copts.to_classes) if copts.to_classes else None,
        vector=folder / f"{unit.id}_change.gpkg" if copts.vector else None,
        aoi=workflow.aoi,
        aoi_name_column=workflow.aoi_name_column,
        min_area=copts.min_area,
        table=folder / f"{unit.id}_aoi.csv" if workflow.aoi else None,
        before_mask=unit.masks[0],
        after_mask=unit.masks[1],
        mask_values=list(copts.mask_values) if copts.mask_values else None,
    )
    res.seconds["change"] = time.perf_counter() - t0
    res.reports["change"] = _report_dict(creport)
    res.raster = out
    res.classes = CHANGE_CLASSES
    res.aoi = [a.to_dict() for a in creport.aoi]


def _predict_stage(
    unit: Unit,
    workflow: Workflow,
    folder: Path,
    res: StageResult,
    device: str | None,
    threads: int | None,
) -> tuple[Path, ClassMap]:
    from geoseg.predict import predict

    classes = _classes(workflow.model_path)
    t0 = time.perf_counter()
    raster = folder / f"{unit.id}_classes.tif"
    opts = workflow.predict
    clouds = workflow.cloud_mask
    if opts.row_bands:
        preport: Any = _predict_in_bands(unit, workflow, raster, device, threads)
        res.seconds["predict"] = time.perf_counter() - t0
        res.reports["predict"] = _report_dict(preport)
        return raster, classes
    preport = predict(
        unit.inputs[0],
        out=raster,
        model=workflow.model_path,
        size=opts.size,
        overlap=opts.overlap,
        batch_size=opts.batch_size,
        bands=list(opts.bands) if opts.bands else None,
        reflectance=opts.reflectance,
        cloud_mask=clouds.model if clouds else None,
        cloud_mask_out=folder / f"{unit.id}_clouds.tif" if clouds and clouds.write_mask else None,
        cloud_bands=list(clouds.bands) if clouds and clouds.bands else None,
        device=device,
        threads=threads,
    )
    res.seconds["predict"] = time.perf_counter() - t0
    res.reports["predict"] = _report_dict(preport)
    return raster, classes


def _predict_in_bands(
    unit: Unit, workflow: Workflow, raster: Path, device: str | None, threads: int | None
) -> Any:
    """``predict.row_bands``: the scene's bands as tasks on this cluster (:mod:`geoseg.parallel`).

    The unit's task leaves its worker slot while it waits (``worker_client``), so the bands
    run on every worker, this one included.
    """
    from distributed import worker_client

    from geoseg.parallel import predict_parallel

    opts = workflow.predict
    with worker_client() as client:
        return predict_parallel(
            unit.inputs[0],
            out=raster,
            model=workflow.model_path,
            client=client,
            row_bands=opts.row_bands,
            threads=threads,
            size=opts.size,
            overlap=opts.overlap,
            batch_size=opts.batch_size,
            bands=list(opts.bands) if opts.bands else None,
            reflectance=opts.reflectance,
            device=device,
        )


def _vectorize_stage(
    unit: Unit,
    workflow: Workflow,
    folder: Path,
    res: StageResult,
    raster: Path,
    classes: ClassMap | None,
    threads: int | None,
) -> None:
    from geoseg.vectorize import vectorize

    t0 = time.perf_counter()
    vreport = vectorize(
        raster,
        folder / f"{unit.id}_classes.gpkg",
        min_area=workflow.vectorize.min_area,
        simplify=workflow.vectorize.simplify,
        classes=classes,
        workers=max(1, threads or 1),
    )
    res.seconds["vectorize"] = time.perf_counter() - t0
    res.reports["vectorize"] = _report_dict(vreport)


def class_areas(
    raster: str | os.PathLike[str], *, classes: ClassMap | None = None
) -> list[dict[str, Any]]:
    """Pixel counts and true areas (hectares) of each class of a class raster, block by block.

    Nodata pixels are not counted; areas are :func:`geoseg.area.pixel_areas_m2` (ellipsoidal,
    whatever the CRS), the same hectares ``vectorize``, ``change`` and ``evaluate`` report.
    """
    import numpy as np

    from geoseg.area import pixel_areas_m2
    from geoseg.grid import Grid
    from geoseg.io.raster import open_raster

    pixels: dict[int, int] = {}
    area_m2: dict[int, float] = {}
    with open_raster(raster) as src:
        grid = Grid.from_dataset(src)
        for _, win in src.block_windows(1):
            a = src.read(1, window=win, masked=True)
            valid = ~np.ma.getmaskarray(a)
            vals = np.asarray(a.data)[valid].astype(np.int64)
            if vals.size == 0:
                continue
            weights = np.broadcast_to(pixel_areas_m2(grid, win), valid.shape)[valid]
            uniq, inv = np.unique(vals, return_inverse=True)
            counts = np.bincount(inv)
            sums = np.bincount(inv, weights=weights)
            for v, c, s in zip(uniq.tolist(), counts.tolist(), sums.tolist(), strict=True):
                pixels[v] = pixels.get(v, 0) + int(c)
                area_m2[v] = area_m2.get(v, 0.0) + float(s)
    names = {c.id: c.name for c in classes.classes} if classes else {}
    ids = sorted(set(pixels) | set(names))
    return [
        {
            "class_id": cid,
            "class_name": names.get(cid, f"class_{cid}"),
            "pixels": pixels.get(cid, 0),
            "area_ha": round(area_m2.get(cid, 0.0) / 10000.0, 4),
        }
        for cid in ids
    ]


def _footprint(path: Path) -> dict[str, Any] | None:
    """The bounds of a raster in its CRS and in EPSG:4326 (None when it cannot be read)."""
    try:
        from rasterio.warp import transform_bounds

        from geoseg.io.raster import open_raster

        with open_raster(path) as src:
            if src.crs is None:
                return None
            b = tuple(src.bounds)
            lonlat = transform_bounds(src.crs, "EPSG:4326", *b, densify_pts=21)
            return {
                "crs": src.crs.to_string(),
                "bounds": [float(v) for v in b],
                "lonlat": [float(v) for v in lonlat],
            }
    except Exception:
        return None


def _worker_device() -> tuple[str | None, str]:
    """The device for this worker (``cuda:i`` by worker index where GPUs exist) and its name."""
    name = socket.gethostname()
    index = 0
    with contextlib.suppress(Exception):
        from distributed import get_worker

        w = get_worker()
        name = str(w.address)
        index = int(w.name) if str(w.name).isdigit() else abs(hash(w.name))
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{index % torch.cuda.device_count()}", name
    return None, name


def unit_error(exc: BaseException) -> str:
    """One line for a failed unit: the message, after the exception type unless geoseg's own."""
    if not str(exc).strip():
        return exc.__class__.__name__
    kind = "" if isinstance(exc, GeosegError) else f"{exc.__class__.__name__}: "
    return kind + first_line(exc, 500 - len(kind))


def process_unit(
    unit: Unit,
    workflow: Workflow,
    *,
    threads: int = 1,
    runner: StageRunner | None = None,
) -> dict[str, Any]:
    """Run one unit on this process and move its outputs into place; never raises.

    The outputs are written into a hidden staging folder beside ``units/<id>`` and renamed
    into place when every stage succeeded. Returns the unit's manifest record: status,
    timings, output checksums, footprint, areas, or the reason of the failure.
    """
    os.environ.setdefault("OGR_CURRENT_DATE", OGR_DATE)
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(max(1, threads))
    cpu0 = time.process_time()
    device, worker = _worker_device()
    root = workflow.output
    final = root / UNITS_DIR / unit.id
    staging = temporary_path(final)
    started, t0 = _now(), time.perf_counter()
    rec: dict[str, Any] = {
        "kind": unit.kind,
        "inputs": [str(p) for p in unit.inputs],
        "started": started,
        "worker": worker,
        "footprint": _footprint(unit.inputs[0]),
    }
    try:
        staging.mkdir(parents=True)
        res = (runner or run_stages)(unit, workflow, staging, device=device, threads=threads)
        digests = {
            f"{UNITS_DIR}/{unit.id}/{p.relative_to(staging).as_posix()}": sha256_file(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        raster = res.raster
        raster_ref: str | None
        if raster is not None and raster.is_relative_to(staging):
            raster_ref = f"{UNITS_DIR}/{unit.id}/{raster.relative_to(staging).as_posix()}"
        else:
            raster_ref = str(raster) if raster is not None else None
        _move_into_place(staging, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        if not isinstance(exc, Exception):
            raise
        log.debug("unit %s failed", unit.id, exc_info=True)
        rec.update(
            status="failed",
            error=unit_error(exc),
            finished=_now(),
            seconds={"total": round(time.perf_counter() - t0, 3)},
            outputs={},
        )
        return rec
    seconds = {k: round(v, 3) for k, v in res.seconds.items()}
    seconds["total"] = round(time.perf_counter() - t0, 3)
    seconds["cpu"] = round(time.process_time() - cpu0, 3)  # this process, all its threads
    rec.update(
        model_reads=_model_reads(),
        status="done",
        error=None,
        finished=_now(),
        seconds=seconds,
        outputs=digests,
        raster=raster_ref,
        classes=res.classes.to_records() if res.classes else None,
        areas=res.areas,
        aoi=res.aoi,
        reports=res.reports,
    )
    return rec


def _model_reads() -> int:
    """Model files read by this worker process so far (once per model, see _classes)."""
    from geoseg.runtime.sources import bundle_reads

    return bundle_reads()


def _move_into_place(staging: Path, final: Path) -> None:
    """Rename the staging folder to ``final``, replacing an older ``final`` if any."""
    if final.exists():
        old = temporary_path(final)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)

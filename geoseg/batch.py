"""Batch workflows on Dask distributed: many scenes (or date pairs), resumable and safe.

:func:`run_workflow` plans one *unit* of work per scene (or per date pair), runs the units on a
Dask cluster (a :class:`distributed.LocalCluster` of single-threaded worker processes by
default, one per GPU where GPUs exist, or an existing cluster given by its scheduler address)
and writes, in the workflow's output folder::

    manifest.json            status, timings, output checksums (sha256) of every unit
    units/<id>/...           the outputs of one unit (class COG, polygons, change map)
    summary/class_areas.csv  per-scene class areas (``areas`` stage)
    summary/aoi_change.csv   per-pair, per-AOI loss and gain (``change`` stage)
    summary/index.gpkg       footprints of the units with their outputs and status
    summary/overview.png     a map of the class (or change) rasters with a legend

A unit is computed in a hidden staging folder and renamed into place when all its stages are
done, so a run killed at any moment leaves no partial output; the manifest is rewritten
atomically after each unit. A rerun skips the units recorded as done whose inputs and options
are unchanged and whose outputs still match their checksums, and redoes the others. One failing
unit is recorded with its reason and does not stop the others.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geoseg.classes import ClassMap
from geoseg.errors import ConfigError, GeosegError
from geoseg.io.atomic import atomic_outputs, clean_stale_temporaries, temporary_path
from geoseg.workflow import Workflow, load_workflow

__all__ = [
    "MANIFEST_NAME",
    "BatchReport",
    "Manifest",
    "StageResult",
    "StageRunner",
    "Unit",
    "class_areas",
    "default_workers",
    "plan_units",
    "process_unit",
    "run_stages",
    "run_workflow",
    "sha256_file",
    "write_summary",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "geoseg-batch-manifest"
UNITS_DIR = "units"
SUMMARY_DIR = "summary"
#: GeoPackages store a "last change" timestamp; fixing it makes reruns byte-identical.
OGR_DATE = "2000-01-01T00:00:00Z"

UnitKind = Literal["scene", "pair"]


# ---- planning ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One unit of work: a scene to classify or a date pair to compare.

    Attributes:
        id: a file-name-safe identifier, unique in the workflow (the scene's file stem, or
            the pair's name).
        kind: ``scene`` or ``pair``.
        inputs: the input paths (one scene; or before, after).
    """

    id: str
    kind: UnitKind
    inputs: tuple[Path, ...]


def _safe_id(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
    return out.strip("_") or "unit"


def plan_units(workflow: Workflow) -> list[Unit]:
    """The units of ``workflow`` in order, with unique ids."""
    raw: list[tuple[str, UnitKind, tuple[Path, ...]]] = []
    if workflow.pairs:
        for p in workflow.pairs:
            name = p.name or f"{p.before.stem}-{p.after.stem}"
            raw.append((_safe_id(name), "pair", (p.before, p.after)))
    else:
        for s in workflow.scenes:
            raw.append((_safe_id(s.stem), "scene", (s,)))
    units: list[Unit] = []
    used: set[str] = set()
    for uid, kind, inputs in raw:
        candidate, n = uid, 1
        if candidate in used and kind == "scene":
            candidate = _safe_id(f"{inputs[0].parent.name}_{uid}")
        while candidate in used:
            n += 1
            candidate = f"{uid}_{n}"
        used.add(candidate)
        units.append(Unit(candidate, kind, inputs))
    return units


def _stat(path: Path | None) -> list[Any]:
    if path is None:
        return [None]
    try:
        st = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]


def fingerprint(unit: Unit, workflow: Workflow) -> str:
    """A hash of everything a unit's outputs depend on (inputs, model, AOI, options)."""
    from geoseg import __version__

    stages = set(workflow.stages)
    payload = {
        "geoseg": __version__,
        "kind": unit.kind,
        "inputs": [_stat(p) for p in unit.inputs],
        "stages": list(workflow.stages),
        "model": _stat(workflow.model_path) if "predict" in stages else None,
        "predict": workflow.predict.model_dump(mode="json") if "predict" in stages else None,
        "vectorize": workflow.vectorize.model_dump(mode="json") if "vectorize" in stages else None,
        "change": workflow.change.model_dump(mode="json") if workflow.change else None,
        "aoi": _stat(workflow.aoi) if workflow.aoi else None,
        "aoi_name_column": workflow.aoi_name_column if workflow.aoi else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def default_workers(n_units: int) -> int:
    """One worker per GPU where GPUs exist, else one per CPU core; never more than units."""
    n = 0
    with contextlib.suppress(Exception):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        n = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    return max(1, min(n, n_units))


# ---- checksums and manifest ----------------------------------------------------------------
def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Manifest:
    """The JSON record of a batch run: one entry per unit, rewritten atomically.

    Each entry holds ``status`` (``pending``, ``done`` or ``failed``), ``fingerprint``,
    ``started``/``finished`` times, ``seconds`` per stage, ``outputs`` (path relative to the
    output folder -> sha256), ``error`` (one line) and the unit's summary values.
    """

    def __init__(self, path: Path, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = data or {"format": MANIFEST_FORMAT, "version": 1, "units": {}}

    @property
    def units(self) -> dict[str, dict[str, Any]]:
        """Unit id -> record."""
        units: dict[str, dict[str, Any]] = self.data.setdefault("units", {})
        return units

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest; an absent file gives an empty one."""
        p = Path(path)
        if not p.exists():
            return cls(p)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{p}: manifest cannot be read ({exc.__class__.__name__}); "
                "delete it or rerun with --no-resume"
            ) from exc
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ConfigError(
                f"{p}: not a geoseg batch manifest; choose another output folder or delete it"
            )
        return cls(p, data)

    def save(self) -> None:
        """Write the manifest atomically (temporary file, then rename)."""
        text = json.dumps(self.data, indent=2, sort_keys=True) + "\n"
        with atomic_outputs([self.path], overwrite=True) as (tmp,):
            tmp.write_text(text)

    def is_done(self, unit_id: str, fp: str, root: Path) -> bool:
        """Whether ``unit_id`` is done with fingerprint ``fp`` and outputs matching checksums."""
        rec = self.units.get(unit_id)
        if not rec or rec.get("status") != "done" or rec.get("fingerprint") != fp:
            return False
        outputs = rec.get("outputs") or {}
        for rel, digest in outputs.items():
            p = root / rel
            if not p.is_file() or sha256_file(p) != digest:
                log.info("%s: %s changed or missing; redoing the unit", unit_id, rel)
                return False
        return True


# ---- the work of one unit (runs on a worker) -----------------------------------------------
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

_BUNDLES: dict[tuple[str, int, int], Any] = {}


def _bundle(path: Path) -> Any:
    """The model bundle at ``path``, loaded once per worker process."""
    from geoseg.bundle import ModelBundle

    if not path.exists():
        hint = (
            "the default model is not installed; give `model:` a bundle path"
            if path.name == "default_model.pt"
            else "check `model:` in the workflow"
        )
        raise ModelNotFound(f"{path}: no such model file; {hint}")
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _BUNDLES:
        _BUNDLES.clear()
        _BUNDLES[key] = ModelBundle.load(path)
    return _BUNDLES[key]


class ModelNotFound(GeosegError, FileNotFoundError):
    """The workflow's model file does not exist."""


def _report_dict(report: Any) -> Any:
    to_dict = getattr(report, "to_dict", None)
    value = to_dict() if callable(to_dict) else report
    return json.loads(json.dumps(value, default=str))


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
    stages = workflow.stages
    if unit.kind == "pair":
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
        )
        res.seconds["change"] = time.perf_counter() - t0
        res.reports["change"] = _report_dict(creport)
        res.raster = out
        res.classes = CHANGE_CLASSES
        res.aoi = [a.to_dict() for a in creport.aoi]
        return res

    scene = unit.inputs[0]
    raster = scene
    classes: ClassMap | None = None
    if "predict" in stages:
        from geoseg.predict import predict

        bundle = _bundle(workflow.model_path)
        classes = bundle.classes
        t0 = time.perf_counter()
        raster = folder / f"{unit.id}_classes.tif"
        opts = workflow.predict
        preport = predict(
            scene,
            out=raster,
            model=bundle,
            size=opts.size,
            overlap=opts.overlap,
            batch_size=opts.batch_size,
            bands=list(opts.bands) if opts.bands else None,
            device=device,
            threads=threads,
        )
        res.seconds["predict"] = time.perf_counter() - t0
        res.reports["predict"] = _report_dict(preport)
    if "vectorize" in stages:
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
    if "areas" in stages:
        t0 = time.perf_counter()
        res.areas = class_areas(raster, classes=classes)
        res.seconds["areas"] = time.perf_counter() - t0
    res.raster = raster
    res.classes = classes
    return res


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    kind = "" if isinstance(exc, GeosegError) else f"{exc.__class__.__name__}: "
    return (kind + msg)[:500] or exc.__class__.__name__


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
            error=_one_line(exc),
            finished=_now(),
            seconds={"total": round(time.perf_counter() - t0, 3)},
            outputs={},
        )
        return rec
    seconds = {k: round(v, 3) for k, v in res.seconds.items()}
    seconds["total"] = round(time.perf_counter() - t0, 3)
    rec.update(
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


def _move_into_place(staging: Path, final: Path) -> None:
    """Rename the staging folder to ``final``, replacing an older ``final`` if any."""
    if final.exists():
        old = temporary_path(final)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


# ---- the batch (runs on the client) ------------------------------------------------------------
@dataclass
class BatchReport:
    """The outcome of :func:`run_workflow`.

    Attributes:
        workflow: the workflow's name.
        output: the output folder.
        done: ids of units computed in this run.
        skipped: ids of units already done (verified by checksum) and not recomputed.
        failed: unit id -> one-line reason.
        dashboard: the Dask dashboard link (``None`` without one).
        summary: summary file kind -> path.
        seconds: wall time of the whole run.
        workers: number of Dask workers used.
    """

    workflow: str
    output: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dashboard: str | None = None
    summary: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0

    @property
    def ok(self) -> bool:
        """True when no unit failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (JSON-friendly)."""
        return {
            "workflow": self.workflow,
            "output": str(self.output),
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "dashboard": self.dashboard,
            "summary": {k: str(v) for k, v in self.summary.items()},
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
        }


@contextlib.contextmanager
def _client(
    scheduler: str | None, workers: int, threads: int, dashboard: bool
) -> Iterator[tuple[Any, int]]:
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise ConfigError(
                f"{scheduler}: cannot reach the Dask scheduler ({exc}); check --scheduler"
            ) from exc
        with client:
            n = len(client.scheduler_info().get("workers", {}))
            yield client, n
        return
    import dask

    env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env["OGR_CURRENT_DATE"] = OGR_DATE
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536. Setting it switches off glibc's
    # dynamic mmap threshold, so every chip-sized array is a fresh mmap whose pages the kernel
    # faults in and zeroes: +50 % time per predicted scene on one worker, and page faults
    # contend between workers (benchmarks/bench_batch.py). Memory here is bounded by the
    # window, not by what the allocator keeps, so workers keep glibc's defaults.
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0" if dashboard else None,
            silence_logs=logging.ERROR,
            env=env,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, workers


def run_workflow(
    workflow: Workflow | str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    resume: bool = True,
    echo: Callable[[str], None] | None = None,
    runner: StageRunner | None = None,
) -> BatchReport:
    """Run a batch workflow on Dask distributed; resumable, one unit per scene or date pair.

    Args:
        workflow: a :class:`~geoseg.workflow.Workflow` or the path of its YAML file.
        scheduler: address of an existing Dask scheduler (``tcp://host:8786``); by default a
            local cluster of ``workers`` single-threaded processes is started.
        workers: number of local workers (default: one per GPU, else one per CPU core, at most
            one per unit).
        threads_per_worker: torch threads in each worker.
        resume: skip units already done (inputs and options unchanged, output checksums
            verified); ``False`` recomputes every unit.
        echo: called with one-line messages for the user (the dashboard link).
        runner: the stages of one unit (default :func:`run_stages`); must be importable by
            the workers.

    Returns:
        A :class:`BatchReport`; ``report.failed`` maps each failed unit to its reason.
    """
    from distributed import as_completed

    from geoseg.log import progress

    say: Callable[[str], None] = echo or (lambda _msg: None)
    wf = workflow if isinstance(workflow, Workflow) else load_workflow(workflow)
    t_start = time.perf_counter()
    root = wf.output
    try:
        (root / UNITS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{root}: cannot create the output folder ({exc.strerror})") from exc
    for folder in (root, root / UNITS_DIR, root / SUMMARY_DIR):
        clean_stale_temporaries(folder)
    units = plan_units(wf)
    mpath = root / MANIFEST_NAME
    manifest = Manifest.load(mpath) if resume else Manifest(mpath)
    if not resume and mpath.exists():
        with contextlib.suppress(ConfigError):
            old = Manifest.load(mpath)
            manifest.data["units"] = {
                k: v for k, v in old.units.items() if k in {u.id for u in units}
            }
    manifest.data.update(workflow=wf.name, stages=list(wf.stages), output=str(root))
    report = BatchReport(workflow=wf.name, output=root)
    prints = {u.id: fingerprint(u, wf) for u in units}
    todo: list[Unit] = []
    for u in units:
        if resume and manifest.is_done(u.id, prints[u.id], root):
            report.skipped.append(u.id)
        else:
            todo.append(u)
            prev = manifest.units.get(u.id, {})
            manifest.units[u.id] = {**prev, "status": "pending", "fingerprint": prints[u.id]}
    # units no longer in the workflow are dropped from the manifest
    manifest.data["units"] = {u.id: manifest.units[u.id] for u in units if u.id in manifest.units}
    manifest.save()
    if report.skipped:
        say(f"{len(report.skipped)} of {len(units)} unit(s) already done; skipping them")
    if todo:
        n = workers or default_workers(len(todo))
        if n < 1:
            raise ConfigError(f"--workers must be at least 1, got {n}")
        with _client(scheduler, n, threads_per_worker, dashboard=True) as (client, n_workers):
            report.workers = n_workers
            link: str | None = getattr(client, "dashboard_link", None)
            report.dashboard = link
            if link:
                say(f"Dask dashboard: {link}")
            futures = {
                client.submit(
                    process_unit,
                    u,
                    wf,
                    threads=threads_per_worker,
                    runner=runner,
                    key=f"geoseg-unit-{u.id}-{os.getpid()}-{time.monotonic_ns()}",
                    pure=False,
                ): u
                for u in todo
            }
            bar = progress(total=len(todo), desc=wf.name, unit="unit")
            try:
                for fut in as_completed(futures):
                    u = futures[fut]
                    try:
                        rec = fut.result()
                    except Exception as exc:  # the worker died, or the task was lost
                        rec = {
                            "kind": u.kind,
                            "inputs": [str(p) for p in u.inputs],
                            "status": "failed",
                            "error": f"worker failed: {_one_line(exc)}",
                            "finished": _now(),
                            "outputs": {},
                        }
                    rec["fingerprint"] = prints[u.id]
                    manifest.units[u.id] = rec
                    manifest.save()
                    bar.update(1)
            finally:
                bar.close()
    for u in todo:
        rec = manifest.units[u.id]
        if rec.get("status") == "done":
            report.done.append(u.id)
        else:
            report.failed[u.id] = str(rec.get("error") or "unknown error")
    report.summary = write_summary(manifest, wf, units=[u.id for u in units])
    # again at the end: a process killed just before this run may have been still exiting
    # (not yet reaped) when the run started
    clean_stale_temporaries(root / UNITS_DIR)
    report.seconds = time.perf_counter() - t_start
    manifest.data["last_run"] = {
        "finished": _now(),
        "seconds": round(report.seconds, 3),
        "workers": report.workers,
        "done": len(report.done),
        "skipped": len(report.skipped),
        "failed": len(report.failed),
    }
    manifest.save()
    return report


# ---- summary ------------------------------------------------------------------------------
def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_outputs([path], overwrite=True) as (tmp,):
        tmp.write_bytes(data)


def write_summary(
    manifest: Manifest, workflow: Workflow, *, units: Sequence[str]
) -> dict[str, Path]:
    """Write the summary files (areas CSV, AOI change CSV, index GeoPackage, overview PNG).

    Everything is built from the manifest in unit order, so a rerun gives identical files.
    """
    folder = workflow.output / SUMMARY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    recs = [(uid, manifest.units.get(uid, {})) for uid in units]
    out: dict[str, Path] = {}
    if "areas" in workflow.stages:
        rows = [
            [uid, a["class_id"], a["class_name"], a["pixels"], a["area_ha"]]
            for uid, r in recs
            if r.get("status") == "done"
            for a in r.get("areas") or []
        ]
        p = folder / "class_areas.csv"
        _write_bytes(p, _csv_bytes(["scene", "class_id", "class_name", "pixels", "area_ha"], rows))
        out["class_areas"] = p
    if "change" in workflow.stages:
        aoi_rows = [
            {"pair": uid, **row}
            for uid, r in recs
            if r.get("status") == "done"
            for row in r.get("aoi") or []
        ]
        header: list[str] = ["pair"]
        for row in aoi_rows:
            header.extend(k for k in row if k not in header)
        p = folder / "aoi_change.csv"
        _write_bytes(p, _csv_bytes(header, [[row.get(k, "") for k in header] for row in aoi_rows]))
        out["aoi_change"] = p
    out["index"] = _write_index(folder / "index.gpkg", recs)
    out["overview"] = _write_overview(folder / "overview.png", recs, workflow)
    return out


def _write_index(path: Path, recs: Sequence[tuple[str, dict[str, Any]]]) -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    rows = []
    geoms = []
    for uid, r in recs:
        outputs = sorted(r.get("outputs") or {})
        fp = r.get("footprint") or None
        geoms.append(box(*fp["lonlat"]) if fp else None)
        rows.append(
            {
                "unit": uid,
                "kind": r.get("kind", ""),
                "status": r.get("status", "pending"),
                "inputs": ";".join(r.get("inputs") or []),
                "raster": r.get("raster") or "",
                "vector": ";".join(o for o in outputs if o.endswith(".gpkg")),
                "outputs": ";".join(outputs),
                "error": r.get("error") or "",
            }
        )
    gdf = gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:4326")
    os.environ.setdefault("OGR_CURRENT_DATE", OGR_DATE)
    with atomic_outputs([path], overwrite=True) as (tmp,):
        gdf.to_file(tmp, layer="outputs", driver="GPKG", engine="pyogrio")
    return path


def _write_overview(
    path: Path, recs: Sequence[tuple[str, dict[str, Any]]], workflow: Workflow
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    from geoseg.io.raster import open_raster

    map_crs: str | None = None
    for _, r in recs:
        if r.get("footprint"):
            map_crs = r["footprint"]["crs"]
            break
    # date pairs share their footprint: one panel each; scenes: one map
    groups = [[rec] for rec in recs] if workflow.pairs else [list(recs)]
    ncols = min(3, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4 * ncols + 2, 4 * nrows + 1), dpi=100, squeeze=False
    )
    for extra in axes.flat[len(groups) :]:
        extra.set_axis_off()
    legend: dict[str, tuple[float, ...]] = {}
    n_done = n_failed = 0
    for ax, group in zip(axes.flat, groups, strict=False):
        extents: list[tuple[float, float, float, float]] = []
        for uid, r in group:
            fp = r.get("footprint")
            status = r.get("status")
            n_done += status == "done"
            n_failed += status == "failed"
            if not fp or map_crs is None:
                continue
            left, bottom, right, top = (
                fp["bounds"]
                if fp["crs"] == map_crs
                else transform_bounds(
                    CRS.from_string(fp["crs"]), CRS.from_string(map_crs), *fp["bounds"]
                )
            )
            extents.append((left, bottom, right, top))
            raster = r.get("raster")
            drawn = False
            if status == "done" and raster and fp["crs"] == map_crs:
                rpath = Path(raster) if Path(raster).is_absolute() else workflow.output / raster
                classes = ClassMap.from_records(r["classes"]) if r.get("classes") else None
                with contextlib.suppress(GeosegError, OSError, ValueError):
                    drawn = _draw_classes(
                        ax, rpath, classes, legend, open_raster, np, ListedColormap
                    )
            color = "tab:red" if status == "failed" else "0.2"
            ax.add_patch(
                Rectangle(
                    (left, bottom),
                    right - left,
                    top - bottom,
                    fill=False,
                    edgecolor=color,
                    linewidth=1.2,
                    hatch=None if drawn or status != "failed" else "//",
                )
            )
            if workflow.pairs:
                ax.set_title(uid, fontsize=9, color=color)
            else:
                ax.annotate(uid, (left, top), fontsize=7, va="bottom", color=color)
        if extents:
            xs = [e[0] for e in extents] + [e[2] for e in extents]
            ys = [e[1] for e in extents] + [e[3] for e in extents]
            pad = 0.03 * max(max(xs) - min(xs), max(ys) - min(ys), 1e-9)
            ax.set_xlim(min(xs) - pad, max(xs) + pad)
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.set_aspect("equal")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=7)
        if map_crs:
            ax.set_xlabel(map_crs, fontsize=8)
    ax = axes.flat[0]
    title = f"{workflow.name}: {n_done} done"
    if n_failed:
        title += f", {n_failed} failed"
        legend["failed"] = (0.84, 0.15, 0.16, 0.0)
    fig.suptitle(title)
    handles = [
        Patch(facecolor=c, edgecolor="tab:red" if name == "failed" else "0.3", label=name)
        for name, c in legend.items()
    ]
    if handles:
        fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    _write_bytes(path, buf.getvalue())
    return path


def _draw_classes(
    ax: Any,
    path: Path,
    classes: ClassMap | None,
    legend: dict[str, tuple[float, ...]],
    open_raster: Any,
    np: Any,
    listed: Any,
) -> bool:
    """Draw a class raster (decimated) on ``ax``; add its classes to ``legend``."""
    with open_raster(path) as src:
        scale = max(1.0, max(src.width, src.height) / 800.0)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        from rasterio.enums import Resampling

        a = src.read(1, out_shape=shape, resampling=Resampling.nearest, masked=True)
        if classes is None:
            cmap_src: dict[int, tuple[int, ...]] = {}
            with contextlib.suppress(ValueError):
                cmap_src = src.colormap(1)
            present = sorted(int(v) for v in np.unique(a.compressed()))
            from geoseg.classes import ClassInfo, default_color

            classes = (
                ClassMap(
                    tuple(
                        ClassInfo(
                            v,
                            f"class_{v}",
                            tuple(cmap_src[v][:3]) if v in cmap_src else default_color("", i),  # type: ignore[arg-type]
                        )
                        for i, v in enumerate(present)
                        if 0 <= v <= 254
                    )
                )
                if present
                else None
            )
        left, bottom, right, top = src.bounds
    if classes is None:
        return False
    lut = np.zeros((256, 4))
    for c in classes.classes:
        rgba = (*(v / 255 for v in c.color), 1.0)
        lut[c.id] = rgba
        legend.setdefault(c.name, rgba)
    data = np.ma.filled(a, 255).astype(np.int64).clip(0, 255)
    ax.imshow(
        data,
        cmap=listed(lut),
        vmin=-0.5,
        vmax=255.5,
        extent=(left, right, bottom, top),
        interpolation="nearest",
        origin="upper",
    )
    return True

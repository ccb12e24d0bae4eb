"""One scene predicted across Dask workers, band of rows by band, into one COG.

The window plan of the scene is split into row *bands* at chip-row starts. Each band is a task
(:func:`predict_band`): :func:`geoseg.predict.predict` with ``rows=`` predicts every chip that
touches the band's rows (so each band recomputes one chip row of *halo* at each inner edge),
blends them with the whole scene's weights in the whole scene's order, and writes only the
band's rows to a band COG in a hidden folder beside the output. The client streams the bands,
in order, as they finish, through the very writer a single-process run uses
(:class:`geoseg.predict.PredictionWriter`: same tags, colour table, ``.qml``, overviews), so the
outputs are byte-identical to ``geoseg predict`` in one process.

Why it is identical: a pixel's blended probability is ``sum(w * p) / sum(w)`` accumulated in
float32 over the chips that contain it, in row-major order, starting from zero. A band holds
every chip containing each of its pixels, in the same order, with the same weights (those of
the whole scene); chip probabilities do not depend on which other chips share a batch (checked
by the tests and the benchmark's sha256 for the CPU engines; a GPU in mixed precision may not
guarantee it). The COG is a function of the pixels and the metadata only.

Fault tolerance: a band is a pure function of its rows, written atomically (temporary name,
then rename), so Dask may rerun it: a worker killed mid-band has its task rescheduled by the
scheduler, and a band that raised an unexpected error is retried (:data:`RETRIES`). Input
errors (:class:`~geoseg.errors.GeosegError`) are not retried; the first is raised on the client.

Each worker process keeps the bundles it read (:func:`geoseg.runtime.sources.bundle_reads`
counts the reads), so a worker reads a model once however many bands (or scenes, in
:mod:`geoseg.batch`) it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from geoseg.errors import ConfigError, EmptyResultError, GeosegError

if TYPE_CHECKING:
    from geoseg.classes import ClassMap
    from geoseg.grid import Grid
    from geoseg.predict import PredictionWriter

__all__ = [
    "MIN_BAND_CHIP_ROWS",
    "RETRIES",
    "BandJob",
    "BandResult",
    "ParallelReport",
    "default_bands",
    "predict_band",
    "predict_parallel",
    "split_rows",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
#: Reruns of a band whose task raised an unexpected error (a killed worker is rescheduled by
#: the scheduler itself, up to ``distributed.scheduler.allowed-failures`` times).
RETRIES = 2
#: Fewest chip rows per band before :func:`default_bands` gives one band per worker.
MIN_BAND_CHIP_ROWS = 8
#: Rows streamed at a time from a band file into the output.
ASSEMBLE_ROWS = 512


# ---- the plan ---------------------------------------------------------------------------------
def split_rows(row_starts: Sequence[int], height: int, parts: int) -> list[tuple[int, int]]:
    """Core rows ``[start, stop)`` of ``parts`` bands cut at chip-row starts, top to bottom.

    Each band gets about the same number of chip rows; there are never more bands than chip
    rows. The bands tile ``[0, height)`` exactly.
    """
    n = len(row_starts)
    k = max(1, min(int(parts), n))
    cuts = sorted({round(i * n / k) for i in range(k)})
    edges = [0 if i == 0 else int(row_starts[c]) for i, c in enumerate(cuts)] + [int(height)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def default_bands(workers: int, chip_rows: int) -> int:
    """Bands for ``workers`` on a scene of ``chip_rows`` rows of chips.

    Two per worker (a slow or lost worker then delays half as much), but one per worker where
    that would leave bands under :data:`MIN_BAND_CHIP_ROWS` chip rows (each inner band edge
    predicts a chip row twice).
    """
    two = 2 * workers if chip_rows >= 2 * workers * MIN_BAND_CHIP_ROWS else workers
    return max(1, min(two, chip_rows))


@dataclass(frozen=True)
class BandJob:
    """What every band task needs: the scene, the model and the predict options."""

    scene: str
    model: str | None
    folder: str
    size: int
    overlap: int
    batch_size: int | None = None
    probabilities: bool = False
    probability_dtype: Literal["uint8", "float16"] = "uint8"
    confidence: bool = False
    aoi: str | None = None
    bands: tuple[str | int, ...] | None = None
    reflectance: str | None = None
    scale: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None
    device: str | None = None
    threads: int | None = None
    tta: str = "none"
    refine: str = "none"

    def paths(self, index: int) -> dict[str, Path]:
        """The band files of band ``index``: ``classes``, and ``proba``/``conf`` when asked."""
        base = Path(self.folder) / f"band{index:05d}.tif"
        out = {"classes": base}
        if self.probabilities:
            out["proba"] = base.with_name(base.stem + "_proba.tif")
        if self.confidence and not self.probabilities:
            out["conf"] = base.with_name(base.stem + "_confidence.tif")
        return out


@dataclass
class BandResult:
    """What a band task returns: its rows, its files (none for an all-nodata band), its report."""

    index: int
    rows: tuple[int, int]
    files: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    error: GeosegError | None = None
    empty: str = ""


def predict_band(job: BandJob, index: int, rows: tuple[int, int]) -> BandResult:
    """Predict the rows ``rows`` of ``job.scene`` into the band files of ``index`` (a task).

    Input errors come back in :attr:`BandResult.error` (not raised, so Dask does not retry
    them); an all-nodata band comes back without files.
    """
    from geoseg.predict import predict

    res = BandResult(index=index, rows=(int(rows[0]), int(rows[1])), worker=_worker_name())
    paths = job.paths(index)
    try:
        report = predict(
            job.scene,
            out=paths["classes"],
            model=job.model,  # read once per worker (geoseg.runtime.sources keeps bundles)
            size=job.size,
            overlap=job.overlap,
            batch_size=job.batch_size,
            probabilities=paths.get("proba"),
            probability_dtype=job.probability_dtype,
            confidence=job.confidence,
            aoi=job.aoi,
            bands=list(job.bands) if job.bands else None,
            reflectance=job.reflectance,
            scale=list(job.scale) if job.scale else None,
            offset=list(job.offset) if job.offset else None,
            overwrite=True,  # a rerun of a band replaces what an earlier try wrote
            device=job.device,
            threads=job.threads,
            tta=job.tta,
            refine=job.refine,
            rows=res.rows,
        )
    except EmptyResultError as exc:  # all nodata (or outside the AOI): nodata rows
        res.empty = str(exc)
        return res
    except GeosegError as exc:
        res.error = exc
        return res
    res.files = {k: str(v) for k, v in paths.items()}
    res.report = report.to_dict()
    return res


def _worker_name() -> str:
    with contextlib.suppress(Exception):
        from distributed import get_worker

        return str(get_worker().address)
    return f"pid {os.getpid()}"


# ---- the report -------------------------------------------------------------------------------
@dataclass
class ParallelReport:
    """What :func:`predict_parallel` did.

    ``seconds``: ``bands`` (first submit to last band done), ``assemble`` (the client's
    streaming into the output, overlapping the bands, plus the final COG), ``total``.
    """

    scene: str
    out: str
    outputs: list[str]
    grid: dict[str, Any]
    workers: int
    threads_per_worker: int
    bands: list[tuple[int, int]]
    valid_pixels: int = 0
    windows_predicted: int = 0
    windows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    band_workers: dict[int, str] = field(default_factory=dict)
    dashboard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        d = asdict(self)
        d["bands"] = [list(b) for b in self.bands]
        d["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        return d

    def summary(self) -> str:
        """A few lines for the terminal."""
        s = self.seconds
        return "\n".join(
            [
                f"Wrote {', '.join(self.outputs)}",
                f"Bands: {len(self.bands)} on {self.workers} worker(s) x "
                f"{self.threads_per_worker} thread(s); windows {self.windows} "
                f"(+{self.windows_predicted - self.windows} halo)",
                "Seconds: "
                + ", ".join(f"{k} {s.get(k, 0.0):.2f}" for k in ("bands", "assemble", "total")),
            ]
        )


# ---- the client -------------------------------------------------------------------------------
def predict_parallel(
    scene: PathLike,
    *,
    out: PathLike,
    model: PathLike | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    row_bands: int | None = None,
    threads: int | None = None,
    size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    probabilities: PathLike | None = None,
    probability_dtype: Literal["uint8", "float16"] = "uint8",
    confidence: bool = False,
    aoi: PathLike | None = None,
    vector: PathLike | None = None,
    bands: Sequence[str | int] | None = None,
    reflectance: str | None = None,
    scale: float | Sequence[float] | None = None,
    offset: float | Sequence[float] | None = None,
    device: str | None = None,
    tta: str = "none",
    refine: str = "none",
    overwrite: bool = False,
    band_task: Callable[..., BandResult] | None = None,
) -> ParallelReport:
    """Predict ``scene`` band by band on Dask workers into one COG at ``out``.

    The outputs are byte-identical to :func:`geoseg.predict.predict` with the same options.

    Args:
        scene: input raster.
        out: output class COG.
        model: a bundle path, an ``.onnx`` file or a registered name (default: the shipped one).
        workers: local worker processes (default: one per CPU core).
        scheduler: address of an existing Dask scheduler instead of a local cluster (the
            scene and the output folder must be on storage every worker sees).
        client: an existing :class:`distributed.Client` (e.g. ``worker_client()`` inside a
            batch unit) instead of either.
        row_bands: number of bands (default :func:`default_bands`: two per worker, one on
            small scenes); each inner band edge costs one chip row predicted twice.
        threads: torch threads per worker (default: the cores shared out among local workers).
        size: chip size (default: the model's).
        overlap: chip overlap (default: the model's).
        batch_size: chips per forward pass (default: predict's, from the machine).
        probabilities: also write per-class probabilities to this COG.
        probability_dtype: ``uint8`` (percent) or ``float16``.
        confidence: also write the top-class probability (as in ``predict``).
        aoi: only chips touching these polygons; nodata outside.
        vector: also polygonize the assembled classes into this file.
        bands: scene bands for the model's bands.
        reflectance: DN -> reflectance preset.
        scale: DN -> reflectance scale.
        offset: DN -> reflectance offset.
        device: ``cuda``/``cpu`` on the workers.
        tta: test-time augmentation mode.
        refine: ``none`` or ``crf``.
        overwrite: replace existing outputs.
        band_task: the task run per band (default :func:`predict_band`); must be importable
            by the workers.

    Returns:
        A :class:`ParallelReport`.
    """
    t0 = time.perf_counter()
    options = {k: v for k, v in locals().items() if k in _JOB_OPTIONS}  # what bands get
    paths = _check_outputs(out, probabilities, confidence, vector, scene, model, aoi, overwrite)
    grid = _scene_grid(scene)
    folder = _band_folder(paths["classes"])
    job = _band_job(scene, model, folder, **options)
    try:
        with _cluster(client, scheduler, workers, threads) as (cl, n, nthreads):
            # the model is opened on a worker: torch is imported there anyway, and the
            # client, which only streams pixels, stays light
            plan = cl.submit(_scene_plan, grid, job.model, size, overlap, pure=False).result()
            job = dataclasses.replace(job, size=plan.size, overlap=plan.overlap, threads=nthreads)
            k = row_bands or default_bands(n, len(plan.row_starts))
            parts = split_rows(plan.row_starts, plan.grid.height, k)
            report = _new_report(scene, cl, paths, plan, parts, n, nthreads)
            results = _submit(cl, band_task or predict_band, job, parts)
            _assemble(results, job, plan, paths, report, overwrite=overwrite)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if vector is not None:
        from geoseg.vectorize import vectorize

        vectorize(paths["classes"], vector, overwrite=overwrite)
        report.outputs.append(str(vector))
    report.seconds["total"] = time.perf_counter() - t0
    log.info("%s", report.summary())
    return report


#: The arguments of :func:`predict_parallel` that :func:`_band_job` turns into the band job.
_JOB_OPTIONS = frozenset(
    "size overlap batch_size probabilities probability_dtype confidence aoi bands reflectance "
    "scale offset device tta refine".split()
)


def _band_job(
    scene: PathLike,
    model: PathLike | None,
    folder: Path,
    *,
    size: int | None,
    overlap: int | None,
    batch_size: int | None,
    probabilities: PathLike | None,
    probability_dtype: Literal["uint8", "float16"],
    confidence: bool,
    aoi: PathLike | None,
    bands: Sequence[str | int] | None,
    reflectance: str | None,
    scale: float | Sequence[float] | None,
    offset: float | Sequence[float] | None,
    device: str | None,
    tta: str,
    refine: str,
) -> BandJob:
    """The options every band task gets (plain values: they travel to the workers)."""
    return BandJob(
        scene=str(scene),
        model=None if model is None else str(model),
        folder=str(folder),
        size=size or 0,
        overlap=overlap or 0,
        batch_size=batch_size,
        probabilities=probabilities is not None,
        probability_dtype=probability_dtype,
        confidence=confidence,
        aoi=None if aoi is None else str(aoi),
        bands=tuple(bands) if bands else None,
        reflectance=reflectance,
        scale=_floats(scale),
        offset=_floats(offset),
        device=device,
        tta=tta,
        refine=refine,
    )


def _new_report(
    scene: PathLike,
    cl: Any,
    paths: dict[str, Path],
    plan: _ScenePlan,
    parts: list[tuple[int, int]],
    n: int,
    nthreads: int,
) -> ParallelReport:
    """The report of a run before any band is done."""
    return ParallelReport(
        scene=str(scene),
        out=str(paths["classes"]),
        outputs=[str(p) for k, p in paths.items() if k != "vector"],
        grid=plan.grid.to_dict(),
        workers=n,
        threads_per_worker=nthreads,
        bands=parts,
        windows=len(plan.row_starts) * plan.columns,
        windows_predicted=sum(plan.band_windows(r) for r in parts),
        dashboard=getattr(cl, "dashboard_link", None),
    )


def _floats(v: float | Sequence[float] | None) -> tuple[float, ...] | None:
    if v is None:
        return None
    return (float(v),) if isinstance(v, int | float) else tuple(float(x) for x in v)


def _check_outputs(
    out: PathLike,
    probabilities: PathLike | None,
    confidence: bool,
    vector: PathLike | None,
    scene: PathLike,
    model: PathLike | None,
    aoi: PathLike | None,
    overwrite: bool,
) -> dict[str, Path]:
    """The outputs (``classes``, ``proba``, ``conf``, ``vector``), checked as predict checks them.

    One check of all of them before any work (:func:`geoseg.io.outputs.check_predict_outputs`):
    none exists without ``overwrite``, none is an input, no two share a style file.
    """
    from geoseg.io.outputs import check_predict_outputs, model_file

    o = check_predict_outputs(
        out,
        probabilities=probabilities,
        confidence=confidence,
        vector=vector,
        inputs={"scene": scene, "model": model_file(model), "AOI": aoi},
        overwrite=overwrite,
    )
    paths = {"classes": o.out}
    conf = o.confidence if o.probabilities is None else None  # else the probabilities' last band
    for key, p in (("proba", o.probabilities), ("conf", conf), ("vector", o.vector)):
        if p is not None:
            paths[key] = Path(p)
    return paths


@dataclass(frozen=True)
class _ScenePlan:
    grid: Grid
    row_starts: list[int]
    columns: int
    size: int
    overlap: int
    classes: ClassMap

    def band_windows(self, rows: tuple[int, int]) -> int:
        """Windows of the plan (before any AOI) that touch ``rows``: a band's work."""
        n = sum(1 for s in self.row_starts if s < rows[1] and s + self.size > rows[0])
        return n * self.columns


def _scene_grid(scene: PathLike) -> Grid:
    """The grid of ``scene`` (one-line errors for what cannot be read)."""
    from geoseg.grid import Grid
    from geoseg.io.raster import open_raster
    from geoseg.io.scene import is_stac, scene_source

    if is_stac(scene):  # its grid depends on the bands the model picks (on a worker)
        raise ConfigError(
            f"{scene}: --workers takes a raster or a folder of band files, not STAC JSON; "
            "predict the STAC scene without --workers, or stack its bands into a GeoTIFF first"
        )
    src, _ = scene_source(scene)  # a folder of band files: one VRT of its bands
    with open_raster(src) as ds:
        return Grid.from_dataset(ds)


def _scene_plan(
    grid: Grid, model: PathLike | None, size: int | None, overlap: int | None
) -> _ScenePlan:
    """The chip-row starts on ``grid`` and the model's chip size, overlap and classes (a task)."""
    from geoseg.grid import axis_starts, check_chip_size
    from geoseg.runtime import sources

    contract = sources.contract_of(model)
    size_ = int(size if size is not None else contract.chip_size)
    overlap_ = int(overlap if overlap is not None else contract.overlap)
    check_chip_size(size_, overlap_)
    ragged = contract.input_size is None  # as predict plans it (geoseg.predict._plan_scene)
    return _ScenePlan(
        grid=grid,
        row_starts=axis_starts(grid.height, size_, overlap_, ragged=ragged),
        columns=len(axis_starts(grid.width, size_, overlap_, ragged=ragged)),
        size=size_,
        overlap=overlap_,
        classes=contract.classes,
    )


def _band_folder(out: Path) -> Path:
    """A hidden folder beside ``out`` for the band files (stale ones of killed runs removed)."""
    from geoseg.io.atomic import clean_stale_temporaries, temporary_path

    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out.parent)
    folder = temporary_path(out.with_name(out.stem + "-bands"))
    folder.mkdir()
    return folder


@contextlib.contextmanager
def _cluster(
    client: Any, scheduler: str | None, workers: int | None, threads: int | None
) -> Iterator[tuple[Any, int, int]]:
    """``(client, workers, threads per worker)``: the given client, a scheduler's, or local."""
    if client is not None:
        n = max(1, len(client.scheduler_info().get("workers", {})))
        yield client, n, threads or 1
        return
    from geoseg.batch.client import dask_client, default_threads

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    n = workers or default_threads(1)
    nthreads = threads or default_threads(n)
    with dask_client(scheduler, n, nthreads, dashboard=False) as (cl, n_workers):
        yield cl, n_workers, threads or (nthreads if scheduler is None else 1)


def _submit(
    client: Any, task: Callable[..., BandResult], job: BandJob, parts: list[tuple[int, int]]
) -> list[Any]:
    """One future per band, in band order; the first bands first."""
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    return [
        client.submit(
            task,
            job,
            i,
            rows,
            key=f"geoseg-band-{i:05d}-{stamp}",
            pure=False,
            retries=RETRIES,
            priority=len(parts) - i,
        )
        for i, rows in enumerate(parts)
    ]


def _assemble(
    futures: list[Any],
    job: BandJob,
    plan: _ScenePlan,
    paths: dict[str, Path],
    report: ParallelReport,
    *,
    overwrite: bool,
) -> None:
    """Stream the bands, in order as they finish, through one :class:`PredictionWriter`."""
    from geoseg.log import progress

    t_start = time.perf_counter()
    writer: PredictionWriter | None = None
    waiting: list[BandResult] = []  # all-nodata bands before the first band with files
    t_busy = 0.0
    try:
        for fut in progress(futures, total=len(futures), desc="bands", unit="band"):
            res: BandResult = fut.result()
            if res.error is not None:
                raise res.error
            report.band_workers[res.index] = res.worker
            if writer is None and not res.files:
                waiting.append(res)
                continue
            t1 = time.perf_counter()
            if writer is None:
                writer = _open_writer(res, job, plan, paths, overwrite=overwrite)
                writer.__enter__()
                for w in waiting:
                    _write_band(writer, w)
            report.valid_pixels += _write_band(writer, res)
            t_busy += time.perf_counter() - t1
        report.seconds["bands"] = time.perf_counter() - t_start
        if writer is None:
            raise EmptyResultError(waiting[0].empty if waiting else f"{job.scene}: no bands")
        t1 = time.perf_counter()
        writer.__exit__(None, None, None)
        report.seconds["assemble"] = t_busy + time.perf_counter() - t1
        writer = None
    except BaseException as exc:
        for f in futures:
            f.cancel()
        if writer is not None:
            writer.__exit__(type(exc), exc, exc.__traceback__)
        raise


def _open_writer(
    first: BandResult,
    job: BandJob,
    plan: _ScenePlan,
    paths: dict[str, Path],
    *,
    overwrite: bool,
) -> PredictionWriter:
    """The single-process writer, with the provenance tags the first band file carries."""
    import rasterio

    from geoseg.predict import PredictionWriter

    with rasterio.open(first.files["classes"]) as ds:
        tags = ds.tags()
    tags.pop("AREA_OR_POINT", None)
    return PredictionWriter(
        out=paths["classes"],
        grid=plan.grid,
        classes=plan.classes,
        tags=tags,
        probabilities=paths.get("proba"),
        probability_dtype=job.probability_dtype,
        confidence=paths.get("proba")
        if job.confidence and job.probabilities
        else paths.get("conf"),
        overwrite=overwrite,
    )


def _write_band(writer: PredictionWriter, res: BandResult) -> int:
    """Copy a band's files into the writer's COGs (nodata for an all-nodata band); valid px."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    r0, r1 = res.rows
    valid = 0
    targets = {"classes": writer.classes, "proba": writer.proba, "conf": writer.conf}
    for kind, cog in targets.items():
        if cog is None:
            continue
        src = res.files.get(kind)
        with rasterio.open(src) if src else contextlib.nullcontext() as ds:
            width = cog.grid.width
            for a in range(r0, r1, ASSEMBLE_ROWS):
                b = min(r1, a + ASSEMBLE_ROWS)
                if ds is not None:
                    data = ds.read(window=Window(0, a - r0, width, b - a))
                else:
                    fill = (
                        np.nan if cog.nodata is not None and math.isnan(cog.nodata) else cog.nodata
                    )
                    data = np.full((cog.count, b - a, width), fill, dtype=cog.dtype)
                if kind == "classes":
                    valid += int(np.count_nonzero(data != cog.nodata))
                cog.write(data, Window(0, a, width, b - a))
    return valid

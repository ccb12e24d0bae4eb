"""The batch on the client: a Dask cluster, the units submitted, the manifest kept current."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.batch.manifest import (
    MANIFEST_NAME,
    OGR_DATE,
    SUMMARY_DIR,
    UNITS_DIR,
    Manifest,
    Unit,
    _now,
    fingerprint,
    plan_units,
)
from geoseg.batch.stages import StageRunner, process_unit, unit_error
from geoseg.batch.summaries import write_summary
from geoseg.errors import ConfigError
from geoseg.io.atomic import clean_stale_temporaries
from geoseg.workflow import Workflow, load_workflow

__all__ = ["BatchReport", "dask_client", "default_threads", "default_workers", "run_workflow"]

log = logging.getLogger(__name__)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads(workers: int) -> int:
    """Torch threads per local worker: the CPU cores shared out among ``workers``, at least one.

    More would oversubscribe the cores: each worker also runs reader threads (GDAL decodes
    outside the GIL) and its own main thread.
    """
    return max(1, _cores() // max(1, workers))


def default_workers(n_units: int) -> int:
    """One worker per GPU where GPUs exist, else one per CPU core; never more than units."""
    n = 0
    with contextlib.suppress(Exception):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        n = _cores()
    return max(1, min(n, n_units))


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
def dask_client(
    scheduler: str | None, workers: int, threads: int, *, dashboard: bool
) -> Iterator[tuple[Any, int]]:
    """``(client, workers)``: an existing scheduler's, or a LocalCluster of ``workers``.

    Local workers are single-task processes with ``threads`` BLAS/OpenMP threads each and
    glibc's allocator defaults (see below).
    """
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
    threads_per_worker: int | None = None,
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
        threads_per_worker: torch threads in each worker (default: the CPU cores shared out
            among the local workers, :func:`default_threads`; 1 on an existing cluster).
        resume: skip units already done (inputs and options unchanged, output checksums
            verified); ``False`` recomputes every unit.
        echo: called with one-line messages for the user (the dashboard link).
        runner: the stages of one unit (default :func:`~geoseg.batch.stages.run_stages`);
            must be importable by the workers.

    Returns:
        A :class:`BatchReport`; ``report.failed`` maps each failed unit to its reason.
    """
    say: Callable[[str], None] = echo or (lambda _msg: None)
    wf = workflow if isinstance(workflow, Workflow) else load_workflow(workflow)
    t_start = time.perf_counter()
    root = _prepare_output(wf.output)
    units = plan_units(wf)
    manifest = _open_manifest(root / MANIFEST_NAME, wf, units, resume=resume)
    report = BatchReport(workflow=wf.name, output=root)
    prints = {u.id: fingerprint(u, wf) for u in units}
    todo = _units_to_run(manifest, units, prints, root, report, resume=resume)
    if report.skipped:
        say(f"{len(report.skipped)} of {len(units)} unit(s) already done; skipping them")
    if todo:
        n = workers or default_workers(len(todo))
        if n < 1:
            raise ConfigError(f"--workers must be at least 1, got {n}")
        threads = threads_per_worker or (1 if scheduler else default_threads(n))
        with dask_client(scheduler, n, threads, dashboard=True) as (client, n_workers):
            report.workers = n_workers
            report.dashboard = getattr(client, "dashboard_link", None)
            if report.dashboard:
                say(f"Dask dashboard: {report.dashboard}")
            _run_units(client, todo, wf, manifest, prints, threads, runner)
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
    _record_run(manifest, report)
    return report


def _prepare_output(root: Path) -> Path:
    """Create the output folders and remove what killed runs left behind."""
    try:
        (root / UNITS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{root}: cannot create the output folder ({exc.strerror})") from exc
    for folder in (root, root / UNITS_DIR, root / SUMMARY_DIR):
        clean_stale_temporaries(folder)
    return root


def _open_manifest(path: Path, wf: Workflow, units: list[Unit], *, resume: bool) -> Manifest:
    """The manifest to update.

    The existing one, or (without resume) a fresh one keeping the records of this
    workflow's units.
    """
    manifest = Manifest.load(path) if resume else Manifest(path)
    if not resume and path.exists():
        with contextlib.suppress(ConfigError):
            old = Manifest.load(path)
            ids = {u.id for u in units}
            manifest.data["units"] = {k: v for k, v in old.units.items() if k in ids}
    manifest.data.update(workflow=wf.name, stages=list(wf.stages), output=str(wf.output))
    return manifest


def _units_to_run(
    manifest: Manifest,
    units: list[Unit],
    prints: dict[str, str],
    root: Path,
    report: BatchReport,
    *,
    resume: bool,
) -> list[Unit]:
    """The units not already done (recorded as skipped in ``report``); marks them pending."""
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
    return todo


def _run_units(
    client: Any,
    todo: list[Unit],
    wf: Workflow,
    manifest: Manifest,
    prints: dict[str, str],
    threads: int,
    runner: StageRunner | None,
) -> None:
    """Submit every unit; record each one in the manifest as it finishes."""
    from distributed import as_completed

    from geoseg.log import progress

    futures = {
        client.submit(
            process_unit,
            u,
            wf,
            threads=threads,
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
                rec = _lost_unit(u, exc)
            rec["fingerprint"] = prints[u.id]
            manifest.units[u.id] = rec
            manifest.save()
            bar.update(1)
    finally:
        bar.close()


def _lost_unit(unit: Unit, exc: BaseException) -> dict[str, Any]:
    """The manifest record of a unit whose worker died or whose task was lost."""
    return {
        "kind": unit.kind,
        "inputs": [str(p) for p in unit.inputs],
        "status": "failed",
        "error": f"worker failed: {unit_error(exc)}",
        "finished": _now(),
        "outputs": {},
    }


def _record_run(manifest: Manifest, report: BatchReport) -> None:
    manifest.data["last_run"] = {
        "finished": _now(),
        "seconds": round(report.seconds, 3),
        "workers": report.workers,
        "done": len(report.done),
        "skipped": len(report.skipped),
        "failed": len(report.failed),
    }
    manifest.save()

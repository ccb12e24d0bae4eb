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

The package is laid out by step (as odc-geo lays out ``cog/``) and re-exports its public names
here: :mod:`~geoseg.batch.manifest` (units, fingerprints, the manifest),
:mod:`~geoseg.batch.stages` (one unit on a worker), :mod:`~geoseg.batch.client` (the Dask
cluster and :func:`run_workflow`), :mod:`~geoseg.batch.summaries` (tables and index) and
:mod:`~geoseg.batch.plots` (the overview map).
"""

from __future__ import annotations

from geoseg.batch.client import BatchReport, default_workers, run_workflow
from geoseg.batch.manifest import (
    MANIFEST_NAME,
    SUMMARY_DIR,
    UNITS_DIR,
    Manifest,
    Unit,
    fingerprint,
    plan_units,
    sha256_file,
)
from geoseg.batch.plots import overview_figure, write_overview
from geoseg.batch.stages import (
    ModelNotFound,
    StageResult,
    StageRunner,
    class_areas,
    process_unit,
    run_stages,
)
from geoseg.batch.summaries import write_summary

__all__ = [
    "MANIFEST_NAME",
    "SUMMARY_DIR",
    "UNITS_DIR",
    "BatchReport",
    "Manifest",
    "ModelNotFound",
    "StageResult",
    "StageRunner",
    "Unit",
    "class_areas",
    "default_workers",
    "fingerprint",
    "overview_figure",
    "plan_units",
    "process_unit",
    "run_stages",
    "run_workflow",
    "sha256_file",
    "write_overview",
    "write_summary",
]

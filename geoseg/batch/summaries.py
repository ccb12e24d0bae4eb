"""The summary of a batch, built from its manifest: area and AOI tables, an index GeoPackage."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.batch.manifest import OGR_DATE, SUMMARY_DIR, Manifest
from geoseg.io.atomic import atomic_outputs
from geoseg.workflow import Workflow

__all__ = ["write_bytes", "write_summary"]


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, replacing it."""
    with atomic_outputs([path], overwrite=True) as (tmp,):
        tmp.write_bytes(data)


def write_summary(
    manifest: Manifest, workflow: Workflow, *, units: Sequence[str]
) -> dict[str, Path]:
    """Write the summary files (areas CSV, AOI change CSV, index GeoPackage, overview PNG).

    Everything is built from the manifest in unit order, so a rerun gives identical files.
    """
    from geoseg.batch.plots import write_overview

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
        write_bytes(p, _csv_bytes(["scene", "class_id", "class_name", "pixels", "area_ha"], rows))
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
        write_bytes(p, _csv_bytes(header, [[row.get(k, "") for k in header] for row in aoi_rows]))
        out["aoi_change"] = p
    out["index"] = _write_index(folder / "index.gpkg", recs)
    out["overview"] = write_overview(folder / "overview.png", recs, workflow)
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

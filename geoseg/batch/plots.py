"""The overview map of a batch: every unit's class (or change) raster with a legend.

Drawn on a :class:`matplotlib.figure.Figure` (no pyplot, no ``matplotlib.use``): library code
leaves the caller's backend alone.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.classes import ClassMap
from geoseg.errors import GeosegError
from geoseg.workflow import Workflow

__all__ = ["overview_figure", "write_overview"]

Records = Sequence[tuple[str, dict[str, Any]]]
Extent = tuple[float, float, float, float]


def write_overview(path: Path, recs: Records, workflow: Workflow) -> Path:
    """Write the overview PNG of the units ``recs`` (``(id, manifest record)``) atomically."""
    from geoseg.batch.summaries import write_bytes

    buf = io.BytesIO()
    overview_figure(recs, workflow).savefig(buf, format="png", metadata={"Software": None})
    write_bytes(path, buf.getvalue())
    return path


def overview_figure(recs: Records, workflow: Workflow) -> Any:
    """The overview as a :class:`~matplotlib.figure.Figure`.

    One map of the scenes, or one panel per date pair; footprints outlined (failed units in
    red) and a legend of the classes.
    """
    from matplotlib.figure import Figure

    map_crs = next((r["footprint"]["crs"] for _, r in recs if r.get("footprint")), None)
    # date pairs share their footprint: one panel each; scenes: one map
    groups = [[rec] for rec in recs] if workflow.pairs else [list(recs)]
    ncols = min(3, len(groups))
    nrows = -(-len(groups) // ncols)
    fig = Figure(figsize=(4 * ncols + 2, 4 * nrows + 1), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for extra in axes.flat[len(groups) :]:
        extra.set_axis_off()
    legend: dict[str, tuple[float, ...]] = {}
    status: Counter[str] = Counter()
    for ax, group in zip(axes.flat, groups, strict=False):
        extents = [
            e
            for uid, r in group
            if (e := _draw_unit(ax, uid, r, map_crs, workflow, legend, status)) is not None
        ]
        _frame_axes(ax, extents, map_crs)
    _title_and_legend(fig, workflow, legend, status)
    fig.tight_layout()
    return fig


def _draw_unit(
    ax: Any,
    uid: str,
    rec: dict[str, Any],
    map_crs: str | None,
    workflow: Workflow,
    legend: dict[str, tuple[float, ...]],
    status: Counter[str],
) -> Extent | None:
    """Draw one unit (raster and outline); returns its extent in the map CRS."""
    from matplotlib.patches import Rectangle

    state = str(rec.get("status"))
    status[state] += 1
    fp = rec.get("footprint")
    if not fp or map_crs is None:
        return None
    left, bottom, right, top = _bounds_in(fp, map_crs)
    drawn = False
    raster = rec.get("raster")
    if state == "done" and raster and fp["crs"] == map_crs:
        path = Path(raster) if Path(raster).is_absolute() else workflow.output / raster
        classes = ClassMap.from_records(rec["classes"]) if rec.get("classes") else None
        with contextlib.suppress(GeosegError, OSError, ValueError):
            drawn = _draw_classes(ax, path, classes, legend)
    color = "tab:red" if state == "failed" else "0.2"
    ax.add_patch(
        Rectangle(
            (left, bottom),
            right - left,
            top - bottom,
            fill=False,
            edgecolor=color,
            linewidth=1.2,
            hatch=None if drawn or state != "failed" else "//",
        )
    )
    if workflow.pairs:
        ax.set_title(uid, fontsize=9, color=color)
    else:
        ax.annotate(uid, (left, top), fontsize=7, va="bottom", color=color)
    return (left, bottom, right, top)


def _bounds_in(fp: dict[str, Any], map_crs: str) -> Extent:
    if fp["crs"] == map_crs:
        left, bottom, right, top = fp["bounds"]
        return (left, bottom, right, top)
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    b = transform_bounds(CRS.from_string(fp["crs"]), CRS.from_string(map_crs), *fp["bounds"])
    return (b[0], b[1], b[2], b[3])


def _frame_axes(ax: Any, extents: list[Extent], map_crs: str | None) -> None:
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


def _title_and_legend(
    fig: Any, workflow: Workflow, legend: dict[str, tuple[float, ...]], status: Counter[str]
) -> None:
    from matplotlib.patches import Patch

    title = f"{workflow.name}: {status['done']} done"
    if status["failed"]:
        title += f", {status['failed']} failed"
        legend["failed"] = (0.84, 0.15, 0.16, 0.0)
    fig.suptitle(title)
    handles = [
        Patch(facecolor=c, edgecolor="tab:red" if name == "failed" else "0.3", label=name)
        for name, c in legend.items()
    ]
    if handles:
        fig.legend(handles=handles, loc="upper right", fontsize=8)


def _draw_classes(
    ax: Any, path: Path, classes: ClassMap | None, legend: dict[str, tuple[float, ...]]
) -> bool:
    """Draw a class raster (decimated) on ``ax``; add its classes to ``legend``."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from rasterio.enums import Resampling

    from geoseg.io.raster import open_raster, raster_classes

    with open_raster(path) as src:
        scale = max(1.0, max(src.width, src.height) / 800.0)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        a = src.read(1, out_shape=shape, resampling=Resampling.nearest, masked=True)
        if classes is None:
            present = sorted(int(v) for v in np.unique(a.compressed()) if 0 <= v <= 254)
            classes = raster_classes(src, found=present) if present else None
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
        cmap=ListedColormap(lut),
        vmin=-0.5,
        vmax=255.5,
        extent=(left, right, bottom, top),
        interpolation="nearest",
        origin="upper",
    )
    return True

"""Change between two class maps: loss and gain of a set of classes (e.g. deforestation).

:func:`change` aligns AFTER onto BEFORE's grid (nearest neighbour, block by block), and marks
each pixel of BEFORE's grid:

* ``1`` loss: in ``from_classes`` before and not after (with ``to_classes``: in ``from`` before
  and in ``to`` after);
* ``2`` gain: not in ``from_classes`` before and in it after (with ``to_classes``: in ``to``
  before and in ``from`` after);
* ``0`` stable; ``255`` nodata where either date is nodata or not covered.

Per-date cloud masks (``before_mask`` / ``after_mask``, e.g. the COG of
``geoseg predict --cloud-mask-out``) mark pixels *not observed* at that date: nonzero (cloud 1, shadow 2...) or
nodata in the mask. Those pixels are nodata in the change map, never loss or gain, and are
counted apart (``unobserved_pixels``, ``unobserved_ha``). Class maps whose clouds are already
nodata (``geoseg predict --cloud-mask``) need no mask: nodata is never change.

The result is a styled COG; areas are ellipsoidal hectares (true areas, whatever the
projection). Optional outputs: loss/gain polygons with their area and the two dates, and a
per-AOI table (CSV) of loss and gain.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from geoseg.area import pixel_area_m2, pixel_areas_m2
from geoseg.classes import IGNORE_INDEX, ClassInfo, ClassMap
from geoseg.errors import (
    ClassMapError,
    EmptyResultError,
    VectorReadError,
)
from geoseg.grid import Grid, block_windows
from geoseg.io.align import AlignedRaster
from geoseg.io.atomic import atomic_outputs
from geoseg.io.vector import read_polygons
from geoseg.log import progress

__all__ = [
    "CHANGE_CLASSES",
    "GAIN",
    "LOSS",
    "STABLE",
    "AoiChange",
    "ChangeReport",
    "change",
    "change_codes",
    "date_of",
    "observed_from_mask",
]

log = logging.getLogger(__name__)

STABLE, LOSS, GAIN = 0, 1, 2
#: The classes of a change raster (nodata is 255).
CHANGE_CLASSES = ClassMap(
    (
        ClassInfo(id=STABLE, name="stable", color=(225, 225, 225)),
        ClassInfo(id=LOSS, name="loss", color=(215, 25, 28)),
        ClassInfo(id=GAIN, name="gain", color=(26, 150, 65)),
    )
)
_HA = 1e-4  # m² -> ha
_BLOCK = 1024


@dataclass(frozen=True)
class AoiChange:
    """Loss and gain inside one area of interest."""

    name: str
    loss_ha: float
    gain_ha: float
    loss_pixels: int
    gain_pixels: int
    observed_ha: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (the CSV row)."""
        return {
            "name": self.name,
            "loss_ha": round(self.loss_ha, 4),
            "gain_ha": round(self.gain_ha, 4),
            "loss_pixels": self.loss_pixels,
            "gain_pixels": self.gain_pixels,
            "observed_ha": round(self.observed_ha, 4),
        }


@dataclass(frozen=True)
class ChangeReport:
    """What :func:`change` measured and wrote."""

    out: Path
    before: str
    after: str
    date_before: str
    date_after: str
    from_classes: list[int]
    to_classes: list[int] | None
    grid: Grid
    loss_pixels: int
    gain_pixels: int
    stable_pixels: int
    nodata_pixels: int
    loss_ha: float
    gain_ha: float
    min_area: str | None = None
    vector: Path | None = None
    table: Path | None = None
    aoi: list[AoiChange] = field(default_factory=list)
    before_mask: str | None = None
    after_mask: str | None = None
    unobserved_pixels: int = 0
    unobserved_ha: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "out": str(self.out),
            "before": self.before,
            "after": self.after,
            "date_before": self.date_before,
            "date_after": self.date_after,
            "from_classes": self.from_classes,
            "to_classes": self.to_classes,
            "grid": self.grid.to_dict(),
            "loss_pixels": self.loss_pixels,
            "gain_pixels": self.gain_pixels,
            "stable_pixels": self.stable_pixels,
            "nodata_pixels": self.nodata_pixels,
            "loss_ha": round(self.loss_ha, 4),
            "gain_ha": round(self.gain_ha, 4),
            "min_area": self.min_area,
            "vector": str(self.vector) if self.vector else None,
            "table": str(self.table) if self.table else None,
            "aoi": [a.to_dict() for a in self.aoi],
            "before_mask": self.before_mask,
            "after_mask": self.after_mask,
            "unobserved_pixels": self.unobserved_pixels,
            "unobserved_ha": round(self.unobserved_ha, 4),
        }

    def summary(self) -> str:
        """A few lines for the command line."""
        lines = [
            f"Change {self.date_before} -> {self.date_after}: "
            f"loss {self.loss_ha:.2f} ha ({self.loss_pixels} px), "
            f"gain {self.gain_ha:.2f} ha ({self.gain_pixels} px)",
            f"Wrote {self.out}",
        ]
        if self.before_mask or self.after_mask:
            lines.insert(
                1,
                f"Not observed (cloud masks): {self.unobserved_ha:.2f} ha "
                f"({self.unobserved_pixels} px), never counted as change",
            )
        if self.vector:
            lines.append(f"Wrote {self.vector}")
        if self.table:
            lines.append(f"Wrote {self.table}")
            for a in self.aoi:
                lines.append(f"  {a.name}: loss {a.loss_ha:.2f} ha, gain {a.gain_ha:.2f} ha")
        return "\n".join(lines)


# ---- pure block rule ------------------------------------------------------------------------
def change_codes(
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray,
    *,
    from_classes: Sequence[int],
    to_classes: Sequence[int] | None = None,
) -> np.ndarray:
    """The change code (0 stable, 1 loss, 2 gain, 255 nodata) of each pixel of a block."""
    in_before = np.isin(before, from_classes)
    in_after = np.isin(after, from_classes)
    if to_classes is None:
        loss = in_before & ~in_after
        gain = ~in_before & in_after
    else:
        loss = in_before & np.isin(after, to_classes)
        gain = np.isin(before, to_classes) & in_after
    out = np.full(before.shape, STABLE, dtype=np.uint8)
    out[loss] = LOSS
    out[gain] = GAIN
    out[~valid] = IGNORE_INDEX
    return out


# ---- dates and classes ------------------------------------------------------------------------
_DATE_TAGS = ("DATE", "ACQUISITION_DATE", "SENSING_DATE", "DATETIME", "TIFFTAG_DATETIME")
_ISO = re.compile(r"((?:19|20)\d{2})[-_:]?(0[1-9]|1[0-2])[-_:]?(0[1-9]|[12]\d|3[01])")
_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")


def date_of(path: str | os.PathLike[str], tags: dict[str, str] | None = None) -> str:
    """The date of a map, as ISO ``YYYY-MM-DD`` where one can be found.

    Taken from its tags (DATE, ACQUISITION_DATE, TIFFTAG_DATETIME...), else a date or year in
    its file name, else its file stem (e.g. ``forest_t1``).
    """
    upper = {k.upper(): v for k, v in (tags or {}).items()}
    for key in _DATE_TAGS:
        value = upper.get(key)
        if value:
            m = _ISO.search(value)
            return f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else value.strip()
    stem = Path(path).stem
    m = _ISO.search(stem)
    if m:
        return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
    y = _YEAR.search(stem)
    return y.group(1) if y else stem


def resolve_classes(
    values: Sequence[int | str], classes: ClassMap | None, *, what: str, path: str
) -> list[int]:
    """Class ids from ids or names (names need the raster's class names)."""
    out: list[int] = []
    for v in values:
        if isinstance(v, int) or str(v).strip().lstrip("-").isdigit():
            cid = int(v)
            if not 0 <= cid <= 254:
                raise ClassMapError(f"{what}: class id {cid} is outside 0..254")
            out.append(cid)
            continue
        if classes is None:
            raise ClassMapError(
                f"{what}: class {v!r} is a name but {path} has no class names; give class ids "
                "(e.g. --from 1)"
            )
        out.append(classes.by_name(str(v)).id)
    if not out:
        raise ClassMapError(f"{what}: give at least one class (e.g. --from 1)")
    return sorted(set(out))


# ---- AOI ------------------------------------------------------------------------------------
@dataclass
class _Aoi:
    names: list[str]
    geoms: list[Any]
    bounds: np.ndarray  # (n, 4)


def _read_aoi(path: str | os.PathLike[str], name_column: str, grid: Grid) -> _Aoi:
    p = Path(path)
    frame = read_polygons(p, what="AOI")
    if name_column not in frame.columns and name_column == "name":  # the default: row numbers
        log.warning("%s: no 'name' column; the AOIs are named by row number (1, 2, ...)", p)
        frame = frame.assign(name=[str(i) for i in range(1, len(frame) + 1)])
    if name_column not in frame.columns:
        cols = [c for c in frame.columns if c != "geometry"]
        raise VectorReadError(
            f"{p}: no column {name_column!r} for AOI names (columns: {cols}); "
            "pass --aoi-name-column"
        )
    frame = frame.to_crs(grid.crs)
    left, bottom, right, top = grid.bounds
    b = frame.geometry.bounds.to_numpy()
    inside = (b[:, 0] < right) & (b[:, 2] > left) & (b[:, 1] < top) & (b[:, 3] > bottom)
    if not inside.any():
        raise EmptyResultError(
            f"{p}: no AOI polygon overlaps the change map; check that the AOI covers the scene"
        )
    return _Aoi(
        names=[str(n) for n in frame[name_column]],
        geoms=list(frame.geometry.values),
        bounds=b,
    )


# ---- the operation ------------------------------------------------------------------------
def change(
    before: str | os.PathLike[str],
    after: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    from_classes: Sequence[int | str],
    to_classes: Sequence[int | str] | None = None,
    vector: str | os.PathLike[str] | None = None,
    aoi: str | os.PathLike[str] | None = None,
    aoi_name_column: str = "name",
    min_area: str | float | None = None,
    before_date: str | None = None,
    after_date: str | None = None,
    table: str | os.PathLike[str] | None = None,
    before_mask: str | os.PathLike[str] | None = None,
    after_mask: str | os.PathLike[str] | None = None,
    mask_values: Sequence[int] | None = None,
    overwrite: bool = False,
) -> ChangeReport:
    """Map loss and gain of ``from_classes`` between two class rasters.

    Args:
        before: the earlier class raster; its grid is the output grid.
        after: the later class raster, on any grid/CRS (aligned nearest neighbour).
        out: the change raster (COG, styled; 0 stable, 1 loss, 2 gain, 255 nodata).
        from_classes: the class ids (or names, when the rasters carry class names) whose loss
            and gain are mapped, e.g. ``[1]`` for forest.
        to_classes: when given, loss is ``from -> to`` and gain is ``to -> from`` only.
        vector: optional polygons of loss and gain (GeoPackage...), with ``change``,
            ``area_ha``, ``date_before`` and ``date_after`` attributes, styled for QGIS.
        aoi: optional polygons of areas of interest; writes a per-AOI CSV table.
        aoi_name_column: the AOI attribute holding each area's name.
        min_area: remove loss/gain patches smaller than this (the ``vectorize --min-area``
            rule, e.g. ``"0.5ha"``, ``"5000m2"``, ``"10px"``); they become stable.
        before_date: the date of ``before`` (default: from its tags or file name).
        after_date: the date of ``after`` (default: from its tags or file name).
        table: the per-AOI CSV path (default: ``out`` with suffix ``.csv``).
        before_mask: a cloud mask of ``before``'s date (any grid; aligned nearest): pixels
            that are nonzero (or in ``mask_values``) or nodata there were not observed.
        after_mask: the same for ``after``'s date.
        mask_values: the mask values meaning "not observed" (default: every nonzero value,
            e.g. ``[2, 4]`` for Fmask's shadow and cloud).
        overwrite: replace existing outputs.

    Returns:
        A :class:`ChangeReport` with loss/gain pixels and hectares (true areas,
        :mod:`geoseg.area`) and the per-AOI table.

    Raises:
        GridError: a raster has no CRS or the two rasters do not overlap.
        OutputExistsError: an output exists and ``overwrite`` is false.
        EmptyResultError: no AOI polygon overlaps the map.
    """
    inputs = {"before map": before, "after map": after, "AOI": aoi}
    inputs |= {"before mask": before_mask, "after mask": after_mask}
    out_p, vector_p, table_p = _outputs(
        out, vector, table if aoi else None, aoi, overwrite, inputs=inputs
    )

    with contextlib.ExitStack() as stack:
        inp = _open_inputs(
            stack,
            before,
            after,
            from_classes=from_classes,
            to_classes=to_classes,
            dates=(before_date, after_date),
            aoi=(aoi, aoi_name_column),
            masks=(before_mask, after_mask),
            mask_values=mask_values,
        )
        tally = _map_change(inp, out_p, min_area=min_area, overwrite=overwrite)
    aoi_rows = _write_extras(inp, tally, out_p, vector_p, table_p, overwrite=overwrite)
    report = _report(
        inp, tally, aoi_rows, out=out_p, vector=vector_p, table=table_p, min_area=min_area
    )
    log.info("change: %s", report.summary().splitlines()[0])
    return report


@dataclass
class _Inputs:
    """The two maps on BEFORE's grid, with the classes, dates, AOIs and masks of one run."""

    before: str | os.PathLike[str]
    after: str | os.PathLike[str]
    bsrc: AlignedRaster
    asrc: AlignedRaster
    from_ids: list[int]
    to_ids: list[int] | None
    d_before: str
    d_after: str
    aois: _Aoi | None
    seen: _Observed
    masks: tuple[str | os.PathLike[str] | None, str | os.PathLike[str] | None]

    @property
    def grid(self) -> Grid:
        """The output grid (BEFORE's)."""
        return self.bsrc.grid


def _open_inputs(
    stack: contextlib.ExitStack,
    before: str | os.PathLike[str],
    after: str | os.PathLike[str],
    *,
    from_classes: Sequence[int | str],
    to_classes: Sequence[int | str] | None,
    dates: tuple[str | None, str | None],
    aoi: tuple[str | os.PathLike[str] | None, str],
    masks: tuple[str | os.PathLike[str] | None, str | os.PathLike[str] | None],
    mask_values: Sequence[int] | None,
) -> _Inputs:
    """Open both maps aligned onto BEFORE's grid; resolve classes and dates; read AOIs, masks."""
    before_date, after_date = dates
    bsrc = stack.enter_context(AlignedRaster(before, grid=_grid_of(before)))
    grid = bsrc.grid
    asrc = stack.enter_context(AlignedRaster(after, grid=grid))
    from_ids, to_ids = _class_ids(bsrc, asrc, from_classes, to_classes, before)
    d_before = before_date or date_of(before, bsrc.tags)
    d_after = after_date or date_of(after, asrc.tags)
    aoi_path, aoi_name_column = aoi
    aois = _read_aoi(aoi_path, aoi_name_column, grid) if aoi_path is not None else None
    seen = _Observed(masks, grid=grid, values=mask_values, stack=stack)
    return _Inputs(
        before, after, bsrc, asrc, from_ids, to_ids, d_before, d_after, aois, seen, masks
    )


def _map_change(
    inp: _Inputs, out_p: Path, *, min_area: str | float | None, overwrite: bool
) -> _Tally:
    """Code the blocks (sieved with ``min_area``) and stream them into the change COG."""
    grid = inp.grid
    blocks = _code_blocks(
        inp.bsrc, inp.asrc, from_ids=inp.from_ids, to_ids=inp.to_ids, seen=inp.seen
    )
    if min_area is not None:
        blocks = _sieved(blocks, grid, min_area)
    tags = {
        "GEOSEG_PRODUCT": "change",
        "BEFORE": Path(inp.before).name,
        "AFTER": Path(inp.after).name,
        "DATE_BEFORE": inp.d_before,
        "DATE_AFTER": inp.d_after,
        "FROM_CLASSES": ",".join(map(str, inp.from_ids)),
        "TO_CLASSES": ",".join(map(str, inp.to_ids or [])),
        "MIN_AREA": "" if min_area is None else str(min_area),
        **inp.seen.tags(),
    }
    return _write_change_map(out_p, grid, blocks, inp.aois, tags=tags, overwrite=overwrite)


def _write_extras(
    inp: _Inputs,
    tally: _Tally,
    out_p: Path,
    vector_p: Path | None,
    table_p: Path | None,
    *,
    overwrite: bool,
) -> list[AoiChange]:
    """The per-AOI table and the loss/gain polygons, where asked; the AOI rows."""
    aoi_rows = tally.aoi_rows(inp.aois)
    if table_p is not None:
        _write_table(table_p, aoi_rows, overwrite=overwrite)
    if vector_p is not None:
        _write_vector(
            out_p, vector_p, date_before=inp.d_before, date_after=inp.d_after, overwrite=overwrite
        )
    return aoi_rows


def _report(
    inp: _Inputs,
    tally: _Tally,
    aoi_rows: list[AoiChange],
    *,
    out: Path,
    vector: Path | None,
    table: Path | None,
    min_area: str | float | None,
) -> ChangeReport:
    """The :class:`ChangeReport` of a finished run."""
    before_mask, after_mask = inp.masks
    return ChangeReport(
        out=out,
        before=str(inp.before),
        after=str(inp.after),
        date_before=inp.d_before,
        date_after=inp.d_after,
        from_classes=inp.from_ids,
        to_classes=inp.to_ids,
        grid=inp.grid,
        **tally.totals(),
        min_area=str(min_area) if min_area is not None else None,
        vector=vector,
        table=table,
        aoi=aoi_rows,
        before_mask=str(before_mask) if before_mask is not None else None,
        after_mask=str(after_mask) if after_mask is not None else None,
        unobserved_pixels=inp.seen.pixels,
        unobserved_ha=inp.seen.hectares,
    )


def _outputs(
    out: str | os.PathLike[str],
    vector: str | os.PathLike[str] | None,
    table: str | os.PathLike[str] | None,
    aoi: str | os.PathLike[str] | None,
    overwrite: bool,
    *,
    inputs: dict[str, str | os.PathLike[str] | None],
) -> tuple[Path, Path | None, Path | None]:
    """The output paths (the AOI table defaults to ``out`` as ``.csv``), checked up front.

    All together, with their style files, against the inputs (:mod:`geoseg.io.outputs`).
    """
    from geoseg.io.outputs import check_outputs, class_raster_files, vector_files

    out_p = Path(out)
    vector_p = Path(vector) if vector is not None else None
    table_p = (Path(table) if table is not None else out_p.with_suffix(".csv")) if aoi else None
    planned = {f"--out {out_p}": class_raster_files(out_p)}
    if vector_p is not None:
        planned[f"--vector {vector_p}"] = vector_files(vector_p)
    if table_p is not None:
        planned[f"--table {table_p}"] = [table_p]
    check_outputs(planned, inputs=inputs, overwrite=overwrite)
    return out_p, vector_p, table_p


def _class_ids(
    bsrc: AlignedRaster,
    asrc: AlignedRaster,
    from_classes: Sequence[int | str],
    to_classes: Sequence[int | str] | None,
    before: str | os.PathLike[str],
) -> tuple[list[int], list[int] | None]:
    """The ``--from`` and ``--to`` class ids (names resolved with the rasters' class names)."""
    names = ClassMap.from_tags(bsrc.band_tags) or ClassMap.from_tags(asrc.band_tags)
    from_ids = resolve_classes(from_classes, names, what="--from", path=str(before))
    to_ids = (
        resolve_classes(to_classes, names, what="--to", path=str(before))
        if to_classes is not None
        else None
    )
    if to_ids is not None and set(to_ids) & set(from_ids):
        raise ClassMapError(
            f"--from {from_ids} and --to {to_ids} share classes; give disjoint sets"
        )
    return from_ids, to_ids


def _code_blocks(
    bsrc: AlignedRaster,
    asrc: AlignedRaster,
    *,
    from_ids: Sequence[int],
    to_ids: Sequence[int] | None,
    seen: _Observed | None = None,
) -> Iterator[tuple[Window, np.ndarray]]:
    """``(window, change codes)`` for every block of BEFORE's grid (``seen``: cloud masks)."""
    for window in block_windows(bsrc.grid.shape, _BLOCK):
        b, bvalid = bsrc.read(window)
        a, avalid = asrc.read(window)
        valid = bvalid & avalid if seen is None else seen.apply(window, bvalid & avalid)
        yield window, change_codes(b, a, valid, from_classes=from_ids, to_classes=to_ids)


@dataclass
class _Tally:
    """Pixel counts and true hectares of loss and gain, over the map and inside each AOI."""

    n_aoi: int
    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    loss_ha: float = 0.0
    gain_ha: float = 0.0
    aoi_px: np.ndarray = field(init=False)
    aoi_ha: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.aoi_px = np.zeros((self.n_aoi, 2), dtype=np.int64)
        self.aoi_ha = np.zeros((self.n_aoi, 3), dtype=np.float64)

    def add(self, grid: Grid, window: Window, codes: np.ndarray, aois: _Aoi | None) -> None:
        """Count one block of change codes."""
        self.counts += np.bincount(codes.ravel(), minlength=256)
        areas = pixel_areas_m2(grid, window) * _HA
        self.loss_ha += float((areas * (codes == LOSS)).sum())
        self.gain_ha += float((areas * (codes == GAIN)).sum())
        if aois is not None:
            _aoi_block(aois, grid, window, codes, areas, self.aoi_px, self.aoi_ha)

    def totals(self) -> dict[str, Any]:
        """The :class:`ChangeReport` fields of the whole map."""
        return {
            "loss_pixels": int(self.counts[LOSS]),
            "gain_pixels": int(self.counts[GAIN]),
            "stable_pixels": int(self.counts[STABLE]),
            "nodata_pixels": int(self.counts[IGNORE_INDEX]),
            "loss_ha": self.loss_ha,
            "gain_ha": self.gain_ha,
        }

    def aoi_rows(self, aois: _Aoi | None) -> list[AoiChange]:
        """One :class:`AoiChange` per AOI polygon."""
        if aois is None:
            return []
        return [
            AoiChange(
                name=aois.names[i],
                loss_ha=float(self.aoi_ha[i, 0]),
                gain_ha=float(self.aoi_ha[i, 1]),
                loss_pixels=int(self.aoi_px[i, 0]),
                gain_pixels=int(self.aoi_px[i, 1]),
                observed_ha=float(self.aoi_ha[i, 2]),
            )
            for i in range(len(aois.names))
        ]


def _write_change_map(
    out: Path,
    grid: Grid,
    blocks: Iterator[tuple[Window, np.ndarray]],
    aois: _Aoi | None,
    *,
    tags: dict[str, str],
    overwrite: bool,
) -> _Tally:
    """Stream the change blocks into the styled COG, counting them as they pass."""
    from geoseg.io.cog import CogWriter

    tally = _Tally(n_aoi=len(aois.names) if aois else 0)
    n_blocks = len(block_windows(grid.shape, _BLOCK))
    with CogWriter(
        out,
        grid=grid,
        dtype="uint8",
        nodata=IGNORE_INDEX,
        classes=CHANGE_CLASSES,
        tags=tags,
        overwrite=overwrite,
    ) as writer:
        for window, codes in progress(blocks, total=n_blocks, desc="change", unit="block"):
            writer.write(codes, window)
            tally.add(grid, window, codes, aois)
    return tally


# ---- cloud masks: where a date was observed -------------------------------------------------
def observed_from_mask(
    values: np.ndarray, valid: np.ndarray, *, mask_values: Sequence[int] | None = None
) -> np.ndarray:
    """True where a cloud mask says the ground was seen: valid and clear.

    Clear is ``0`` (the csmask classes: 0 clear, 1 cloud, 2 shadow) or, with ``mask_values``,
    any value not among them. Mask nodata counts as not observed.
    """
    clear = values == 0 if mask_values is None else ~np.isin(values, list(mask_values))
    return np.asarray(valid & clear, dtype=bool)


class _Observed:
    """Optional per-date cloud masks aligned on the change grid; counts what they remove."""

    def __init__(
        self,
        masks: Sequence[str | os.PathLike[str] | None],
        *,
        grid: Grid,
        values: Sequence[int] | None,
        stack: contextlib.ExitStack,
    ) -> None:
        self.grid = grid
        self.values = values
        self.masks = tuple(masks)
        self.paths = [m for m in masks if m is not None]
        self.sources = [stack.enter_context(AlignedRaster(m, grid=grid)) for m in self.paths]
        self.pixels = 0
        self.hectares = 0.0

    def apply(self, window: Window, valid: np.ndarray) -> np.ndarray:
        """``valid`` without the pixels some mask did not observe (those are counted)."""
        if not self.sources:
            return valid
        seen = np.ones(valid.shape, dtype=bool)
        for src in self.sources:
            values, ok = src.read(window)
            seen &= observed_from_mask(values, ok, mask_values=self.values)
        removed = valid & ~seen
        n = int(removed.sum())
        if n:
            self.pixels += n
            self.hectares += float((pixel_areas_m2(self.grid, window) * _HA * removed).sum())
        return valid & seen

    def tags(self) -> dict[str, str]:
        """Provenance tags of the masks used (none without masks)."""
        if not self.paths:
            return {}
        tags = {
            f"{key}_MASK": Path(m).name
            for key, m in zip(("BEFORE", "AFTER"), self.masks, strict=True)
            if m is not None
        }
        tags["MASK_VALUES"] = ",".join(map(str, self.values)) if self.values else "nonzero"
        return tags


def _grid_of(path: str | os.PathLike[str]) -> Grid:
    from geoseg.io.raster import open_raster

    with open_raster(path) as ds:
        return Grid.from_dataset(ds)


def _aoi_block(
    aois: _Aoi,
    grid: Grid,
    window: Window,
    codes: np.ndarray,
    areas: np.ndarray,
    px: np.ndarray,
    ha: np.ndarray,
) -> None:
    from rasterio.features import geometry_mask

    wb = grid.window_bounds(window)
    b = aois.bounds
    hits = np.nonzero(
        (b[:, 0] < wb.right) & (b[:, 2] > wb.left) & (b[:, 1] < wb.top) & (b[:, 3] > wb.bottom)
    )[0]
    if hits.size == 0:
        return
    sub = grid.window_grid(window)
    is_loss, is_gain, is_obs = codes == LOSS, codes == GAIN, codes != IGNORE_INDEX
    for i in hits:
        inside = geometry_mask(
            [aois.geoms[i]], out_shape=sub.shape, transform=sub.transform, invert=True
        )
        px[i, 0] += int((is_loss & inside).sum())
        px[i, 1] += int((is_gain & inside).sum())
        ha[i, 0] += float((areas * (is_loss & inside)).sum())
        ha[i, 1] += float((areas * (is_gain & inside)).sum())
        ha[i, 2] += float((areas * (is_obs & inside)).sum())


def _write_table(path: Path, rows: list[AoiChange], *, overwrite: bool) -> None:
    fields = ["name", "loss_ha", "gain_ha", "loss_pixels", "gain_pixels", "observed_ha"]
    with atomic_outputs([path], overwrite=overwrite) as (tmp,), tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(r.to_dict())


def _sieved(
    blocks: Iterator[tuple[Window, np.ndarray]], grid: Grid, min_area: str | float
) -> Iterator[tuple[Window, np.ndarray]]:
    """Apply the ``--min-area`` rule of :mod:`geoseg.vectorize` to the change blocks.

    Patches are connected across blocks, so the change map is gathered (1 byte per pixel),
    sieved with :func:`geoseg.vectorize.sieve`, and handed back block by block.
    """
    from geoseg.vectorize import parse_area, sieve

    codes = np.full(grid.shape, IGNORE_INDEX, dtype=np.uint8)
    windows = []
    for window, block in blocks:
        r, c = int(window.row_off), int(window.col_off)
        codes[r : r + block.shape[0], c : c + block.shape[1]] = block
        windows.append(window)
    min_pixels = parse_area(min_area, pixel_area_m2(grid))
    codes = sieve(codes, min_pixels, mask=codes != IGNORE_INDEX)
    for window in windows:
        r, c = int(window.row_off), int(window.col_off)
        yield window, codes[r : r + int(window.height), c : c + int(window.width)]


def _write_vector(
    raster: Path, out: Path, *, date_before: str, date_after: str, overwrite: bool
) -> None:
    """Loss and gain polygons of the change raster, with both dates, styled (one writer)."""
    from geoseg.io.style import vector_qml
    from geoseg.io.vector import write_vector
    from geoseg.vectorize import class_polygons

    frame, _, _ = class_polygons(raster, classes=CHANGE_CLASSES)
    frame = frame[frame["class_id"].isin([LOSS, GAIN])].reset_index(drop=True)
    frame["change"] = frame["class_name"]
    frame["date_before"] = date_before
    frame["date_after"] = date_after
    shown = ClassMap(tuple(c for c in CHANGE_CLASSES if c.id in (LOSS, GAIN)))
    write_vector(frame, out, qml=vector_qml(shown), layer=out.stem, overwrite=overwrite)

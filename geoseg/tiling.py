"""The tiler: scenes + labels -> georeferenced image/mask chips, a class map and a chip index.

Output layout (what training reads)::

    DIR/images/<scene>_r<row>_c<col>.tif   image chip: the scene's pixels, dtype and nodata
    DIR/masks/<scene>_r<row>_c<col>.tif    uint8 class ids, 255 = no label or scene nodata
    DIR/classes.yaml                       id, name, colour of every class
    DIR/index.gpkg                         one row per chip: footprint, scene, split, counts
    DIR/tile_report.json                   the split: chips, blocks, labelled pixels per class
                                           per split, and what was dropped and why

A *scene* is one raster file (GeoTIFF, VRT, JP2, ...) or a folder of single-band rasters
(e.g. a Sentinel-2 ``IMG_DATA`` folder) stacked as bands in file-name order, each band named
after its file (the part that differs between the names: ``B02``, ``B8A``...). Bands at
several resolutions are resampled (bilinear) onto one grid: the finest band's grid, or a grid
of ``resolution`` over the same extent.

Image chips hold the scene's values unchanged, nodata included, with the scene's nodata
value as their nodata tag (NaN for a float scene without one); where the bands have no common
nodata value the chip carries a per-dataset mask instead. So a chip read back equals the scene
read over the same window.

Chips are planned with :func:`geoseg.grid.plan_windows` and read one at a time, so memory is
bounded by a chip, not by the scene. A chip is a candidate when at least ``min_valid`` of its
pixels hold data in every band and at least ``min_labelled`` of its pixels carry a label.

Spatial split (:mod:`geoseg.blocks`): the map is cut into square blocks anchored at the CRS
origin, blocks are dealt to train/val/test by their chips and class pixels (seeded), and a
chip is dropped only where it would come within ``buffer`` pixels (default: the overlap) of a
chip of another split. When the split asked cannot be made (a split without chips, a class
that reaches no train chip) nothing is written and the error says why and what to change.
:func:`split_leakage` checks the written index.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg.blocks import (
    SPLITS,
    Footprint,
    SplitName,
    SplitPlan,
    assign_blocks,
    block_sizes,
    check_split,
    no_split,
    plan_split,
)
from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import (
    ChipSizeError,
    EmptyResultError,
    GridError,
    InputFileNotFoundError,
    OutputExistsError,
    OutputWriteError,
)
from geoseg.grid import Grid, check_chip_size, plan_windows
from geoseg.io.atomic import atomic_outputs, temporary_path
from geoseg.io.raster import open_raster
from geoseg.io.scene import Scene, SceneBand, open_scene
from geoseg.labels import (
    LabelSource,
    load_labels,
    read_on_grid,
)
from geoseg.log import progress

__all__ = [
    "REPORT_NAME",
    "SPLITS",
    "Scene",
    "SceneBand",
    "TileReport",
    "assign_blocks",
    "iter_chips",
    "open_scene",
    "split_leakage",
    "tile_scenes",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
REPORT_NAME = "tile_report.json"
_OUTPUTS = ("images", "masks", "index.gpkg", "classes.yaml", REPORT_NAME)


# ---- scenes (geoseg.io.scene: one way to open a scene for tile, train and predict) ----------
class _SceneReader:
    """Open datasets of a scene; reads the selected bands over a chip grid."""

    def __init__(self, scene: Scene, stack: contextlib.ExitStack) -> None:
        self.scene = scene
        self.datasets = {
            path: stack.enter_context(open_raster(path)) for path in {b.path for b in scene.bands}
        }

    def read(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        """``(image (bands, h, w), valid (h, w))``: values as stored, nodata kept.

        ``valid`` is true where every band has data (not nodata, not masked, not NaN).
        """
        image = np.empty((len(self.scene.bands), *grid.shape), dtype=self.scene.dtype)
        valid = np.ones(grid.shape, dtype=bool)
        # all bands of one file in one read (a 224-band scene: one call, not 224)
        by_path: dict[Path | str, list[int]] = {}
        for k, b in enumerate(self.scene.bands):
            by_path.setdefault(b.path, []).append(k)
        for path, ks in by_path.items():
            indexes = [self.scene.bands[k].index for k in ks]
            arr = read_on_grid(self.datasets[path], indexes, grid, resampling=Resampling.bilinear)
            image[ks] = arr.data
            valid &= ~np.ma.getmaskarray(arr).any(axis=0)
        if image.dtype.kind == "f":
            valid &= ~np.isnan(image).any(axis=0)
        return image, valid


# ---- report -----------------------------------------------------------------------------------
@dataclass
class TileReport:
    """What :func:`tile_scenes` wrote: chips and class pixels per split, what was dropped and why."""

    out_dir: Path
    classes: ClassMap
    chips: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    class_pixels: dict[str, dict[str, int]] = field(default_factory=dict)
    blocks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    missing: dict[str, list[str]] = field(default_factory=dict)
    planned: int = 0
    skipped_nodata: int = 0
    skipped_unlabelled: int = 0
    dropped_buffer: int = 0
    split: tuple[float, float, float] = (1.0, 0.0, 0.0)
    block_size: int = 0
    block_size_auto: bool = False
    buffer: int = 0
    no_split: bool = False
    per_scene: dict[str, int] = field(default_factory=dict)
    leakage_pixels: float = 0.0
    min_split_gap: float | None = None
    seconds: float = 0.0
    split_seconds: float = 0.0

    @property
    def total(self) -> int:
        """Number of chips written."""
        return sum(self.chips.values())

    @property
    def chips_per_s(self) -> float:
        """Throughput: chips planned and processed per second."""
        return self.planned / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few lines for the command line."""
        lines = [
            f"{self.total} chips in {self.out_dir} ("
            + ", ".join(f"{s} {self.chips[s]}" for s in SPLITS)
            + f") from {self.planned} planned; dropped {self.dropped_buffer} for the "
            f"{self.buffer} px buffer between splits, skipped {self.skipped_nodata} mostly "
            f"nodata, {self.skipped_unlabelled} without labels",
            "  " + self._split_line(),
        ]
        for s in SPLITS:
            counts = self.class_pixels.get(s, {})
            if self.chips[s]:
                total = max(sum(counts.values()), 1)
                px = ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in counts.items())
                lines.append(f"  {s:5s} {self.chips[s]} chips, labelled pixels: {px}")
        for where, names in self.missing.items():
            if names:
                lines.append(
                    f"  note: {where} has no pixel of {', '.join(names)} (classes in few blocks; "
                    "a smaller --block-size spreads them)"
                )
        gap = "n/a" if self.min_split_gap is None else f"{self.min_split_gap:g}"
        lines.append(
            f"split leakage: {self.leakage_pixels:g} pixels shared between splits "
            f"(closest chips of different splits {gap} CRS units apart)"
        )
        lines.append(
            f"{self.seconds:.1f} s (split {self.split_seconds:.2f} s), {self.chips_per_s:.1f} chips/s"
        )
        return "\n".join(lines)

    def _split_line(self) -> str:
        if self.no_split:
            return "no split: every chip is in train (no buffer, nothing dropped for a split)"
        how = "chosen from the scenes and chip size" if self.block_size_auto else "--block-size"
        fractions = ",".join(f"{v:.3g}" for v in self.split)
        blocks = ", ".join(f"{s} {self.blocks[s]}" for s in SPLITS)
        return f"split {fractions} over blocks of {self.block_size} px ({how}); blocks: {blocks}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (written to ``DIR/tile_report.json``)."""
        return {
            "out_dir": str(self.out_dir),
            "classes": self.classes.names,
            "chips": self.chips,
            "class_pixels": self.class_pixels,
            "blocks": self.blocks,
            "missing_classes": self.missing,
            "planned": self.planned,
            "dropped": {
                "buffer": self.dropped_buffer,
                "nodata": self.skipped_nodata,
                "unlabelled": self.skipped_unlabelled,
            },
            "split": list(self.split),
            "no_split": self.no_split,
            "block_size": self.block_size,
            "block_size_auto": self.block_size_auto,
            "buffer": self.buffer,
            "per_scene": self.per_scene,
            "leakage_pixels": self.leakage_pixels,
            "min_split_gap": self.min_split_gap,
            "seconds": round(self.seconds, 3),
            "split_seconds": round(self.split_seconds, 3),
        }


# ---- the tiler --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    """The tiler's checked options."""

    size: int
    overlap: int
    split: tuple[float, float, float]
    min_valid: float
    min_labelled: float
    block_size: int | None
    buffer: int
    seed: int
    no_split: bool


def tile_scenes(
    scenes: Sequence[PathLike],
    *,
    labels: Sequence[PathLike] | LabelSource,
    out_dir: PathLike,
    class_column: str | None = None,
    classes: ClassMap | None = None,
    size: int = 256,
    overlap: int | None = None,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    no_split: bool = False,
    bands: Sequence[int | str] | None = None,
    resolution: float | None = None,
    min_valid: float = 0.5,
    min_labelled: float = 0.01,
    block_size: int | None = None,
    buffer: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> TileReport:
    """Cut scenes and their labels into image/mask chips with a leak-free spatial split.

    Args:
        scenes: raster files or folders of band files (see :func:`open_scene`).
        labels: label files (see :func:`geoseg.labels.load_labels`) or a loaded source.
        out_dir: output folder (``images/``, ``masks/``, ``classes.yaml``, ``index.gpkg``,
            ``tile_report.json``); created only once the inputs are checked.
        class_column: attribute with each polygon's class.
        classes: class map fixing ids and colours.
        size: chip size in pixels.
        overlap: overlap between neighbouring chips in pixels; 32, at most a quarter of
            ``size``, when None.
        split: train, val, test fractions (of blocks, weighed by chips and class pixels).
        no_split: put every chip in train, without blocks or buffer (hold out whole scenes).
        bands: band indices (1-based) or names; all when None.
        resolution: target pixel size; the finest band's when None.
        min_valid: skip chips where fewer than this fraction of pixels hold data.
        min_labelled: skip chips where fewer than this fraction of pixels carry a label.
        block_size: side of the split blocks in pixels; chosen from the scenes and chip size
            when None (see :func:`geoseg.blocks.plan_split`).
        buffer: gap in pixels kept between chips of different splits; ``overlap`` when None
            (never less than the overlap).
        seed: seed of the block assignment.
        overwrite: replace an existing chip folder's outputs.

    Returns:
        A :class:`TileReport`.

    Raises:
        OutputExistsError: ``out_dir`` holds a previous run and ``overwrite`` is false.
        EmptyResultError: every chip was skipped, or the split asked cannot be made.
        GeosegError: bad scenes, labels, sizes or split (one-line messages).
    """
    t0 = time.perf_counter()
    opts = _check_options(
        size, overlap, split, min_valid, min_labelled, block_size, buffer, seed, no_split
    )
    if not scenes:
        raise InputFileNotFoundError("no scene given; pass one or more scene files or folders")
    out = Path(out_dir)
    _check_outputs(out, overwrite=overwrite)
    source = (
        labels
        if isinstance(labels, LabelSource)
        else load_labels(labels, class_column=class_column, classes=classes)
    )
    opened = _open_scenes(scenes, source, bands=bands, resolution=resolution, size=size)
    report = TileReport(out_dir=out, classes=source.classes, buffer=opts.buffer)
    with _staging(out) as (tmp_images, tmp_masks):
        rows = _survey(opened, source, opts, tmp_images, tmp_masks, report)
        t_split = time.perf_counter()
        plan = _plan(rows, opened, opts, report)
        report.split_seconds = time.perf_counter() - t_split
        rows = _apply_plan(rows, plan, (tmp_images, tmp_masks), report)
        _commit(rows, opened, report, tmp_images, tmp_masks, overwrite=overwrite)
    report.seconds = time.perf_counter() - t0
    return report


def _check_options(
    size: int,
    overlap: int | None,
    split: Sequence[float],
    min_valid: float,
    min_labelled: float,
    block_size: int | None,
    buffer: int | None,
    seed: int,
    no_split: bool,
) -> _Options:
    overlap = min(32, size // 4) if overlap is None else overlap
    check_chip_size(size, overlap)
    fractions = check_split(split)
    for name, v in (("min-valid", min_valid), ("min-labelled", min_labelled)):
        if not 0.0 <= v <= 1.0:
            raise ChipSizeError(f"--{name} must be a fraction in 0..1, got {v}")
    if block_size is not None and block_size <= 0:
        raise ChipSizeError(
            f"--block-size must be positive, got {block_size}; e.g. --block-size 512"
        )
    if buffer is not None and buffer < 0:
        raise ChipSizeError(f"--buffer must be non-negative, got {buffer}")
    gap = overlap if buffer is None else max(int(buffer), overlap)
    return _Options(
        size, overlap, fractions, min_valid, min_labelled, block_size, gap, seed, no_split
    )


def _check_outputs(out: Path, *, overwrite: bool) -> None:
    """Refuse an existing run (without ``overwrite``) or an unwritable place; create nothing."""
    if out.exists() and not out.is_dir():
        raise OutputWriteError(f"{out}: is a file, not a folder; give a folder for --out")
    if not overwrite:
        for name in _OUTPUTS:
            if (out / name).exists():
                raise OutputExistsError(
                    f"{out / name}: output exists; pass --overwrite to replace it or choose "
                    "another --out"
                )
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputWriteError(f"{parent}: is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputWriteError(f"{parent}: folder is not writable; choose a writable --out")


def _open_scenes(
    scenes: Sequence[PathLike],
    source: LabelSource,
    *,
    bands: Sequence[int | str] | None,
    resolution: float | None,
    size: int,
) -> list[Scene]:
    opened = [open_scene(s, bands=bands, resolution=resolution) for s in scenes]
    for sc in opened:
        if any(b.mosaic for b in sc.bands):
            raise GridError(
                f"{sc.path}: a STAC collection of several items; tile them one item at a time "
                "(give each item as its own scene)"
            )
        source.require_overlap(sc.grid, scene=str(sc.path))
        if min(sc.grid.shape) < size:
            raise ChipSizeError(
                f"{sc.path}: scene ({sc.grid.width} x {sc.grid.height} px) is smaller than the "
                f"chip size {size}; use a smaller --size (at most {min(sc.grid.shape)})"
            )
    return opened


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[tuple[Path, Path]]:
    """Hidden temporary chip folders inside ``out``, removed at the end.

    On failure the folders this run made for them (``out`` and missing parents) go too, so a
    refused run leaves nothing behind.
    """
    made: list[Path] = []
    p = out
    while not p.exists():
        made.append(p)
        p = p.parent
    tmp_images, tmp_masks = temporary_path(out / "images"), temporary_path(out / "masks")
    try:
        tmp_images.mkdir(parents=True)
        tmp_masks.mkdir()
        yield tmp_images, tmp_masks
    except BaseException:
        for folder in made:  # innermost first; only folders this run made and left empty
            with contextlib.suppress(OSError):
                for tmp in (tmp_images, tmp_masks):
                    shutil.rmtree(tmp, ignore_errors=True)
                folder.rmdir()
        raise
    finally:
        for tmp in (tmp_images, tmp_masks):
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _unique_names(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter(names)
    out, used = [], Counter[str]()
    for n in names:
        used[n] += 1
        out.append(n if seen[n] == 1 else f"{n}_{used[n]}")
    return out


def _survey(
    opened: Sequence[Scene],
    source: LabelSource,
    opts: _Options,
    tmp_images: Path,
    tmp_masks: Path,
    report: TileReport,
) -> list[dict[str, Any]]:
    """Read every planned chip; write the candidates (enough data and labels) to staging."""
    plans = [plan_windows(sc.grid.shape, opts.size, opts.overlap) for sc in opened]
    report.planned = sum(len(p) for p in plans)
    rows: list[dict[str, Any]] = []
    with progress(total=report.planned, desc="tile", unit="chip") as bar:
        for sc, name, windows in zip(
            opened, _unique_names([s.name for s in opened]), plans, strict=True
        ):
            report.per_scene[name] = 0
            with contextlib.ExitStack() as stack:
                chip = _ChipWriter(sc, name, _SceneReader(sc, stack), source, tmp_images, tmp_masks)
                for window in windows:
                    bar.update(1)
                    row = chip.write(window, opts, report)
                    if row is not None:
                        rows.append(row)
    if not rows:
        raise EmptyResultError(
            f"every one of {report.planned} chips was skipped ({report.skipped_nodata} mostly "
            f"nodata, {report.skipped_unlabelled} without labels); lower --min-labelled/"
            "--min-valid or use a smaller --size"
        )
    return rows


@dataclass
class _ChipWriter:
    """Reads one chip of a scene and its mask, and writes both when the chip is a candidate."""

    scene: Scene
    name: str
    reader: _SceneReader
    source: LabelSource
    tmp_images: Path
    tmp_masks: Path

    def write(self, window: Window, opts: _Options, report: TileReport) -> dict[str, Any] | None:
        """The chip's index row, or None (counted in ``report``) when it is skipped."""
        grid = self.scene.grid.window_grid(window)
        npx = grid.height * grid.width
        need = max(opts.min_labelled * npx, 1)
        mask = self.source.read_mask(grid)
        if np.count_nonzero(mask != IGNORE_INDEX) < need:
            report.skipped_unlabelled += 1
            return None
        image, valid = self.reader.read(grid)
        n_valid = int(np.count_nonzero(valid))
        if n_valid < opts.min_valid * npx or n_valid == 0:
            report.skipped_nodata += 1
            return None
        mask[~valid] = IGNORE_INDEX
        n_labelled = int(np.count_nonzero(mask != IGNORE_INDEX))
        if n_labelled < need:
            report.skipped_unlabelled += 1
            return None
        chip_id = f"{self.name}_r{int(window.row_off):06d}_c{int(window.col_off):06d}"
        fname = f"{chip_id}.tif"
        nodata = self.scene.nodata
        _write_chip(
            self.tmp_images / fname,
            image,
            grid,
            descriptions=self.scene.band_names,
            nodata=nodata,
            valid=valid if nodata is None else None,
        )
        cmap = self.source.classes
        _write_chip(
            self.tmp_masks / fname, mask[np.newaxis], grid, classes=cmap, nodata=IGNORE_INDEX
        )
        report.per_scene[self.name] += 1
        counts = np.bincount(mask.ravel(), minlength=256)
        row: dict[str, Any] = {
            "chip": chip_id,
            "scene": self.name,
            "scene_path": str(self.scene.path),
            "split": "",
            "image": f"images/{fname}",
            "mask": f"masks/{fname}",
            "row_off": int(window.row_off),
            "col_off": int(window.col_off),
            "width": grid.width,
            "height": grid.height,
            "crs": grid.crs.to_string() if grid.crs is not None else "",
            "valid_frac": n_valid / npx,
            "labelled_frac": n_labelled / npx,
            "_bounds": tuple(grid.bounds),
            "_crs": grid.crs,
            "_res": grid.resolution,
        }
        for c in cmap:
            row[f"px_{c.name}"] = int(counts[c.id])
        return row


def _write_chip(
    path: Path,
    data: np.ndarray,
    grid: Grid,
    *,
    descriptions: list[str] | None = None,
    classes: ClassMap | None = None,
    nodata: float | None,
    valid: np.ndarray | None = None,
) -> None:
    """Write a chip; ``valid`` (where not all true) becomes its per-dataset mask."""
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "compress": "deflate",
        "interleave": "pixel" if count > 1 else "band",
    }
    if width % 16 == 0 and height % 16 == 0:
        profile.update(tiled=True, blockxsize=min(width, 256), blockysize=min(height, 256))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if valid is not None and not valid.all():
            dst.write_mask(valid.astype(np.uint8) * 255)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if classes is not None:
            dst.write_colormap(1, classes.colormap())


def _crs_key(crs: CRS | None) -> str:
    return crs.to_wkt() if crs is not None else ""


def _plan(
    rows: Sequence[dict[str, Any]], opened: Sequence[Scene], opts: _Options, report: TileReport
) -> SplitPlan:
    """The split of the candidate chips; raises when the split asked cannot be made."""
    names = report.classes.names
    chips = [
        Footprint(
            crs=_crs_key(r["_crs"]),
            bounds=r["_bounds"],
            res=r["_res"],
            pixels=tuple(int(r[f"px_{n}"]) for n in names),
        )
        for r in rows
    ]
    extent = max(max(sc.grid.shape) for sc in opened)
    if opts.no_split:
        plan = no_split(chips)
    else:
        plan = plan_split(
            chips, opts.split, size=opts.size, overlap=opts.overlap, extent=extent,
            block_size=opts.block_size, buffer=opts.buffer, seed=opts.seed,
        )  # fmt: skip
    problems = plan.problems(names)
    if problems:
        raise EmptyResultError(_split_error(plan, problems, opts, len(rows), extent))
    return plan


def _split_error(plan: SplitPlan, problems: list[str], opts: _Options, n: int, extent: int) -> str:
    """One line: why the split cannot be made, with the numbers, and what to change."""
    asked = ",".join(f"{v:g}" for v in opts.split)
    kept = ", ".join(f"{s} {c}" for s, c in plan.chips.items())
    blocks = f"{plan.held} block{'s' if plan.held != 1 else ''}"
    size = f"a smaller --size (e.g. {max(opts.size // 2, 16)}) for more chips"
    if plan.auto:
        tried = block_sizes(opts.size, opts.overlap, extent)
        where = f"block sizes {tried[0]}-{tried[-1]} px tried, best {plan.block_size} px"
        fix = f"use {size}, --split 1,0,0 or --no-split, or more labels; or set --block-size"
    else:
        where = f"--block-size {plan.block_size}"
        fix = f"use another --block-size (or none: then it is chosen), {size}, or --split 1,0,0 / --no-split"
    return (
        f"the split {asked} cannot be made: {'; '.join(problems)} ({n} chips in {blocks}; "
        f"{where}: kept {kept}, {plan.dropped} dropped for the {opts.buffer} px buffer); {fix}"
    )


def _apply_plan(
    rows: list[dict[str, Any]],
    plan: SplitPlan,
    staged: tuple[Path, Path],
    report: TileReport,
) -> list[dict[str, Any]]:
    """Give kept rows their split; delete the staged files of dropped chips; fill the report."""
    kept: list[dict[str, Any]] = []
    for row, s in zip(rows, plan.splits, strict=True):
        if s is None:
            for folder, key in zip(staged, ("image", "mask"), strict=True):
                (folder / Path(row[key]).name).unlink(missing_ok=True)
            report.per_scene[row["scene"]] -= 1
            continue
        row["split"] = s
        kept.append(row)
    names = report.classes.names
    report.chips = {str(k): v for k, v in plan.chips.items()}
    report.blocks = {str(k): v for k, v in plan.blocks.items()}
    report.class_pixels = {
        s: dict(zip(names, plan.pixels[s], strict=True)) for s in SPLITS if plan.chips[s]
    }
    report.missing = {s: [names[k] for k in ks] for s, ks in plan.missing().items()}
    report.dropped_buffer = plan.dropped
    report.split = plan.fractions
    report.block_size = plan.block_size
    report.block_size_auto = plan.auto
    report.no_split = plan.block_size == 0
    return kept


def _commit(
    rows: list[dict[str, Any]],
    opened: Sequence[Scene],
    report: TileReport,
    tmp_images: Path,
    tmp_masks: Path,
    *,
    overwrite: bool,
) -> None:
    """Write the index, class map and report, then move the chip folders into place."""
    out = report.out_dir
    index = _index_frame(rows, opened)
    report.leakage_pixels, report.min_split_gap = split_leakage(index)
    finals = [out / "index.gpkg", out / "classes.yaml", out / REPORT_NAME]
    with atomic_outputs(finals, overwrite=overwrite) as (tmp_index, tmp_classes, tmp_report):
        index.to_file(tmp_index, layer="chips", driver="GPKG", engine="pyogrio")
        report.classes.write(tmp_classes)
        tmp_report.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        _replace_dir(tmp_images, out / "images")
        _replace_dir(tmp_masks, out / "masks")


def _index_frame(rows: list[dict[str, Any]], scenes: Sequence[Scene]) -> Any:
    import geopandas as gpd
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape

    crs = scenes[0].grid.crs
    geoms = []
    for r in rows:
        g = box(*r.pop("_bounds"))
        src = r.pop("_crs")
        r.pop("_res")
        if src != crs:
            g = shape(transform_geom(src, crs, mapping(g)))
        geoms.append(g)
    return gpd.GeoDataFrame(rows, geometry=geoms, crs=crs)


def split_leakage(index: Any) -> tuple[float, float | None]:
    """Area shared by chips of different splits, and the smallest gap between them.

    Args:
        index: a chip index (GeoDataFrame with ``split`` and footprints), e.g. ``index.gpkg``.

    Returns:
        ``(shared_area_in_pixels, min_distance)``: the first is 0 when no val/test pixel lies
        in a train chip (nor a test pixel in a val chip); the second is None with one split.
    """
    from shapely import STRtree

    geoms = np.asarray(index.geometry.values)
    splits = index["split"].to_numpy()
    px_area = np.array([g.area for g in geoms]) / np.maximum(
        index["width"].to_numpy() * index["height"].to_numpy(), 1
    )
    shared = 0.0
    left, right = STRtree(geoms).query(geoms, predicate="intersects")
    for i, j in zip(left, right, strict=True):
        if i < j and splits[i] != splits[j]:
            shared += geoms[i].intersection(geoms[j]).area / px_area[i]
    gap: float | None = None
    for s in np.unique(splits):
        others = geoms[splits != s]
        if others.size == 0:
            continue
        _, dist = STRtree(others).query_nearest(geoms[splits == s], return_distance=True)
        gap = float(dist.min()) if gap is None else min(gap, float(dist.min()))
    return shared, gap


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place, replacing (after the move) any previous one."""
    old: Path | None = None
    if final.exists():
        old = temporary_path(final)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def iter_chips(out_dir: PathLike, *, split: SplitName | None = None) -> Iterator[dict[str, Any]]:
    """Rows of ``DIR/index.gpkg`` (optionally of one split) as dictionaries with full paths."""
    import geopandas as gpd

    root = Path(out_dir)
    index = gpd.read_file(root / "index.gpkg", engine="pyogrio")
    if split is not None:
        index = index[index["split"] == split]
    for rec in index.to_dict("records"):
        rec["image"] = root / rec["image"]
        rec["mask"] = root / rec["mask"]
        yield rec

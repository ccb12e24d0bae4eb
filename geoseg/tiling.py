"""The tiler: scenes + labels -> georeferenced image/mask chips, a class map and a chip index.

Output layout (what training reads)::

    DIR/images/<scene>_r<row>_c<col>.tif   image chip, scene dtype, band descriptions kept
    DIR/masks/<scene>_r<row>_c<col>.tif    uint8 class ids, 255 = no label or scene nodata
    DIR/classes.yaml                       id, name, colour of every class
    DIR/index.gpkg                         one row per chip: footprint, scene, split, counts

A *scene* is one raster file (GeoTIFF, VRT, JP2, ...) or a folder of single-band rasters
(e.g. a Sentinel-2 ``IMG_DATA`` folder) stacked as bands in file-name order, each band named
after its file (the part that differs between the names: ``B02``, ``B8A``...). Bands at
several resolutions are resampled (bilinear) onto one grid: the finest band's grid, or a grid
of ``resolution`` over the same extent.

Chips are planned with :func:`geoseg.grid.plan_windows` and read one at a time, so memory is
bounded by a chip, not by the scene. A chip is kept when at least ``min_valid`` of its pixels
hold data in every band and at least ``min_labelled`` of its pixels carry a label.

Spatial split: the map is cut into square blocks of ``block_size`` pixels anchored at the
CRS origin; blocks are shuffled (``seed``) and dealt to train/val/test in the ``split``
proportions. A chip goes to a split only when the chip grown by ``buffer`` pixels (default:
the overlap) lies in blocks of that one split; other chips are dropped. So no val or test
pixel lies in a train chip, and chips of different splits are at least ``buffer`` pixels
apart. :func:`split_leakage` checks this on the written index.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import (
    BandMismatchError,
    ChipSizeError,
    EmptyResultError,
    GridError,
    InputFileNotFoundError,
    OutputExistsError,
    RasterReadError,
)
from geoseg.grid import Grid, check_chip_size, plan_windows
from geoseg.io.atomic import atomic_outputs, check_output, temporary_path
from geoseg.io.raster import check_grid, open_raster
from geoseg.labels import (
    RASTER_SUFFIXES,
    LabelSource,
    class_names_from_stems,
    load_labels,
    read_on_grid,
)
from geoseg.log import progress

__all__ = [
    "SPLITS",
    "Scene",
    "SceneBand",
    "TileReport",
    "assign_blocks",
    "chip_split",
    "iter_chips",
    "open_scene",
    "split_leakage",
    "tile_scenes",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, SplitName, SplitName] = ("train", "val", "test")


# ---- scenes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneBand:
    """One band of a scene: file, band index in that file (1-based) and name."""

    path: Path
    index: int
    name: str


@dataclass(frozen=True)
class Scene:
    """A scene: selected bands (possibly from several files) on one target grid."""

    name: str
    path: Path
    bands: tuple[SceneBand, ...]
    grid: Grid
    dtype: str

    @property
    def band_names(self) -> list[str]:
        """Band descriptions, in output order."""
        return [b.name for b in self.bands]


def _scene_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()
        )
        if not files:
            raise RasterReadError(
                f"{path}: folder holds no raster files ({', '.join(sorted(RASTER_SUFFIXES))}); "
                "give a raster file or a folder of band files"
            )
        return files
    if not path.exists():
        raise InputFileNotFoundError(f"{path}: no such scene file or folder; check the path")
    return [path]


def open_scene(
    path: PathLike,
    *,
    bands: Sequence[int | str] | None = None,
    resolution: float | None = None,
) -> Scene:
    """Describe a scene: its bands (selected by 1-based index or name) and target grid.

    Args:
        path: a raster file, or a folder of rasters stacked as bands (file-name order).
        bands: band indices (1-based, over all bands of the scene) or names
            (band descriptions, case-insensitive); all bands when None.
        resolution: pixel size of the target grid in CRS units; the finest band's
            resolution when None.

    Raises:
        InputFileNotFoundError, RasterReadError, GridError, BandMismatchError.
    """
    p = Path(path)
    files = _scene_files(p)
    all_bands: list[SceneBand] = []
    grids: dict[Path, Grid] = {}
    dtypes: dict[Path, list[str]] = {}
    for f in files:
        with open_raster(f) as ds:
            g = Grid.from_dataset(ds)
            check_grid(g, f)
            grids[f] = g
            dtypes[f] = list(ds.dtypes)
            descs = list(ds.descriptions)
            for i in range(1, ds.count + 1):
                all_bands.append(SceneBand(f, i, descs[i - 1] or ""))
    if len(files) > 1:  # a folder of band files: unnamed bands are named after their files
        stems = dict(zip(files, class_names_from_stems([f.stem for f in files]), strict=True))
        all_bands = [b if b.name else SceneBand(b.path, b.index, stems[b.path]) for b in all_bands]
    all_bands = [
        b if b.name else SceneBand(b.path, b.index, f"band_{k}")
        for k, b in enumerate(all_bands, start=1)
    ]
    selected = _select_bands(all_bands, bands, p)
    used = {b.path for b in selected}
    finest = min(used, key=lambda f: (grids[f].resolution[0], files.index(f)))
    base = grids[finest]
    crss = {grids[f].crs for f in used}
    if len(crss) > 1:
        raise GridError(
            f"{p}: band files are in different CRSs; warp them to one CRS first (gdalwarp -t_srs)"
        )
    if resolution is None:
        grid = base
    else:
        if resolution <= 0:
            raise GridError(f"resolution must be positive, got {resolution}; e.g. --resolution 10")
        grid = Grid.from_bounds(tuple(base.bounds), resolution, base.crs)
    dtype = np.result_type(*(dtypes[b.path][b.index - 1] for b in selected)).name
    name = p.stem if p.is_file() else p.name
    return Scene(name=name, path=p, bands=tuple(selected), grid=grid, dtype=dtype)


def _select_bands(
    available: list[SceneBand], bands: Sequence[int | str] | None, path: Path
) -> list[SceneBand]:
    if not bands:
        return available
    names = [b.name for b in available]
    out: list[SceneBand] = []
    for sel in bands:
        if isinstance(sel, int) or (isinstance(sel, str) and sel.strip().isdigit()):
            k = int(sel)
            if not 1 <= k <= len(available):
                raise BandMismatchError(
                    f"{path}: band {k} does not exist (the scene has {len(available)} bands: "
                    f"{', '.join(names)}); bands are numbered from 1"
                )
            out.append(available[k - 1])
            continue
        matches = [b for b in available if b.name.lower() == str(sel).strip().lower()]
        if len(matches) != 1:
            raise BandMismatchError(
                f"{path}: no band named {sel!r}; available: {', '.join(names)}; "
                "select bands by name or 1-based index"
            )
        out.append(matches[0])
    return out


class _SceneReader:
    """Open datasets of a scene; reads the selected bands over a chip grid."""

    def __init__(self, scene: Scene, stack: contextlib.ExitStack) -> None:
        self.scene = scene
        self.datasets = {
            path: stack.enter_context(open_raster(path)) for path in {b.path for b in scene.bands}
        }

    def read(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        """``(image (bands, h, w), valid (h, w))``: valid where every band has data."""
        image = np.zeros((len(self.scene.bands), *grid.shape), dtype=self.scene.dtype)
        valid = np.ones(grid.shape, dtype=bool)
        for k, b in enumerate(self.scene.bands):
            arr = read_on_grid(self.datasets[b.path], b.index, grid, resampling=Resampling.bilinear)
            image[k] = arr.data
            valid &= ~np.ma.getmaskarray(arr)
        image[:, ~valid] = 0
        return image, valid


# ---- spatial split ----------------------------------------------------------------------------
def assign_blocks(
    keys: Sequence[Any], split: Sequence[float], *, seed: int = 0
) -> dict[Any, SplitName]:
    """Deal block ``keys`` to train/val/test in the ``split`` proportions (deterministic).

    Keys are sorted, shuffled with ``seed`` and dealt by cumulative proportion; every split with
    a positive fraction gets at least one block when there are enough blocks.
    """
    fractions = _check_split(split)
    ordered = sorted(set(keys), key=repr)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ordered))
    n = len(ordered)
    counts = [round(f * n) for f in fractions]
    for i in (1, 2):  # val and test get a block when asked and possible
        if fractions[i] > 0 and counts[i] == 0 and n >= 3:
            counts[i] = 1
    counts[0] = n - counts[1] - counts[2]
    labels: list[SplitName] = []
    for s, c in zip(SPLITS, counts, strict=True):
        labels.extend([s] * max(c, 0))
    return {ordered[j]: labels[i] for i, j in enumerate(order)}


def _check_split(split: Sequence[float]) -> tuple[float, float, float]:
    vals = [float(v) for v in split]
    if len(vals) == 2:
        vals.append(0.0)
    if len(vals) != 3 or any(v < 0 or not math.isfinite(v) for v in vals) or sum(vals) <= 0:
        raise ChipSizeError(
            f"split must be three non-negative fractions train,val,test, got {list(split)}; "
            "e.g. --split 0.7,0.15,0.15"
        )
    total = sum(vals)
    return (vals[0] / total, vals[1] / total, vals[2] / total)


def _block_range(lo: float, hi: float, step: float) -> range:
    return range(math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9))


def _blocks_of(bounds: Sequence[float], step: tuple[float, float]) -> list[tuple[int, int]]:
    left, bottom, right, top = bounds
    return [
        (ix, iy)
        for iy in _block_range(bottom, top, step[1])
        for ix in _block_range(left, right, step[0])
    ]


def chip_split(
    grid: Grid,
    window: Window,
    *,
    block_split: dict[Any, SplitName],
    block_size: int,
    buffer: int,
) -> SplitName | None:
    """The split of a chip, or None when the chip grown by ``buffer`` meets several splits.

    Blocks are keyed ``(crs_wkt, ix, iy)``: squares of ``block_size`` pixels of ``grid``
    anchored at the CRS origin. The grown chip is clipped to ``grid`` (beyond the scene there
    are no pixels to leak).
    """
    grown = Window(
        max(0, int(window.col_off) - buffer),
        max(0, int(window.row_off) - buffer),
        0,
        0,
    )
    c1 = min(grid.width, int(window.col_off + window.width) + buffer)
    r1 = min(grid.height, int(window.row_off + window.height) + buffer)
    grown = Window(grown.col_off, grown.row_off, c1 - grown.col_off, r1 - grown.row_off)
    step = _block_step(grid, block_size)
    key = _crs_key(grid.crs)
    splits = {block_split[(key, ix, iy)] for ix, iy in _blocks_of(grid.window_bounds(grown), step)}
    return splits.pop() if len(splits) == 1 else None


def _block_step(grid: Grid, block_size: int) -> tuple[float, float]:
    xres, yres = grid.resolution
    return (block_size * xres, block_size * yres)


def _crs_key(crs: CRS | None) -> str:
    return crs.to_wkt() if crs is not None else ""


# ---- report -----------------------------------------------------------------------------------
@dataclass
class TileReport:
    """What :func:`tile_scenes` wrote and why chips were dropped."""

    out_dir: Path
    classes: ClassMap
    chips: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    class_pixels: dict[str, dict[str, int]] = field(default_factory=dict)
    planned: int = 0
    skipped_straddle: int = 0
    skipped_nodata: int = 0
    skipped_unlabelled: int = 0
    per_scene: dict[str, int] = field(default_factory=dict)
    leakage_pixels: float = 0.0
    min_split_gap: float | None = None
    seconds: float = 0.0

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
            f"{self.total} chips in {self.out_dir} "
            + "("
            + ", ".join(f"{s} {self.chips[s]}" for s in SPLITS)
            + f") from {self.planned} planned; skipped {self.skipped_straddle} on split "
            f"boundaries, {self.skipped_nodata} mostly nodata, {self.skipped_unlabelled} "
            "without labels",
        ]
        for s in SPLITS:
            counts = self.class_pixels.get(s, {})
            if self.chips[s]:
                lines.append(
                    f"  {s:5s} pixels: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                )
        gap = "n/a" if self.min_split_gap is None else f"{self.min_split_gap:g}"
        lines.append(
            f"split leakage: {self.leakage_pixels:g} pixels shared between splits "
            f"(closest chips of different splits {gap} CRS units apart)"
        )
        lines.append(f"{self.seconds:.1f} s, {self.chips_per_s:.1f} chips/s")
        return "\n".join(lines)


# ---- the tiler --------------------------------------------------------------------------------
def tile_scenes(
    scenes: Sequence[PathLike],
    *,
    labels: Sequence[PathLike] | LabelSource,
    out_dir: PathLike,
    class_column: str | None = None,
    classes: ClassMap | None = None,
    size: int = 256,
    overlap: int = 32,
    split: Sequence[float] = (0.7, 0.15, 0.15),
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
        out_dir: output folder (``images/``, ``masks/``, ``classes.yaml``, ``index.gpkg``).
        class_column: attribute with each polygon's class.
        classes: class map fixing ids and colours.
        size: chip size in pixels.
        overlap: overlap between neighbouring chips in pixels.
        split: train, val, test fractions (of blocks).
        bands: band indices (1-based) or names; all when None.
        resolution: target pixel size; the finest band's when None.
        min_valid: skip chips where fewer than this fraction of pixels hold data.
        min_labelled: skip chips where fewer than this fraction of pixels carry a label.
        block_size: side of the split blocks in pixels; ``4 * (size - overlap)`` when None.
        buffer: gap in pixels kept between chips of different splits; ``overlap`` when None
            (never less than the overlap).
        seed: seed of the block shuffle.
        overwrite: replace an existing chip folder's outputs.

    Returns:
        A :class:`TileReport`.

    Raises:
        OutputExistsError: ``out_dir`` holds a previous run and ``overwrite`` is false.
        EmptyResultError: every chip was skipped.
        GeosegError: bad scenes, labels, sizes or split (one-line messages).
    """
    t0 = time.perf_counter()
    check_chip_size(size, overlap)
    _check_split(split)
    for name, v in (("min-valid", min_valid), ("min-labelled", min_labelled)):
        if not 0.0 <= v <= 1.0:
            raise ChipSizeError(f"--{name} must be a fraction in 0..1, got {v}")
    block = block_size if block_size is not None else 4 * (size - overlap)
    if block <= 0:
        raise ChipSizeError(f"--block-size must be positive, got {block}")
    gap = overlap if buffer is None else max(int(buffer), overlap)
    if not scenes:
        raise InputFileNotFoundError("no scene given; pass one or more scene files or folders")

    out = Path(out_dir)
    finals = {k: out / k for k in ("images", "masks", "index.gpkg", "classes.yaml")}
    if not overwrite:
        for p in finals.values():
            if p.exists():
                raise OutputExistsError(
                    f"{p}: output exists; pass --overwrite to replace it or choose another --out"
                )
    check_output(out / "index.gpkg", overwrite=True)

    source = (
        labels
        if isinstance(labels, LabelSource)
        else load_labels(labels, class_column=class_column, classes=classes)
    )
    opened = [open_scene(s, bands=bands, resolution=resolution) for s in scenes]
    for sc in opened:
        source.require_overlap(sc.grid, scene=str(sc.path))
        if min(sc.grid.shape) < size:
            raise ChipSizeError(
                f"{sc.path}: scene ({sc.grid.width} x {sc.grid.height} px) is smaller than the "
                f"chip size {size}; use a smaller --size"
            )
    names = _unique_names([sc.name for sc in opened])

    # Plan: windows, blocks and the split of every chip (cheap, no pixels read).
    plans: list[list[tuple[Window, SplitName | None]]] = []
    keys: set[tuple[str, int, int]] = set()
    for sc in opened:
        step = _block_step(sc.grid, block)
        ck = _crs_key(sc.grid.crs)
        keys.update((ck, ix, iy) for ix, iy in _blocks_of(tuple(sc.grid.bounds), step))
    block_split = assign_blocks(sorted(keys), split, seed=seed)
    for sc in opened:
        windows = plan_windows(sc.grid.shape, size, overlap)
        plans.append(
            [
                (
                    w,
                    chip_split(sc.grid, w, block_split=block_split, block_size=block, buffer=gap),
                )
                for w in windows
            ]
        )

    cmap = source.classes
    report = TileReport(out_dir=out, classes=cmap)
    report.planned = sum(len(p) for p in plans)
    rows: list[dict[str, Any]] = []
    tmp_images, tmp_masks = temporary_path(finals["images"]), temporary_path(finals["masks"])
    try:
        tmp_images.mkdir(parents=True)
        tmp_masks.mkdir(parents=True)
        with progress(total=report.planned, desc="tile", unit="chip") as bar:
            for sc, name, plan in zip(opened, names, plans, strict=True):
                kept = 0
                with contextlib.ExitStack() as stack:
                    reader = _SceneReader(sc, stack)
                    for window, chip_split_name in plan:
                        bar.update(1)
                        if chip_split_name is None:
                            report.skipped_straddle += 1
                            continue
                        row = _tile_one(
                            sc,
                            name,
                            reader,
                            source,
                            window,
                            chip_split_name,
                            cmap,
                            tmp_images,
                            tmp_masks,
                            min_valid=min_valid,
                            min_labelled=min_labelled,
                            report=report,
                        )
                        if row is not None:
                            rows.append(row)
                            kept += 1
                report.per_scene[name] = kept
        if not rows:
            raise EmptyResultError(
                f"every one of {report.planned} chips was skipped "
                f"({report.skipped_straddle} on split boundaries, {report.skipped_nodata} "
                f"mostly nodata, {report.skipped_unlabelled} without labels); lower "
                "--min-labelled/--min-valid, use a smaller --size or a larger --block-size"
            )
        index = _index_frame(rows, cmap, opened)
        report.leakage_pixels, report.min_split_gap = split_leakage(index)
        with atomic_outputs(
            [finals["index.gpkg"], finals["classes.yaml"]], overwrite=overwrite
        ) as (tmp_index, tmp_classes):
            index.to_file(tmp_index, layer="chips", driver="GPKG", engine="pyogrio")
            cmap.write(tmp_classes)
            _replace_dir(tmp_images, finals["images"])
            _replace_dir(tmp_masks, finals["masks"])
    finally:
        for tmp in (tmp_images, tmp_masks):
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    for r in rows:
        report.chips[r["split"]] += 1
        counts = report.class_pixels.setdefault(r["split"], dict.fromkeys(cmap.names, 0))
        for c in cmap:
            counts[c.name] += int(r[f"px_{c.name}"])
    report.seconds = time.perf_counter() - t0
    return report


def _unique_names(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter(names)
    out, used = [], Counter[str]()
    for n in names:
        used[n] += 1
        out.append(n if seen[n] == 1 else f"{n}_{used[n]}")
    return out


def _tile_one(
    scene: Scene,
    name: str,
    reader: _SceneReader,
    source: LabelSource,
    window: Window,
    split_name: SplitName,
    cmap: ClassMap,
    tmp_images: Path,
    tmp_masks: Path,
    *,
    min_valid: float,
    min_labelled: float,
    report: TileReport,
) -> dict[str, Any] | None:
    grid = scene.grid.window_grid(window)
    npx = grid.height * grid.width
    mask = source.read_mask(grid)
    if np.count_nonzero(mask != IGNORE_INDEX) < max(min_labelled * npx, 1):
        report.skipped_unlabelled += 1
        return None
    image, valid = reader.read(grid)
    n_valid = int(np.count_nonzero(valid))
    if n_valid < min_valid * npx or n_valid == 0:
        report.skipped_nodata += 1
        return None
    mask[~valid] = IGNORE_INDEX
    n_labelled = int(np.count_nonzero(mask != IGNORE_INDEX))
    if n_labelled < max(min_labelled * npx, 1):
        report.skipped_unlabelled += 1
        return None
    chip_id = f"{name}_r{int(window.row_off):06d}_c{int(window.col_off):06d}"
    fname = f"{chip_id}.tif"
    _write_chip(tmp_images / fname, image, grid, descriptions=scene.band_names, nodata=None)
    _write_chip(tmp_masks / fname, mask[np.newaxis], grid, classes=cmap, nodata=IGNORE_INDEX)
    counts = np.bincount(mask.ravel(), minlength=256)
    row: dict[str, Any] = {
        "chip": chip_id,
        "scene": name,
        "scene_path": str(scene.path),
        "split": split_name,
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
) -> None:
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
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if classes is not None:
            dst.write_colormap(1, classes.colormap())


def _index_frame(rows: list[dict[str, Any]], cmap: ClassMap, scenes: Sequence[Scene]) -> Any:
    import geopandas as gpd
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape

    crs = scenes[0].grid.crs
    geoms = []
    for r in rows:
        g = box(*r.pop("_bounds"))
        src = r.pop("_crs")
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

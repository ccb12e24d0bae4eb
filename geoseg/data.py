"""Training data: scenes + labels as torchgeo datasets, or the chips written by ``geoseg tile``.

Two ways in, one output: batches of ``image`` (float32, normalised, ``(N, bands, h, w)``) and
``mask`` (int64 class *indices* ``0..n-1``, :data:`~geoseg.classes.IGNORE_INDEX` for pixels
without a label or with scene nodata).

* **Scenes** (:class:`SceneData`): each scene is a torchgeo :class:`~torchgeo.datasets.RasterDataset`
  intersected with a mask dataset built from its labels (raster or vector, through
  :mod:`geoseg.labels`). Training chips come from a seeded
  :class:`~torchgeo.samplers.RandomGeoSampler` inside the training region; validation and
  test chips from a :class:`~torchgeo.samplers.GridGeoSampler` over their regions. Regions
  come from a spatial split: strips along x (west to east: train, val, test) or y (north to
  south), separated by a buffer of unused pixels.
* **Chips** (:class:`ChipData`): ``DIR/images/*.tif`` and ``DIR/masks/*.tif`` with
  ``DIR/classes.yaml`` and the split of each chip in ``DIR/index.gpkg`` (the tiler's ``chip``,
  ``image``, ``mask`` and ``split`` columns; a chip the index does not list is an error);
  without an index the same spatial strip rule is applied to chip centres.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rasterio.windows import Window

from geoseg.bundle import Normalization
from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import (
    BandMismatchError,
    ConfigError,
    InputFileNotFoundError,
    LabelError,
)
from geoseg.grid import Grid

__all__ = [
    "Batch",
    "ChipData",
    "SceneData",
    "SplitRule",
    "compute_normalization",
    "normalize_batch",
    "shard",
    "split_windows",
]

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]

#: The chip index written by ``geoseg tile`` and the columns :class:`ChipData` reads from it.
INDEX_NAME = "index.gpkg"
INDEX_LAYER = "chips"
INDEX_COLUMNS = ("chip", "split", "image", "mask")


@dataclass(frozen=True)
class SplitRule:
    """A spatial split into strips: train, then val, then test along ``axis``.

    ``axis="x"`` runs west to east, ``"y"`` north to south. ``buffer`` pixels between strips
    are left unused so that training and evaluation chips never share context.
    """

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    axis: Literal["x", "y"] = "x"
    buffer: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ConfigError("split fractions must be in [0, 1); e.g. val_fraction: 0.2")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                "split: val_fraction + test_fraction must be < 1 to leave pixels to train on"
            )

    def ranges(self, length: int) -> dict[Split, tuple[int, int]]:
        """Pixel ranges ``[start, stop)`` of each split along an axis of ``length`` pixels."""
        n_test = round(length * self.test_fraction)
        n_val = round(length * self.val_fraction)
        n_train = length - n_test - n_val
        out: dict[Split, tuple[int, int]] = {}
        gap = self.buffer
        # The buffer is taken from the start of the following strip.
        out["train"] = (0, n_train)
        if n_val:
            out["val"] = (min(n_train + gap, n_train + n_val), n_train + n_val)
        if n_test:
            out["test"] = (min(n_train + n_val + gap, length), length)
        return {k: v for k, v in out.items() if v[1] > v[0]}

    def split_of(self, position: float, length: float) -> Split | None:
        """The split of a point at ``position`` along an axis of ``length`` (None: in a buffer)."""
        for name, (a, b) in self.ranges(round(length)).items():
            if a <= position < b:
                return name
        return None


def split_windows(grid: Grid, rule: SplitRule) -> dict[Split, Window]:
    """The pixel window of each split of a scene."""
    length = grid.width if rule.axis == "x" else grid.height
    out: dict[Split, Window] = {}
    for name, (a, b) in rule.ranges(length).items():
        if rule.axis == "x":
            out[name] = Window(a, 0, b - a, grid.height)
        else:
            out[name] = Window(0, a, grid.width, b - a)
    return out


@dataclass
class Batch:
    """A batch: raw image values ``(N, C, h, w)`` float32, mask indices ``(N, h, w)`` int64.

    ``index`` (training batches) holds each chip's position in the epoch's global sequence of
    chips: the same chip has the same index whichever process of a distributed run takes it.
    """

    image: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


def shard(
    positions: Sequence[int], *, batch_size: int, rank: int, world_size: int
) -> list[list[int]]:
    """The global batches of ``positions`` (consecutive, ``batch_size`` each) as one rank's shares.

    Every process draws the same global sequence (same seed) and keeps the positions
    ``rank, rank + world_size, ...`` of each global batch, as torch's ``DistributedSampler``
    interleaves: together the ranks see exactly the batches of one process.
    """
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by the {world_size} processes; "
            "the batch size is global: use a multiple of the process count"
        )
    out = []
    for k in range(0, len(positions), batch_size):
        part = list(positions[k : k + batch_size])[rank::world_size]
        if part:
            out.append(part)
    return out


def _band_names(ds: Any, path: Path) -> tuple[str, ...]:
    return tuple(d or f"band_{i + 1}" for i, d in enumerate(ds.descriptions))


def _ids_to_index_lut(classes: ClassMap) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for i, cid in enumerate(classes.ids):
        lut[cid] = i
    return lut


# ---------------------------------------------------------------------------------------
# Scenes through torchgeo
# ---------------------------------------------------------------------------------------
class SceneData:
    """One or more scenes with labels, sampled with torchgeo.

    Args:
        scenes: image paths (all with the same bands, CRS and resolution).
        labels: for each scene, the label files (rasters on any grid or vector files).
        classes: the class map (ids, names); None lets :mod:`geoseg.labels` derive it.
        class_column: the attribute with the class of vector labels.
        split: the spatial split rule applied to each scene.
        workdir: folder for the rasterised masks (a temporary folder when None).
    """

    def __init__(
        self,
        *,
        scenes: Sequence[Path],
        labels: Sequence[Sequence[Path]],
        classes: ClassMap | None = None,
        class_column: str | None = None,
        split: SplitRule = SplitRule(),
        workdir: Path | None = None,
    ) -> None:
        from geoseg.io.raster import check_grid, open_raster

        if not scenes:
            raise ConfigError("no scenes given; give at least one image with its labels")
        if len(labels) != len(scenes):
            raise ConfigError(
                f"{len(scenes)} scene(s) but {len(labels)} label list(s); give labels for each scene"
            )
        self.split = split
        self._tmp = tempfile.TemporaryDirectory(prefix="geoseg-train-") if workdir is None else None
        self.workdir = Path(self._tmp.name) if self._tmp else Path(workdir)  # type: ignore[arg-type]
        #: the scenes as given (folders of band files and STAC JSON too), for messages
        self.sources = [Path(s) for s in scenes]
        self.scenes = [self._scene_file(i, s) for i, s in enumerate(self.sources)]
        self.grids: list[Grid] = []
        bands: tuple[str, ...] | None = None
        self.nodata: list[float | None] = []
        self.dtype = "float32"
        for s, src in zip(self.scenes, self.sources, strict=True):
            with open_raster(s) as ds:
                grid = Grid.from_dataset(ds)
                check_grid(grid, src)
                b = _band_names(ds, src)
                if bands is not None and len(b) != len(bands):
                    raise BandMismatchError(
                        f"{src}: has {len(b)} bands but {self.sources[0]} has {len(bands)}; "
                        "train on scenes with the same bands"
                    )
                bands = bands or b
                self.nodata.append(ds.nodata)
                self.dtype = ds.dtypes[0]
                self.grids.append(grid)
        self.bands: tuple[str, ...] = bands or ()
        self.resolution = self.grids[0].resolution
        self.classes = classes
        self.mask_paths = [
            self._write_mask(i, s, [Path(p) for p in labels[i]], class_column)
            for i, s in enumerate(self.scenes)
        ]
        if self.classes is None:  # pragma: no cover - _write_mask always sets it
            raise LabelError(f"{self.scenes[0]}: no classes found in the labels")
        self._datasets = [self._dataset(i) for i in range(len(self.scenes))]

    def _scene_file(self, i: int, scene: Path) -> Path:
        """``scene``, or for a folder of band files / STAC JSON its VRT stack in the workdir."""
        from geoseg.io.scene import StackedScene, scene_source

        source, _ = scene_source(scene)
        if not isinstance(source, StackedScene):
            return scene
        vrt = self.workdir / f"scene_{i}.vrt"
        vrt.write_text(source.vrt, encoding="utf-8")
        return vrt

    def _write_mask(
        self, i: int, scene: Path, label_paths: list[Path], class_column: str | None
    ) -> Path:
        """Rasterise labels on the scene grid as class indices (255 ignore) in a GeoTIFF."""
        import rasterio

        grid = self.grids[i]
        ids = _read_label_ids(label_paths, grid, class_column=class_column, classes=self.classes)
        mask_ids, classes = ids
        if self.classes is None:
            self.classes = classes
        lut = _ids_to_index_lut(self.classes)
        mask = lut[mask_ids]
        # A pixel where any band is nodata is never a label (valid = all bands, as in predict).
        nodata = self.nodata[i]
        if nodata is not None:
            with rasterio.open(scene) as ds:
                for _, win in ds.block_windows(1):
                    data = ds.read(window=win)
                    bad = np.any(np.isnan(data) if np.isnan(nodata) else data == nodata, axis=0)
                    r, c = int(win.row_off), int(win.col_off)
                    mask[r : r + bad.shape[0], c : c + bad.shape[1]][bad] = IGNORE_INDEX
        if not np.any(mask != IGNORE_INDEX):
            raise LabelError(
                f"{', '.join(map(str, label_paths))}: no labelled pixel falls on {scene}; "
                "check that the labels overlap the scene and use its classes"
            )
        out = self.workdir / f"mask_{i}.tif"
        with rasterio.open(
            out,
            "w",
            driver="GTiff",
            width=grid.width,
            height=grid.height,
            count=1,
            dtype="uint8",
            crs=grid.crs,
            transform=grid.transform,
            nodata=IGNORE_INDEX,
        ) as dst:
            dst.write(mask, 1)
        return out

    def _dataset(self, i: int) -> Any:
        from torchgeo.datasets import IntersectionDataset, RasterDataset

        scene, mask = self.scenes[i], self.mask_paths[i]
        image_cls = type(
            "GeosegScene",
            (RasterDataset,),
            {"filename_glob": scene.name, "is_image": True, "separate_files": False},
        )
        mask_cls = type(
            "GeosegMask",
            (RasterDataset,),
            {"filename_glob": mask.name, "is_image": False, "separate_files": False},
        )
        image_ds = image_cls(paths=[scene])
        mask_ds = mask_cls(paths=[mask], crs=image_ds.crs, res=image_ds.res)
        return IntersectionDataset(image_ds, mask_ds)

    # ---- regions --------------------------------------------------------------------------
    def region(self, i: int, split: Split) -> Window | None:
        """The pixel window of ``split`` in scene ``i`` (None: the split is empty there)."""
        return split_windows(self.grids[i], self.split).get(split)

    def _roi(self, i: int, win: Window) -> Any:
        import shapely

        (r, _), (c, _) = win.toranges()
        h, w = int(win.height), int(win.width)
        t = self.grids[i].transform
        x0, y0 = t * (c, r)
        x1, y1 = t * (c + w, r + h)
        return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def has_split(self, split: Split) -> bool:
        """Whether any scene has pixels in ``split``."""
        return any(self.region(i, split) is not None for i in range(len(self.scenes)))

    # ---- sampling -------------------------------------------------------------------------
    def _fetch(
        self,
        i: int,
        query: Any,
        size: int,
        win: Window,
        *,
        pad_to: int | None = None,
    ) -> Batch:
        sample = self._datasets[i][query]
        image = sample["image"].float()
        mask = sample["mask"].long()
        image, mask = _fit(image, mask, size)
        if pad_to is not None and pad_to > size:
            image, mask = _fit(image, mask, pad_to)
            size = pad_to
        # Pixels outside the split's window (grid chips run past its edge) are not scored.
        t = self.grids[i].transform
        col0 = round((query[0].start - t.c) / t.a)
        row0 = round((query[1].stop - t.f) / t.e)
        (r, r_end), (c, c_end) = win.toranges()
        rows = torch.arange(size) + row0
        cols = torch.arange(size) + col0
        inside = ((rows >= r) & (rows < r_end))[:, None] & ((cols >= c) & (cols < c_end))[None, :]
        mask = torch.where(inside, mask, torch.full_like(mask, IGNORE_INDEX))
        return Batch(image=image[None], mask=mask[None])

    def train_batches(
        self,
        *,
        size: int,
        batch_size: int,
        length: int,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[Batch]:
        """``length`` random chips from the training regions, in batches (seeded).

        With ``world_size > 1``, this rank's share of each global batch (:func:`shard`).
        """
        from torchgeo.samplers import RandomGeoSampler

        queries: list[tuple[int, Any, Window]] = []
        regions: list[tuple[int, Window]] = []
        for i in range(len(self.scenes)):
            w = self.region(i, "train")
            if w is not None and min(w.height, w.width) >= size:
                regions.append((i, w))
        if not regions:
            raise ConfigError(
                f"the training region of every scene is smaller than the chip size ({size} px); "
                "use a smaller chip_size or a smaller val/test fraction"
            )
        per_scene = [
            length // len(regions) + (k < length % len(regions)) for k in range(len(regions))
        ]
        for (i, win), n in zip(regions, per_scene, strict=True):
            sampler = RandomGeoSampler(
                self._datasets[i], size=size, length=n, roi=self._roi(i, win), generator=generator
            )
            queries.extend((i, q, win) for q in sampler)
        order = torch.randperm(len(queries), generator=generator).tolist()
        for pos in shard(
            range(len(order)), batch_size=batch_size, rank=rank, world_size=world_size
        ):
            parts = [
                self._fetch(queries[order[p]][0], queries[order[p]][1], size, queries[order[p]][2])
                for p in pos
            ]
            yield _stack(parts, index=pos)

    def eval_batches(self, split: Split, *, size: int, batch_size: int) -> Iterator[Batch]:
        """Non-overlapping grid chips covering ``split`` (each pixel scored once)."""
        from torchgeo.samplers import GridGeoSampler

        for i in range(len(self.scenes)):
            win = self.region(i, split)
            if win is None:
                continue
            # Chips no larger than the region (torchgeo skips regions smaller than a chip),
            # padded with ignore to a multiple of 32 for the encoders.
            s = min(size, int(win.height), int(win.width))
            padded = -(-s // 32) * 32
            sampler = GridGeoSampler(self._datasets[i], size=s, stride=s, roi=self._roi(i, win))
            parts: list[Batch] = []
            for q in sampler:
                parts.append(self._fetch(i, q, s, win, pad_to=padded))
                if len(parts) == batch_size:
                    yield _stack(parts)
                    parts = []
            if parts:
                yield _stack(parts)

    def pixel_sample(
        self, *, max_pixels: int = 200_000, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw band values ``(n, bands)`` and their class indices from the training regions."""
        import rasterio

        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for i, scene in enumerate(self.scenes):
            win = self.region(i, "train")
            if win is None:
                continue
            with rasterio.open(scene) as ds, rasterio.open(self.mask_paths[i]) as ms:
                img = ds.read(window=win)
                m = ms.read(1, window=win)
            ok = m != IGNORE_INDEX
            xs.append(img[:, ok].T)
            ys.append(m[ok])
        return _subsample_pixels(xs, ys, len(self.bands), max_pixels, rng)

    def close(self) -> None:
        """Remove the rasterised masks."""
        if self._tmp is not None:
            self._tmp.cleanup()


def _fit(image: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop or pad (mask with ignore) to ``size`` x ``size`` (torchgeo may round a pixel off)."""
    image = image[:, :size, :size]
    mask = mask[:size, :size]
    ph, pw = size - image.shape[1], size - image.shape[2]
    if ph or pw:
        image = torch.nn.functional.pad(image, (0, pw, 0, ph))
        mask = torch.nn.functional.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
    return image, mask


def _subsample_pixels(
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    bands: int,
    max_pixels: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pixels gathered per region, at most ``max_pixels`` (a sorted random subset).

    Returns ``(n, bands)`` float32 values and ``(n,)`` int64 class indices.
    """
    x = np.concatenate(xs) if xs else np.empty((0, bands), dtype=np.float32)
    y = np.concatenate(ys) if ys else np.empty((0,), dtype=np.int64)
    if len(y) > max_pixels:
        pick = np.sort(rng.choice(len(y), max_pixels, replace=False))
        x, y = x[pick], y[pick]
    return x.astype(np.float32), y.astype(np.int64)


def _stack(parts: list[Batch], index: Sequence[int] | None = None) -> Batch:
    return Batch(
        image=torch.cat([p.image for p in parts]),
        mask=torch.cat([p.mask for p in parts]),
        index=torch.tensor(list(index) if index is not None else [], dtype=torch.long),
    )


def _read_label_ids(
    paths: list[Path], grid: Grid, *, class_column: str | None, classes: ClassMap | None
) -> tuple[np.ndarray, ClassMap]:
    """Class ids (uint8, 255 unlabelled) on ``grid`` and their class map (:mod:`geoseg.labels`)."""
    from geoseg.labels import load_labels

    for p in paths:
        if not Path(p).exists():
            raise InputFileNotFoundError(f"{p}: no such label file; check the path")
    source = load_labels(list(paths), class_column=class_column, classes=classes)
    return np.asarray(source.read_mask(grid), dtype=np.uint8), source.classes


# ---------------------------------------------------------------------------------------
# Chips from `geoseg tile`
# ---------------------------------------------------------------------------------------
class ChipData:
    """The chips written by ``geoseg tile``: ``images/``, ``masks/``, ``classes.yaml``, split.

    With ``DIR/index.gpkg`` (the tiler's chip index) every chip takes the split of its index
    row: rows are matched to files through the tiler's ``image`` and ``mask`` columns (paths
    relative to ``DIR``), so a chip file the index does not list, or an index row whose files
    are missing, is a :class:`~geoseg.errors.LabelError`. Without an index, masks are
    ``masks/<image name>`` and the spatial strip rule ``split`` is applied to chip centres.

    Args:
        folder: the folder written by ``geoseg tile``.
        split: the strip rule used only when the folder has no ``index.gpkg``.

    Raises:
        InputFileNotFoundError: no ``images/`` and ``masks/`` folders, or no chips.
        LabelError: the index and the chip files do not match, or a chip has no mask.
    """

    def __init__(self, folder: Path, *, split: SplitRule = SplitRule()) -> None:
        import rasterio

        self.folder = Path(folder)
        img_dir, mask_dir = self.folder / "images", self.folder / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise InputFileNotFoundError(
                f"{self.folder}: no images/ and masks/ folders; make chips with `geoseg tile`"
            )
        images = sorted(img_dir.glob("*.tif"))
        if not images:
            raise InputFileNotFoundError(f"{img_dir}: no chips (*.tif); run `geoseg tile` first")
        index = self.folder / INDEX_NAME
        splits: list[Split | None] | None = None
        if index.exists():
            pairs, splits = _read_chip_index(self.folder, index, images)
        else:
            log.info(
                "%s: no %s; splitting chips by the spatial strip rule", self.folder, INDEX_NAME
            )
            pairs = []
            for p in images:
                m = mask_dir / p.name
                if not m.exists():
                    raise LabelError(f"{p}: has no mask {m}; re-run `geoseg tile`")
                pairs.append((p, m))
        cls_path = self.folder / "classes.yaml"
        if cls_path.exists():
            self.classes = ClassMap.read(cls_path)
        else:
            ids: set[int] = set()
            for _, m in pairs:
                with rasterio.open(m) as ds:
                    ids |= {int(v) for v in np.unique(ds.read(1)) if v != IGNORE_INDEX}
            self.classes = ClassMap.from_ids(ids)
        self.lut: np.ndarray = _ids_to_index_lut(self.classes)
        with rasterio.open(pairs[0][0]) as ds:
            self.bands = _band_names(ds, pairs[0][0])
            self.dtype = ds.dtypes[0]
            self.resolution = Grid.from_dataset(ds).resolution
            self.nodata = ds.nodata
        self.pairs = pairs
        self.splits: list[Split | None] = (
            splits if splits is not None else _strip_splits(pairs, split)
        )

    def has_split(self, split: Split) -> bool:
        """Whether any chip is in ``split``."""
        return split in self.splits

    def _load(self, k: int) -> Batch:
        import rasterio

        img_p, mask_p = self.pairs[k]
        with rasterio.open(img_p) as ds:
            img = ds.read().astype(np.float32)
        with rasterio.open(mask_p) as ds:
            m = ds.read(1)
        if m.shape != img.shape[1:]:
            raise LabelError(
                f"{mask_p}: mask is {m.shape[1]} x {m.shape[0]} px but its image {img_p} is "
                f"{img.shape[2]} x {img.shape[1]} px; re-run `geoseg tile`"
            )
        idx = self.lut[m.astype(np.uint8)]
        return Batch(
            image=torch.from_numpy(img)[None], mask=torch.from_numpy(idx.astype(np.int64))[None]
        )

    def _indices(self, split: Split) -> list[int]:
        return [k for k, s in enumerate(self.splits) if s == split]

    def train_batches(
        self,
        *,
        size: int,
        batch_size: int,
        length: int,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[Batch]:
        """``length`` chips drawn from the train split (cropped to ``size``), in batches.

        With ``world_size > 1``, this rank's share of each global batch (:func:`shard`).
        """
        idx = self._indices("train")
        if not idx:
            raise LabelError(f"{self.folder}: no chip is in the train split; re-run `geoseg tile`")
        pick = [idx[j] for j in torch.randint(len(idx), (length,), generator=generator).tolist()]
        # Crop offsets drawn for every chip up front, so that each rank crops a chip alike.
        offsets = torch.rand(length, 2, generator=generator)
        for pos in shard(range(length), batch_size=batch_size, rank=rank, world_size=world_size):
            parts = [self._crop(self._load(pick[p]), size, offsets[p]) for p in pos]
            yield _stack(parts, index=pos)

    @staticmethod
    def _crop(b: Batch, size: int, offset: torch.Tensor) -> Batch:
        h, w = b.image.shape[-2:]
        r = min(int(float(offset[0]) * (h - size + 1)), h - size) if h > size else 0
        c = min(int(float(offset[1]) * (w - size + 1)), w - size) if w > size else 0
        img, m = _fit(
            b.image[0, :, r : r + size, c : c + size], b.mask[0, r : r + size, c : c + size], size
        )
        return Batch(image=img[None], mask=m[None])

    def eval_batches(self, split: Split, *, size: int, batch_size: int) -> Iterator[Batch]:
        """Every chip of ``split`` (whole chips, padded to a multiple of 32)."""
        idx = self._indices(split)
        for k in range(0, len(idx), batch_size):
            parts = [self._load(j) for j in idx[k : k + batch_size]]
            h = max(p.image.shape[-2] for p in parts)
            w = max(p.image.shape[-1] for p in parts)
            s = max(h, w)
            s = -(-s // 32) * 32
            fitted = [_fit(p.image[0], p.mask[0], s) for p in parts]
            yield Batch(
                image=torch.stack([f[0] for f in fitted]), mask=torch.stack([f[1] for f in fitted])
            )

    def pixel_sample(
        self, *, max_pixels: int = 200_000, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw band values ``(n, bands)`` and class indices from train chips."""
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for j in self._indices("train"):
            b = self._load(j)
            img = b.image[0].numpy()
            m = b.mask[0].numpy()
            ok = m != IGNORE_INDEX
            xs.append(img[:, ok].T)
            ys.append(m[ok])
        return _subsample_pixels(xs, ys, len(self.bands), max_pixels, rng)

    def close(self) -> None:
        """Nothing to release."""


_SPLITS: dict[str, Split] = {"train": "train", "val": "val", "test": "test"}


def _read_chip_index(
    folder: Path, index: Path, images: list[Path]
) -> tuple[list[tuple[Path, Path]], list[Split | None]]:
    """``(image, mask)`` pairs of ``images`` and their splits, from the tiler's chip index.

    Rows (of the layer ``chips``, else the first layer) are matched to files through the
    ``image`` and ``mask`` columns written by :func:`geoseg.tiling.tile_scenes` (paths
    relative to ``folder``); never by row order.
    """
    import pyogrio

    try:
        layers = [str(name) for name in pyogrio.list_layers(index)[:, 0]]
        layer = INDEX_LAYER if INDEX_LAYER in layers else None
        df = pyogrio.read_dataframe(index, layer=layer, read_geometry=False)
    except Exception as exc:
        raise LabelError(
            f"{index}: cannot read the chip index ({exc}); re-run `geoseg tile --overwrite`"
        ) from exc
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise LabelError(
            f"{index}: no column(s) {', '.join(missing)} (a `geoseg tile` index has "
            f"{', '.join(INDEX_COLUMNS)}); re-run `geoseg tile --overwrite`"
        )
    rows: dict[Path, tuple[str, Path, Split]] = {}
    for chip, image, mask, split in zip(
        df["chip"], df["image"], df["mask"], df["split"], strict=True
    ):
        name = str(chip)
        s = _SPLITS.get(str(split))
        if s is None:
            raise LabelError(
                f"{index}: chip {name} has split {split!r}, not train, val or test; "
                "re-run `geoseg tile --overwrite`"
            )
        img_p, mask_p = (folder / str(image)).resolve(), folder / str(mask)
        if img_p in rows:
            raise LabelError(
                f"{index}: chips {rows[img_p][0]} and {name} both list {image}; "
                "re-run `geoseg tile --overwrite`"
            )
        for kind, path in (("image", img_p), ("mask", mask_p)):
            if not path.is_file():
                raise LabelError(
                    f"{index}: the {kind} of chip {name} ({path}) is missing; "
                    "re-run `geoseg tile --overwrite`"
                )
        rows[img_p] = (name, mask_p, s)
    pairs: list[tuple[Path, Path]] = []
    splits: list[Split | None] = []
    seen: set[Path] = set()
    for p in images:
        key = p.resolve()
        row = rows.get(key)
        if row is None:
            raise LabelError(
                f"{p}: chip not listed in {index}; remove it or re-run `geoseg tile --overwrite`"
            )
        seen.add(key)
        pairs.append((p, row[1]))
        splits.append(row[2])
    if len(seen) != len(rows):  # rows whose image lies outside images/*.tif
        extra = sorted(r[0] for k, r in rows.items() if k not in seen)
        raise LabelError(
            f"{index}: chip(s) {', '.join(extra[:3])} are not in {folder / 'images'}; "
            "re-run `geoseg tile --overwrite`"
        )
    return pairs, splits


def _strip_splits(pairs: list[tuple[Path, Path]], rule: SplitRule) -> list[Split | None]:
    """The spatial strip rule of scenes applied to chip centres (folders without an index)."""
    import rasterio

    centres = []
    for p, _ in pairs:
        with rasterio.open(p) as ds:
            b = ds.bounds
            centres.append(((b.left + b.right) / 2, (b.top + b.bottom) / 2))
    arr = np.asarray(centres)
    v = arr[:, 0] if rule.axis == "x" else -arr[:, 1]
    lo, hi = float(v.min()), float(v.max())
    span = max(hi - lo, 1e-9)
    n = 1000
    return [rule.split_of((x - lo) / span * (n - 1), n) for x in v]


def compute_normalization(
    pixels: np.ndarray,
    *,
    method: Literal["meanstd", "percentile"] = "meanstd",
    nodata: float | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> Normalization:
    """Per-band normalisation from training pixels ``(n, bands)`` (nodata pixels left out)."""
    x = np.asarray(pixels, dtype=np.float64)
    if nodata is not None and len(x):
        x = x[~np.all(x == nodata, axis=1)]
    if len(x) == 0:
        raise LabelError("no labelled training pixel to compute the normalisation from")
    if method == "meanstd":
        off = x.mean(axis=0)
        sc = x.std(axis=0)
    elif method == "percentile":
        lo, hi = np.percentile(x, percentiles, axis=0)
        off, sc = lo, hi - lo
    else:
        raise ConfigError(f"unknown normalization {method!r}; use meanstd or percentile")
    sc = np.where(sc > 0, sc, 1.0)
    return Normalization(
        method=method, offset=tuple(float(v) for v in off), scale=tuple(float(v) for v in sc)
    )


def normalize_batch(
    image: torch.Tensor, norm: Normalization, *, nodata: float | None = None
) -> torch.Tensor:
    """Apply ``norm`` to a raw ``(N, C, h, w)`` batch; nodata pixels (all bands) and NaN become 0."""
    off = torch.tensor(norm.offset, dtype=torch.float32).view(1, -1, 1, 1)
    sc = torch.tensor(norm.scale, dtype=torch.float32).view(1, -1, 1, 1)
    out = (image.float() - off) / torch.where(sc > 0, sc, torch.ones_like(sc))
    if nodata is not None:
        bad = torch.all(image == nodata, dim=1, keepdim=True)
        out = out.masked_fill(bad, 0.0)
    return out.masked_fill(torch.isnan(out), 0.0)  # NaN nodata (tiled float chips keep it)

"""Predict a whole scene with a model bundle: plan -> read -> infer -> blend -> write.

* **plan**: chip windows on the scene grid (:func:`geoseg.grid.plan_windows`), dropping those
  outside the AOI; the model contract (bands, dtype, resolution) is checked before any work.
* **read**: a small thread pool reads the next chips (bands, validity mask) while the model
  runs; each thread has its own dataset handle (GDAL handles are not thread-safe).
* **infer**: batches of normalised, reflect-padded chips; softmax probabilities. GPU with
  mixed precision when present, else CPU (torch uses the cores).
* **blend**: :class:`geoseg.stitch.RowBandStitcher` accumulates Hann-weighted probabilities
  for a band of rows and releases rows as soon as no chip still to come touches them.
* **write**: released rows go straight into :class:`geoseg.io.cog.CogWriter` (class ids,
  optional probabilities and confidence) and are dropped.

See ``docs/predict.md`` for how the work is scheduled and why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg._malloc import tune_malloc
from geoseg.bundle import ModelBundle
from geoseg.classes import IGNORE_INDEX
from geoseg.errors import (
    BandMismatchError,
    ConfigError,
    EmptyResultError,
    GeosegError,
    ModelBundleError,
)
from geoseg.grid import Grid, check_chip_size, plan_windows, windows_by_row
from geoseg.io.atomic import check_output
from geoseg.io.cog import CogWriter
from geoseg.io.raster import check_grid, open_raster, valid_from_data
from geoseg.io.vector import read_polygons
from geoseg.log import progress
from geoseg.refine import REFINE_MODES
from geoseg.stitch import Band, RowBandStitcher
from geoseg.tta import TTA_MODES

__all__ = [
    "Chip",
    "PredictReport",
    "check_contract",
    "default_model_path",
    "infer_batch",
    "load_model",
    "predict",
    "resolve_bands",
]

log = logging.getLogger(__name__)

ProbabilityDtype = Literal["uint8", "float16"]
PathLike = str | os.PathLike[str]
#: uint8 probabilities are stored as percent (0..100); 255 is nodata.
PROBABILITY_SCALE_UINT8 = 100.0
#: Relative tolerance of the resolution check.
RESOLUTION_RTOL = 0.01
#: GDAL block cache while predicting: bounded, so memory does not grow with the scene.
GDAL_CACHE_MB = 256
#: Reader threads: enough to keep one model fed; GDAL decodes outside the GIL.
READ_WORKERS = 2


# ---- model ------------------------------------------------------------------------------------
def default_model_path() -> Path:
    """Path of the default model shipped inside the package (``geoseg/assets/default_model.pt``)."""
    return Path(__file__).resolve().parent / "assets" / "default_model.pt"


def load_model(model: PathLike | ModelBundle | None) -> ModelBundle:
    """A :class:`ModelBundle` from a bundle, a path, or ``None`` (the default model)."""
    if isinstance(model, ModelBundle):
        return model
    if model is None:
        path = default_model_path()
        if not path.exists():
            raise ModelBundleError(
                f"no default model installed ({path} is missing); pass --model MODEL.pt"
            )
        return ModelBundle.load(path)
    return ModelBundle.load(model)


def pick_device(device: str | torch.device | None) -> torch.device:
    """``device`` or, when ``None``, CUDA when present else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---- contract ---------------------------------------------------------------------------------
def resolve_bands(
    *,
    descriptions: Sequence[str | None],
    model_bands: Sequence[str],
    bands: Sequence[str | int] | None = None,
    path: PathLike = "scene",
) -> tuple[int, ...]:
    """1-based band indexes of the scene to feed the model, in the model's band order.

    ``bands`` (from ``--bands``) maps the model's bands to scene bands by name (band
    description, case-insensitive) or 1-based index, one per model band. Without it, bands
    are matched by description when the scene has descriptions for all model bands, else by
    position when the counts agree.

    Raises:
        BandMismatchError: counts or names do not fit; the message names both sides.
    """
    count = len(descriptions)
    names = [(d or "").strip().lower() for d in descriptions]
    model = list(model_bands)

    def by_name(name: str) -> int | None:
        key = name.strip().lower()
        return names.index(key) + 1 if key in names else None

    if bands is not None:
        if len(bands) != len(model):
            raise BandMismatchError(
                f"--bands gives {len(bands)} band(s) but the model expects {len(model)} "
                f"({', '.join(model)}); give one scene band per model band, in that order"
            )
        out: list[int] = []
        for b in bands:
            idx = int(b) if isinstance(b, int) or str(b).strip().isdigit() else by_name(str(b))
            if idx is None or not 1 <= idx <= count:
                raise BandMismatchError(
                    f"--bands {b!r} is not a band of {path} (bands 1..{count}: "
                    f"{', '.join(d or '-' for d in descriptions)}); use a band name or index"
                )
            out.append(idx)
        return tuple(out)
    found = [by_name(m) for m in model]
    if any(names) and all(i is not None for i in found):
        return tuple(i for i in found if i is not None)
    if any(names) and count == len(model) and any(i is not None for i in found):
        missing = [m for m, i in zip(model, found, strict=True) if i is None]
        raise BandMismatchError(
            f"{path}: band(s) {', '.join(missing)} expected by the model are not among the "
            f"scene's bands ({', '.join(d or '-' for d in descriptions)}); map them with --bands"
        )
    if count != len(model):
        raise BandMismatchError(
            f"{path}: has {count} band(s) ({', '.join(d or '-' for d in descriptions)}) but the "
            f"model expects {len(model)} ({', '.join(model)}); select them with --bands"
        )
    return tuple(range(1, count + 1))


def check_contract(
    dataset: Any,
    bundle: ModelBundle,
    *,
    bands: Sequence[str | int] | None = None,
    resample: bool = False,
    path: PathLike = "scene",
) -> tuple[int, ...]:
    """Check a scene against a model's contract before any work; return the band indexes.

    Checks the band count and order (by description when present, see
    :func:`resolve_bands`), the data type of the selected bands and, unless ``resample``,
    the pixel size against the bundle's resolution.
    """
    check_grid(Grid.from_dataset(dataset), path)
    indexes = resolve_bands(
        descriptions=list(dataset.descriptions), model_bands=bundle.bands, bands=bands, path=path
    )
    dtypes = {dataset.dtypes[i - 1] for i in indexes}
    if bundle.dtype and any(d != bundle.dtype for d in dtypes):
        raise BandMismatchError(
            f"{path}: bands are {', '.join(sorted(dtypes))} but the model was trained on "
            f"{bundle.dtype}; convert the scene (gdal_translate -ot {bundle.dtype.capitalize()}) "
            "or use a model trained on this data type"
        )
    if bundle.resolution and not resample:
        res = Grid.from_dataset(dataset).resolution
        want = tuple(float(r) for r in bundle.resolution)
        if not all(
            math.isclose(a, b, rel_tol=RESOLUTION_RTOL) for a, b in zip(res, want, strict=True)
        ):
            raise BandMismatchError(
                f"{path}: pixel size is {res[0]:g} x {res[1]:g} but the model expects "
                f"{want[0]:g} x {want[1]:g}; pass --resample to warp on the fly"
            )
    return indexes


# ---- plan -------------------------------------------------------------------------------------
def read_aoi(aoi: PathLike, crs: Any) -> Any:
    """The union of the polygons of a GeoJSON/GPKG ``aoi`` in ``crs`` (a shapely geometry)."""
    return read_polygons(aoi, what="AOI").to_crs(crs).union_all()


def plan(grid: Grid, *, size: int, overlap: int, aoi: Any = None) -> list[Window]:
    """Chip windows over ``grid``, row-major, without those that miss the ``aoi`` geometry."""
    check_chip_size(size, overlap)
    windows = plan_windows(grid.shape, size, overlap)
    if aoi is None:
        return windows
    from shapely import box, prepare

    prepare(aoi)
    return [w for w in windows if aoi.intersects(box(*grid.window_bounds(w)))]


# ---- read -------------------------------------------------------------------------------------
@dataclass
class Chip:
    """One chip read from the scene: raw ``data`` (bands, h, w) and ``valid`` (h, w) mask."""

    window: Window
    data: np.ndarray
    valid: np.ndarray
    seconds: float = 0.0


class ChipReader:
    """Reads chips in worker threads, one dataset handle per thread."""

    def __init__(
        self,
        opener: Callable[[], Any],
        *,
        indexes: tuple[int, ...],
        grid: Grid,
        aoi: Any = None,
    ) -> None:
        self.opener = opener
        self.indexes = indexes
        self.grid = grid
        self.aoi = aoi
        self._local = threading.local()
        self._handles: list[Any] = []
        self._lock = threading.Lock()

    def _dataset(self) -> Any:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = self.opener()
            self._local.ds = ds
            with self._lock:
                self._handles.append(ds)
        return ds

    def read(self, window: Window) -> Chip:
        """Read bands and validity (scene nodata/mask and AOI) of ``window``."""
        t0 = time.perf_counter()
        ds = self._dataset()
        data = ds.read(list(self.indexes), window=window)
        valid = valid_from_data(ds, data, window)
        if self.aoi is not None:
            from rasterio.features import geometry_mask

            sub = self.grid.window_grid(window)
            valid &= geometry_mask(
                [self.aoi], out_shape=sub.shape, transform=sub.transform, invert=True
            )
        return Chip(window, data, valid, time.perf_counter() - t0)

    def close(self) -> None:
        """Close every handle opened by the workers."""
        with self._lock:
            for ds in self._handles:
                with contextlib.suppress(Exception):
                    ds.close()
            self._handles.clear()


def read_ahead(
    reader: ChipReader, windows: Sequence[Window], *, workers: int, ahead: int
) -> Iterator[Chip]:
    """Chips of ``windows`` in order, read by ``workers`` threads at most ``ahead`` in advance."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoseg-read") as pool:
        queue: deque[Future[Chip]] = deque()
        it = iter(windows)
        for w in it:
            queue.append(pool.submit(reader.read, w))
            if len(queue) >= ahead:
                break
        try:
            while queue:
                chip = queue.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append(pool.submit(reader.read, nxt))
                yield chip
        finally:
            for f in queue:
                f.cancel()


# ---- infer ------------------------------------------------------------------------------------
def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], mode="reflect")
    return x, h, w


def infer_batch(
    net: torch.nn.Module,
    chips: Sequence[Chip],
    bundle: ModelBundle,
    device: torch.device,
    *,
    multiple: int = 32,
    tta: str = "none",
    refine: str = "none",
) -> np.ndarray:
    """Class probabilities ``(n, classes, h, w)`` float32 of same-shaped chips.

    Chips are normalised as the bundle says (nodata -> 0), reflect-padded to a multiple of
    ``multiple`` and cropped back after the forward pass. CUDA runs under float16 autocast.
    ``tta`` averages dihedral views (:mod:`geoseg.tta`); ``refine`` post-processes each chip
    (:mod:`geoseg.refine`), both before blending.
    """
    from geoseg.refine import refine_batch
    from geoseg.tta import tta_forward

    x = np.stack([c.data for c in chips])
    x = bundle.normalization.apply(x)
    valid = np.stack([c.valid for c in chips])[:, np.newaxis]
    x = np.where(valid, x, np.float32(0.0)).astype(np.float32, copy=False)
    x, h, w = _pad_to(x, multiple)

    def forward(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(a)).to(device)
            t = t.contiguous(memory_format=torch.channels_last)  # see inference_model
            if device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = net(t)
            else:
                logits = net(t)
            return torch.softmax(logits.float(), dim=1).contiguous().cpu().numpy()

    probs = np.ascontiguousarray(tta_forward(forward, x, mode=tta)[..., :h, :w])
    return refine_batch(refine, probs, x[..., :h, :w], valid[:, 0])


def inference_model(bundle: ModelBundle, device: torch.device) -> torch.nn.Module:
    """The bundle's network for inference: eval mode, channels-last (NHWC) memory layout.

    Channels-last convolutions are about 25 % faster on CPU (oneDNN; measured on the U-Net /
    ResNet-18 with 512 px chips) and are the layout GPU tensor cores want.
    """
    return bundle.build(device).to(memory_format=torch.channels_last)


# ---- write ------------------------------------------------------------------------------------
class PredictionWriter:
    """Turns released row bands into class ids (and probabilities/confidence) in COGs."""

    def __init__(
        self,
        *,
        out: Path,
        grid: Grid,
        bundle: ModelBundle,
        tags: dict[str, Any],
        probabilities: Path | None,
        probability_dtype: ProbabilityDtype,
        confidence: Path | None,
        overwrite: bool,
    ) -> None:
        self.bundle = bundle
        self.lookup = np.array(bundle.classes.ids, dtype=np.uint8)
        self.probability_dtype = probability_dtype
        self.confidence_in_probabilities = confidence is not None and confidence == probabilities
        self._stack = contextlib.ExitStack()
        names = bundle.classes.names
        self.classes = CogWriter(
            out,
            grid=grid,
            dtype="uint8",
            nodata=IGNORE_INDEX,
            classes=bundle.classes,
            descriptions=["class"],
            tags=tags,
            overwrite=overwrite,
            resampling="mode",
        )
        nodata: float = float("nan") if probability_dtype == "float16" else 255
        scale = (
            {"scale": 1.0}
            if probability_dtype == "float16"
            else {"scale": 1 / PROBABILITY_SCALE_UINT8}
        )
        self.proba: CogWriter | None = None
        if probabilities is not None:
            descs = [f"p_{n}" for n in names] + (
                ["confidence"] if self.confidence_in_probabilities else []
            )
            self.proba = CogWriter(
                probabilities,
                grid=grid,
                count=len(descs),
                dtype=_storage_dtype(probability_dtype),
                nodata=nodata,
                descriptions=descs,
                tags={**tags, "GEOSEG_PROBABILITY_SCALE": scale["scale"]},
                overwrite=overwrite,
                resampling="average",
            )
        self.conf: CogWriter | None = None
        if confidence is not None and not self.confidence_in_probabilities:
            self.conf = CogWriter(
                confidence,
                grid=grid,
                dtype=_storage_dtype(probability_dtype),
                nodata=nodata,
                descriptions=["confidence"],
                tags={**tags, "GEOSEG_PROBABILITY_SCALE": scale["scale"]},
                overwrite=overwrite,
                resampling="average",
            )

    def __enter__(self) -> PredictionWriter:
        for w in (self.classes, self.proba, self.conf):
            if w is not None:
                self._stack.enter_context(w)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def _encode(self, p: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if self.probability_dtype == "float16":
            # float16 precision, stored as float32: rasterio 1.4 cannot write Float16 and
            # CogWriter takes no NBITS=16 option (yet).
            return np.where(valid, p.astype(np.float16), np.nan).astype(np.float32)
        q = np.rint(p * PROBABILITY_SCALE_UINT8).astype(np.uint8)
        return np.where(valid, q, np.uint8(255))

    def write(self, band: Band, valid: np.ndarray) -> int:
        """Write a finished band; ``valid`` is its (h, w) validity. Returns valid pixels."""
        probs = band.probabilities
        ok = valid & band.covered
        idx = probs.argmax(axis=0)
        cls = np.where(ok, self.lookup[idx], np.uint8(IGNORE_INDEX)).astype(np.uint8)
        self.classes.write(cls, band.window)
        if self.proba is not None or self.conf is not None:
            conf = probs.max(axis=0)
            if self.proba is not None:
                layers = [probs] + ([conf[np.newaxis]] if self.confidence_in_probabilities else [])
                self.proba.write(self._encode(np.concatenate(layers), ok), band.window)
            if self.conf is not None:
                self.conf.write(self._encode(conf, ok), band.window)
        return int(ok.sum())


def _storage_dtype(probability_dtype: ProbabilityDtype) -> str:
    return "uint8" if probability_dtype == "uint8" else "float32"


# ---- infer + blend + write, chip by chip ------------------------------------------------------
class StreamingRun:
    """Feeds chips through inference, blending and writing, releasing rows as soon as final.

    Chips arrive in row-major order. They are batched for the model; after a batch, chips
    are blended one by one, and when the last chip of a row of chips is in, the rows above
    the next row of chips are normalised, written and dropped. All-nodata chips are
    skipped (never inferred). ``seconds`` accumulates per-stage time.
    """

    def __init__(
        self,
        *,
        net: torch.nn.Module,
        bundle: ModelBundle,
        device: torch.device,
        grid: Grid,
        windows: Sequence[Window],
        overlap: int,
        batch_size: int,
        writer: PredictionWriter,
        tta: str = "none",
        refine: str = "none",
    ) -> None:
        self.net = net
        self.tta, self.refine = tta, refine
        self.bundle = bundle
        self.device = device
        self.grid = grid
        self.batch_size = max(1, int(batch_size))
        self.writer = writer
        self.stitcher = RowBandStitcher(
            shape=grid.shape, num_classes=bundle.num_classes, overlap=overlap
        )
        rows = list(windows_by_row(windows))
        self.row_starts = [r for r, _ in rows]
        self.remaining = [len(ws) for _, ws in rows]
        self._row_index = {r: i for i, r in enumerate(self.row_starts)}
        self._done_rows = 0
        self._valid = _ValidRows(grid.width)
        self._pending: list[Chip] = []
        self.skipped = 0
        self.valid_pixels = 0
        self.seconds = {"read": 0.0, "infer": 0.0, "blend": 0.0, "write": 0.0}

    def feed(self, chip: Chip) -> None:
        """Take the next chip (row-major order)."""
        self.seconds["read"] += chip.seconds
        self._valid.add(chip)
        self._pending.append(chip)
        if sum(c.valid.any() for c in self._pending) >= self.batch_size:
            self._flush()

    def finish(self) -> None:
        """Predict what is left and write the last rows."""
        self._flush()
        self._release_ready()
        band = self.stitcher.release(self.grid.height)
        if band is not None:
            self._write(band)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        todo = [c for c in pending if c.valid.any()]
        t0 = time.perf_counter()
        probs = iter(
            infer_batch(self.net, todo, self.bundle, self.device, tta=self.tta, refine=self.refine)
            if todo
            else []
        )
        self.seconds["infer"] += time.perf_counter() - t0
        for chip in pending:
            if chip.valid.any():
                t1 = time.perf_counter()
                self.stitcher.add(chip.window, next(probs))
                self.seconds["blend"] += time.perf_counter() - t1
            else:
                self.skipped += 1
            self.remaining[self._row_index[int(chip.window.row_off)]] -= 1
            self._release_ready()

    def _release_ready(self) -> None:
        n = len(self.row_starts)
        while self._done_rows < n and self.remaining[self._done_rows] == 0:
            i = self._done_rows
            upto = self.row_starts[i + 1] if i + 1 < n else self.grid.height
            self._done_rows += 1
            t0 = time.perf_counter()
            band = self.stitcher.release(upto)
            self.seconds["blend"] += time.perf_counter() - t0
            if band is not None:
                self._write(band)

    def _write(self, band: Band) -> None:
        t0 = time.perf_counter()
        self.valid_pixels += self.writer.write(band, self._valid.take(band.window))
        self.seconds["write"] += time.perf_counter() - t0


# ---- report -----------------------------------------------------------------------------------
@dataclass
class PredictReport:
    """What a prediction did and how long each stage took.

    ``seconds`` holds ``read`` (summed over reader threads, overlapping the others),
    ``infer``, ``blend``, ``write`` (including the final COG copy) and ``total`` (wall).
    """

    scene: str
    out: str
    outputs: list[str]
    grid: dict[str, Any]
    model: str
    size: int
    overlap: int
    batch_size: int
    device: str
    windows: int
    windows_skipped: int
    windows_outside_aoi: int
    pixels: int
    valid_pixels: int
    area_km2: float
    seconds: dict[str, float] = field(default_factory=dict)
    peak_buffer_rows: int = 0

    @property
    def mpx_per_s(self) -> float:
        """Scene megapixels per second of wall time."""
        return self.pixels / 1e6 / max(self.seconds.get("total", 0.0), 1e-9)

    @property
    def km2_per_h(self) -> float:
        """Scene square kilometres per hour of wall time."""
        return self.area_km2 / max(self.seconds.get("total", 0.0), 1e-9) * 3600.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary, with the rates."""
        d = asdict(self)
        d["mpx_per_s"] = round(self.mpx_per_s, 4)
        d["km2_per_h"] = round(self.km2_per_h, 2)
        d["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        return d

    def summary(self) -> str:
        """A few lines for the terminal."""
        s = self.seconds
        return "\n".join(
            [
                f"Wrote {', '.join(self.outputs)}",
                f"Windows: {self.windows} ({self.windows_skipped} all-nodata skipped, "
                f"{self.windows_outside_aoi} outside AOI), size {self.size}, overlap {self.overlap}",
                "Seconds: "
                + ", ".join(
                    f"{k} {s.get(k, 0.0):.2f}" for k in ("read", "infer", "blend", "write", "total")
                ),
                f"Speed: {self.mpx_per_s:.2f} Mpx/s, {self.km2_per_h:.0f} km2/h on {self.device}",
            ]
        )


def _area_km2(grid: Grid) -> float:
    if grid.crs is not None and grid.crs.is_geographic:
        from pyproj import Geod

        left, bottom, right, top = grid.bounds
        lons = [left, right, right, left]
        lats = [bottom, bottom, top, top]
        area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
        return abs(area) / 1e6
    return grid.pixel_area * grid.height * grid.width / 1e6


# ---- the whole path ---------------------------------------------------------------------------
def _opener(scene: PathLike, resample_to: tuple[float, float] | None) -> Callable[[], Any]:
    def open_ds() -> Any:
        ds = rasterio.open(scene)
        if resample_to is None:
            return ds
        from rasterio.vrt import WarpedVRT

        g = Grid.from_bounds(tuple(ds.bounds), resample_to, ds.crs)
        return WarpedVRT(
            ds,
            crs=ds.crs,
            transform=g.transform,
            width=g.width,
            height=g.height,
            resampling=Resampling.bilinear,
        )

    return open_ds


def _provenance(
    bundle: ModelBundle, model_name: str, indexes: tuple[int, ...], size: int, overlap: int
) -> dict[str, Any]:
    from geoseg import __version__

    return {
        "GEOSEG_VERSION": __version__,
        "GEOSEG_MODEL": model_name,
        "GEOSEG_MODEL_ARCH": f"{bundle.arch}/{bundle.encoder}",
        "GEOSEG_MODEL_BANDS": ",".join(bundle.bands),
        "GEOSEG_SCENE_BANDS": ",".join(str(i) for i in indexes),
        "GEOSEG_CHIP_SIZE": size,
        "GEOSEG_OVERLAP": overlap,
    }


def predict(
    scene: PathLike,
    *,
    out: PathLike,
    model: PathLike | ModelBundle | None = None,
    size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    probabilities: PathLike | None = None,
    probability_dtype: ProbabilityDtype = "uint8",
    confidence: bool = False,
    aoi: PathLike | None = None,
    vector: PathLike | None = None,
    bands: Sequence[str | int] | None = None,
    resample: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    threads: int | None = None,
    tta: str = "none",
    refine: str = "none",
) -> PredictReport:
    """Segment ``scene`` with a model bundle into a styled class COG at ``out``.

    Args:
        scene: input raster (any GDAL raster).
        out: output class raster (``.tif``): a tiled DEFLATE COG on the scene's grid
            (the model-resolution grid with ``resample``), 255 where the scene is nodata or
            outside the AOI, colour table, class names, provenance tags, ``.qml`` beside it.
        model: bundle path or :class:`ModelBundle`; ``None`` uses :func:`default_model_path`.
        size: chip size (default: the bundle's).
        overlap: chip overlap (default: the bundle's).
        batch_size: chips per forward pass.
        probabilities: also write per-class probabilities to this COG.
        probability_dtype: ``uint8`` (percent, 255 nodata) or ``float16`` (NaN nodata).
        confidence: also write the top-class probability: as the last band of the
            probabilities output, or to ``<out>_confidence.tif`` without one.
        aoi: GeoJSON/GPKG polygons (any CRS): only chips touching them are predicted and
            pixels outside them are nodata.
        vector: also polygonize the classes into this file (``geoseg.vectorize``).
        bands: scene bands for the model's bands, by name or 1-based index.
        resample: warp the scene on the fly to the model's resolution.
        overwrite: replace existing outputs.
        device: torch device (default: CUDA when present, else CPU).
        threads: torch CPU threads for inference (default: torch's).
        tta: test-time augmentation, ``none``, ``hflip``, ``flips`` or ``d4``
            (:mod:`geoseg.tta`; 1, 2, 4 or 8 forward passes per chip).
        refine: ``none`` or ``crf`` (:mod:`geoseg.refine`), per chip before blending.

    Returns:
        A :class:`PredictReport` with per-stage seconds and rates.
    """
    t_start = time.perf_counter()
    tune_malloc()
    bundle = load_model(model)
    model_name = (
        Path(model).name
        if isinstance(model, str | os.PathLike)
        else ("default" if model is None else f"{bundle.arch}/{bundle.encoder}")
    )
    size = int(size if size is not None else bundle.chip_size)
    overlap = int(overlap if overlap is not None else bundle.overlap)
    check_chip_size(size, overlap)
    if tta not in TTA_MODES or refine not in REFINE_MODES:
        raise ConfigError(
            f"tta {tta!r} / refine {refine!r}: use tta {'|'.join(TTA_MODES)} "
            f"and refine {'|'.join(REFINE_MODES)}"
        )
    out_p = check_output(out, overwrite=overwrite)
    proba_p = check_output(probabilities, overwrite=overwrite) if probabilities else None
    conf_p: Path | None = None
    if confidence:
        conf_p = proba_p or check_output(
            out_p.with_name(out_p.stem + "_confidence.tif"), overwrite=overwrite
        )
    if vector is not None:
        check_output(vector, overwrite=overwrite)
        if importlib.util.find_spec("geoseg.vectorize") is None:
            raise GeosegError("--vector needs geoseg.vectorize, which this install lacks")

    with open_raster(scene) as ds:
        try:
            indexes = check_contract(ds, bundle, bands=bands, resample=resample, path=scene)
        except BandMismatchError as exc:
            if model is None and bundle.description:  # say what the default model is for
                raise BandMismatchError(f"{exc} ({bundle.description})") from None
            raise
        src_grid = Grid.from_dataset(ds)
    resample_to = None
    if resample and bundle.resolution:
        want = (float(bundle.resolution[0]), float(bundle.resolution[1]))
        if not all(
            math.isclose(a, b, rel_tol=RESOLUTION_RTOL)
            for a, b in zip(src_grid.resolution, want, strict=True)
        ):
            resample_to = want
    opener = _opener(scene, resample_to)
    with contextlib.closing(opener()) as ds0:
        grid = Grid.from_dataset(ds0)
    aoi_geom = read_aoi(aoi, grid.crs) if aoi is not None else None
    all_windows = plan_windows(grid.shape, size, overlap)
    windows = plan(grid, size=size, overlap=overlap, aoi=aoi_geom)
    if not windows:
        raise EmptyResultError(
            f"{aoi}: the AOI does not overlap {scene}; check the AOI's CRS and extent"
        )

    dev = pick_device(device)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        writer = PredictionWriter(
            out=out_p,
            grid=grid,
            bundle=bundle,
            tags=_provenance(bundle, model_name, indexes, size, overlap)
            | {"GEOSEG_TTA": tta, "GEOSEG_REFINE": refine},
            probabilities=proba_p,
            probability_dtype=probability_dtype,
            confidence=conf_p,
            overwrite=overwrite,
        )
        reader = ChipReader(opener, indexes=indexes, grid=grid, aoi=aoi_geom)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), contextlib.closing(reader):
            with writer:
                run = StreamingRun(
                    net=inference_model(bundle, dev),
                    bundle=bundle,
                    device=dev,
                    grid=grid,
                    windows=windows,
                    overlap=overlap,
                    batch_size=batch_size,
                    writer=writer,
                    tta=tta,
                    refine=refine,
                )
                chips = read_ahead(reader, windows, workers=READ_WORKERS, ahead=2 * batch_size)
                for chip in progress(chips, total=len(windows), desc="predict", unit="chip"):
                    run.feed(chip)
                run.finish()
                if run.valid_pixels == 0:  # raised inside the writer: nothing is written
                    where = " inside the AOI" if aoi is not None else ""
                    raise EmptyResultError(
                        f"{scene}: every pixel{where} is nodata, nothing to predict; "
                        "check the scene's nodata value (`geoseg info`)"
                    )
                t_close = time.perf_counter()
            run.seconds["write"] += time.perf_counter() - t_close  # overviews + COG copy
    finally:
        if threads:
            torch.set_num_threads(old_threads)
    seconds = run.seconds

    outputs = [str(out_p)] + [str(p) for p in {proba_p, conf_p} if p is not None]
    if vector is not None:
        t0 = time.perf_counter()
        from geoseg.vectorize import vectorize  # type: ignore[import-not-found,unused-ignore]

        vectorize(out_p, vector, overwrite=overwrite)
        seconds["vector"] = time.perf_counter() - t0
        outputs.append(str(vector))
    seconds["total"] = time.perf_counter() - t_start
    report = PredictReport(
        scene=str(scene),
        out=str(out_p),
        outputs=outputs,
        grid=grid.to_dict(),
        model=model_name,
        size=size,
        overlap=overlap,
        batch_size=batch_size,
        device=str(dev),
        windows=len(all_windows),
        windows_skipped=run.skipped,
        windows_outside_aoi=len(all_windows) - len(windows),
        pixels=grid.height * grid.width,
        valid_pixels=run.valid_pixels,
        area_km2=_area_km2(grid),
        seconds=seconds,
        peak_buffer_rows=run.stitcher.peak_rows,
    )
    log.info("%s", report.summary())
    return report


class _ValidRows:
    """Validity of the rows not yet written (True where a read chip saw valid data)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.top = 0
        self._valid = np.zeros((0, width), dtype=bool)

    def add(self, chip: Chip) -> None:
        r0, c0 = int(chip.window.row_off), int(chip.window.col_off)
        h, w = chip.valid.shape
        need = r0 + h - self.top - self._valid.shape[0]
        if need > 0:
            self._valid = np.concatenate([self._valid, np.zeros((need, self.width), dtype=bool)])
        self._valid[r0 - self.top : r0 - self.top + h, c0 : c0 + w] |= chip.valid

    def take(self, window: Window) -> np.ndarray:
        n = int(window.height)
        if self._valid.shape[0] < n:
            pad = np.zeros((n - self._valid.shape[0], self.width), dtype=bool)
            self._valid = np.concatenate([self._valid, pad])
        out = self._valid[:n]
        self._valid = self._valid[n:].copy()
        self.top += n
        return out

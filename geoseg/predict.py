"""Predict a whole scene with any model: plan -> read -> infer -> blend -> write.

The model comes from :mod:`geoseg.runtime` (a bundle, an ONNX file, a registered name): its
:class:`~geoseg.runtime.contract.ModelContract` is checked against the scene before any work,
and its :class:`~geoseg.runtime.engines.Engine` (torch or ONNX Runtime) runs the batches.

* **plan**: chip windows on the scene grid (:func:`geoseg.grid.plan_windows`), dropping those
  outside the AOI; the contract (bands, dtype, pixel size, reflectance) is checked first.
* **read**: a small thread pool reads the next chips (bands, validity mask) while the model
  runs; each thread has its own dataset handle (GDAL handles are not thread-safe).
* **infer**: batches of prepared (scaled, normalised, nodata 0), reflect-padded chips through
  the engine; class probabilities. GPU when present, else CPU.
* **blend**: :class:`geoseg.stitch.ChipStitcher` accumulates Hann-weighted probabilities
  for a band of rows and releases rows as soon as no chip still to come touches them.
* **write**: released rows go straight into :class:`geoseg.io.cog.CogWriter` (class ids,
  optional probabilities and confidence) and are dropped.

See ``docs/predict.md`` for how the work is scheduled and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg._malloc import tune_malloc
from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import (
    BandMismatchError,
    ConfigError,
    EmptyResultError,
    ModelBundleError,
)
from geoseg.grid import Grid, axis_starts, check_chip_size, plan_windows
from geoseg.io.cog import CogWriter
from geoseg.io.outputs import PredictOutputs as _Outputs
from geoseg.io.outputs import check_predict_outputs, model_file
from geoseg.io.raster import band_validity, open_raster
from geoseg.io.scene import scene_source
from geoseg.io.vector import read_polygons
from geoseg.log import progress
from geoseg.pipeline import OrderedWorker, ReadAhead, default_batch_size
from geoseg.runtime import sources
from geoseg.runtime.contract import (
    RESOLUTION_RTOL,
    ModelContract,
    SceneFit,
    check_contract,
    check_scene,
    resolve_bands,
)
from geoseg.runtime.engines import Engine, Precision, inference_model, pick_device
from geoseg.stitch import Band, ChipStitcher

if TYPE_CHECKING:
    from geoseg.bundle import ModelBundle
    from geoseg.clouds import CloudMasker

__all__ = [
    "RESOLUTION_RTOL",
    "Chip",
    "PredictReport",
    "check_contract",
    "default_model_path",
    "infer_batch",
    "inference_model",
    "load_model",
    "pick_device",
    "predict",
    "resolve_bands",
]

log = logging.getLogger(__name__)

ProbabilityDtype = Literal["uint8", "float16"]
PathLike = str | os.PathLike[str]
#: uint8 probabilities are stored as percent (0..100); 255 is nodata.
PROBABILITY_SCALE_UINT8 = 100.0
#: GDAL block cache while predicting: bounded, so memory does not grow with the scene. It
#: also holds the staging GeoTIFF's dirty blocks: 256 MB added ~380 MB of peak RSS at 20000^2
#: (1415 vs 1035 MB, `bench_predict.py scale`), and 32 MB saved no more than 64.
GDAL_CACHE_MB = 64
#: rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not megabytes
#: (``Env(GDAL_CACHEMAX=256)`` is a 256-byte cache, and every chip decodes its blocks again).
GDAL_CACHE_BYTES = GDAL_CACHE_MB * 1024 * 1024
#: Reader threads: enough to keep one model fed; GDAL decodes outside the GIL.
READ_WORKERS = 2


# ---- model ------------------------------------------------------------------------------------
def load_model(model: PathLike | ModelBundle | None) -> ModelBundle:
    """A :class:`ModelBundle` from a bundle, a path, or ``None`` (the default model).

    Only for bundles; :func:`geoseg.runtime.sources.load` takes every model source.
    """
    from geoseg.bundle import ModelBundle

    if isinstance(model, ModelBundle):
        return model
    if model is None:
        path = sources.default_model_path()
        if not path.exists():
            raise ModelBundleError(
                f"no default model installed ({path} is missing); pass --model MODEL.pt"
            )
        return ModelBundle.load(path)
    return ModelBundle.load(model)


def default_model_path() -> Path:
    """Path of the default model shipped inside the package (``geoseg/assets/default_model.pt``)."""
    return sources.default_model_path()


# ---- plan -------------------------------------------------------------------------------------
def read_aoi(aoi: PathLike, crs: Any) -> Any:
    """The union of the polygons of a GeoJSON/GPKG ``aoi`` in ``crs`` (a shapely geometry)."""
    return read_polygons(aoi, what="AOI").to_crs(crs).union_all()


def plan(
    grid: Grid, *, size: int, overlap: int, aoi: Any = None, ragged: bool = False
) -> list[Window]:
    """Chip windows over ``grid``, row-major, without those that miss the ``aoi`` geometry.

    ``ragged``: shorter last row and column of chips instead of shifted-back full ones
    (:func:`geoseg.grid.axis_spans`), for a model that takes any input size.
    """
    check_chip_size(size, overlap)
    windows = plan_windows(grid.shape, size, overlap, ragged=ragged)
    if aoi is None:
        return windows
    from shapely import box, prepare

    prepare(aoi)
    return [w for w in windows if aoi.intersects(box(*grid.window_bounds(w)))]


# ---- read -------------------------------------------------------------------------------------
@dataclass
class Chip:
    """One chip read from the scene: raw ``data`` (bands, h, w) and ``valid`` (h, w) mask.

    ``valid`` is where every model band has data; ``partial`` counts the pixels this chip owns
    (see :class:`ChipReader`) where some bands have data and others not (left unclassified).
    """

    window: Window
    data: np.ndarray
    valid: np.ndarray
    seconds: float = 0.0
    partial: int = 0


class ChipReader:
    """Reads chips in worker threads, one dataset handle per thread.

    A pixel is *owned* by the window with the largest row and column starts at or before it
    (``starts``: the row and column starts of the full plan), so per-pixel counts summed over
    overlapping chips count each pixel once.
    """

    def __init__(
        self,
        opener: Callable[[], Any],
        *,
        indexes: tuple[int, ...],
        grid: Grid,
        aoi: Any = None,
        starts: tuple[Sequence[int], Sequence[int]] | None = None,
    ) -> None:
        self.opener = opener
        self.indexes = indexes
        self.grid = grid
        self.aoi = aoi
        self.starts = starts
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
        valid, some = band_validity(ds, data, window, indexes=self.indexes)
        if self.aoi is not None:
            from rasterio.features import geometry_mask

            sub = self.grid.window_grid(window)
            inside = geometry_mask(
                [self.aoi], out_shape=sub.shape, transform=sub.transform, invert=True
            )
            valid &= inside
            some &= inside
        partial = some & ~valid
        rows, cols = self._owned(window)
        n_partial = int(np.count_nonzero(partial[rows, cols]))
        return Chip(window, data, valid, time.perf_counter() - t0, n_partial)

    def _owned(self, window: Window) -> tuple[slice, slice]:
        """The part of ``window`` (window-relative slices) that this window owns."""
        if self.starts is None:
            return slice(None), slice(None)
        r0, c0 = int(window.row_off), int(window.col_off)

        def end(starts: Sequence[int], start: int, length: int) -> int:
            later = [s for s in starts if s > start]
            return (min(later) - start) if later else length

        rows, cols = self.starts
        return (
            slice(0, end(rows, r0, int(window.height))),
            slice(0, end(cols, c0, int(window.width))),
        )

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
    with ReadAhead(reader.read, windows, workers=workers, ahead=ahead) as chips:
        yield from chips


# ---- infer ------------------------------------------------------------------------------------
def pad_to(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """``x`` (..., h, w) reflect-padded at the bottom and right to ``height`` x ``width``."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, height - h), (0, width - w)], mode="reflect")


def infer_batch(
    engine: Engine,
    chips: Sequence[Chip],
    contract: ModelContract,
    *,
    tta: str = "none",
    refine: str = "none",
) -> np.ndarray:
    """Class probabilities ``(n, classes, h, w)`` float32 of same-shaped chips.

    Chips go through :meth:`ModelContract.prepare` (reflectance scaling, normalisation,
    nodata -> 0), are reflect-padded to the contract's input size (:meth:`pad_target`), run
    through ``engine`` and cropped back. ``tta`` averages dihedral views of any engine
    (:mod:`geoseg.tta`); ``refine`` post-processes each chip (:mod:`geoseg.refine`), both
    before blending.
    """
    from geoseg.refine import refine_batch
    from geoseg.tta import tta_forward

    n = contract.in_channels  # chips may carry more bands (a cloud model's, read in the same pass)
    valid = np.stack([c.valid for c in chips])
    x = contract.prepare(np.stack([c.data[:n] for c in chips]), valid)
    h, w = x.shape[-2:]
    probs = tta_forward(engine, pad_to(x, *contract.pad_target(h, w)), mode=tta)
    if probs.ndim != 4 or probs.shape[1] != contract.num_classes:
        raise ModelBundleError(
            f"{contract.path or contract.name}: the model returned shape {probs.shape} for "
            f"{contract.num_classes} classes; its metadata does not describe its output"
        )
    probs = np.ascontiguousarray(probs[..., :h, :w], dtype=np.float32)
    return refine_batch(refine, probs, x, valid)


# ---- write ------------------------------------------------------------------------------------
class PredictionWriter:
    """Turns released row bands into class ids (and probabilities/confidence) in COGs."""

    def __init__(
        self,
        *,
        out: Path,
        grid: Grid,
        classes: ClassMap,
        tags: dict[str, Any],
        probabilities: Path | None,
        probability_dtype: ProbabilityDtype,
        confidence: Path | None,
        overwrite: bool,
    ) -> None:
        self.lookup = np.array(classes.ids, dtype=np.uint8)
        self.probability_dtype = probability_dtype
        self.confidence_in_probabilities = confidence is not None and confidence == probabilities
        self._stack = contextlib.ExitStack()
        names = classes.names
        self.classes = CogWriter(
            out,
            grid=grid,
            dtype="uint8",
            nodata=IGNORE_INDEX,
            classes=classes,
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
        try:
            for w in (self.classes, self.proba, self.conf):
                if w is not None:
                    self._stack.enter_context(w)
        except BaseException as exc:  # e.g. Ctrl-C while the second output opens: drop the first
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
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

    def write(self, band: Band) -> int:
        """Write a finished band (class ids where ``band.ok``). Returns the pixels written."""
        probs = band.probabilities
        ok = band.ok
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

    Chips arrive in row-major order and are batched for the engine; after a batch, chips go
    one by one into a :class:`~geoseg.stitch.ChipStitcher`, which hands back the bands that
    became final; they are written and dropped. All-nodata chips are skipped (never
    inferred). ``seconds`` accumulates per-stage time.

    With a ``sink`` (:class:`geoseg.pipeline.OrderedWorker` running :meth:`blend_write`),
    the caller's thread only infers: each inferred batch is handed to the sink's thread,
    which blends and writes it (and runs the cloud model) while the next batch is inferred.
    Batches are blended in order either way, so the output is the same bytes.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        contract: ModelContract,
        grid: Grid,
        windows: Sequence[Window],
        overlap: int,
        batch_size: int,
        writer: PredictionWriter,
        clouds: CloudMasker | None = None,
        tta: str = "none",
        refine: str = "none",
        sink: OrderedWorker[_Inferred] | None = None,
        rows: tuple[int, int] | None = None,
    ) -> None:
        self.engine = engine
        self.clouds = clouds
        self.tta, self.refine = tta, refine
        self.contract = contract
        self.batch_size = max(1, int(batch_size))
        self.writer = writer
        self.sink = sink
        self.stitcher = ChipStitcher(
            shape=grid.shape,
            num_classes=contract.num_classes,
            overlap=overlap,
            windows=windows,
            rows=rows,
        )
        self._pending: list[Chip] = []
        self._n_valid = 0
        self.skipped = 0
        self.valid_pixels = 0
        self.partial_pixels = 0
        self.inferred_pixels = 0  # chip pixels through the model (overlaps counted each time)
        self.seconds = {"read": 0.0, "infer": 0.0, "blend": 0.0, "write": 0.0}

    def feed(self, chip: Chip) -> None:
        """Take the next chip (row-major order)."""
        self.seconds["read"] += chip.seconds
        self.partial_pixels += chip.partial
        if self._pending and self._pending[-1].data.shape[-2:] != chip.data.shape[-2:]:
            self._flush()  # a batch holds chips of one shape (ragged edge chips differ)
        self._pending.append(chip)
        self._n_valid += bool(chip.valid.any())
        if self._n_valid >= self.batch_size:
            self._flush()

    def finish(self) -> None:
        """Predict what is left; without a sink, also write the last rows (else :meth:`close`)."""
        self._flush()
        if self.sink is None:
            self.close()

    def close(self) -> None:
        """Write the rows still buffered (after the last batch is blended)."""
        self._write(self.stitcher.finish())

    def _flush(self) -> None:
        pending, self._pending, self._n_valid = self._pending, [], 0
        if not pending:
            return
        todo = [c for c in pending if c.valid.any()]
        self.inferred_pixels += sum(c.valid.size for c in todo)
        t0 = time.perf_counter()
        probs = (
            infer_batch(self.engine, todo, self.contract, tta=self.tta, refine=self.refine)
            if todo
            else None
        )
        self.seconds["infer"] += time.perf_counter() - t0
        item = _Inferred(pending, todo, probs)
        if self.sink is None:
            self.blend_write(item)
        else:
            self.sink.put(item)

    def blend_write(self, item: _Inferred) -> None:
        """Blend an inferred batch (and its cloud masks) and write the rows it finishes."""
        if self.clouds is not None:  # the cloud model on the same chips (geoseg.clouds)
            self.clouds.add(item.todo)
        probs = iter(item.probabilities if item.probabilities is not None else ())
        for chip in item.chips:
            t1 = time.perf_counter()
            if chip.valid.any():
                bands = self.stitcher.add(chip.window, next(probs), chip.valid)
            else:
                self.skipped += 1
                bands = self.stitcher.skip(chip.window, chip.valid)
            self.seconds["blend"] += time.perf_counter() - t1
            self._write(bands)

    def _write(self, bands: list[Band]) -> None:
        t0 = time.perf_counter()
        for band in bands:
            masked = self.clouds.masked(band) if self.clouds is not None else band
            self.valid_pixels += self.writer.write(masked)
        self.seconds["write"] += time.perf_counter() - t0


@dataclass(frozen=True)
class _Inferred:
    """A batch on its way from inference to blending: its chips, those inferred, their output."""

    chips: list[Chip]
    todo: list[Chip]
    probabilities: np.ndarray | None


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
    peak_buffer_pixels: int = 0
    model_source: str = ""
    reflectance: dict[str, list[float]] | None = None
    clouds: dict[str, Any] | None = None
    #: pixels where some model bands have data and others not: left unclassified (nodata).
    partial_pixels: int = 0
    #: chip pixels run through the model, overlaps counted once per chip (see ``redundancy``).
    inferred_pixels: int = 0

    @property
    def redundancy(self) -> float:
        """Pixels inferred per scene pixel (> 1: the chips' overlaps; < 1: skipped chips)."""
        return self.inferred_pixels / max(self.pixels, 1)

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
        d["redundancy"] = round(self.redundancy, 4)
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
                f"{self.windows_outside_aoi} outside AOI), size {self.size}, overlap {self.overlap}, "
                f"{self.redundancy:.2f}x the scene's pixels inferred",
                "Seconds: "
                + ", ".join(
                    f"{k} {s.get(k, 0.0):.2f}" for k in ("read", "infer", "blend", "write", "total")
                ),
                f"Speed: {self.mpx_per_s:.2f} Mpx/s, {self.km2_per_h:.0f} km2/h on {self.device}",
            ]
            + (
                [
                    f"Clouds ({self.clouds['model']}): {self.clouds['cloud_pixels']} cloud and "
                    f"{self.clouds['shadow_pixels']} shadow px written as nodata"
                ]
                if self.clouds
                else []
            )
            + (
                [
                    f"Partial: {self.partial_pixels} pixels have some bands missing and are left "
                    "unclassified (nodata)"
                ]
                if self.partial_pixels
                else []
            )
        )


#: Pixels per row band when measuring the scene's area: pixel areas are float64 arrays (and
#: their corner coordinates), so full-width 1024-row bands of a 20000 px wide scene took 470 MB.
AREA_BAND_PIXELS = 2**20


def _area_km2(grid: Grid) -> float:
    from geoseg.area import area_m2

    return area_m2(grid, rows=max(1, AREA_BAND_PIXELS // max(1, grid.width))) / 1e6


# ---- the whole path ---------------------------------------------------------------------------
def _opener(scene: PathLike, resample_to: tuple[float, float] | None) -> Callable[[], Any]:
    """Opens ``scene`` (a raster, or the VRT of a :class:`~geoseg.io.scene.StackedScene`).

    With ``resample_to``, a bilinear WarpedVRT at that pixel size: on the scene's CRS and
    extent, or for a geographic scene on the UTM zone of its centre covering the whole scene
    (:func:`geoseg.io.scene.resample_grid`), outside the scene's footprint masked. A stacked
    scene on a projected CRS is instead stacked again onto the model's grid, so each band file
    is resampled once (bilinear from its own resolution), not twice.
    """
    from geoseg.io.scene import StackedScene, resample_grid

    if resample_to is not None and isinstance(scene, StackedScene):
        grid = resample_grid(scene.scene.grid, resample_to, path=scene)
        if grid.crs == scene.scene.grid.crs:  # each band file resampled once, not twice
            scene, resample_to = scene.on_grid(grid), None

    def open_ds() -> Any:
        ds = rasterio.open(scene)
        if resample_to is None:
            return ds
        from rasterio.vrt import WarpedVRT

        g = resample_grid(Grid.from_dataset(ds), resample_to, path=scene)
        warped = g.crs != ds.crs and any(v is None for v in ds.nodatavals)
        return WarpedVRT(
            ds,
            crs=g.crs,
            transform=g.transform,
            width=g.width,
            height=g.height,
            resampling=Resampling.bilinear,
            add_alpha=warped,  # no nodata value to mark where the warped footprint ends
        )

    return open_ds


def _provenance(
    contract: ModelContract, indexes: tuple[int, ...], size: int, overlap: int
) -> dict[str, Any]:
    from geoseg import __version__

    arch = contract.extra.get("arch")
    tags: dict[str, Any] = {
        "GEOSEG_VERSION": __version__,
        "GEOSEG_MODEL": contract.name,
        "GEOSEG_MODEL_SOURCE": contract.source,
        "GEOSEG_MODEL_ARCH": f"{arch}/{contract.extra.get('encoder')}" if arch else contract.source,
        "GEOSEG_MODEL_BANDS": ",".join(contract.bands),
        "GEOSEG_SCENE_BANDS": ",".join(str(i) for i in indexes),
        "GEOSEG_CHIP_SIZE": size,
        "GEOSEG_OVERLAP": overlap,
    }
    if contract.extra.get("quantization"):
        tags["GEOSEG_MODEL_QUANTIZATION"] = contract.extra["quantization"]
    if contract.reflectance_scale is not None:
        tags["GEOSEG_REFLECTANCE_SCALE"] = ",".join(f"{v:g}" for v in contract.reflectance_scale)
        tags["GEOSEG_REFLECTANCE_OFFSET"] = ",".join(
            f"{v:g}" for v in contract.reflectance_offset or ()
        )
    return tags


def _fit_scene(
    scene: PathLike, contract: ModelContract, *, default: bool, **checks: Any
) -> SceneFit:
    """:func:`check_scene`; a refusal names the registered models that fit the scene."""
    with open_raster(scene) as ds:
        try:
            return check_scene(ds, contract, path=scene, **checks)
        except BandMismatchError as exc:
            if not default:
                raise
            hint = f" ({contract.description})" if contract.description else ""
            fitting = sources.models_fitting(list(ds.descriptions), exclude=contract.name)
            if fitting:
                hint += f"; models that fit its bands: --model {' | '.join(fitting)}"
            raise BandMismatchError(f"{exc}{hint}") from None


@dataclass(frozen=True)
class _Plan:
    grid: Grid
    windows: list[Window]
    #: row and column starts of the full plan (before the AOI): who owns which pixel
    starts: tuple[list[int], list[int]]
    aoi: Any
    opener: Callable[[], Any]
    #: ``predict(rows=)``: the rows written, and the rows their windows span
    rows: tuple[int, int] | None = None
    span: tuple[int, int] | None = None

    @property
    def all_windows(self) -> int:
        """Windows of the full plan, AOI or not."""
        return len(self.starts[0]) * len(self.starts[1])


def _plan_scene(
    scene: PathLike, fit: SceneFit, *, size: int, overlap: int, aoi: PathLike | None
) -> _Plan:
    """The output grid (the model's pixel size with ``--resample``) and its chip windows."""
    opener = _opener(scene, fit.resample_to)
    with contextlib.closing(opener()) as ds0:
        grid = Grid.from_dataset(ds0)
    aoi_geom = read_aoi(aoi, grid.crs) if aoi is not None else None
    ragged = fit.contract.input_size is None  # a fixed-size graph pads every chip anyway
    windows = plan(grid, size=size, overlap=overlap, aoi=aoi_geom, ragged=ragged)
    if not windows:
        raise EmptyResultError(
            f"{aoi}: the AOI does not overlap {scene}; check the AOI's CRS and extent"
        )
    starts = (
        axis_starts(grid.height, size, overlap, ragged=ragged),
        axis_starts(grid.width, size, overlap, ragged=ragged),
    )
    return _Plan(grid, windows, starts, aoi_geom, opener)


def _chip_size(contract: ModelContract, size: int | None, overlap: int | None) -> tuple[int, int]:
    size = int(size if size is not None else contract.chip_size)
    overlap = int(overlap if overlap is not None else contract.overlap)
    check_chip_size(size, overlap)
    if contract.input_size and size > contract.input_size:
        raise BandMismatchError(
            f"--size {size} is larger than the {contract.input_size} px input of "
            f"{contract.name}; use --size {contract.input_size} or less"
        )
    return size, overlap


def _stream(
    scene: PathLike,
    make_engine: Callable[[], Engine],
    fit: SceneFit,
    p: _Plan,
    outputs: _Outputs,
    opts: _RunOptions,
    *,
    clouds: CloudMasker | None = None,
) -> StreamingRun:
    """Read -> infer -> blend -> write every window of the plan, in one overlapped pass.

    The reader threads start first, so the model is built (``make_engine``) while the first
    chips are read; blending and writing run in a second thread (:data:`WRITE_THREAD`).
    """
    tags = _provenance(fit.contract, fit.indexes, opts.size, opts.overlap)
    tags |= {"GEOSEG_TTA": opts.tta, "GEOSEG_REFINE": opts.refine}
    if clouds is not None:
        tags["GEOSEG_CLOUD_MODEL"] = clouds.plan.name
    writer = PredictionWriter(
        out=outputs.out,
        grid=p.grid if p.rows is None else _rows_grid(p.grid, p.rows),
        classes=fit.contract.classes,
        tags=tags,
        probabilities=outputs.probabilities,
        probability_dtype=opts.probability_dtype,
        confidence=outputs.confidence,
        overwrite=opts.overwrite,
    )
    indexes = clouds.read_indexes if clouds is not None else fit.indexes
    reader = ChipReader(p.opener, indexes=indexes, grid=p.grid, aoi=p.aoi, starts=p.starts)
    first = opts.batch_size or default_batch_size(opts.size * opts.size)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), contextlib.closing(reader):
        with ReadAhead(reader.read, p.windows, workers=READ_WORKERS, ahead=2 * first) as chips:
            engine = make_engine()  # while the first chips are read
            batch = opts.batch_size or auto_batch_size(engine, fit.contract, opts.size)
            chips.ahead = 2 * batch
            with writer, clouds or contextlib.nullcontext():
                run = StreamingRun(
                    engine=engine,
                    contract=fit.contract,
                    grid=p.grid,
                    windows=p.windows,
                    overlap=opts.overlap,
                    batch_size=batch,
                    writer=writer if p.rows is None else _RowsWriter(writer, p.rows),  # type: ignore[arg-type]
                    clouds=clouds,
                    tta=opts.tta,
                    refine=opts.refine,
                    rows=p.span,
                )
                _drive(run, chips, total=len(p.windows))
                if run.valid_pixels == 0 and not (clouds and clouds.masked_pixels):
                    raise EmptyResultError(
                        f"{scene}: every pixel{' inside the AOI' if p.aoi is not None else ''} is nodata, nothing to predict; "
                        "check the scene's nodata value (`geoseg info`)"
                    )
                t_close = time.perf_counter()
            run.seconds["write"] += time.perf_counter() - t_close  # overviews + COG copy
    return run


#: Blend and write in a second thread while the model infers the next batch (the output is
#: the same bytes either way; ``False`` runs every stage after inference in the main thread).
WRITE_THREAD = True
#: Inferred batches waiting for the write thread (each holds its chips and probabilities).
WRITE_QUEUE = 1


def _drive(run: StreamingRun, chips: Iterable[Chip], *, total: int) -> None:
    """Feed every chip to ``run`` and finish it; blending/writing in a worker thread."""
    bar = progress(chips, total=total, desc="predict", unit="chip")
    if not WRITE_THREAD:
        for chip in bar:
            run.feed(chip)
        run.finish()
        return
    with OrderedWorker(run.blend_write, depth=WRITE_QUEUE) as sink:
        run.sink = sink
        for chip in bar:
            run.feed(chip)
        run.finish()
    run.close()


def auto_batch_size(engine: Engine, contract: ModelContract, size: int) -> int:
    """Chips per forward pass when the user gives none.

    From the engine when it can tell (a GPU's free memory, a graph's fixed batch), else
    :func:`geoseg.pipeline.default_batch_size`.
    """
    h, w = contract.pad_target(size, size)
    suggest = getattr(engine, "suggest_batch_size", None)
    if callable(suggest):
        return int(suggest((contract.in_channels, h, w)))
    return default_batch_size(h * w)


def predict(
    scene: PathLike,
    *,
    out: PathLike,
    model: PathLike | ModelBundle | None = None,
    size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    probabilities: PathLike | None = None,
    probability_dtype: ProbabilityDtype = "uint8",
    confidence: bool = False,
    aoi: PathLike | None = None,
    vector: PathLike | None = None,
    bands: Sequence[str | int] | None = None,
    resample: bool = False,
    reflectance: str | None = None,
    scale: float | Sequence[float] | None = None,
    offset: float | Sequence[float] | None = None,
    cloud_mask: str | None = None,
    cloud_mask_out: PathLike | None = None,
    cloud_bands: Sequence[str | int] | None = None,
    overwrite: bool = False,
    device: str | Any | None = None,
    threads: int | None = None,
    tta: str = "none",
    refine: str = "none",
    precision: Precision = "auto",
    rows: tuple[int, int] | None = None,
) -> PredictReport:
    """Segment ``scene`` into a styled class COG at ``out``; a :class:`PredictReport` back.

    Args:
        scene: a raster, a folder of band files or STAC Item/ItemCollection JSON (``io.scene``).
        out: class COG (``.tif``) on the scene's grid, 255 nodata, colour table, ``.qml``.
        model: a bundle, an ``.onnx`` file or a ``geoseg models`` name; ``None``: the default.
        size: chip size (default: the model's).
        overlap: chip overlap (default: the model's).
        batch_size: chips per forward pass (default: :func:`auto_batch_size`).
        probabilities: also write per-class probabilities to this COG.
        probability_dtype: ``uint8`` (percent, 255 nodata) or ``float16`` (NaN nodata).
        confidence: also write the top-class probability (last probabilities band or a COG).
        aoi: GeoJSON/GPKG polygons (any CRS): predict only there; nodata outside.
        vector: also polygonize the classes into this file (``geoseg.vectorize``).
        bands: scene bands for the model's bands: names (STAC: asset keys, common names) or 1-based.
        resample: warp to the model's resolution (geographic scenes: onto the UTM of the centre).
        reflectance: DN -> reflectance preset (:data:`~geoseg.runtime.contract.REFLECTANCE_PRESETS`).
        scale: DN -> reflectance scale (one, or one per model band); default: the scene's.
        offset: DN -> reflectance offset (with ``scale``).
        cloud_mask: also run this cloud/shadow model (``auto``: a csmask that fits; ``geoseg.clouds``).
        cloud_mask_out: also write the cloud mask as a styled COG (0 clear, 1 cloud, 2 shadow).
        cloud_bands: scene bands for the cloud model's bands, by name or 1-based index.
        overwrite: replace existing outputs.
        device: ``cuda``/``cpu`` (default: CUDA when present, else CPU).
        threads: CPU threads (default :func:`geoseg.runtime.engines.default_threads`).
        tta: ``none``, ``hflip``, ``flips`` or ``d4`` test-time augmentation (:mod:`geoseg.tta`).
        refine: ``none`` or ``crf`` (:mod:`geoseg.refine`), per chip before blending.
        precision: torch autocast (:data:`~geoseg.runtime.engines.Precision`).
        rows: only rows ``[start, stop)``, bit-equal to the whole scene's (:mod:`geoseg.parallel`).
    """
    t_start = time.perf_counter()
    outputs = check_predict_outputs(
        out,
        probabilities=probabilities,
        confidence=confidence,
        vector=vector,
        cloud_mask_out=cloud_mask_out,
        inputs={"scene": scene, "model": model_file(model), "AOI": aoi},
        overwrite=overwrite,
    )
    contract, bundle = sources.open_model(model)
    size, overlap = _chip_size(contract, size, overlap)
    scene, bands = scene_source(  # a folder of band files or STAC: one VRT of the bands
        scene, bands=bands, model_bands=contract.bands, common_names=contract.common_names
    )
    scaling = {"reflectance": reflectance, "scale": scale, "offset": offset}
    fit_scaling = {} if cloud_mask is not None and contract.input == "raw" else scaling  # clouds'
    default = model is None or str(model) == sources.DEFAULT_MODEL
    fit = _fit_scene(
        scene, contract, default=default, bands=bands, resample=resample, **fit_scaling
    )
    p = _plan_scene(scene, fit, size=size, overlap=overlap, aoi=aoi)
    p = _rows_plan(p, rows, scene, refuse=cloud_mask or cloud_mask_out or vector)
    opts = _RunOptions(size, overlap, batch_size, probability_dtype, overwrite, tta, refine)
    clouds = _open_clouds(
        scene,
        fit,
        p,
        opts,
        model=cloud_mask,
        mask_out=cloud_mask_out,
        bands=cloud_bands,
        scaling=scaling,
        device=device,
        threads=threads,
    )
    make_engine = functools.partial(
        sources.make_engine, contract, bundle, device=device, threads=threads, precision=precision
    )
    run = _stream(scene, make_engine, fit, p, outputs, opts, clouds=clouds)
    return _finish(scene, outputs, fit, p, run, clouds, opts, t_start=t_start)


@dataclass(frozen=True)
class _RunOptions:
    """How the stream runs (the options of :func:`predict` past the model and the scene)."""

    size: int
    overlap: int
    batch_size: int | None
    probability_dtype: ProbabilityDtype
    overwrite: bool
    tta: str
    refine: str

    def __post_init__(self) -> None:
        """Refuse an unknown ``tta`` or ``refine`` mode before any work."""
        _check_modes(self.tta, self.refine)


def _check_modes(tta: str, refine: str) -> None:
    """Refuse an unknown ``tta`` or ``refine`` mode; tune the allocator."""
    from geoseg.refine import REFINE_MODES
    from geoseg.tta import TTA_MODES

    if tta not in TTA_MODES or refine not in REFINE_MODES:
        raise ConfigError(
            f"tta {tta!r} / refine {refine!r}: use tta {'|'.join(TTA_MODES)} "
            f"and refine {'|'.join(REFINE_MODES)}"
        )
    tune_malloc()


def _finish(
    scene: PathLike,
    outputs: _Outputs,
    fit: SceneFit,
    p: _Plan,
    run: StreamingRun,
    clouds: CloudMasker | None,
    opts: _RunOptions,
    *,
    t_start: float,
) -> PredictReport:
    """After the stream: ``--vector``, then the report (logged)."""
    result = outputs.rasters + (clouds.outputs if clouds else [])
    result += _vectorize(outputs, run, overwrite=opts.overwrite)
    run.seconds["total"] = time.perf_counter() - t_start
    report = _report(scene, outputs, result, fit, p, run, size=opts.size, overlap=opts.overlap)
    report.clouds = clouds.report() if clouds is not None else None
    log.info("%s", report.summary())
    return report


def _open_clouds(
    scene: PathLike,
    fit: SceneFit,
    p: _Plan,
    opts: _RunOptions,
    *,
    model: str | None,
    mask_out: PathLike | None,
    bands: Sequence[str | int] | None,
    scaling: dict[str, Any],
    device: str | Any | None,
    threads: int | None,
) -> CloudMasker | None:
    """The cloud masker of ``--cloud-mask`` (:func:`geoseg.clouds.open_clouds`), or ``None``."""
    if model is None:
        return None
    from geoseg.clouds import open_clouds

    return open_clouds(
        scene,
        main_indexes=fit.indexes,
        grid=p.grid,
        overlap=opts.overlap,
        windows=p.windows,
        model=model,
        bands=bands,
        mask_out=mask_out,
        overwrite=opts.overwrite,
        device=None if device is None else str(device),
        threads=threads,
        **scaling,
    )


def _vectorize(outputs: _Outputs, run: StreamingRun, *, overwrite: bool) -> list[str]:
    """Polygonize the class COG when ``--vector`` was asked for; the files written."""
    if outputs.vector is None:
        return []
    t0 = time.perf_counter()
    from geoseg.vectorize import vectorize  # type: ignore[import-not-found,unused-ignore]

    vectorize(outputs.out, outputs.vector, overwrite=overwrite)
    run.seconds["vector"] = time.perf_counter() - t0
    return [str(outputs.vector)]


def _report(
    scene: PathLike,
    outputs: _Outputs,
    result: list[str],
    fit: SceneFit,
    p: _Plan,
    run: StreamingRun,
    *,
    size: int,
    overlap: int,
) -> PredictReport:
    c = fit.contract
    refl = (
        {"scale": list(c.reflectance_scale), "offset": list(c.reflectance_offset or ())}
        if c.reflectance_scale is not None
        else None
    )
    return PredictReport(
        scene=str(scene),
        out=str(outputs.out),
        outputs=result,
        grid=p.grid.to_dict(),
        model=c.name,
        size=size,
        overlap=overlap,
        batch_size=run.batch_size,
        device=run.engine.device,
        windows=p.all_windows,
        windows_skipped=run.skipped,
        windows_outside_aoi=p.all_windows - len(p.windows),
        pixels=p.grid.height * p.grid.width,
        valid_pixels=run.valid_pixels,
        partial_pixels=run.partial_pixels,
        inferred_pixels=run.inferred_pixels,
        area_km2=_area_km2(p.grid),
        seconds=run.seconds,
        peak_buffer_pixels=run.stitcher.peak_pixels,
        model_source=c.source,
        reflectance=refl,
    )


# ---- one band of rows (predict(rows=...), for geoseg.parallel) --------------------------------
def _rows_grid(grid: Grid, rows: tuple[int, int]) -> Grid:
    return grid.window_grid(Window(0, rows[0], grid.width, rows[1] - rows[0]))


def _rows_plan(p: _Plan, rows: tuple[int, int] | None, scene: PathLike, *, refuse: Any) -> _Plan:
    """The plan restricted to the windows touching ``rows`` (whole-scene weights and order)."""
    if rows is None:
        return p
    r0, r1 = int(rows[0]), int(rows[1])
    if refuse:
        raise ConfigError("rows= predicts a band of a scene; it takes no cloud mask or vector")
    if not 0 <= r0 < r1 <= p.grid.height:
        raise ConfigError(f"rows {rows} are not inside the {p.grid.height} rows of {scene}")
    windows = [w for w in p.windows if w.row_off < r1 and w.row_off + w.height > r0]
    if not windows:
        raise EmptyResultError(f"{scene}: no chip touches rows {r0}..{r1}")
    span = (int(windows[0].row_off), max(int(w.row_off + w.height) for w in windows))
    return dataclasses.replace(p, windows=windows, rows=(r0, r1), span=span)


class _RowsWriter:
    """The :class:`PredictionWriter` of a band: released rows cropped to the band, shifted."""

    def __init__(self, writer: PredictionWriter, rows: tuple[int, int]) -> None:
        self.writer, self.rows = writer, rows

    def write(self, band: Band) -> int:
        a, b = (
            max(self.rows[0], int(band.window.row_off)),
            min(self.rows[1], int(band.window.row_off + band.window.height)),
        )
        if a >= b:
            return 0
        i, j = a - int(band.window.row_off), b - int(band.window.row_off)
        return self.writer.write(
            Band(
                Window(band.window.col_off, a - self.rows[0], band.window.width, b - a),
                band.probabilities[:, i:j],
                band.covered[i:j],
                None if band.valid is None else band.valid[i:j],
            )
        )

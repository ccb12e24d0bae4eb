"""Cloud and cloud-shadow masks in the same pass as the land-cover prediction.

``geoseg predict scene.tif --cloud-mask [MODEL]`` runs a cloud/shadow model (a ukis-csmask
U-Net, see :mod:`geoseg.runtime.sources`) on the very chips the land-cover model sees: the
scene is read once (the union of both models' bands), both models infer on the same windows,
both are blended with the same weights and released in the same cells. Where the cloud model
says cloud or shadow, the class COG gets nodata (255); the pixels are counted in the report, and
the mask itself (0 clear, 1 cloud, 2 shadow, 255 nodata) can be written as a styled COG.

* :func:`plan_clouds` picks the model (``auto``: the csmask model the scene's bands fit) and
  checks the scene against its contract (bands by common name, reflectance scaling) before any
  work; :func:`union_bands` says which bands to read.
* :class:`CloudMasker` is what the streaming run calls: :meth:`CloudMasker.add` per inferred
  batch, :meth:`CloudMasker.apply` per released piece.

The csmask models take a fixed 256 x 256 input: chips of that size or smaller are padded to it;
larger chips are cut into overlapping 256 px tiles blended inside the chip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from rasterio.windows import Window

from geoseg.classes import IGNORE_INDEX
from geoseg.errors import BandMismatchError, ModelBundleError
from geoseg.grid import Grid, plan_windows
from geoseg.stitch import Band, ChipStitcher, chip_weights

if TYPE_CHECKING:
    from geoseg.io.cog import CogWriter
    from geoseg.runtime.contract import ModelContract
    from geoseg.runtime.engines import Engine

__all__ = [
    "AUTO",
    "CLEAR",
    "CLOUD",
    "SHADOW",
    "CloudMasker",
    "CloudPlan",
    "auto_cloud_model",
    "open_clouds",
    "plan_clouds",
    "union_bands",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
#: ``--cloud-mask`` without a model name: the csmask model that fits the scene's bands.
AUTO = "auto"
CLEAR, CLOUD, SHADOW = 0, 1, 2
#: Hints that a scene is surface reflectance (L2A / Landsat Collection 2 Level-2).
_L2_HINT = re.compile(r"(L2A|L2SP|\bBOA\b|LEVEL[-_ ]?2|(^|[^A-Z])SR_B\d)", re.IGNORECASE)


class ChipLike(Protocol):
    """What the cloud model needs of a chip: its window, raw bands and validity."""

    window: Window
    data: np.ndarray
    valid: np.ndarray


# ---- plan ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CloudPlan:
    """The cloud model checked against a scene.

    Attributes:
        name: the registered model name (e.g. ``csmask-6b-l1c``).
        contract: its contract, bound to the scene's DN -> reflectance scaling.
        indexes: the scene bands (1-based) it reads, in its band order.
    """

    name: str
    contract: ModelContract
    indexes: tuple[int, ...]


def _looks_l2(path: PathLike, descriptions: Sequence[str | None], tags: dict[str, str]) -> bool:
    text = " ".join([Path(path).name, *(d or "" for d in descriptions), *tags.values()])
    return bool(_L2_HINT.search(text))


def auto_cloud_model(
    descriptions: Sequence[str | None],
    *,
    path: PathLike = "scene",
    tags: dict[str, str] | None = None,
    bands: Sequence[str | int] | None = None,
) -> str:
    """The csmask model a scene fits: 6 bands when SWIR is there, else 4; L2A or L1C.

    The level is L2A when the file name, band names or tags say so (``L2A``, ``L2SP``, ``BOA``,
    ``Level-2A``, Landsat ``SR_B*``), else L1C (top-of-atmosphere). With ``bands`` (``--cloud-bands``) their
    count picks 4 or 6 bands.

    Raises:
        BandMismatchError: no csmask model fits; the message says what to name.
        ModelBundleError: the ``clouds`` extra is not installed.
    """
    from geoseg.runtime.contract import fits_bands
    from geoseg.runtime.sources import contract_of

    level = "l2a" if _looks_l2(path, descriptions, tags or {}) else "l1c"
    if bands is not None:
        if len(bands) not in (4, 6):
            raise BandMismatchError(
                f"--cloud-bands gives {len(bands)} band(s); give 4 (blue, green, red, nir) or "
                "6 (+ swir16, swir22), in that order"
            )
        return f"csmask-{len(bands)}b-{level}"
    for nb in ("6b", "4b"):
        name = f"csmask-{nb}-{level}"
        if fits_bands(contract_of(name), descriptions):
            return name
    raise BandMismatchError(
        f"{path}: no cloud model fits its bands ({', '.join(d or '-' for d in descriptions)}); "
        "the csmask models need blue, green, red, nir (and swir16, swir22 for the 6-band "
        "models) named as band descriptions (B02.. or blue..); map them with --cloud-bands"
    )


def plan_clouds(
    dataset: Any,
    model: str = AUTO,
    *,
    bands: Sequence[str | int] | None = None,
    scale: float | Sequence[float] | None = None,
    offset: float | Sequence[float] | None = None,
    reflectance: str | None = None,
    path: PathLike = "scene",
) -> CloudPlan:
    """Pick the cloud model for an open scene and check the scene against it, before any work.

    Args:
        dataset: the open scene (rasterio dataset; the grid that will be predicted).
        model: a registered cloud model name (``geoseg models``) or ``auto``.
        bands: scene bands for the cloud model's bands (``--cloud-bands``), by name or index.
        scale: DN -> reflectance scale (one, or one per cloud-model band).
        offset: DN -> reflectance offset.
        reflectance: a reflectance preset name (e.g. ``s2``, ``s2-pre04``, ``landsat-c2-l2``).
        path: the scene, for messages.

    Raises:
        BandMismatchError: bands missing or a reflectance scaling cannot be found.
        ModelBundleError: not a cloud model, or the ``clouds`` extra is not installed.
    """
    from geoseg.runtime.contract import check_scene
    from geoseg.runtime.sources import CLOUDS_EXTRA, CSMASK_MODELS, contract_of, csmask_available

    if not csmask_available():
        raise ModelBundleError(
            f"{path}: --cloud-mask needs the cloud/shadow models of ukis-csmask; {CLOUDS_EXTRA}"
        )
    descriptions = list(dataset.descriptions)
    name = (
        auto_cloud_model(descriptions, path=path, tags=dict(dataset.tags()), bands=bands)
        if model == AUTO
        else model
    )
    if name not in CSMASK_MODELS:
        raise ModelBundleError(
            f"--cloud-mask {name!r} is not a cloud/shadow model; use auto or one of "
            f"{', '.join(CSMASK_MODELS)}"
        )
    contract = contract_of(name)
    # the stream's grid is the land-cover model's: the cloud model takes it as it is (csmask
    # works best near 30 m; open_clouds warns when the grid is far from that)
    fit = check_scene(
        dataset,
        contract,
        bands=bands,
        resample=True,
        scale=scale,
        offset=offset,
        reflectance=reflectance,
        path=path,
    )
    return CloudPlan(name=name, contract=fit.contract, indexes=fit.indexes)


def union_bands(
    main: Sequence[int], clouds: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Scene bands to read once for both models, and where the cloud model's bands are in them.

    The land-cover model's bands come first, in its order (so it takes ``data[:len(main)]``),
    then the cloud model's bands it does not already read.
    """
    read = list(main) + [i for i in dict.fromkeys(clouds) if i not in main]
    return tuple(read), tuple(read.index(i) for i in clouds)


def open_clouds(
    scene: PathLike,
    *,
    main_indexes: Sequence[int],
    grid: Grid,
    overlap: int,
    windows: Sequence[Window],
    model: str = AUTO,
    bands: Sequence[str | int] | None = None,
    reflectance: str | None = None,
    scale: float | Sequence[float] | None = None,
    offset: float | Sequence[float] | None = None,
    mask_out: PathLike | None = None,
    overwrite: bool = False,
    device: str | None = None,
    threads: int | None = None,
) -> CloudMasker:
    """The :class:`CloudMasker` of a prediction, checked before any work (see :func:`plan_clouds`).

    ``main_indexes`` are the land-cover model's scene bands; the masker's ``read_indexes`` are
    the bands the stream reads once for both models. ``mask_out`` is refused when it exists
    (without ``overwrite``).
    """
    from geoseg.io.atomic import check_output
    from geoseg.io.raster import open_raster

    out = check_output(mask_out, overwrite=overwrite) if mask_out is not None else None
    with open_raster(scene) as ds:
        plan = plan_clouds(
            ds,
            model,
            bands=bands,
            scale=scale,
            offset=offset,
            reflectance=reflectance,
            path=scene,
        )
    want = plan.contract.resolution
    if want and not 0.5 <= grid.resolution[0] / want[0] <= 2.0:
        log.warning(
            "%s: pixel size %g; %s was trained at ~%g m (predict at ~30 m for the best masks)",
            scene,
            grid.resolution[0],
            plan.name,
            want[0],
        )
    read, positions = union_bands(main_indexes, plan.indexes)
    return CloudMasker(
        plan,
        grid=grid,
        overlap=overlap,
        windows=windows,
        positions=positions,
        read_indexes=read,
        mask_out=out,
        overwrite=overwrite,
        device=device,
        threads=threads,
    )


# ---- run ----------------------------------------------------------------------------------------
class CloudMasker:
    """Runs the cloud model on the chips of a streaming prediction and masks its released pieces.

    Args:
        plan: the cloud model and scene bands (:func:`plan_clouds`).
        grid: the prediction grid.
        overlap: the chip overlap of the stream (blend weights as the land-cover model's).
        windows: the stream's chip plan (the mask is blended and released in its pieces).
        positions: where the cloud model's bands are in each chip's ``data``
            (:func:`union_bands`).
        read_indexes: the scene bands the stream reads for both models (default: the
            cloud model's own).
        mask_out: also write the mask as a styled COG here (0 clear, 1 cloud, 2 shadow, 255
            nodata).
        tags: provenance tags for the mask COG.
        overwrite: replace an existing ``mask_out``.
        device: ``cuda``/``cpu`` for ONNX Runtime (default: CUDA when present).
        threads: CPU threads of ONNX Runtime.
        engine: an engine to use instead of loading the plan's model (tests).
    """

    def __init__(
        self,
        plan: CloudPlan,
        *,
        grid: Grid,
        overlap: int,
        windows: Sequence[Window],
        positions: Sequence[int],
        read_indexes: Sequence[int] | None = None,
        mask_out: Path | None = None,
        tags: dict[str, Any] | None = None,
        overwrite: bool = False,
        device: str | None = None,
        threads: int | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.plan = plan
        self.contract = plan.contract
        self.grid = grid
        self.overlap = overlap
        self.positions = list(positions)
        self.mask_out = mask_out
        self.read_indexes = tuple(read_indexes if read_indexes is not None else plan.indexes)
        self._engine = engine
        self._device = device
        self._threads = threads
        self.stitcher = ChipStitcher(
            shape=grid.shape,
            num_classes=self.contract.num_classes,
            overlap=overlap,
            windows=windows,
        )
        self.cloud_pixels = 0
        self.shadow_pixels = 0
        self.seconds = {"infer": 0.0, "blend": 0.0, "write": 0.0}
        self._tags = {**(tags or {}), "GEOSEG_PRODUCT": "cloud-mask", "GEOSEG_MODEL": plan.name}
        self._overwrite = overwrite
        self._stack = contextlib.ExitStack()
        self._writer: CogWriter | None = None

    @property
    def engine(self) -> Engine:
        """The cloud model's engine (ONNX Runtime), loaded on first use."""
        if self._engine is None:
            from geoseg.runtime.engines import OrtEngine

            self._engine = OrtEngine(
                self.contract.path or "",
                output=self.contract.output,
                threads=self._threads,
                device=self._device,
            )
        return self._engine

    def __enter__(self) -> CloudMasker:
        if self.mask_out is not None:
            from geoseg.io.cog import CogWriter

            self._writer = self._stack.enter_context(
                CogWriter(
                    self.mask_out,
                    grid=self.grid,
                    dtype="uint8",
                    nodata=IGNORE_INDEX,
                    classes=self.contract.classes,
                    descriptions=["cloud_mask"],
                    tags=self._tags,
                    overwrite=self._overwrite,
                    resampling="mode",
                )
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    # -- per batch ---------------------------------------------------------------------------
    def add(self, chips: Sequence[ChipLike]) -> None:
        """Infer a batch of same-shaped chips (those the land-cover model inferred) and blend them."""
        if not chips:
            return
        t0 = time.perf_counter()
        x = np.stack([c.data[self.positions] for c in chips])
        valid = np.stack([c.valid for c in chips])
        probs = self.probabilities(x, valid)
        t1 = time.perf_counter()
        for chip, p in zip(chips, probs, strict=True):
            self.stitcher.accumulate(chip.window, p)
        self.seconds["infer"] += t1 - t0
        self.seconds["blend"] += time.perf_counter() - t1

    def probabilities(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Cloud/shadow probabilities ``(n, 3, h, w)`` of raw chips ``(n, bands, h, w)``."""
        xin = self.contract.prepare(x, valid)
        h, w = xin.shape[-2:]
        size = self.contract.input_size
        if not size or (h <= size and w <= size):
            return self._run(xin)
        out = np.zeros((xin.shape[0], self.contract.num_classes, h, w), dtype=np.float32)
        wsum = np.zeros((h, w), dtype=np.float32)
        overlap = min(self.contract.overlap, size // 2)
        for win in plan_windows((h, w), size, overlap):
            rs = slice(int(win.row_off), int(win.row_off + win.height))
            cs = slice(int(win.col_off), int(win.col_off + win.width))
            wts = chip_weights(win, (h, w), overlap)
            out[..., rs, cs] += self._run(xin[..., rs, cs]) * wts
            wsum[rs, cs] += wts
        return out / wsum

    def _run(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        th, tw = self.contract.pad_target(h, w)
        if (th, tw) != (h, w):
            x = np.pad(x, [(0, 0), (0, 0), (0, th - h), (0, tw - w)], mode="reflect")
        return np.asarray(self.engine(np.ascontiguousarray(x)))[..., :h, :w]

    # -- per released row band -----------------------------------------------------------------
    def apply(self, window: Window, valid: np.ndarray) -> np.ndarray:
        """Release the same piece as the land-cover band ``window``; ``valid`` without clouds.

        ``valid`` is the band's (h, w) validity (scene data and chip coverage). Cloud and
        shadow pixels among them are counted, written to the mask COG and returned False.
        """
        t0 = time.perf_counter()
        band = self.stitcher.take(window)
        t1 = time.perf_counter()
        ok = valid & band.covered
        cls = np.where(ok, band.probabilities.argmax(axis=0), IGNORE_INDEX).astype(np.uint8)
        self.cloud_pixels += int((cls == CLOUD).sum())
        self.shadow_pixels += int((cls == SHADOW).sum())
        if self._writer is not None:
            self._writer.write(cls, band.window)
        self.seconds["blend"] += t1 - t0
        self.seconds["write"] += time.perf_counter() - t1
        return np.asarray(valid & (cls == CLEAR), dtype=bool)

    def masked(self, band: Band) -> Band:
        """The land-cover ``band`` with cloud and shadow pixels no longer valid (see :meth:`apply`)."""
        return dataclasses.replace(band, valid=self.apply(band.window, band.ok))

    @property
    def outputs(self) -> list[str]:
        """The files it writes (the mask COG, when asked for)."""
        return [str(self.mask_out)] if self.mask_out is not None else []

    @property
    def masked_pixels(self) -> int:
        """Cloud and shadow pixels so far."""
        return self.cloud_pixels + self.shadow_pixels

    def report(self) -> dict[str, Any]:
        """What the cloud model did (for the prediction report)."""
        return {
            "model": self.plan.name,
            "bands": list(self.plan.indexes),
            "cloud_pixels": self.cloud_pixels,
            "shadow_pixels": self.shadow_pixels,
            "mask": str(self.mask_out) if self.mask_out is not None else None,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }

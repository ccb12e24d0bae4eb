"""Streaming, atomic writing of styled Cloud-Optimized GeoTIFFs.

:class:`CogWriter` takes windows as they are finished and writes them into a tiled stage
GeoTIFF; on a clean exit it builds overviews and copies the stage into a COG (GDAL's COG
driver), writes the ``.qml`` style (and, for class rasters, a GDAL ``.aux.xml`` with category
names) beside it, and renames everything into place. Memory stays bounded by the windows the
caller holds; on any error nothing is left under the output names.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geoseg.classes import ClassMap
from geoseg.errors import OutputWriteError, first_line
from geoseg.grid import Grid
from geoseg.io.atomic import atomic_outputs, check_output, temporary_path
from geoseg.io.style import category_names_aux_xml, raster_qml

__all__ = ["CogWriter", "sidecar_paths"]

Resampling = Literal["mode", "nearest", "average", "bilinear"]


def sidecar_paths(path: str | os.PathLike[str]) -> dict[str, Path]:
    """Paths of the style files written beside a raster output: ``qml`` and ``aux``."""
    p = Path(path)
    return {"qml": p.with_suffix(".qml"), "aux": p.with_name(p.name + ".aux.xml")}


class CogWriter:
    """Write a raster on ``grid`` window by window, finishing as a styled COG at ``path``.

    Use as a context manager::

        with CogWriter(out, grid=grid, classes=classes, tags=tags) as w:
            for window, block in blocks:
                w.write(block, window)

    Args:
        path: output file (``.tif``).
        grid: the output grid; the file gets exactly its CRS, transform and shape.
        count: number of bands.
        dtype: numpy/GDAL data type name.
        nodata: nodata value (``None`` for none).
        classes: when given, band 1 is a class raster: colour table, category names and a
            paletted ``.qml`` are written.
        descriptions: band descriptions.
        tags: dataset-level metadata (provenance).
        band_tags: per-band metadata, ``{band_index: {key: value}}``.
        overwrite: replace an existing output.
        blocksize: COG tile size.
        resampling: overview resampling (``mode`` for classes, ``average`` for scores).
        qml: a custom style to write beside the output instead of the class style.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        grid: Grid,
        count: int = 1,
        dtype: str = "uint8",
        nodata: float | None = None,
        classes: ClassMap | None = None,
        descriptions: list[str] | None = None,
        tags: dict[str, Any] | None = None,
        band_tags: dict[int, dict[str, Any]] | None = None,
        overwrite: bool = False,
        blocksize: int = 512,
        resampling: Resampling = "mode",
        qml: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.count = count
        self.dtype = np.dtype(dtype).name
        self.nodata = nodata
        self.classes = classes
        self.descriptions = descriptions
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        self.band_tags = band_tags or {}
        self.overwrite = overwrite
        self.blocksize = blocksize
        self.resampling = resampling
        self.qml = (
            qml if qml is not None else (raster_qml(classes) if classes is not None else None)
        )
        self._stack = contextlib.ExitStack()
        self._stage_path: Path | None = None
        self._stage: Any = None
        self._temps: dict[str, Path] = {}
        check_output(self.path, overwrite=overwrite)

    # ---- context --------------------------------------------------------------------
    def __enter__(self) -> CogWriter:
        # Whatever stops the opening half-way (a bad folder, Ctrl-C between two temporaries)
        # removes what it made: ``with`` calls no ``__exit__`` for a failed ``__enter__``.
        try:
            self._open()
        except BaseException as exc:  # the temporaries are dropped, never published
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _open(self) -> None:
        sides = sidecar_paths(self.path)
        outputs = [self.path]
        names = ["tif"]
        if self.qml is not None:
            outputs.append(sides["qml"])
            names.append("qml")
        if self.classes is not None:
            outputs.append(sides["aux"])
            names.append("aux")
        # The main output was checked in __init__; sidecars follow it.
        for extra in outputs[1:]:
            check_output(extra, overwrite=True)
        temps = self._stack.enter_context(atomic_outputs(outputs, overwrite=True))
        self._temps = dict(zip(names, temps, strict=True))
        self._stage_path = temporary_path(self.path.with_name(self.path.stem + "-stage.tif"))
        self._stack.callback(self._remove_stage)
        profile = {
            "driver": "GTiff",
            "width": self.grid.width,
            "height": self.grid.height,
            "count": self.count,
            "dtype": self.dtype,
            "crs": self.grid.crs,
            "transform": self.grid.transform,
            "nodata": self.nodata,
            "tiled": True,
            "blockxsize": self.blocksize,
            "blockysize": self.blocksize,
            "compress": "zstd",
            "zstd_level": 1,
            "bigtiff": "if_safer",
            "interleave": "band" if self.count > 1 else "pixel",
        }
        if self.classes is not None:
            profile["photometric"] = "palette"
        try:
            self._stage = rasterio.open(self._stage_path, "w", **profile)
        except RasterioIOError as exc:
            raise OutputWriteError(
                f"{self.path}: cannot write ({exc}); choose a writable folder"
            ) from exc
        if self.classes is not None:
            # The colour table goes in before any data, as GDAL expects for a palette TIFF.
            self._stage.write_colormap(1, self.classes.colormap())

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write ``data`` (``(count, h, w)`` or ``(h, w)``) at ``window`` of the output grid."""
        if self._stage is None:
            raise RuntimeError("CogWriter.write called outside its context")
        arr = data if data.ndim == 3 else data[np.newaxis]
        try:
            self._stage.write(arr.astype(self.dtype, copy=False), window=window)
        except RasterioIOError as exc:
            raise OutputWriteError(
                f"{self.path}: writing failed{_why(exc)}; check free disk space or write elsewhere"
            ) from exc

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._finish()
        except BaseException as err:
            self._stack.__exit__(type(err), err, err.__traceback__)
            raise
        else:
            self._stack.__exit__(exc_type, exc, tb)

    # ---- internals ------------------------------------------------------------------
    def _finish(self) -> None:
        stage = self._stage
        assert stage is not None  # internal invariant, set by __enter__
        if self.classes is not None:
            stage.update_tags(
                1,
                CLASS_NAMES=",".join(self.classes.names),
                CLASS_IDS=",".join(str(i) for i in self.classes.ids),
            )
        if self.descriptions:
            for i, d in enumerate(self.descriptions, start=1):
                stage.set_band_description(i, d)
        if self.tags:
            stage.update_tags(**self.tags)
        for b, t in self.band_tags.items():
            stage.update_tags(b, **{k: str(v) for k, v in t.items()})
        self._stage = None
        try:  # blocks still in GDAL's cache are written now: a full disk may show here
            stage.close()
        except (RasterioIOError, CPLE_BaseError) as exc:
            raise OutputWriteError(
                f"{self.path}: writing failed{_why(exc)}; check free disk space or write elsewhere"
            ) from exc
        options = {
            "COMPRESS": "DEFLATE",
            "BLOCKSIZE": str(self.blocksize),
            "OVERVIEW_RESAMPLING": self.resampling.upper(),
            "BIGTIFF": "IF_SAFER",
        }
        if np.dtype(self.dtype).kind == "f":
            options["PREDICTOR"] = "YES"
        try:
            rasterio.shutil.copy(
                str(self._stage_path), str(self._temps["tif"]), driver="COG", **options
            )
        except (RasterioIOError, CPLE_BaseError) as exc:  # a stage cut short by a full disk
            raise OutputWriteError(
                f"{self.path}: writing the COG failed{_why(exc)}; check free disk space or write elsewhere"
            ) from exc
        if self.qml is not None:
            self._temps["qml"].write_text(self.qml)
        if self.classes is not None:
            self._temps["aux"].write_text(category_names_aux_xml(self.classes))

    def _remove_stage(self) -> None:
        if self._stage is not None:
            with contextlib.suppress(Exception):
                self._stage.close()
            self._stage = None
        if self._stage_path is not None:
            for p in (self._stage_path, Path(str(self._stage_path) + ".aux.xml")):
                with contextlib.suppress(OSError):
                    p.unlink()


def _why(exc: BaseException) -> str:
    """`` (GDAL's message)`` for an error line; nothing for rasterio's generic one.

    "Write failed. See previous exception for details." says nothing, and its cause names the
    temporary file, not the output.
    """
    msg = first_line(exc)
    return "" if "previous exception" in msg else f" ({msg})"

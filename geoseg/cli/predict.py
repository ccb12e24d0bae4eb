"""``geoseg predict``: segment a scene into a styled class COG (thin wrapper of geoseg.predict)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from geoseg.cli.options import json_opt, overlap_opt, overwrite_opt, result, size_opt

if TYPE_CHECKING:
    from geoseg.parallel import ParallelReport
    from geoseg.predict import PredictReport
    from geoseg.runtime.engines import Precision

AUTO = "__auto__"
#: geoseg.tta.TTA_MODES and geoseg.refine.REFINE_MODES (spelled out: the CLI starts light).
TTA_CHOICES = ("none", "hflip", "flips", "d4")
REFINE_CHOICES = ("none", "crf")


def _bands(value: str | None) -> list[str | int] | None:
    if not value:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return [int(v) if v.isdigit() else v for v in items]


def _floats(value: str | None, what: str) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give numbers separated by commas", param_hint=what
        ) from None


@click.command()
@click.argument("scene", type=click.Path())
@click.option(
    "--model",
    "-m",
    default=None,
    help="A name from `geoseg models` (default, csmask-6b-l1c...), a bundle (.pt) or an .onnx "
    "file (geoseg export or Deepness metadata); default: the bundled model.",
)
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False), help="Output class COG (.tif)."
)
@size_opt
@overlap_opt
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Chips per forward pass [default: 0.5-1 Mpx of chips on CPU, half the free memory on a GPU].",
)
@click.option(
    "--probabilities",
    is_flag=False,
    flag_value=AUTO,
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write per-class probabilities (to PATH, or OUT_proba.tif when no path is given).",
)
@click.option(
    "--probability-dtype",
    type=click.Choice(["uint8", "float16"]),
    default="uint8",
    show_default=True,
    help="uint8 = percent (255 nodata); float16 = 0..1 at half precision (NaN nodata).",
)
@click.option(
    "--confidence", is_flag=True, default=False, help="Also write the top-class probability."
)
@click.option(
    "--aoi",
    type=click.Path(dir_okay=False),
    default=None,
    help="GeoJSON/GPKG polygons: predict only inside.",
)
@click.option(
    "--vector",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also polygonize the classes to this file (.gpkg).",
)
@click.option(
    "--bands",
    default=None,
    help="Scene bands for the model's bands, by name or 1-based index: e.g. B4,B3,B2,B8 or 3,2,1,7.",
)
@click.option(
    "--resample",
    is_flag=True,
    default=False,
    help="Warp on the fly to the model's resolution (output on that grid).",
)
@click.option(
    "--reflectance",
    default=None,
    metavar="PRESET",
    help="DN -> reflectance for models that take reflectance (csmask): s2 (Sentinel-2 baseline "
    ">= 04.00: (DN-1000)/10000), s2-pre04 (DN/10000), landsat-c2-l2, landsat-c2-l1, none. "
    "Default: the scene's band scale/offset.",
)
@click.option(
    "--scale",
    default=None,
    help="DN -> reflectance scale (one value, or one per model band, comma-separated).",
)
@click.option(
    "--offset",
    default=None,
    help="DN -> reflectance offset after --scale (one value or one per model band).",
)
@click.option(
    "--cloud-mask",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[MODEL]",
    help="Also run a cloud/shadow model in the same pass (default: the csmask model the bands "
    "fit); clouds and shadows become nodata. See docs/clouds.md.",
)
@click.option(
    "--cloud-mask-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the cloud mask (0 clear, 1 cloud, 2 shadow) as a styled COG "
    "(implies --cloud-mask).",
)
@click.option(
    "--cloud-bands",
    default=None,
    help="Scene bands for the cloud model (blue,green,red,nir[,swir16,swir22]) by name or index.",
)
@click.option("--device", default=None, help="cuda or cpu (default: cuda when present, else cpu).")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for inference [default: the CPUs this process may use].",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="Autocast of torch models (auto: fp16 on CUDA, fp32 on CPU).",
)
@click.option(
    "--tta",
    type=click.Choice(TTA_CHOICES),
    default="none",
    show_default=True,
    help="Test-time augmentation: average 2 (hflip), 4 (flips) or 8 (d4) flipped/rotated views.",
)
@click.option(
    "--refine",
    type=click.Choice(REFINE_CHOICES),
    default="none",
    show_default=True,
    help="Edge-aware refinement of each chip: crf = local mean-field CRF guided by the bands.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Predict the scene in row bands on this many local Dask worker processes; the "
    "output is byte-identical to one process (geoseg.parallel).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Predict in row bands on an existing Dask cluster (tcp://HOST:8786); scene and "
    "output on storage every worker sees.",
)
@click.option(
    "--row-bands",
    type=click.IntRange(min=1),
    default=None,
    help="Row bands with --workers/--scheduler (default: two per worker, one on small scenes).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the run report as JSON to this file.",
)
@json_opt
@overwrite_opt
def predict(
    scene: str,
    model: str | None,
    out: str,
    size: int | None,
    overlap: int | None,
    batch_size: int | None,
    probabilities: str | None,
    probability_dtype: str,
    confidence: bool,
    aoi: str | None,
    vector: str | None,
    bands: str | None,
    resample: bool,
    reflectance: str | None,
    scale: str | None,
    offset: str | None,
    cloud_mask: str | None,
    cloud_mask_out: str | None,
    cloud_bands: str | None,
    device: str | None,
    threads: int | None,
    precision: str,
    tta: str,
    refine: str,
    workers: int | None,
    scheduler: str | None,
    row_bands: int | None,
    report_path: str | None,
    as_json: bool,
    overwrite: bool,
) -> None:
    """Segment SCENE into a class COG on the scene's grid, seam-free (blended overlapping chips).

    SCENE is a raster, a folder of band files or a STAC item / ItemCollection JSON (docs/stac.md).

    Writes OUT (tiled DEFLATE COG, colour table, class names, .qml; 255 = nodata) and prints
    per-stage seconds, Mpx/s and km2/h.

    
    Examples:
      geoseg predict ../shared/data/aber-s2/s2_10band.tif --model aber_unet.pt --out aber_classes.tif --probabilities
      geoseg predict s2_stack.tif --model csmask-6b-l1c --reflectance s2 --resample --out clouds.tif
      geoseg predict s2_stack.tif --model land.pt --cloud-mask --reflectance s2 --out classes.tif --cloud-mask-out clouds.tif
    """
    proba = probabilities
    if proba == AUTO:
        p = Path(out)
        proba = str(p.with_name(p.stem + "_proba.tif"))
    options: dict[str, Any] = {
        "out": out,
        "model": model,
        "size": size,
        "overlap": overlap,
        "batch_size": batch_size,
        "probabilities": proba,
        "probability_dtype": "float16" if probability_dtype == "float16" else "uint8",
        "confidence": confidence,
        "aoi": aoi,
        "vector": vector,
        "bands": _bands(bands),
        "reflectance": reflectance,
        "scale": _floats(scale, "--scale"),
        "offset": _floats(offset, "--offset"),
        "device": device,
        "threads": threads,
        "tta": tta,
        "refine": refine,
        "overwrite": overwrite,
    }
    report: PredictReport | ParallelReport
    if workers or scheduler or row_bands:  # one scene in row bands on Dask workers
        _refuse_in_bands(resample=resample, cloud_mask=cloud_mask or cloud_mask_out or cloud_bands)
        from geoseg.parallel import predict_parallel

        report = predict_parallel(
            scene, workers=workers, scheduler=scheduler, row_bands=row_bands, **options
        )
    else:
        from geoseg.predict import predict as run_predict

        report = run_predict(
            scene,
            resample=resample,
            cloud_mask=cloud_mask if cloud_mask or not cloud_mask_out else "auto",
            cloud_mask_out=cloud_mask_out,
            cloud_bands=_bands(cloud_bands),
            precision=cast("Precision", precision),
            **options,
        )
    _echo(report.to_dict(), report.summary(), report_path, as_json)


def _echo(d: dict[str, object], summary: str, report_path: str | None, as_json: bool) -> None:
    if report_path:
        Path(report_path).write_text(json.dumps(d, indent=2) + "\n")
    result(json.dumps(d, indent=2) if as_json else summary, always=as_json)


def _refuse_in_bands(*, resample: bool, cloud_mask: object) -> None:
    """Options the band-parallel predict does not take: one line, before any work."""
    what = "--resample" if resample else "--cloud-mask" if cloud_mask else None
    if what:
        raise click.UsageError(
            f"{what} is not available with --workers/--scheduler/--row-bands; "
            f"predict in one process (drop --workers), or drop {what}"
        )

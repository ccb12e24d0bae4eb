"""``geoseg predict``: segment a scene into a styled class COG (thin wrapper of geoseg.predict)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import json_opt, overlap_opt, overwrite_opt, size_opt

AUTO = "__auto__"
#: geoseg.tta.TTA_MODES and geoseg.refine.REFINE_MODES (spelled out: the CLI starts light).
TTA_CHOICES = ("none", "hflip", "flips", "d4")
REFINE_CHOICES = ("none", "crf")


def _bands(value: str | None) -> list[str | int] | None:
    if not value:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return [int(v) if v.isdigit() else v for v in items]


@click.command()
@click.argument("scene", type=click.Path(dir_okay=False))
@click.option("--model", "-m", default=None, help="Model bundle (.pt); default: the bundled model.")
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False), help="Output class COG (.tif)."
)
@size_opt
@overlap_opt
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Chips per forward pass.",
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
@click.option("--device", default=None, help="torch device (default: cuda when present, else cpu).")
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for inference."
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
    batch_size: int,
    probabilities: str | None,
    probability_dtype: str,
    confidence: bool,
    aoi: str | None,
    vector: str | None,
    bands: str | None,
    resample: bool,
    device: str | None,
    threads: int | None,
    tta: str,
    refine: str,
    report_path: str | None,
    as_json: bool,
    overwrite: bool,
) -> None:
    """Segment SCENE into a class COG on the scene's grid, seam-free (blended overlapping chips).

    Writes OUT (tiled DEFLATE COG, colour table, class names, .qml; 255 = nodata) and prints
    per-stage seconds, Mpx/s and km2/h.

    Example: geoseg predict ../shared/data/aber-s2/s2_10band.tif --model aber_unet.pt --out aber_classes.tif --probabilities
    """
    from geoseg.predict import predict as run_predict

    proba = probabilities
    if proba == AUTO:
        p = Path(out)
        proba = str(p.with_name(p.stem + "_proba.tif"))
    report = run_predict(
        scene,
        out=out,
        model=model,
        size=size,
        overlap=overlap,
        batch_size=batch_size,
        probabilities=proba,
        probability_dtype="float16" if probability_dtype == "float16" else "uint8",
        confidence=confidence,
        aoi=aoi,
        vector=vector,
        bands=_bands(bands),
        resample=resample,
        overwrite=overwrite,
        device=device,
        threads=threads,
        tta=tta,
        refine=refine,
    )
    d = report.to_dict()
    if report_path:
        Path(report_path).write_text(json.dumps(d, indent=2) + "\n")
    click.echo(json.dumps(d, indent=2) if as_json else report.summary())

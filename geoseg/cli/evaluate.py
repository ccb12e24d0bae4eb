"""``geoseg evaluate``: accuracy of a class map against a reference."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import class_column_opt, existing_path, json_opt, overwrite_opt, result


@click.command()
@click.argument("prediction", type=existing_path())
@click.option(
    "--reference",
    required=True,
    type=click.Path(),
    help="Class raster (any grid/CRS) or vector file of polygons/points.",
)
@class_column_opt
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Report base path: writes OUT.json, OUT.md, OUT.png (a folder gets evaluation.*).",
)
@overwrite_opt
@json_opt
def evaluate(
    prediction: str,
    reference: str,
    class_column: str | None,
    out: str,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Score PREDICTION against a reference: confusion matrix, IoU, kappa, area-adjusted accuracy.

    Area-adjusted accuracy and areas follow Olofsson et al. (2014), with 95% intervals.

    Example: geoseg evaluate pred.tif --reference landcover.tif --out reports/eval
    """
    from geoseg.evaluate import evaluate as run_evaluate

    report = run_evaluate(
        prediction, reference=reference, out=out, class_column=class_column, overwrite=overwrite
    )
    result(json.dumps(report.to_dict(), indent=2) if as_json else report.summary(), always=as_json)

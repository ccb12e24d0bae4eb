"""``geoseg change``: loss and gain of classes between two class maps."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import existing_path, given, json_opt, min_area_opt, overwrite_opt, result


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str | None) -> list[int] | None:
    items = _split(value)
    if items is None:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give integer mask values, e.g. 1,2", param_hint="--mask-values"
        ) from None


@click.command()
@click.argument("before", type=existing_path())
@click.argument("after", type=existing_path())
@click.option(
    "--from",
    "from_classes",
    required=True,
    help="Classes whose loss/gain is mapped: ids or names, comma-separated (e.g. 1 or forest).",
)
@click.option("--to", "to_classes", default=None, help="Only count loss into these classes.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Change COG (.tif).")
@click.option("--vector", default=None, type=click.Path(dir_okay=False), help="Loss/gain polygons.")
@click.option("--aoi", default=None, type=click.Path(), help="AOI polygons: per-AOI CSV table.")
@click.option("--aoi-name-column", default=None, help="AOI name attribute [library: name].")
@click.option("--table", default=None, type=click.Path(dir_okay=False), help="Per-AOI CSV path.")
@min_area_opt
@click.option("--before-date", default=None, help="Date of BEFORE (default: tags or file name).")
@click.option("--after-date", default=None, help="Date of AFTER (default: tags or file name).")
@click.option(
    "--before-mask",
    default=None,
    type=existing_path(),
    help="Cloud mask of BEFORE's date: nonzero or nodata = not observed (never change).",
)
@click.option(
    "--after-mask",
    default=None,
    type=existing_path(),
    help="Cloud mask of AFTER's date (e.g. geoseg predict --cloud-mask-out).",
)
@click.option(
    "--mask-values",
    default=None,
    help="Mask values meaning not observed, comma-separated (default: every nonzero).",
)
@overwrite_opt
@json_opt
def change(
    before: str,
    after: str,
    from_classes: str,
    to_classes: str | None,
    out: str,
    vector: str | None,
    aoi: str | None,
    aoi_name_column: str | None,
    table: str | None,
    min_area: str | None,
    before_date: str | None,
    after_date: str | None,
    before_mask: str | None,
    after_mask: str | None,
    mask_values: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Map loss (1) and gain (2) of classes from BEFORE to AFTER into a styled COG.

    AFTER may be on any grid: it is aligned onto BEFORE's grid (nearest). Areas are in
    hectares on the ellipsoid. Pixels under a cloud or shadow of either date (--before-mask,
    --after-mask, or nodata in a class map) are nodata, never loss or gain; the report
    counts them.

    Example: geoseg change forest_t1.tif forest_t2.tif --from 1 --out loss.tif
    --aoi aoi/guadeloupe.geojson
    """
    from geoseg.change import change as run_change

    report = run_change(
        before,
        after,
        out=out,
        from_classes=_split(from_classes) or [],
        to_classes=_split(to_classes),
        vector=vector,
        aoi=aoi,
        table=table,
        min_area=min_area,
        before_date=before_date,
        after_date=after_date,
        before_mask=before_mask,
        after_mask=after_mask,
        mask_values=_ints(mask_values),
        overwrite=overwrite,
        **given(aoi_name_column=aoi_name_column),
    )
    result(json.dumps(report.to_dict(), indent=2) if as_json else report.summary(), always=as_json)

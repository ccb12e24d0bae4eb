"""``geoseg vectorize``: class raster -> styled land-cover polygons."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import existing_path, given, json_opt, min_area_opt, overwrite_opt, result
from geoseg.io.vector import FORMATS


@click.command()
@click.argument("raster", type=existing_path())
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False), help="Output vector file."
)
@min_area_opt
@click.option(
    "--simplify",
    type=float,
    default=None,
    help="Simplify shared boundaries once (tolerance in CRS units); stays gap- and overlap-free.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS), case_sensitive=False),
    default=None,
    help="Output format (default: from the suffix of --out).",
)
@click.option("--to-crs", default=None, help="Output CRS, e.g. EPSG:4326 (default: the raster's).")
@click.option("--layer", default=None, help="Layer name (default: the output's stem).")
@click.option("--block-size", type=int, default=None, help="Block size (px) [library: 2048].")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Processes polygonizing block rows (default: CPU count).",
)
@overwrite_opt
@json_opt
def vectorize(
    raster: str,
    out: str,
    min_area: str | None,
    simplify: float | None,
    fmt: str | None,
    to_crs: str | None,
    layer: str | None,
    block_size: int | None,
    workers: int | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Polygonize a class raster into land-cover polygons that open styled in QGIS.

    Polygons carry class_id, class_name, area_ha and perimeter_m; nodata is left out. The
    raster is processed in blocks, with the same result as polygonizing it whole.

    Example: geoseg vectorize classes.tif --out classes.gpkg --min-area 0.5ha --simplify 2
    """
    from geoseg.vectorize import vectorize as run

    report = run(
        raster,
        out,
        min_area=min_area,
        simplify=simplify,
        format=fmt,
        to_crs=to_crs,
        overwrite=overwrite,
        workers=workers,
        layer=layer,
        **given(block_size=block_size),
    )
    if as_json:
        result(json.dumps(report.to_dict(), indent=2), always=True)
        return
    result(
        f"Wrote {report.features} polygons ({len(report.class_area_ha)} classes) to "
        f"{report.path} [{report.format}, layer {report.layer}] in {report.seconds:.1f} s"
    )

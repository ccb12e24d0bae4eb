"""``geoseg info``: describe a raster."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import json_opt


@click.command()
@click.argument("scene", type=click.Path(dir_okay=False))
@json_opt
def info(scene: str, as_json: bool) -> None:
    """Print driver, size, bands (with descriptions), dtype, nodata, CRS, resolution and bounds.

    Works on any GDAL raster (GeoTIFF, JPEG2000, VRT...).

    Example: geoseg info ../shared/data/aber-s2/s2_10band.tif --json
    """
    from geoseg.io.raster import raster_info

    ri = raster_info(scene)
    if as_json:
        click.echo(json.dumps(ri.to_dict(), indent=2))
        return
    left, bottom, right, top = ri.bounds
    lines = [
        f"File:        {ri.path}",
        f"Driver:      {ri.driver}",
        f"Size:        {ri.width} x {ri.height} pixels (width x height), {ri.count} band(s)",
        f"Data type:   {', '.join(sorted(set(ri.dtypes)))}",
        f"Nodata:      {ri.nodata}",
        f"CRS:         {ri.crs or 'none'}" + (f" ({ri.crs_name})" if ri.crs_name else ""),
        f"Resolution:  {ri.resolution[0]:g} x {ri.resolution[1]:g}",
        f"Bounds:      left={left:.6f} bottom={bottom:.6f} right={right:.6f} top={top:.6f}",
        f"Blocks:      {ri.block_shapes[0][1]} x {ri.block_shapes[0][0]}"
        if ri.block_shapes
        else "Blocks: -",
        f"Compression: {ri.compression or 'none'}",
        f"Overviews:   {ri.overviews or 'none'}",
        "Bands:",
    ]
    for i, (desc, dt, ci) in enumerate(
        zip(ri.band_descriptions, ri.dtypes, ri.colorinterp, strict=True), start=1
    ):
        lines.append(f"  {i:>3}  {desc or '-':<20} {dt:<9} {ci.lower()}")
    click.echo("\n".join(lines))

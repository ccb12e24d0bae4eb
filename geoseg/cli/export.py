"""``geoseg export``: write a model bundle as ONNX (thin wrapper over :func:`geoseg.export.export_onnx`)."""

from __future__ import annotations

import click

from geoseg.cli.options import existing_path, overwrite_opt


@click.command("export")
@click.argument("model", type=existing_path())
@click.option(
    "--onnx", "onnx_out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write."
)
@overwrite_opt
def export(model: str, onnx_out: str, overwrite: bool) -> None:
    """Export MODEL (a bundle from `geoseg train`) to ONNX with dynamic height and width.

    The ONNX input is the normalised image (see the `normalization` metadata property), the
    output class probabilities. The file carries geoseg's metadata and the QGIS Deepness
    plugin's (class_names, resolution, tiles_size, standardization_mean/std...), so it runs in
    `geoseg predict --model OUT.onnx` and in Deepness (docs/models.md).

    
    Example:
      geoseg export model.pt --onnx model.onnx
    """
    from geoseg.export import export_onnx

    out = export_onnx(model, onnx_out, overwrite=overwrite)
    click.echo(f"wrote {out}")

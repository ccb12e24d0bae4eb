"""``geoseg export``: write a model bundle as ONNX (thin wrapper over :func:`geoseg.export.export_onnx`)."""

from __future__ import annotations

import click

from geoseg.cli.options import existing_path, overwrite_opt, result


@click.command("export")
@click.argument("model", type=existing_path())
@click.option(
    "--onnx", "onnx_out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write."
)
@click.option(
    "--int8",
    is_flag=True,
    help="Quantize to INT8 (ONNX Runtime static quantization, per-channel weights).",
)
@click.option(
    "--calibration",
    type=existing_path(),
    default=None,
    help="INT8 calibration chips: a `geoseg tile` folder or a scene "
    "[the train strip of the bundle's training scenes].",
)
@click.option(
    "--calibration-chips",
    type=click.IntRange(min=1),
    default=None,
    help="Number of INT8 calibration chips [32].",
)
@overwrite_opt
def export(
    model: str,
    onnx_out: str,
    int8: bool,
    calibration: str | None,
    calibration_chips: int | None,
    overwrite: bool,
) -> None:
    """Export MODEL (a bundle from `geoseg train`) to ONNX with dynamic height and width.

    The ONNX input is the normalised image (see the `normalization` metadata property), the
    output class probabilities. The file carries geoseg's metadata and the QGIS Deepness
    plugin's (class_names, resolution, tiles_size, standardization_mean/std...), so it runs in
    `geoseg predict --model OUT.onnx` and in Deepness (docs/models.md).

    With --int8 the graph is quantized to INT8 (about 4x smaller, faster on CPUs with VNNI),
    calibrated on chips of the training data (the bundle's training scenes, train strip) or
    of --calibration; the `quantization` metadata property and the outputs' provenance say so.

    
    Example:
      geoseg export model.pt --onnx model.onnx
      geoseg export model.pt --onnx model_int8.onnx --int8 --calibration chips/
    """
    from geoseg.export import export_onnx

    if not int8 and (calibration is not None or calibration_chips is not None):
        raise click.UsageError("--calibration and --calibration-chips need --int8")
    out = export_onnx(
        model,
        onnx_out,
        overwrite=overwrite,
        int8=int8,
        calibration=calibration,
        calibration_chips=calibration_chips,
    )
    result(f"wrote {out}")

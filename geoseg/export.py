"""Export a model bundle to ONNX, with the bundle's metadata in the ONNX properties.

The ONNX graph takes the *normalised* image ``input`` ``(N, bands, H, W)`` float32 (apply the
bundle's normalisation first: ``(x - offset) / scale``, nodata pixels set to 0) and returns
class probabilities ``probabilities`` ``(N, classes, H, W)`` (the softmax is in the graph).
Batch, height and width are dynamic (one symbolic ``size`` for height and width, which tools
such as Deepness read as a square tile; any height and width multiple of 32 runs).

``metadata_props`` hold, for geoseg, ``geoseg`` (the bundle metadata as JSON, without
training history), ``bands``, ``classes``, ``normalization``, ``ignore_index`` and
``output``; and, for the QGIS Deepness plugin, its properties (:func:`deepness_properties`):
``model_type``, ``class_names``, ``resolution`` (cm/px), ``tiles_size``/``tile_size``,
``tiles_overlap`` (percent) and ``standardization_mean``/``standardization_std``. Deepness
feeds ``(x / 255 - mean) / std``, so the geoseg normalisation ``(x - offset) / scale`` is
written as ``mean = offset / 255``, ``std = scale / 255``: the same numbers on the same raw
band values. geoseg reads either set back (:mod:`geoseg.runtime.sources`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from geoseg.bundle import ModelBundle
from geoseg.errors import ModelBundleError, first_line

__all__ = ["deepness_properties", "export_onnx", "geoseg_properties"]

if TYPE_CHECKING:
    from geoseg.runtime.quantize import QuantFormat

OPSET = 17
#: Deepness reads 8-bit-style values and divides by this before standardising.
DEEPNESS_SCALE = 255.0


def deepness_properties(bundle: ModelBundle) -> dict[str, str]:
    """The Deepness metadata of a bundle (JSON-encoded values, as the plugin reads them)."""
    norm = bundle.normalization
    size = int(bundle.chip_size)
    props = {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({str(i): n for i, n in enumerate(bundle.classes.names)}),
        "tiles_size": json.dumps(size),
        "tile_size": json.dumps(size),  # the key the plugin's code reads
        "tiles_overlap": json.dumps(round(100 * int(bundle.overlap) / size)),
        "standardization_mean": json.dumps([o / DEEPNESS_SCALE for o in norm.offset]),
        "standardization_std": json.dumps([s / DEEPNESS_SCALE for s in norm.scale]),
    }
    if bundle.resolution:
        props["resolution"] = json.dumps(float(bundle.resolution[0]) * 100.0)  # cm per pixel
    return props


def geoseg_properties(bundle: ModelBundle) -> dict[str, str]:
    """The geoseg metadata of a bundle (the ``geoseg`` JSON and a few separate entries)."""
    meta = bundle.metadata()
    meta["metrics"] = {k: v for k, v in meta.get("metrics", {}).items() if k != "history"}
    return {
        "geoseg": json.dumps(meta, default=float),
        "bands": json.dumps(list(bundle.bands)),
        "classes": json.dumps(bundle.classes.to_records()),
        "normalization": json.dumps(bundle.normalization.to_dict()),
        "ignore_index": str(bundle.ignore_index),
        "arch": bundle.arch,
        "encoder": bundle.encoder,
        "output": "probabilities",
        "input": "normalised bands (x - offset) / scale, NCHW float32, H and W multiples of 32",
    }


def export_onnx(
    bundle_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    opset: int = OPSET,
    int8: bool = False,
    calibration: str | os.PathLike[str] | None = None,
    calibration_chips: int | None = None,
    quant_format: QuantFormat = "qdq",
) -> Path:
    """Write the model of ``bundle_path`` as an ONNX file ``out``.

    Args:
        bundle_path: a bundle written by ``geoseg train``.
        out: the ONNX file to write.
        overwrite: replace ``out`` if it exists.
        opset: the ONNX opset version.
        int8: quantize to INT8 (ONNX Runtime static quantization,
            :mod:`geoseg.runtime.quantize`); the ``quantization`` metadata property says so.
        calibration: INT8 calibration chips (a ``geoseg tile`` folder or a scene); default:
            the ``train`` strip of the bundle's training scenes.
        calibration_chips: how many calibration chips (default
            :data:`~geoseg.runtime.quantize.CALIBRATION_CHIPS`).
        quant_format: ``qdq`` or ``qoperator`` (INT8 only).

    Returns:
        The path written.

    Raises:
        ModelBundleError: the bundle cannot be read or its model cannot be exported.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    from geoseg.io.atomic import atomic_outputs, check_output

    bundle = ModelBundle.load(bundle_path)
    check_output(out, overwrite=overwrite)
    chips = None
    if int8:  # read the calibration chips before writing anything: a bad source fails first
        from geoseg.runtime.quantize import CALIBRATION_CHIPS
        from geoseg.runtime.quantize import calibration_chips as read_chips

        chips = read_chips(
            bundle, calibration=calibration, count=calibration_chips or CALIBRATION_CHIPS
        )
    model = torch.nn.Sequential(bundle.build("cpu"), torch.nn.Softmax(dim=1)).eval()
    example = torch.zeros(1, bundle.in_channels, 64, 64)
    props = {**geoseg_properties(bundle), **deepness_properties(bundle)}
    with atomic_outputs([out], overwrite=overwrite) as (tmp,):
        try:
            _export_graph(model, example, Path(tmp), opset=opset)
        except Exception as exc:
            raise ModelBundleError(
                f"{bundle_path}: cannot export {bundle.arch}/{bundle.encoder} to ONNX "
                f"({exc.__class__.__name__}: {first_line(exc)})"
            ) from exc
        doc = bundle.description or f"geoseg {bundle.arch}/{bundle.encoder}"
        _set_metadata(Path(tmp), props, doc=doc)
        if chips is not None:
            _quantize_in_place(Path(tmp), chips, quant_format)
    return Path(out)


def _export_graph(model: torch.nn.Module, example: torch.Tensor, path: Path, *, opset: int) -> None:
    """Trace ``model`` into ONNX at ``path``: dynamic batch and one square ``size``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["probabilities"],
            dynamic_axes={
                "input": {0: "batch", 2: "size", 3: "size"},
                "probabilities": {0: "batch", 2: "size", 3: "size"},
            },
            opset_version=opset,
            dynamo=False,
        )


def _set_metadata(path: Path, props: dict[str, str], *, doc: str) -> None:
    """Replace the ``metadata_props`` and ``doc_string`` of the ONNX file at ``path``."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = doc
    onnx.save(proto, str(path))


def _quantize_in_place(path: Path, chips: object, fmt: QuantFormat) -> None:
    """Replace the fp32 ONNX file ``path`` by its INT8 quantization."""
    import numpy as np

    from geoseg.runtime.quantize import quantize_onnx

    fp32 = path.with_name(path.stem + ".fp32.onnx")
    path.replace(fp32)
    try:
        quantize_onnx(fp32, path, np.asarray(chips), fmt=fmt)
    except Exception as exc:
        raise ModelBundleError(
            f"{path}: ONNX Runtime cannot quantize this model to INT8 "
            f"({exc.__class__.__name__}: {first_line(exc)}); "
            "export without --int8"
        ) from exc
    finally:
        fp32.unlink(missing_ok=True)

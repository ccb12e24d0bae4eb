"""Export a model bundle to ONNX, with the bundle's metadata in the ONNX properties.

The ONNX graph takes the *normalised* image ``input`` ``(N, bands, H, W)`` float32 (apply the
bundle's normalisation first: ``(x - offset) / scale``, nodata pixels set to 0) and returns
class logits ``logits`` ``(N, classes, H, W)``. Batch, height and width are dynamic (height and
width must be multiples of 32). ``metadata_props`` hold ``geoseg`` (the bundle metadata as JSON,
without training history) plus ``bands``, ``classes``, ``normalization`` and
``ignore_index`` as separate JSON entries.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from geoseg.bundle import ModelBundle
from geoseg.errors import ModelBundleError

__all__ = ["export_onnx"]

OPSET = 17


def export_onnx(
    bundle_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    opset: int = OPSET,
) -> Path:
    """Write the model of ``bundle_path`` as an ONNX file ``out``.

    Args:
        bundle_path: a bundle written by ``geoseg train``.
        out: the ONNX file to write.
        overwrite: replace ``out`` if it exists.
        opset: the ONNX opset version.

    Returns:
        The path written.

    Raises:
        ModelBundleError: the bundle cannot be read or its model cannot be exported.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    import onnx

    from geoseg.io.atomic import atomic_outputs, check_output

    bundle = ModelBundle.load(bundle_path)
    check_output(out, overwrite=overwrite)
    model = bundle.build("cpu")
    example = torch.zeros(1, bundle.in_channels, 64, 64)
    meta = bundle.metadata()
    meta["metrics"] = {k: v for k, v in meta.get("metrics", {}).items() if k != "history"}
    props = {
        "geoseg": json.dumps(meta, default=float),
        "bands": json.dumps(list(bundle.bands)),
        "classes": json.dumps(bundle.classes.to_records()),
        "normalization": json.dumps(bundle.normalization.to_dict()),
        "ignore_index": str(bundle.ignore_index),
        "arch": bundle.arch,
        "encoder": bundle.encoder,
        "input": "normalised bands (x - offset) / scale, NCHW float32, H and W multiples of 32",
    }
    with atomic_outputs([out], overwrite=overwrite) as (tmp,):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={
                        "input": {0: "batch", 2: "height", 3: "width"},
                        "logits": {0: "batch", 2: "height", 3: "width"},
                    },
                    opset_version=opset,
                    dynamo=False,
                )
        except Exception as exc:
            raise ModelBundleError(
                f"{bundle_path}: cannot export {bundle.arch}/{bundle.encoder} to ONNX "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from exc
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for k, v in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.doc_string = bundle.description or f"geoseg {bundle.arch}/{bundle.encoder}"
        onnx.save(proto, str(tmp))
    return Path(out)

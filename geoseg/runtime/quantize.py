"""INT8 ONNX models: ONNX Runtime static quantization, calibrated on chips of the training data.

``geoseg export MODEL.pt --onnx OUT.onnx --int8`` writes the fp32 graph of
:func:`geoseg.export.export_onnx`, then quantizes it here: weights per output channel (int8,
symmetric), activations per tensor (uint8, asymmetric, MinMax over the calibration chips), in
the QDQ format (ONNX Runtime fuses each QuantizeLinear -> DequantizeLinear pair with its
convolution into an integer kernel: VNNI/AMX on recent x86). The final softmax stays in float:
quantizing probabilities to 256 levels would change the argmax of near ties for nothing.
It is written out as ``exp(x - max) / sum`` over the class axis (:func:`split_softmax`):
ONNX Runtime runs a ``Softmax`` on axis 1 of ``NCHW`` as transpose, softmax, transpose, 11 %
of the INT8 U-Net's time; the split form took 15 % off the INT8 network (8 x 256 px chips).

Calibration chips come from, in order of preference:

* ``calibration``: a folder of chips (``geoseg tile`` output: ``images/*.tif``, or ``*.tif``)
  or one scene, sampled on a grid of chip-sized windows;
* the bundle's training config: the ``train`` strip of each training scene (the spatial split
  the model was trained with), so the test strip stays unseen.

Chips are read and normalised exactly as ``geoseg predict`` does
(:meth:`~geoseg.runtime.contract.ModelContract.prepare`: normalisation, nodata -> 0).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from geoseg.errors import ModelBundleError

if TYPE_CHECKING:
    from rasterio.windows import Window

    from geoseg.bundle import ModelBundle
    from geoseg.runtime.contract import ModelContract

__all__ = [
    "CALIBRATION_CHIPS",
    "QuantFormat",
    "calibration_chips",
    "quantization_props",
    "quantize_onnx",
    "split_softmax",
]

PathLike = str | os.PathLike[str]
QuantFormat = Literal["qdq", "qoperator"]
#: calibration chips by default: enough for stable MinMax ranges, quick on two cores
CALIBRATION_CHIPS = 32
#: a calibration chip needs this fraction of valid pixels
MIN_VALID = 0.5


# ---- calibration chips -------------------------------------------------------------------------
def _grid_windows(region: Window, size: int) -> list[tuple[int, int]]:
    """Top-left corners ``(row, col)`` of ``size`` chips inside the window ``region``.

    Chips overlap by half (stride ``size // 2``) and the last row/column is flush with the
    region's edge (:func:`geoseg.grid.axis_starts`), so that a small training strip still
    gives several chips.
    """
    from geoseg.grid import axis_starts

    overlap = size - max(1, size // 2)
    r0, c0 = int(region.row_off), int(region.col_off)
    rows = axis_starts(int(region.height), size, overlap)
    cols = axis_starts(int(region.width), size, overlap)
    return [(r0 + r, c0 + c) for r in rows for c in cols]


def _scene_chips(
    scene: Path,
    contract: ModelContract,
    *,
    region: Window | None,
    size: int,
    count: int,
    seed: int,
) -> list[np.ndarray]:
    """Up to ``count`` prepared chips of ``scene`` inside ``region`` (default: all of it)."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.io.raster import open_raster, valid_from_data
    from geoseg.runtime.contract import check_scene

    with open_raster(scene) as ds:
        fit = check_scene(ds, contract, path=scene)
    with rasterio.open(scene) as ds:
        corners = _grid_windows(region or Window(0, 0, ds.width, ds.height), size)
        order = np.random.default_rng(seed).permutation(len(corners))
        out: list[np.ndarray] = []
        for i in order:
            r, c = corners[int(i)]
            win = Window(c, r, min(size, ds.width - c), min(size, ds.height - r))
            data = ds.read(list(fit.indexes), window=win)
            valid = valid_from_data(ds, data, win)
            if valid.mean() < MIN_VALID:
                continue
            out.append(fit.contract.prepare(data[np.newaxis], valid[np.newaxis])[0])
            if len(out) >= count:
                break
    return out


def _training_regions(bundle: ModelBundle) -> list[tuple[Path, Window | None]]:
    """The training scenes of a bundle's config, each with its ``train`` strip."""
    import rasterio

    from geoseg.data import SplitRule, split_windows
    from geoseg.grid import Grid

    cfg = bundle.config or {}
    s = dict(cfg.get("split") or {})
    rule = SplitRule(
        val_fraction=float(s.get("val_fraction", 0.2)),
        test_fraction=float(s.get("test_fraction", 0.0)),
        axis=s.get("axis", "x"),
        buffer=int(s.get("buffer", 0)),
    )
    out: list[tuple[Path, Window | None]] = []
    for scene in cfg.get("scenes") or []:
        path = Path(str(scene.get("image", "")))
        if not path.is_file():
            continue
        with rasterio.open(path) as ds:
            out.append((path, split_windows(Grid.from_dataset(ds), rule).get("train")))
    return out


def _folder_scenes(folder: Path) -> list[Path]:
    images = folder / "images"
    return sorted((images if images.is_dir() else folder).glob("*.tif"))


def calibration_chips(
    bundle: ModelBundle,
    *,
    calibration: PathLike | None = None,
    count: int = CALIBRATION_CHIPS,
    seed: int = 0,
) -> np.ndarray:
    """Normalised calibration chips ``(n, bands, size, size)`` float32 for ``bundle``.

    Args:
        bundle: the model (its contract reads and normalises the chips).
        calibration: a chips folder or a scene; default: the training scenes of the bundle's
            config (their ``train`` strip).
        count: chips at most.
        seed: which chips (deterministic for a seed).

    Raises:
        ModelBundleError: no calibration data (the bundle names no readable training scene
            and ``calibration`` is not given) or none with enough valid pixels.
    """
    from geoseg.runtime.sources import contract_from_bundle

    contract = contract_from_bundle(bundle, name="calibration")
    size = int(bundle.chip_size)
    sources: list[tuple[Path, tuple[int, int, int, int] | None]]
    if calibration is not None:
        p = Path(calibration)
        if not p.exists():
            raise ModelBundleError(
                f"{p}: no such calibration folder or scene; give a `geoseg tile` folder or a scene"
            )
        sources = [(f, None) for f in _folder_scenes(p)] if p.is_dir() else [(p, None)]
        where = str(p)
    else:
        sources = _training_regions(bundle)
        where = "the bundle's training scenes"
    if not sources:
        raise ModelBundleError(
            f"no calibration data for INT8: {where} has no readable scene; pass "
            "--calibration CHIPS_DIR_OR_SCENE (chips or a scene like the training data)"
        )
    chips: list[np.ndarray] = []
    per = max(1, -(-count // len(sources)))
    for path, region in sources:
        left = count - len(chips)
        if left <= 0:
            break
        n = min(per, left) if len(sources) > 1 and calibration is None else left
        chips += _scene_chips(path, contract, region=region, size=size, count=n, seed=seed)
    chips = [c for c in chips if c.shape == chips[0].shape] if chips else []
    if not chips:
        raise ModelBundleError(
            f"no calibration chip with {MIN_VALID:.0%} valid pixels in {where}; pass "
            "--calibration with chips that cover real data"
        )
    return np.stack(chips).astype(np.float32)


# ---- quantization ------------------------------------------------------------------------------
class _Reader:
    """An ONNX Runtime calibration data reader over prepared chips, one at a time."""

    def __init__(self, name: str, chips: np.ndarray) -> None:
        self.name = name
        self.chips = chips
        self._it: Iterator[np.ndarray] = iter(chips)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self.name: x[np.newaxis]}

    def rewind(self) -> None:
        self._it = iter(self.chips)


def _pad32(chips: np.ndarray) -> np.ndarray:
    h, w = chips.shape[-2:]
    ph, pw = -h % 32, -w % 32
    if not (ph or pw):
        return chips
    return np.pad(chips, [(0, 0), (0, 0), (0, ph), (0, pw)], mode="reflect")


def split_softmax(graph: Any) -> int:
    """Rewrite each ``Softmax`` on axis 1 of a 4-D tensor in ``graph`` (an ONNX ``GraphProto``).

    ``Softmax(x, axis=1)`` becomes ``ReduceMax`` -> ``Sub`` -> ``Exp`` -> ``ReduceSum`` ->
    ``Div`` over axis 1 (the same values up to float rounding), in place; ``ReduceMax`` takes
    ``axes`` as an attribute (opset < 18, as :data:`geoseg.export.OPSET`). Returns how many
    were rewritten. Other softmaxes (another axis, or an opset where ``ReduceMax`` wants
    ``axes`` as an input) are left alone.
    """
    from onnx import helper, numpy_helper

    count = 0
    for i, node in reversed(list(enumerate(graph.node))):
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if node.op_type != "Softmax" or axis != 1:
            continue
        x, y, tag = node.input[0], node.output[0], f"{node.name or 'softmax'}_{i}"
        axes = f"{tag}/axes"
        graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), axes))
        parts = [
            helper.make_node("ReduceMax", [x], [f"{tag}/max"], axes=[1], keepdims=1),
            helper.make_node("Sub", [x, f"{tag}/max"], [f"{tag}/sub"]),
            helper.make_node("Exp", [f"{tag}/sub"], [f"{tag}/exp"]),
            helper.make_node("ReduceSum", [f"{tag}/exp", axes], [f"{tag}/sum"], keepdims=1),
            helper.make_node("Div", [f"{tag}/exp", f"{tag}/sum"], [y]),
        ]
        del graph.node[i]
        for k, part in enumerate(parts):
            part.name = f"{tag}/{part.op_type}"
            graph.node.insert(i + k, part)
        count += 1
    return count


def quantization_props(chips: int, fmt: QuantFormat, per_channel: bool) -> dict[str, str]:
    """The ``quantization`` metadata property of an INT8 export (JSON)."""
    return {
        "quantization": json.dumps(
            {
                "type": "int8",
                "method": "onnxruntime static",
                "format": fmt,
                "weights": "int8 symmetric" + (" per-channel" if per_channel else ""),
                "activations": "uint8 asymmetric per-tensor",
                "calibration": "minmax",
                "calibration_chips": chips,
            }
        )
    }


def quantize_onnx(
    fp32: PathLike,
    out: PathLike,
    chips: np.ndarray,
    *,
    fmt: QuantFormat = "qdq",
    per_channel: bool = True,
    exclude_ops: Sequence[str] = ("Softmax",),
) -> Path:
    """Quantize the fp32 ONNX file ``fp32`` into ``out`` (written in place, not atomically).

    Args:
        fp32: an fp32 ONNX model with one input.
        out: where the INT8 model goes (metadata properties of ``fp32`` are kept).
        chips: prepared calibration chips ``(n, bands, h, w)``.
        fmt: ``qdq`` (QuantizeLinear/DequantizeLinear around float ops, fused by ONNX
            Runtime) or ``qoperator`` (QLinearConv and friends).
        per_channel: per-output-channel weight scales.
        exclude_ops: op types left in float (the final softmax).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(out)
    pre = out.with_name(out.stem + ".pre.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization warns per integer tensor, on root
    try:
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception:  # pre-processing is an optimisation only
            src = Path(fp32)
        proto = onnx.load(str(src))
        name = proto.graph.input[0].name
        excluded = [n.name for n in proto.graph.node if n.op_type in exclude_ops]
        quantize_static(
            str(src),
            str(out),
            _Reader(name, _pad32(chips)),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)
        for extra in out.parent.glob(out.stem + ".pre*"):
            extra.unlink(missing_ok=True)
    q = onnx.load(str(out))
    if max((o.version for o in q.opset_import if o.domain in ("", "ai.onnx")), default=0) < 18:
        split_softmax(q.graph)
    original = {
        p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props
    }
    props = {**original, **quantization_props(len(chips), fmt, per_channel)}
    del q.metadata_props[:]
    for k, v in props.items():
        entry = q.metadata_props.add()
        entry.key, entry.value = k, v
    q.doc_string = (onnx.load(str(fp32), load_external_data=False).doc_string + " (int8)").strip()
    onnx.save(q, str(out))
    return out


def describe(props: dict[str, str]) -> dict[str, Any] | None:
    """The parsed ``quantization`` property of an ONNX model (``None`` for a float model)."""
    text = props.get("quantization")
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"type": text}
    return value if isinstance(value, dict) else {"type": str(value)}

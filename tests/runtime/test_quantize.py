"""INT8 export: calibration chips, the quantized model loads, predicts on the grid, agrees."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.bundle import ModelBundle, Normalization
from geoseg.classes import ClassMap
from geoseg.errors import ModelBundleError
from geoseg.export import export_onnx
from geoseg.predict import predict
from geoseg.runtime import sources
from geoseg.runtime.quantize import _grid_windows, calibration_chips, split_softmax

BANDS = ("B2", "B3", "B4", "B8")


def _scene(factory: Callable[..., Path]) -> Path:
    """A 4-band uint16 scene with smooth structure (so classes form regions) and nodata rows."""
    yy, xx = np.mgrid[0:160, 0:192]
    base = np.stack([np.sin(xx / 17.0 + k) * np.cos(yy / 23.0 - k) for k in range(len(BANDS))])
    data = (3000 + 2000 * base).astype("uint16")
    data[:, :10] = 0
    return factory("scene.tif", data, nodata=0, descriptions=list(BANDS))


def _bundle(tmp_path: Path, scene: Path, *, config: bool = True) -> Path:
    b = ModelBundle.random_init(
        arch="unet",
        encoder="resnet18",
        bands=BANDS,
        classes=ClassMap.from_names(["forest", "grass", "water"]),
        normalization=Normalization("meanstd", (3000.0,) * 4, (1500.0,) * 4),
        dtype="uint16",
        resolution=(10.0, 10.0),
        chip_size=64,
        overlap=16,
    )
    cfg = {"scenes": [{"image": str(scene), "labels": []}], "split": {"val_fraction": 0.2}}
    return b.replace(config=cfg if config else {}).save(tmp_path / "m.pt")


def test_grid_windows_cover_the_region_flush() -> None:
    corners = _grid_windows(Window(10, 0, 150, 100), 64)
    assert {r for r, _ in corners} == {0, 32, 36}
    assert max(c for _, c in corners) == 10 + 150 - 64 and min(c for _, c in corners) == 10
    assert _grid_windows(Window(0, 0, 40, 40), 64) == [(0, 0)]


def test_calibration_from_the_training_strip(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    scene = _scene(raster_factory)
    b = ModelBundle.load(_bundle(tmp_path, scene))
    chips = calibration_chips(b, count=5)
    assert chips.shape[1:] == (4, 64, 64) and 1 <= len(chips) <= 5
    assert chips.dtype == np.float32 and np.isfinite(chips).all()
    # the train strip is the west 80 %: a given scene spreads over all of it
    again = calibration_chips(b, count=5)
    np.testing.assert_array_equal(chips, again)  # deterministic for a seed
    assert len(calibration_chips(b, calibration=scene, count=50)) > len(chips)


def test_no_calibration_data_is_a_clear_error(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    scene = _scene(raster_factory)
    path = _bundle(tmp_path, scene, config=False)
    with pytest.raises(ModelBundleError, match="--calibration"):
        export_onnx(path, tmp_path / "q.onnx", int8=True)
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(ModelBundleError, match="no such calibration"):
        export_onnx(path, tmp_path / "q.onnx", int8=True, calibration=tmp_path / "missing")


def test_split_softmax_same_probabilities() -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def graph(axis: int) -> onnx.ModelProto:
        g = helper.make_graph(
            [helper.make_node("Softmax", ["x"], ["y"], axis=axis)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 3, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 3, 4])],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    x = np.random.default_rng(0).normal(0, 20, (2, 5, 3, 4)).astype(np.float32)
    model = graph(1)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert split_softmax(model.graph) == 1
    onnx.checker.check_model(model)
    assert "Softmax" not in {n.op_type for n in model.graph.node}
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    other = graph(-1)  # another axis: left alone
    assert split_softmax(other.graph) == 0 and other.graph.node[0].op_type == "Softmax"


def test_int8_round_trip(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    import onnx

    scene = _scene(raster_factory)
    pt = _bundle(tmp_path, scene)
    fp32 = export_onnx(pt, tmp_path / "fp32.onnx")
    q = export_onnx(pt, tmp_path / "int8.onnx", int8=True, calibration_chips=8)
    proto = onnx.load(str(q))
    props = {p.key: p.value for p in proto.metadata_props}
    quant = json.loads(props["quantization"])
    assert quant["type"] == "int8" and quant["calibration_chips"] >= 1
    assert props["output"] == "probabilities" and "geoseg" in props
    ops = {n.op_type for n in proto.graph.node}
    assert "QuantizeLinear" in ops and "Softmax" not in ops  # split: exp / sum, in float
    assert {"ReduceMax", "Exp", "ReduceSum", "Div"} <= ops
    assert q.stat().st_size < 0.4 * fp32.stat().st_size
    contract, bundle = sources.open_model(q)
    assert bundle is None and contract.source == "geoseg-onnx"
    outs = {}
    for name, model in (("fp32", pt), ("int8", q)):
        predict(scene, out=tmp_path / f"{name}.tif", model=model, threads=1, device="cpu")
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            outs[name] = ds.read(1)
            tags = ds.tags()
            with rasterio.open(scene) as src:
                assert (ds.transform, ds.shape, ds.crs) == (src.transform, src.shape, src.crs)
    assert json.loads(tags["GEOSEG_MODEL_QUANTIZATION"])["type"] == "int8"
    nodata = outs["fp32"] == 255
    assert nodata[:10].all() and not nodata[10:].any()
    np.testing.assert_array_equal(outs["int8"] == 255, nodata)
    agree = (outs["int8"][~nodata] == outs["fp32"][~nodata]).mean()
    assert agree > 0.9, agree


def test_cli_int8(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    scene = _scene(raster_factory)
    pt = _bundle(tmp_path, scene)
    out = tmp_path / "q.onnx"
    r = CliRunner().invoke(
        cli, ["export", str(pt), "--onnx", str(out), "--calibration", str(scene)]
    )
    assert r.exit_code != 0 and "need --int8" in r.output and not out.exists()
    r = CliRunner().invoke(
        cli,
        ["export", str(pt), "--onnx", str(out), "--int8", "--calibration", str(scene)],
    )
    assert r.exit_code == 0, r.output
    contract, _ = sources.open_model(out)
    assert json.loads(contract.extra["quantization"])["type"] == "int8"

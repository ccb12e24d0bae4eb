"""ONNX export: same output as PyTorch (onnxruntime), dynamic size, geoseg + Deepness metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.bundle import ModelBundle, Normalization
from geoseg.classes import ClassMap
from geoseg.errors import ModelBundleError, OutputExistsError
from geoseg.export import export_onnx

torch.set_num_threads(1)


@pytest.mark.parametrize(("arch", "encoder"), [("unet", "resnet18"), ("fcn", "mobilenet_v2")])
def test_onnx_matches_pytorch(tmp_path: Path, arch: str, encoder: str) -> None:
    import onnx
    import onnxruntime as ort

    b = ModelBundle.random_init(
        arch=arch,
        encoder=encoder,
        bands=("B2", "B3", "B4", "B8"),
        classes=ClassMap.from_names(["forest", "water"]),
    )
    src = b.save(tmp_path / "m.pt")
    out = export_onnx(src, tmp_path / "m.onnx")
    model = ModelBundle.load(src).build()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in [(1, 4, 64, 64), (2, 4, 96, 160)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = torch.softmax(model(x), dim=1).numpy()  # the graph ends in a softmax
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    meta = json.loads(props["geoseg"])
    assert meta["arch"] == arch and json.loads(props["bands"]) == ["B2", "B3", "B4", "B8"]
    assert [c["name"] for c in json.loads(props["classes"])] == ["forest", "water"]
    assert (
        json.loads(props["normalization"])["method"] == "meanstd" and props["ignore_index"] == "255"
    )
    assert props["output"] == "probabilities"
    with pytest.raises(OutputExistsError):
        export_onnx(src, out)


def test_deepness_properties_state_the_same_normalisation(tmp_path: Path) -> None:
    """Deepness feeds (x/255 - mean)/std: that must equal geoseg's (x - offset)/scale."""
    import onnx

    norm = Normalization("meanstd", (1200.0, 800.0), (400.0, 350.0))
    b = ModelBundle.random_init(
        arch="fcn",
        encoder="mobilenet_v2",
        bands=("B4", "B8"),
        classes=ClassMap.from_names(["forest", "water", "urban"]),
        normalization=norm,
        resolution=(10.0, 10.0),
        chip_size=128,
        overlap=32,
    )
    out = export_onnx(b.save(tmp_path / "m.pt"), tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["model_type"]) == "Segmentor"
    assert json.loads(props["class_names"]) == {"0": "forest", "1": "water", "2": "urban"}
    assert json.loads(props["resolution"]) == 1000.0  # cm per pixel
    assert json.loads(props["tiles_size"]) == 128 and json.loads(props["tiles_overlap"]) == 25
    mean = np.array(json.loads(props["standardization_mean"]))
    std = np.array(json.loads(props["standardization_std"]))
    x = np.array([[0.0, 3000.0], [1500.0, 90.0]])  # raw values, per band in columns
    deepness = (x / 255.0 - mean) / std
    np.testing.assert_allclose(deepness, norm.apply(x.T[:, :, None])[:, :, 0].T, rtol=1e-5)
    shape = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert shape[2].dim_param == shape[3].dim_param  # Deepness wants a square tile


def test_not_a_bundle(tmp_path: Path) -> None:
    p = tmp_path / "x.pt"
    p.write_text("nope")
    with pytest.raises(ModelBundleError):
        export_onnx(p, tmp_path / "x.onnx")

"""ONNX export: same output as PyTorch (onnxruntime), dynamic size, metadata in properties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.bundle import ModelBundle
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
            ref = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    meta = json.loads(props["geoseg"])
    assert meta["arch"] == arch and json.loads(props["bands"]) == ["B2", "B3", "B4", "B8"]
    assert [c["name"] for c in json.loads(props["classes"])] == ["forest", "water"]
    assert (
        json.loads(props["normalization"])["method"] == "meanstd" and props["ignore_index"] == "255"
    )
    with pytest.raises(OutputExistsError):
        export_onnx(src, out)


def test_not_a_bundle(tmp_path: Path) -> None:
    p = tmp_path / "x.pt"
    p.write_text("nope")
    with pytest.raises(ModelBundleError):
        export_onnx(p, tmp_path / "x.onnx")

"""Model sources: bundle, geoseg ONNX, Deepness ONNX and csmask load into one contract, or refuse."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geoseg.bundle import ModelBundle, Normalization
from geoseg.classes import ClassMap
from geoseg.errors import BandMismatchError, InputFileNotFoundError, ModelBundleError
from geoseg.export import export_onnx
from geoseg.predict import predict
from geoseg.runtime import sources
from geoseg.runtime.engines import OrtEngine, TorchEngine
from tests.data.rasters import write_raster
from tests.test_predict import smooth_scene

torch.set_num_threads(1)

BANDS = ("B2", "B3", "B4", "B8")
CLASSES = ClassMap.from_names(["forest", "grass", "urban", "water"])
NORM = Normalization("meanstd", (3000.0,) * 4, (1500.0,) * 4)


def balanced_bundle(scene: np.ndarray) -> ModelBundle:
    """A random-init U-Net whose head bias is shifted so that every class wins somewhere.

    A plain random init predicts one class almost everywhere, which would make agreement
    trivial; balanced classes put many pixels near a tie between two classes.
    """
    b = ModelBundle.random_init(
        bands=BANDS, classes=CLASSES, normalization=NORM, dtype="uint16", chip_size=64, overlap=16
    )
    x = NORM.apply(scene[np.newaxis])[..., :128, :160]
    with torch.no_grad():
        mean_logits = b.build()(torch.from_numpy(x)).mean(dim=(0, 2, 3))
    sd = dict(b.state_dict)
    sd["segmentation_head.0.bias"] = sd["segmentation_head.0.bias"] - mean_logits
    return b.replace(state_dict=sd)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("onnx")
    data = smooth_scene(150, 170)
    data[:, 40:43, :] = 0
    scene = write_raster(tmp / "scene.tif", data, nodata=0, descriptions=list(BANDS))
    pt = balanced_bundle(smooth_scene(150, 170)).save(tmp / "m.pt")
    return {"scene": scene, "pt": pt, "onnx": export_onnx(pt, tmp / "m.onnx")}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def _rewrite_props(src: Path, dst: Path, keep: Any) -> Path:
    import onnx

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    for k, v in keep(props).items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(dst))
    return dst


# ---- bundle and geoseg ONNX ---------------------------------------------------------------------
def test_bundle_and_geoseg_onnx_give_the_same_contract(exported: dict[str, Path]) -> None:
    pt, ox = sources.load(exported["pt"]), sources.load(exported["onnx"])
    assert pt.contract.source == "bundle" and isinstance(pt.engine, TorchEngine)
    assert pt.bundle is not None
    assert ox.contract.source == "geoseg-onnx" and isinstance(ox.engine, OrtEngine)
    assert ox.contract.output == "probabilities"
    for field in ("bands", "classes", "normalization", "dtype", "chip_size", "overlap"):
        assert getattr(ox.contract, field) == getattr(pt.contract, field), field


def test_onnx_agrees_with_torch_on_999_permille(exported: dict[str, Path], tmp_path: Path) -> None:
    """The issue's bar: predicting with the `geoseg export` file agrees on >= 99.9 % of pixels."""
    runs = {}
    for kind in ("pt", "onnx"):
        rep = predict(
            exported["scene"],
            out=tmp_path / f"{kind}.tif",
            model=exported[kind],
            probabilities=tmp_path / f"{kind}_p.tif",
            probability_dtype="float16",
        )
        runs[kind] = (_read(tmp_path / f"{kind}.tif")[0], _read(tmp_path / f"{kind}_p.tif"), rep)
    (a, pa, ra), (b, pb, rb) = runs["pt"], runs["onnx"]
    valid = a != 255
    assert (valid == (b != 255)).all() and valid.mean() > 0.9
    assert len(np.unique(a[valid])) == 4  # every class present: agreement is not trivial
    assert (a[valid] == b[valid]).mean() >= 0.999
    assert np.nanmax(np.abs(pa - pb)) < 2e-3  # float16 storage rounding
    assert ra.model_source == "bundle" and rb.model_source == "geoseg-onnx"


def test_geoseg_onnx_without_statistics_is_refused(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    def drop_norm(props: dict[str, str]) -> dict[str, str]:
        meta = json.loads(props["geoseg"])
        meta["normalization"] = None
        return {"geoseg": json.dumps(meta)}

    bad = _rewrite_props(exported["onnx"], tmp_path / "nostats.onnx", drop_norm)
    with pytest.raises(ModelBundleError, match=r"nostats.onnx: .*no normalisation statistics"):
        sources.load(bad)


# ---- Deepness -----------------------------------------------------------------------------------
def test_deepness_properties_round_trip(exported: dict[str, Path], tmp_path: Path) -> None:
    """`geoseg export` output read back through its Deepness properties only: same model."""
    deepness_keys = {
        "model_type",
        "class_names",
        "tiles_size",
        "tile_size",
        "tiles_overlap",
        "standardization_mean",
        "standardization_std",
        "resolution",
    }
    only = _rewrite_props(
        exported["onnx"],
        tmp_path / "deepness.onnx",
        lambda p: {k: v for k, v in p.items() if k in deepness_keys},
    )
    c = sources.contract_of(only)
    ref = sources.contract_of(exported["pt"])
    assert c.source == "deepness-onnx" and c.output == "probabilities"
    assert c.classes.names == ref.classes.names and c.chip_size == 64 and c.overlap == 16
    np.testing.assert_allclose(c.normalization.offset, ref.normalization.offset, rtol=1e-6)
    np.testing.assert_allclose(c.normalization.scale, ref.normalization.scale, rtol=1e-6)
    # Deepness has no band names: positional; the class ids are Deepness' 0..n-1.
    predict(exported["scene"], out=tmp_path / "d.tif", model=only)
    predict(exported["scene"], out=tmp_path / "g.tif", model=exported["onnx"])
    d, g = _read(tmp_path / "d.tif")[0], _read(tmp_path / "g.tif")[0]
    lut = np.full(256, 255, dtype=np.uint8)
    lut[ref.classes.ids] = np.arange(len(ref.classes))
    assert ((lut[g] == d) | (g == 255)).mean() >= 0.999


class _TinySeg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.body(x), dim=1)


def _deepness_model(path: Path, props: dict[str, str], *, size: int = 64) -> Path:
    """A tiny torch model exported to ONNX with a fixed square input and ``props``."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _TinySeg().eval(),
            (torch.zeros(1, 3, size, size),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(path))
    return path


def test_a_deepness_only_model_runs_as_deepness_would(tmp_path: Path) -> None:
    props = {
        "model_type": json.dumps("Segmentor"),
        "class_names": str({0: "background", 1: "field"}),  # a Python literal, as Deepness allows
        "resolution": json.dumps(50),  # cm
        "tiles_overlap": json.dumps(25),
        "standardization_mean": json.dumps([0.4, 0.5, 0.45]),
        "standardization_std": json.dumps([0.2, 0.25, 0.2]),
    }
    model = _deepness_model(tmp_path / "tiny.onnx", props)
    c = sources.contract_of(model)
    assert (c.source, c.input_size, c.chip_size, c.overlap) == ("deepness-onnx", 64, 64, 16)
    assert c.resolution == (0.5, 0.5) and c.classes.names == ["background", "field"]
    assert c.classes.ids == [0, 1]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(3, 64, 64)).astype(np.uint8)
    scene = write_raster(tmp_path / "rgb.tif", img, dtype="uint8", transform=_transform(0.5))
    predict(scene, out=tmp_path / "o.tif", model=model)
    got = _read(tmp_path / "o.tif")[0]
    # Deepness' own preprocessing: x / 255, standardise, NCHW; argmax of the output.
    import onnxruntime as ort

    mean = np.array([0.4, 0.5, 0.45], dtype=np.float32)[:, None, None]
    std = np.array([0.2, 0.25, 0.2], dtype=np.float32)[:, None, None]
    x = ((img / 255.0 - mean) / std).astype(np.float32)[np.newaxis]
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0][0].argmax(0)
    assert (got == ref).mean() >= 0.999


def _transform(res: float) -> Any:
    from affine import Affine

    return Affine(res, 0, 500000.0, 0, -res, 5000000.0)


def test_fixed_input_size_limits_the_chip(tmp_path: Path) -> None:
    model = _deepness_model(tmp_path / "t.onnx", {"class_names": json.dumps({"0": "a", "1": "b"})})
    scene = write_raster(tmp_path / "s.tif", width=100, height=90, dtype="uint8")
    with pytest.raises(BandMismatchError, match=r"--size 128 is larger than the 64 px input"):
        predict(scene, out=tmp_path / "o.tif", model=model, size=128)
    rep = predict(scene, out=tmp_path / "o.tif", model=model)  # edge chips padded to 64
    assert rep.size == 64 and rep.windows == 4
    # a fixed-size graph pads a ragged chip to 64 anyway: full chips, shifted back to the edge
    assert rep.inferred_pixels == 4 * 64 * 64


# ---- refusals -----------------------------------------------------------------------------------
def test_not_onnx_and_no_metadata_are_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model\n")
    with pytest.raises(ModelBundleError, match=r"junk.onnx: not an ONNX model"):
        sources.load(junk)
    bare = _deepness_model(tmp_path / "bare.onnx", {})
    with pytest.raises(
        ModelBundleError, match=r"bare.onnx: the ONNX model has no geoseg or Deepness"
    ):
        sources.load(bare)
    with pytest.raises(InputFileNotFoundError, match=r"no such model file or name.*default"):
        sources.load("csmask-9b")


def test_metadata_that_does_not_describe_the_graph(tmp_path: Path) -> None:
    three = _deepness_model(
        tmp_path / "c3.onnx", {"class_names": json.dumps({"0": "a", "1": "b", "2": "c"})}
    )
    with pytest.raises(ModelBundleError, match=r"names 3 class\(es\) but the graph outputs 2"):
        sources.load(three)


def test_wrong_bands_for_an_onnx_model(exported: dict[str, Path], tmp_path: Path) -> None:
    scene = write_raster(tmp_path / "s3.tif", count=3, descriptions=["B2", "B3", "B4"])
    with pytest.raises(BandMismatchError, match=r"has 3 band\(s\).*expects 4 \(B2, B3, B4, B8\)"):
        predict(scene, out=tmp_path / "o.tif", model=exported["onnx"])
    assert not (tmp_path / "o.tif").exists()


def test_default_refusal_names_the_models_that_fit(tmp_path: Path) -> None:
    if not sources.default_model_path().exists() or not sources.csmask_available():
        pytest.skip("needs the default model and the clouds extra")
    scene = write_raster(
        tmp_path / "s2.tif", count=4, descriptions=["B02", "B03", "B04", "B08"], dtype="uint16"
    )
    with pytest.raises(
        BandMismatchError, match=r"models that fit its bands: --model csmask-4b-l1c"
    ):
        predict(scene, out=tmp_path / "o.tif")


# ---- csmask -------------------------------------------------------------------------------------
needs_csmask = pytest.mark.skipif(
    importlib.util.find_spec("ukis_csmask") is None, reason="the clouds extra is not installed"
)


@needs_csmask
def test_csmask_contracts() -> None:
    assert {"default", "csmask-4b-l1c", "csmask-6b-l2a"} <= set(sources.registry())
    c = sources.contract_of("csmask-6b-l1c")
    assert c.bands == ("blue", "green", "red", "nir", "swir16", "swir22")
    assert c.common_names == c.bands and c.input == "reflectance" and c.dtype is None
    assert c.resolution == (30.0, 30.0) and c.input_size == 256 and c.output == "logits"
    assert c.classes.names == ["clear", "cloud", "shadow"] and c.classes.ids == [0, 1, 2]
    stats = json.loads(Path(c.path or "").with_suffix(".json").read_text())
    assert list(c.normalization.offset) == pytest.approx(
        stats["data"]["dataset_statistics"]["img"][0]
    )


@needs_csmask
def test_csmask_streamed_equals_the_model_on_one_chip(tmp_path: Path) -> None:
    """A 256 px scene is one chip: geoseg's stream must give the model's own argmax."""
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    from scipy.ndimage import gaussian_filter

    base = gaussian_filter(rng.normal(size=(256, 256)), 12)
    dn = np.stack([np.clip(1000 + 2500 * (base * 8 + 0.3 + 0.05 * i), 0, 12000) for i in range(4)])
    dn = dn.astype(np.uint16)
    scene = write_raster(
        tmp_path / "s2.tif",
        dn,
        transform=_transform(30.0),
        descriptions=["B02", "B03", "B04", "B08"],
    )
    rep = predict(scene, out=tmp_path / "m.tif", model="csmask-4b-l1c", reflectance="s2")
    assert rep.reflectance == {"scale": [1e-4] * 4, "offset": [-0.1] * 4}
    got = _read(tmp_path / "m.tif")[0]
    c = sources.contract_of("csmask-4b-l1c")
    mean = np.array(c.normalization.offset, dtype=np.float32)[:, None, None]
    std = np.array(c.normalization.scale, dtype=np.float32)[:, None, None]
    x = (((dn.astype(np.float32) - 1000) / 10000 - mean) / std)[np.newaxis]
    sess = ort.InferenceSession(c.path or "", providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x.astype(np.float32)})[0][0].argmax(0)
    assert (got == ref).mean() >= 0.999


@needs_csmask
def test_csmask_needs_reflectance_of_integer_bands(tmp_path: Path) -> None:
    scene = write_raster(
        tmp_path / "s.tif",
        count=4,
        transform=_transform(30.0),
        descriptions=["B02", "B03", "B04", "B08"],
    )
    with pytest.raises(BandMismatchError, match=r"takes reflectance 0..1; pass --reflectance s2"):
        predict(scene, out=tmp_path / "o.tif", model="csmask-4b-l2a")


def test_clouds_extra_missing_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec

    def no_csmask(name: str, *args: Any) -> Any:
        return None if name == "ukis_csmask" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_csmask)
    assert not any(n.startswith("csmask") for n in sources.registry())
    with pytest.raises(ModelBundleError, match=r"csmask-6b-l1c: .*pip install geoseg\[clouds\]"):
        sources.load("csmask-6b-l1c")


def test_onnx_predict_never_imports_torch(exported: dict[str, Path], tmp_path: Path) -> None:
    """An ONNX model runs without torch in the process (faster start, smaller installs later)."""
    import subprocess
    import sys

    code = (
        "import sys; from geoseg.predict import predict; "
        f"predict({str(exported['scene'])!r}, out={str(tmp_path / 'o.tif')!r}, "
        f"model={str(exported['onnx'])!r}); print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "o.tif").exists()


def test_csmask_without_statistics_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "model_6b_l1c.onnx").write_bytes(b"")
    (tmp_path / "model_6b_l1c.json").write_text(json.dumps({"data": {"target_size": [256, 256]}}))
    monkeypatch.setattr(sources, "csmask_dir", lambda: tmp_path)
    with pytest.raises(
        ModelBundleError, match=r"model_6b_l1c.json: the csmask statistics cannot be read"
    ):
        sources.load("csmask-6b-l1c")


def test_a_process_reads_a_bundle_and_builds_its_network_once(tmp_path: Path) -> None:
    def save(seed: int) -> Path:
        return ModelBundle.random_init(
            arch="fcn",
            encoder="mobilenet_v2",
            bands=("B2", "B3", "B4"),
            classes=ClassMap.from_names(["a", "b"]),
            seed=seed,
            chip_size=64,
            overlap=16,
        ).save(tmp_path / "m.pt")

    path = save(0)
    reads = sources.bundle_reads()
    c1, b1 = sources.open_model(path)
    c2, b2 = sources.open_model(path)
    assert b1 is b2 and sources.bundle_reads() == reads + 1
    e1 = sources.make_engine(c1, b1, device="cpu", threads=1)
    assert sources.make_engine(c2, b2, device="cpu", threads=1) is e1
    assert sources.make_engine(c2, b2, device="cpu", threads=2) is not e1

    os.utime(path, ns=(1, 1))  # a rewritten file (other mtime) is read again
    _, b3 = sources.open_model(path)
    assert b3 is not b1 and sources.bundle_reads() == reads + 2
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert np.array_equal(e1(x), sources.make_engine(c1, b3, device="cpu", threads=1)(x))

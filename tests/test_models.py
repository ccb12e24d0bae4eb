from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.bundle import ModelBundle
from geoseg.classes import ClassMap
from geoseg.errors import ConfigError
from geoseg.export import export_onnx
from geoseg.models import ARCHITECTURES, build_model, stride_multiple

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_gives_logits_at_input_size(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, "mobilenet_v2", in_channels=5, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 5, 64, 96))
    assert out.shape == (1, 3, 64, 96)


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("segnet", "resnet18", in_channels=3, num_classes=2)
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("unet", "vit", in_channels=3, num_classes=2)


def test_pixel_head_is_context_plus_a_one_pixel_correction() -> None:
    torch.manual_seed(0)
    model = build_model(
        "unet", "mobilenet_v2", in_channels=4, num_classes=3, pixel_head=True
    ).eval()
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        out = model(x)
        ctx = model.net(x)
        head = model.pixel(torch.cat([x, ctx], dim=1))
    assert out.shape == (1, 3, 64, 64)
    torch.testing.assert_close(out, ctx + head)
    assert head.abs().sum() > 0
    convs = [m for m in model.pixel.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.kernel_size == (1, 1) for c in convs)  # receptive field: one pixel


@pytest.mark.parametrize(
    ("arch", "encoder"),
    [("segformer", "mit_b0"), ("lraspp", "tu-mobilenetv3_large_100")],
)
def test_new_models_bundle_and_onnx_match_pytorch(tmp_path: Path, arch: str, encoder: str) -> None:
    """SegFormer and the light LR-ASPP: a bundle round trip and ONNX give PyTorch's probabilities."""
    import onnxruntime as ort

    bundle = ModelBundle.random_init(
        arch=arch,
        encoder=encoder,
        bands=("B2", "B3", "B4", "B8", "B11"),
        classes=ClassMap.from_names(["forest", "grass", "water"]),
        pixel_head=True,
    )
    src = bundle.save(tmp_path / "m.pt")
    model = ModelBundle.load(src).build()
    onnx_path = export_onnx(src, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert stride_multiple(arch) == 32
    for shape in [(1, 5, 64, 64), (2, 5, 96, 160)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = torch.softmax(model(x), dim=1).numpy()  # the export ends in a softmax
        assert ref.shape == (shape[0], 3, *shape[2:])
        got = sess.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_lraspp_is_light() -> None:
    """The light model has several times fewer parameters than the U-Net / ResNet-18."""

    def params(arch: str, encoder: str) -> int:
        m = build_model(arch, encoder, in_channels=10, num_classes=4)
        return sum(p.numel() for p in m.parameters())

    assert params("lraspp", "tu-mobilenetv3_large_100") * 3 < params("unet", "resnet18")


def test_incompatible_encoder_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import geoseg.models as gm

    def refuse(*args: object, **kw: object) -> None:
        raise ValueError("MixVisionTransformer encoder does not support dilated mode")

    monkeypatch.setattr(gm, "_construct", refuse)
    with pytest.raises(ConfigError, match=r"does not work with encoder 'mit_b0'.*another"):
        build_model("deeplabv3", "mit_b0", in_channels=3, num_classes=2)

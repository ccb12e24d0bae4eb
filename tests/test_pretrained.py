"""Local encoder weights: torchvision, timm and smp layouts, first-conv adaptation, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geoseg.errors import InputFileNotFoundError, ModelBundleError
from geoseg.models import build_model
from geoseg.pretrained import adapt_first_conv, load_encoder_state

torch.set_num_threads(1)


def save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_torchvision_resnet18_into_unet_with_four_bands(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None).state_dict()
    f = save(tv, tmp_path / "resnet18.pth")
    model = build_model("unet", "resnet18", in_channels=4, num_classes=3, pixel_head=True)
    rep = load_encoder_state(model, f, encoder_name="resnet18", in_channels=4)
    enc = model.net.encoder.state_dict()  # type: ignore[union-attr]
    torch.testing.assert_close(enc["layer3.1.conv2.weight"], tv["layer3.1.conv2.weight"])
    torch.testing.assert_close(enc["bn1.running_var"], tv["bn1.running_var"])
    # smp's rule: band i takes RGB kernel i mod 3, scaled by 3/4.
    w = tv["conv1.weight"]
    assert enc["conv1.weight"].shape == (64, 4, 7, 7)
    torch.testing.assert_close(enc["conv1.weight"][:, 3], w[:, 0] * 0.75)
    torch.testing.assert_close(enc["conv1.weight"][:, 1], w[:, 1] * 0.75)
    assert rep.adapted == ("conv1.weight",) and rep.ignored == 2  # fc.weight, fc.bias


def test_one_band_sums_the_rgb_kernels() -> None:
    w = torch.randn(8, 3, 3, 3)
    torch.testing.assert_close(adapt_first_conv(w, 1), w.sum(1, keepdim=True))
    torch.testing.assert_close(adapt_first_conv(w, 3), w)


def test_timm_layout_wrapped_by_ddp_and_lightning(tmp_path: Path) -> None:
    """A timm mobilenetv3 state dict (as ``module.`` keys under ``state_dict``) fits tu-*."""
    import timm

    torch.manual_seed(2)
    tm = timm.create_model("mobilenetv3_large_100", pretrained=False).state_dict()
    f = save({"state_dict": {f"module.{k}": v for k, v in tm.items()}}, tmp_path / "t.ckpt")
    model = build_model("lraspp", "tu-mobilenetv3_large_100", in_channels=3, num_classes=2)
    rep = load_encoder_state(model, f, encoder_name="tu-mobilenetv3_large_100", in_channels=3)
    enc = model.encoder.state_dict()
    torch.testing.assert_close(
        enc["model.blocks.2.0.conv_pw.weight"], tm["blocks.2.0.conv_pw.weight"]
    )
    assert rep.strip == "module." and rep.add == "model." and not rep.adapted


def test_smp_encoder_and_whole_model_layouts(tmp_path: Path) -> None:
    """An smp mit_b0 encoder state dict and a whole smp SegFormer state dict both load."""
    torch.manual_seed(3)
    donor = build_model("segformer", "mit_b0", in_channels=3, num_classes=5)
    enc_file = save(donor.encoder.state_dict(), tmp_path / "mit.pt")
    whole_file = save(donor.state_dict(), tmp_path / "whole.pt")
    for f in (enc_file, whole_file):
        model = build_model("segformer", "mit_b0", in_channels=6, num_classes=2)
        rep = load_encoder_state(model, f, encoder_name="mit_b0", in_channels=6)
        got = model.encoder.state_dict()
        want = donor.encoder.state_dict()
        torch.testing.assert_close(got["block4.0.mlp.fc2.weight"], want["block4.0.mlp.fc2.weight"])
        assert rep.adapted == ("patch_embed1.proj.weight",)
        assert got["patch_embed1.proj.weight"].shape[1] == 6


def test_mismatches_are_one_line_errors_with_the_fix(tmp_path: Path) -> None:
    import torchvision

    model = build_model("unet", "resnet18", in_channels=3, num_classes=2)
    r34 = save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    r50 = save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    mnv2 = save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "m.pth")
    kw = {"encoder_name": "resnet18", "in_channels": 3}
    with pytest.raises(ModelBundleError, match=r"is \(64, 64, 1, 1\) in the file.*--encoder"):
        load_encoder_state(model, r50, **kw)  # type: ignore[arg-type]
    with pytest.raises(ModelBundleError, match=r"\d of 100 tensors.*'features.0.0.weight'"):
        load_encoder_state(model, mnv2, **kw)  # type: ignore[arg-type]
    # resnet34 has every resnet18 key (and more), with the same shapes: that loads.
    assert load_encoder_state(model, r34, **kw).ignored > 0  # type: ignore[arg-type]
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(ModelBundleError, match="not a PyTorch state dict"):
        load_encoder_state(model, tmp_path / "junk.pt", **kw)  # type: ignore[arg-type]
    with pytest.raises(InputFileNotFoundError, match="check the path"):
        load_encoder_state(model, tmp_path / "nope.pt", **kw)  # type: ignore[arg-type]
    for msg in (r50, mnv2):
        try:
            load_encoder_state(model, msg, **kw)  # type: ignore[arg-type]
        except ModelBundleError as exc:
            assert "\n" not in str(exc)

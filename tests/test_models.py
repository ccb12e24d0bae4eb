from __future__ import annotations

import pytest
import torch

from geoseg.errors import ConfigError
from geoseg.models import ARCHITECTURES, build_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_gives_logits_at_input_size(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, "mobilenet_v2", in_channels=5, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 5, 64, 96))
    assert out.shape == (1, 3, 64, 96)


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("segformer", "resnet18", in_channels=3, num_classes=2)
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

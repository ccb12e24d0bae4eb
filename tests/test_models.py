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

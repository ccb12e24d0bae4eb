"""Names of the supported architectures and encoders, importable without torch (for the CLI)."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ARCHITECTURES", "ENCODERS", "LIGHT_ENCODER", "Architecture", "Encoder"]

Architecture = Literal["unet", "deeplabv3", "deeplabv3plus", "fcn", "pspnet", "segformer", "lraspp"]
Encoder = Literal[
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "tu-mobilenetv3_large_100",
    "tu-tf_efficientnet_lite0",
    "mit_b0",
    "mit_b1",
]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
ENCODERS: tuple[str, ...] = get_args(Encoder)
#: The encoder of the light real-time model (``--model lraspp``; any encoder works).
LIGHT_ENCODER = "tu-mobilenetv3_large_100"

"""Names of the supported architectures and encoders, importable without torch (for the CLI)."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ARCHITECTURES", "ENCODERS", "Architecture", "Encoder"]

Architecture = Literal["unet", "deeplabv3", "deeplabv3plus", "fcn", "pspnet"]
Encoder = Literal["resnet18", "resnet34", "resnet50", "mobilenet_v2"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
ENCODERS: tuple[str, ...] = get_args(Encoder)

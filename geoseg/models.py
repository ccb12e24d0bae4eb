"""Segmentation architectures on several encoders.

U-Net, DeepLabV3, DeepLabV3+, PSPNet and SegFormer (its all-MLP decoder; on a Mix Transformer
``mit_b0``/``mit_b1`` encoder as in the paper, or on any CNN encoder) come from
segmentation-models-pytorch. Built here on the same encoders: FCN (FCN-8s style skips) and
LR-ASPP, the light real-time head of MobileNetV3 (Howard et al. 2019), meant for
``tu-mobilenetv3_large_100`` or ``tu-tf_efficientnet_lite0``. No weights are downloaded:
encoders start from random initialisation unless a local weights file is given
(:func:`geoseg.pretrained.load_encoder_state`).
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.errors import ConfigError, ModelBundleError, first_line
from geoseg.model_names import ARCHITECTURES, ENCODERS, Architecture, Encoder

__all__ = [
    "ARCHITECTURES",
    "ENCODERS",
    "Architecture",
    "Encoder",
    "build_model",
    "load_encoder_weights",
]


class FCN(nn.Module):
    """Fully convolutional network (FCN-8s style) on an smp encoder.

    Class scores from the stride-32, -16 and -8 features are summed after upsampling, then
    upsampled to the input size.
    """

    def __init__(self, encoder_name: str, in_channels: int, classes: int) -> None:
        super().__init__()
        from segmentation_models_pytorch.encoders import get_encoder

        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=None)
        chans = self.encoder.out_channels
        self.score32 = nn.Conv2d(chans[-1], classes, 1)
        self.score16 = nn.Conv2d(chans[-2], classes, 1)
        self.score8 = nn.Conv2d(chans[-3], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits at the input resolution."""
        feats = self.encoder(x)
        s = self.score32(feats[-1])
        s = F.interpolate(s, size=feats[-2].shape[-2:], mode="bilinear", align_corners=False)
        s = s + self.score16(feats[-2])
        s = F.interpolate(s, size=feats[-3].shape[-2:], mode="bilinear", align_corners=False)
        s = s + self.score8(feats[-3])
        return F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)


class LRASPP(nn.Module):
    """Lite R-ASPP (MobileNetV3 paper): a squeeze-excite gated 1x1 branch plus a stride-8 skip.

    The stride-32 features go through a 1x1 conv (128 channels), gated by a sigmoid of their
    global average; the result is upsampled to the stride-8 features, and class scores from both
    are summed, then upsampled to the input size. About 0.2 M parameters beyond the encoder.
    """

    def __init__(
        self, encoder_name: str, in_channels: int, classes: int, inter_channels: int = 128
    ) -> None:
        super().__init__()
        from segmentation_models_pytorch.encoders import get_encoder

        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=None)
        high, low = self.encoder.out_channels[-1], self.encoder.out_channels[-3]
        self.cbr = nn.Sequential(
            nn.Conv2d(high, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(high, inter_channels, 1, bias=False), nn.Sigmoid()
        )
        self.low_classifier = nn.Conv2d(low, classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits at the input resolution."""
        feats = self.encoder(x)
        high, low = feats[-1], feats[-3]
        h = self.cbr(high) * self.gate(high)
        h = F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False)
        s = self.low_classifier(low) + self.high_classifier(h)
        return F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)


class PixelHead(nn.Module):
    """A context network plus a per-pixel spectral head, summed as logits.

    Encoder-decoders see context but blur the finest detail: their last skip connection is at
    half resolution. Spectral signatures, though, separate many land-cover classes pixel by
    pixel. The head is a small 1x1-convolution MLP over the (normalised) bands and the context
    logits, added to the context logits, so the model learns both. Its receptive field is one
    pixel: tiling and blending are unaffected.
    """

    def __init__(
        self, net: nn.Module, in_channels: int, num_classes: int, hidden: int = 32
    ) -> None:
        super().__init__()
        self.net = net
        self.pixel = nn.Sequential(
            nn.Conv2d(in_channels + num_classes, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Context logits plus the per-pixel correction."""
        ctx = self.net(x)
        return ctx + self.pixel(torch.cat([x, ctx], dim=1))


def build_model(
    arch: str, encoder: str, *, in_channels: int, num_classes: int, pixel_head: bool = False
) -> nn.Module:
    """A randomly initialised segmentation model returning logits ``(N, num_classes, H, W)``.

    Inputs need a height and width divisible by :func:`stride_multiple` (the predictor pads).
    With ``pixel_head`` the network is wrapped in :class:`PixelHead`.
    """
    net = _build_net(arch, encoder, in_channels=in_channels, num_classes=num_classes)
    return PixelHead(net, in_channels, num_classes) if pixel_head else net


def _build_net(arch: str, encoder: str, *, in_channels: int, num_classes: int) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown model {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    if in_channels < 1 or num_classes < 1:
        raise ConfigError(
            f"in_channels ({in_channels}) and num_classes ({num_classes}) must be >= 1"
        )
    # Mix Transformers call ``.item()`` while building, which the meta device (used by
    # ModelBundle.build to skip the random init) cannot: build those small encoders on the CPU.
    where = torch.device("cpu") if encoder.startswith("mit_") else contextlib.nullcontext()
    try:
        with where:
            return _construct(arch, encoder, in_channels=in_channels, num_classes=num_classes)
    except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise ConfigError(
            f"model {arch!r} does not work with encoder {encoder!r} "
            f"({first_line(exc)}); "
            "choose another encoder"
        ) from exc


def _construct(arch: str, encoder: str, *, in_channels: int, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    kw = {
        "encoder_name": encoder,
        "encoder_weights": None,
        "in_channels": in_channels,
        "classes": num_classes,
    }
    if arch == "unet":
        return smp.Unet(**kw)
    if arch == "deeplabv3":
        return smp.DeepLabV3(**kw)
    if arch == "deeplabv3plus":
        return smp.DeepLabV3Plus(**kw)
    if arch == "pspnet":
        return smp.PSPNet(**kw)
    if arch == "segformer":
        return smp.Segformer(**kw)
    if arch == "lraspp":
        return LRASPP(encoder, in_channels, num_classes)
    return FCN(encoder, in_channels, num_classes)


def stride_multiple(arch: str) -> int:
    """Input sizes must be multiples of this (the encoders' output stride).

    Every encoder here downsamples 5 times (Mix Transformers: a stride-4 patch embedding then
    3 stride-2 ones), and no decoder adds a stride: 32 for every architecture.
    """
    del arch
    return 32


def load_encoder_weights(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load a local state dict (whole model or encoder only) into ``model``; returns missing keys.

    Shapes that do not fit (e.g. a first convolution for another band count) are skipped.
    """
    from geoseg.pretrained import read_state_dict

    state = read_state_dict(path)
    own = model.state_dict()
    encoder_prefixed = {f"encoder.{k}": v for k, v in state.items() if not k.startswith("encoder.")}
    candidates = {**encoder_prefixed, **state}
    usable = {k: v for k, v in candidates.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelBundleError(
            f"{path}: no tensor in it fits this model; is it for another architecture?"
        )
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))

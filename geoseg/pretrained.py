"""Local pretrained encoder weights (no downloads): timm, torchvision and smp key layouts.

:func:`load_encoder_state` reads a state dict from a local file (``torch.save`` output, read
with ``weights_only=True``; a checkpoint wrapping it under ``state_dict``/``model``/
``module``/``encoder`` is unwrapped) and loads it into the encoder of a model built by
:func:`geoseg.models.build_model`. The key layout is found by trying every way of stripping a
leading prefix from the file's keys (``module.``, ``model.``, ``backbone.``, ``encoder.``,
``net.encoder.``, ...) and adding one of the encoder's own (smp's timm-universal encoders keep
the timm model under ``model.``) and keeping the one that matches most tensors. So these all
load: a torchvision ``resnet18().state_dict()`` (smp's ResNet and MobileNetV2 encoders *are*
the torchvision modules), a timm ``create_model(...).state_dict()`` for ``tu-*`` encoders or
timm ResNets (same keys as torchvision), an smp encoder's or whole smp model's state dict, the
SegFormer ``mit_b*`` checkpoints, and DDP (``module.``) or Lightning (``model.``) wrappings.
Head tensors the encoder lacks (``fc.*``, ``classifier.*``) are ignored.

The first convolution is adapted to the band count as smp does for ``in_channels != 3``
(``encoders/_utils.py: patch_first_conv``): for one band the RGB kernels are summed; for ``n``
bands the kernel of band ``i`` is that of input channel ``i mod 3``, scaled by ``3 / n`` so the
activations keep their size.

Every encoder tensor must be found, with its shape: otherwise a one-line
:class:`~geoseg.errors.ModelBundleError` says how many matched, names one that did not, and
the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from geoseg.errors import InputFileNotFoundError, ModelBundleError

__all__ = ["EncoderWeightsReport", "adapt_first_conv", "load_encoder_state", "read_state_dict"]

#: Keys under which checkpoints commonly wrap their state dict.
WRAPPERS = ("state_dict", "model", "module", "encoder", "net")


@dataclass(frozen=True)
class EncoderWeightsReport:
    """What :func:`load_encoder_state` loaded."""

    path: str
    matched: int
    total: int
    strip: str
    add: str
    adapted: tuple[str, ...] = ()
    ignored: int = 0


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file (unwrapping ``state_dict``/``model``/... keys)."""
    if not os.path.exists(path):
        raise InputFileNotFoundError(f"{path}: no such weights file; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelBundleError(
            f"{path}: not a PyTorch state dict ({exc.__class__.__name__}); save one with "
            "torch.save(model.state_dict(), path)"
        ) from exc
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        inner = [obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)]
        if inner and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = inner[0]
    if not isinstance(obj, dict):
        raise ModelBundleError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ModelBundleError(f"{path}: no tensors in it; give a state dict")
    return state


def _prefixes(keys: Iterable[str], depth: int = 3) -> set[str]:
    out = {""}
    for k in keys:
        parts = k.split(".")
        for d in range(1, min(depth, len(parts) - 1) + 1):
            out.add(".".join(parts[:d]) + ".")
    return out


def _best_mapping(
    src: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> tuple[str, str, dict[str, torch.Tensor]]:
    """The (strip, add) prefix pair mapping most file keys onto encoder keys, and the result."""
    best: tuple[int, str, str, dict[str, torch.Tensor]] = (-1, "", "", {})
    adds = [a for a in _prefixes(target, depth=1)]
    for strip in sorted(_prefixes(src)):
        stripped = {k[len(strip) :]: v for k, v in src.items() if k.startswith(strip)}
        for add in sorted(adds):
            mapped = {add + k: v for k, v in stripped.items()}
            n = sum(k in target for k in mapped)
            if n > best[0]:
                best = (n, strip, add, mapped)
    return best[1], best[2], best[3]


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv kernel ``(out, c, kh, kw)`` for ``in_channels`` inputs, as smp adapts RGB ones.

    One band: the kernels summed over ``c``. Otherwise channel ``i`` takes kernel ``i mod c``,
    all scaled by ``c / in_channels``.
    """
    c = weight.shape[1]
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    idx = torch.arange(in_channels) % c
    return weight[:, idx] * (c / in_channels)


def _encoder(model: nn.Module) -> nn.Module:
    for owner in (model, getattr(model, "net", None)):
        enc = getattr(owner, "encoder", None)
        if isinstance(enc, nn.Module):
            return enc
    raise ModelBundleError(f"{type(model).__name__} has no encoder to load weights into")


def load_encoder_state(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    encoder_name: str,
    in_channels: int,
) -> EncoderWeightsReport:
    """Load the encoder weights of a local file into ``model``'s encoder.

    Args:
        model: a model from :func:`geoseg.models.build_model` (with ``encoder`` or
            ``net.encoder``).
        path: the weights file (timm, torchvision or smp layout; see the module docstring).
        encoder_name: the encoder's name, for messages.
        in_channels: the model's band count (the first convolution is adapted to it).

    Raises:
        InputFileNotFoundError: no such file.
        ModelBundleError: not a state dict, or its tensors do not cover the encoder.
    """
    enc = _encoder(model)
    target = enc.state_dict()
    src = read_state_dict(path)
    strip, add, mapped = _best_mapping(src, target)
    wanted = [k for k in target if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in mapped]
    if missing:
        sample = next(iter(src))
        raise ModelBundleError(
            f"{path}: {len(wanted) - len(missing)} of {len(wanted)} tensors of the "
            f"{encoder_name} encoder found (e.g. {missing[0]!r} is missing; the file has "
            f"{sample!r}, ...); give {encoder_name} weights in timm, torchvision or smp layout, "
            "or choose the --encoder they were trained for"
        )
    load: dict[str, torch.Tensor] = {}
    adapted: list[str] = []
    for k, want in target.items():
        if k not in mapped:
            continue
        v = mapped[k]
        if v.shape != want.shape:
            first_conv = (
                v.ndim == 4 and want.shape[1] == in_channels and v.shape[2:] == want.shape[2:]
            )
            if not first_conv or v.shape[0] != want.shape[0]:
                raise ModelBundleError(
                    f"{path}: {k!r} is {tuple(v.shape)} in the file but {tuple(want.shape)} in "
                    f"the {encoder_name} encoder; are these weights for another encoder "
                    "(e.g. resnet50 for resnet18)? choose the matching --encoder"
                )
            v = adapt_first_conv(v, in_channels)
            adapted.append(k)
        load[k] = v.to(dtype=want.dtype)
    # nn.Module's own: smp encoders override load_state_dict (to drop heads), not always alike.
    nn.Module.load_state_dict(enc, load, strict=False)
    return EncoderWeightsReport(
        path=str(path),
        matched=len(load),
        total=len(target),
        strip=strip,
        add=add,
        adapted=tuple(adapted),
        ignored=len(src) - len(load),
    )

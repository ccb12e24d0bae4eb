"""Segmentation losses that honour the ignore value.

``build_loss("ce+dice", num_classes=4, class_weights=w)`` returns one callable
``loss(logits (N, C, H, W), target (N, H, W) int64) -> scalar``. Terms: ``ce`` (cross-entropy),
``wce`` (cross-entropy weighted by inverse class frequency), ``focal`` and ``dice``; a ``+``
sums them. Pixels whose target is the ignore value contribute nothing to any term.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.classes import IGNORE_INDEX
from geoseg.errors import ConfigError

__all__ = ["LOSS_TERMS", "DiceLoss", "FocalLoss", "build_loss", "inverse_frequency_weights"]

LOSS_TERMS = ("ce", "wce", "focal", "dice")


def inverse_frequency_weights(counts: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Class weights ``total / (n_classes * count)``, normalised to mean 1 (absent classes: 0)."""
    c = np.asarray(counts, dtype=np.float64)
    w = np.where(c > 0, c.sum() / (len(c) * np.maximum(c, 1)), 0.0)
    present = w > 0
    if present.any():
        w = w / w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss ``-(1 - p_t)^gamma log p_t`` averaged over labelled pixels."""

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        weight: torch.Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss (0 when no pixel is labelled)."""
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return logits.sum() * 0.0
        logp = F.log_softmax(logits.float(), dim=1)
        t = torch.where(valid, target, torch.zeros_like(target))
        logpt = logp.gather(1, t.unsqueeze(1)).squeeze(1)
        pt = logpt.exp()
        loss = -((1 - pt) ** self.gamma) * logpt
        if self.weight is not None:
            loss = loss * self.weight.to(loss.device)[t]
        return loss[valid].mean()


class DiceLoss(nn.Module):
    """Soft multi-class Dice loss ``1 - mean_c dice_c`` over labelled pixels."""

    def __init__(self, *, ignore_index: int = IGNORE_INDEX, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss (0 when no pixel is labelled)."""
        n_cls = logits.shape[1]
        valid = (target != self.ignore_index).unsqueeze(1).float()
        if not bool(valid.any()):
            return logits.sum() * 0.0
        prob = F.softmax(logits.float(), dim=1) * valid
        t = torch.where(target == self.ignore_index, torch.zeros_like(target), target)
        onehot = F.one_hot(t, n_cls).permute(0, 3, 1, 2).float() * valid
        dims = (0, 2, 3)
        inter = (prob * onehot).sum(dims)
        card = prob.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (card + self.smooth)
        return 1 - dice.mean()


class _CE(nn.Module):
    def __init__(self, weight: torch.Tensor | None, ignore_index: int) -> None:
        super().__init__()
        self.weight = weight
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0
        w = self.weight.to(logits.device) if self.weight is not None else None
        return F.cross_entropy(logits.float(), target, weight=w, ignore_index=self.ignore_index)


class _Sum(nn.Module):
    def __init__(self, terms: list[nn.Module]) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = self.terms[0](logits, target)
        for t in self.terms[1:]:
            total = total + t(logits, target)
        return total


def build_loss(
    name: str,
    *,
    num_classes: int,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    focal_gamma: float = 2.0,
) -> nn.Module:
    """A loss from a name such as ``"ce"``, ``"wce"``, ``"focal"``, ``"dice"`` or ``"ce+dice"``.

    Args:
        name: loss terms joined by ``+``.
        num_classes: number of classes (checks the weights).
        class_weights: per-class weights for ``wce`` (e.g. :func:`inverse_frequency_weights`).
        ignore_index: target value that is never scored.
        focal_gamma: focusing parameter of the focal term.
    """
    terms = [t.strip().lower() for t in name.split("+") if t.strip()]
    if not terms or any(t not in LOSS_TERMS for t in terms):
        raise ConfigError(
            f"unknown loss {name!r}; use one of {', '.join(LOSS_TERMS)} or a sum like 'ce+dice'"
        )
    if class_weights is not None and len(class_weights) != num_classes:
        raise ConfigError(f"{len(class_weights)} class weights for {num_classes} classes")
    mods: list[nn.Module] = []
    for t in terms:
        if t == "ce":
            mods.append(_CE(None, ignore_index))
        elif t == "wce":
            if class_weights is None:
                raise ConfigError(
                    "loss 'wce' needs class weights (computed from the training data)"
                )
            mods.append(_CE(class_weights, ignore_index))
        elif t == "focal":
            mods.append(FocalLoss(gamma=focal_gamma, ignore_index=ignore_index))
        else:
            mods.append(DiceLoss(ignore_index=ignore_index))
    return mods[0] if len(mods) == 1 else _Sum(mods)

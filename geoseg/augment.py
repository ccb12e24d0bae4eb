"""Joint image + mask augmentation, seeded for reproducible training.

Geometric transforms (flips, 90° rotations, random scale) move image and mask together; the
mask is resampled with nearest neighbour so class ids stay ids and the ignore value stays
ignore. Colour jitter (per-band gain and offset) touches the normalised image only.

:class:`Mix` mixes pairs of chips of a batch (each chip with a random other one):

* **CutMix** (Yun et al. 2019): a random box of the partner (area ``1 - lam``,
  ``lam ~ Beta(alpha, alpha)``) is pasted into the chip, image *and* mask, so every pixel keeps
  exactly one label, ignore pixels included (an ignored pixel pasted in stays ignored).
* **MixUp** (Zhang et al. 2018): the images are blended ``lam x + (1 - lam) x'``. A hard mask
  cannot be blended, so both masks are kept and the *loss* is mixed,
  ``lam L(logits, y) + (1 - lam) L(logits, y')`` (:func:`mixed_loss`), each term with its own
  ignore pixels; on-the-fly training scores use the dominant mask (``y`` when ``lam >= 0.5``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.classes import IGNORE_INDEX
from geoseg.errors import ConfigError

__all__ = ["Augment", "Mix", "MixedBatch", "mixed_loss"]


@dataclass(frozen=True)
class Augment:
    """Random joint augmentation of a batch.

    Args:
        flip: random horizontal and vertical flips.
        rotate: random rotations by multiples of 90°.
        scale: range of a random zoom ``(min, max)`` (None: no zoom); the chip keeps its size.
        jitter: strength of per-band gain/offset jitter on the normalised image (0: none).
    """

    flip: bool = True
    rotate: bool = True
    scale: tuple[float, float] | None = (0.75, 1.33)
    jitter: float = 0.1

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``image (N, C, H, W)`` and ``mask (N, H, W)``; each sample independently."""
        imgs, masks = [], []
        for k in range(image.shape[0]):
            x, m = image[k], mask[k]
            r = torch.rand(5, generator=generator).tolist()
            if self.flip and r[0] < 0.5:
                x, m = x.flip(-1), m.flip(-1)
            if self.flip and r[1] < 0.5:
                x, m = x.flip(-2), m.flip(-2)
            if self.rotate and x.shape[-1] == x.shape[-2]:
                turns = int(r[2] * 4) % 4
                if turns:
                    x, m = torch.rot90(x, turns, (-2, -1)), torch.rot90(m, turns, (-2, -1))
            if self.scale is not None and self.scale != (1.0, 1.0):
                lo, hi = self.scale
                s = lo + (hi - lo) * r[3]
                x, m = _zoom(x, m, s, r[4])
            if self.jitter > 0:
                gain = 1 + self.jitter * (2 * torch.rand(x.shape[0], 1, 1, generator=generator) - 1)
                bias = self.jitter * (2 * torch.rand(x.shape[0], 1, 1, generator=generator) - 1)
                x = x * gain + bias
            imgs.append(x)
            masks.append(m)
        return torch.stack(imgs), torch.stack(masks)


def _zoom(
    x: torch.Tensor, m: torch.Tensor, s: float, pos: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom by ``s`` about a position, keeping the size; new border pixels are ignore."""
    h, w = x.shape[-2:]
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    xs = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    ms = F.interpolate(m[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    if s >= 1:
        r0, c0 = int(pos * (nh - h)), int(pos * (nw - w))
        return xs[:, r0 : r0 + h, c0 : c0 + w], ms[r0 : r0 + h, c0 : c0 + w]
    ox = torch.zeros_like(x)
    om = torch.full_like(m, IGNORE_INDEX)
    r0, c0 = int(pos * (h - nh)), int(pos * (w - nw))
    ox[:, r0 : r0 + nh, c0 : c0 + nw] = xs
    om[r0 : r0 + nh, c0 : c0 + nw] = ms
    return ox, om


@dataclass(frozen=True)
class MixedBatch:
    """A mixed batch: ``loss = lam L(y=mask) + (1 - lam) L(y=mask_b)`` (no ``mask_b``: plain)."""

    image: torch.Tensor
    mask: torch.Tensor
    mask_b: torch.Tensor | None = None
    lam: float = 1.0
    kind: str = "none"

    @property
    def dominant_mask(self) -> torch.Tensor:
        """The mask with the larger weight (for training scores)."""
        return self.mask if self.mask_b is None or self.lam >= 0.5 else self.mask_b


def mixed_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    batch: MixedBatch,
) -> torch.Tensor:
    """``loss_fn`` on a (possibly MixUp) batch: the two masks' losses weighted by ``lam``."""
    loss = loss_fn(logits, batch.mask.to(logits.device))
    if batch.mask_b is None:
        return loss
    return batch.lam * loss + (1 - batch.lam) * loss_fn(logits, batch.mask_b.to(logits.device))


@dataclass(frozen=True)
class Mix:
    """Per batch, CutMix with probability ``cutmix``, else MixUp with probability ``mixup``.

    Args:
        cutmix: probability that a batch is CutMix-ed.
        mixup: probability that a batch is MixUp-ed (``cutmix + mixup <= 1``).
        alpha: ``lam ~ Beta(alpha, alpha)`` (1: uniform).
    """

    cutmix: float = 0.0
    mixup: float = 0.0
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if not (0 <= self.cutmix <= 1 and 0 <= self.mixup <= 1 and self.cutmix + self.mixup <= 1):
            raise ConfigError(
                f"cutmix ({self.cutmix}) and mixup ({self.mixup}) are probabilities per batch; "
                "each in [0, 1], summing to <= 1"
            )
        if self.alpha <= 0:
            raise ConfigError(f"mix alpha must be > 0 (got {self.alpha}); 1 draws lam uniformly")

    @property
    def active(self) -> bool:
        """Whether any mixing can happen."""
        return self.cutmix > 0 or self.mixup > 0

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, *, generator: torch.Generator
    ) -> MixedBatch:
        """Mix ``image (N, C, H, W)`` and ``mask (N, H, W)`` (seeded by ``generator``)."""
        n = image.shape[0]
        u = float(torch.rand(1, generator=generator))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        if n < 2 or u >= self.cutmix + self.mixup:
            return MixedBatch(image, mask)
        lam = float(np.random.default_rng(seed).beta(self.alpha, self.alpha))
        # Partners along a random cycle: every chip gets another chip (never itself).
        order = torch.randperm(n, generator=generator)
        partner = torch.empty_like(order)
        partner[order] = torch.roll(order, 1)
        if u < self.cutmix:
            return self._cutmix(image, mask, partner, lam, generator)
        mixed = lam * image + (1 - lam) * image[partner]
        return MixedBatch(mixed, mask, mask[partner], lam, "mixup")

    @staticmethod
    def _cutmix(
        image: torch.Tensor,
        mask: torch.Tensor,
        partner: torch.Tensor,
        lam: float,
        generator: torch.Generator,
    ) -> MixedBatch:
        h, w = image.shape[-2:]
        bh, bw = round(h * (1 - lam) ** 0.5), round(w * (1 - lam) ** 0.5)
        cy, cx = (torch.rand(2, generator=generator) * torch.tensor([h, w])).tolist()
        r0, r1 = max(0, int(cy - bh / 2)), min(h, int(cy + bh / 2))
        c0, c1 = max(0, int(cx - bw / 2)), min(w, int(cx + bw / 2))
        x, m = image.clone(), mask.clone()
        x[..., r0:r1, c0:c1] = image[partner][..., r0:r1, c0:c1]
        m[..., r0:r1, c0:c1] = mask[partner][..., r0:r1, c0:c1]
        return MixedBatch(x, m, None, 1.0, "cutmix")

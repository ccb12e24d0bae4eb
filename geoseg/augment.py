"""Joint image + mask augmentation, seeded for reproducible training.

Geometric transforms (flips, 90° rotations, random scale) move image and mask together; the
mask is resampled with nearest neighbour so class ids stay ids and the ignore value stays
ignore. Colour jitter (per-band gain and offset) touches the normalised image only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geoseg.classes import IGNORE_INDEX

__all__ = ["Augment"]


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

"""Augmentation: the mask moves with the image under every transform; CutMix / MixUp."""

from __future__ import annotations

import pytest
import torch

from geoseg.augment import Augment, Mix, MixedBatch, mixed_loss
from geoseg.classes import IGNORE_INDEX
from geoseg.errors import ConfigError
from geoseg.losses import build_loss


def blocks(n: int = 6, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of 8x8 blocks (classes 0-3 and ignore) and images whose band 0 IS the mask."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 5, (n, size // 8, size // 8), generator=g)
    coarse[coarse == 4] = IGNORE_INDEX
    mask = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    noise = torch.randn(n, 2, size, size, generator=g)
    image = torch.cat([mask[:, None].float(), noise], dim=1)
    return image, mask


@pytest.mark.parametrize(
    "aug",
    [
        Augment(flip=True, rotate=False, scale=None, jitter=0),
        Augment(flip=False, rotate=True, scale=None, jitter=0),
        Augment(flip=True, rotate=True, scale=None, jitter=0),
    ],
    ids=["flips", "rotations", "both"],
)
def test_geometric_transforms_move_mask_with_image_exactly(aug: Augment) -> None:
    image, mask = blocks()
    changed = 0
    for seed in range(4):
        x, m = aug(image, mask, generator=torch.Generator().manual_seed(seed))
        assert x.shape == image.shape and m.shape == mask.shape and m.dtype == mask.dtype
        torch.testing.assert_close(x[:, 0], m.float(), rtol=0, atol=0)
        changed += int((m != mask).any(dim=(1, 2)).sum())
    assert changed > 0  # the transform did happen


@pytest.mark.parametrize("scale", [(0.6, 0.8), (1.3, 1.6)], ids=["zoom-out", "zoom-in"])
def test_zoom_moves_mask_with_image(scale: tuple[float, float]) -> None:
    image, mask = blocks()
    aug = Augment(flip=False, rotate=False, scale=scale, jitter=0)
    x, m = aug(image, mask, generator=torch.Generator().manual_seed(0))
    labelled = m != IGNORE_INDEX
    # Bilinear image vs nearest mask: equal away from block edges (most pixels).
    agree = (x[:, 0].round() == m.float())[labelled].float().mean()
    assert agree > 0.8
    assert set(torch.unique(m).tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}
    if scale[1] < 1:  # the border the zoom-out leaves is ignore, image 0
        border = (x[:, 1:] == 0).all(dim=1)
        assert border.any() and (m[border] == IGNORE_INDEX).all()


def test_jitter_changes_only_the_image() -> None:
    image, mask = blocks()
    aug = Augment(flip=False, rotate=False, scale=None, jitter=0.2)
    x, m = aug(image, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, mask) and not torch.equal(x, image)
    # Per band an affine map: x = gain * image + bias (same for every pixel).
    a, b = image[0, 1].flatten(), x[0, 1].flatten()
    gain = ((b - b.mean()) * (a - a.mean())).sum() / ((a - a.mean()) ** 2).sum()
    torch.testing.assert_close(b, gain * a + (b.mean() - gain * a.mean()), atol=1e-4, rtol=0)


def test_cutmix_pastes_image_and_mask_together_ignore_kept() -> None:
    image, mask = blocks(n=8)
    mb = Mix(cutmix=1.0)(image, mask, generator=torch.Generator().manual_seed(3))
    assert mb.kind == "cutmix" and mb.mask_b is None and mb.lam == 1.0
    torch.testing.assert_close(mb.image[:, 0], mb.mask.float(), rtol=0, atol=0)
    pasted = (mb.mask != mask).any(dim=(1, 2))
    assert pasted.any()
    # Every pixel comes from the chip itself or its partner: ignore pixels stay ignore there.
    assert (mb.mask == IGNORE_INDEX).sum() > 0
    assert set(torch.unique(mb.mask).tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}


def test_mixup_blends_images_and_keeps_both_masks() -> None:
    image, mask = blocks(n=8)
    mb = Mix(mixup=1.0, alpha=0.4)(image, mask, generator=torch.Generator().manual_seed(5))
    assert mb.kind == "mixup" and mb.mask_b is not None and 0 < mb.lam < 1
    assert torch.equal(mb.mask, mask) and not torch.equal(mb.mask_b, mask)
    want = mb.lam * mask.float() + (1 - mb.lam) * mb.mask_b.float()
    torch.testing.assert_close(mb.image[:, 0], want)
    # The loss is mixed with lam; each term skips its own ignore pixels.
    loss = build_loss("ce", num_classes=4)
    logits = torch.randn(8, 4, 64, 64)
    got = mixed_loss(loss, logits, mb)
    ref = mb.lam * loss(logits, mask) + (1 - mb.lam) * loss(logits, mb.mask_b)
    torch.testing.assert_close(got, ref)
    assert torch.equal(mb.dominant_mask, mask if mb.lam >= 0.5 else mb.mask_b)


def test_mix_probabilities_and_determinism() -> None:
    image, mask = blocks(n=4)
    kinds = [
        Mix(cutmix=0.3, mixup=0.3)(image, mask, generator=torch.Generator().manual_seed(s)).kind
        for s in range(60)
    ]
    assert {"none", "cutmix", "mixup"} == set(kinds)
    a = Mix(cutmix=0.5, mixup=0.5)(image, mask, generator=torch.Generator().manual_seed(1))
    b = Mix(cutmix=0.5, mixup=0.5)(image, mask, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    plain = Mix()(image, mask, generator=torch.Generator())
    assert isinstance(plain, MixedBatch) and plain.image is image and plain.kind == "none"
    with pytest.raises(ConfigError, match="summing to <= 1"):
        Mix(cutmix=0.7, mixup=0.5)

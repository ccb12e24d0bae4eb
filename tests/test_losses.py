"""Losses: every term honours the ignore value; weights by inverse frequency."""

from __future__ import annotations

import pytest
import torch

from geoseg.classes import IGNORE_INDEX
from geoseg.errors import ConfigError
from geoseg.losses import build_loss, inverse_frequency_weights

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["ce", "wce", "focal", "dice", "ce+dice", "focal+dice"])
def test_ignored_pixels_do_not_count(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    target[:, :4] = IGNORE_INDEX
    loss = build_loss(name, num_classes=3, class_weights=torch.tensor([1.0, 2.0, 0.5]))
    a = loss(logits, target)
    other = logits.detach().clone()
    other[:, :, :4] += 100 * torch.randn(2, 3, 4, 8, generator=g)  # change ignored logits only
    b = loss(other, target)
    assert torch.isfinite(a) and a.item() == pytest.approx(b.item(), rel=1e-5)
    a.backward()
    assert logits.grad is not None and torch.all(logits.grad[:, :, :4] == 0)


def test_all_ignored_is_zero() -> None:
    logits = torch.randn(1, 2, 4, 4)
    target = torch.full((1, 4, 4), IGNORE_INDEX)
    for name in ("ce", "focal", "dice"):
        assert build_loss(name, num_classes=2)(logits, target).item() == 0.0


def test_sum_is_sum_of_terms() -> None:
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    s = build_loss("ce+dice", num_classes=3)(logits, target)
    parts = build_loss("ce", num_classes=3)(logits, target) + build_loss("dice", num_classes=3)(
        logits, target
    )
    assert s.item() == pytest.approx(parts.item())


def test_inverse_frequency_weights() -> None:
    w = inverse_frequency_weights([100, 300, 0])
    assert w[2] == 0 and w[0] == pytest.approx(3 * w[1]) and w[:2].mean() == pytest.approx(1.0)


def test_bad_names() -> None:
    with pytest.raises(ConfigError, match="ce\\+dice"):
        build_loss("bce", num_classes=2)
    with pytest.raises(ConfigError, match="class weights"):
        build_loss("wce", num_classes=2)

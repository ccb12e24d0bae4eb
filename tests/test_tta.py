"""Test-time augmentation: exact views, equivariance, and a streamed predict with TTA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from geoseg.errors import ConfigError
from geoseg.predict import predict
from geoseg.tta import TTA_MODES, apply_view, invert_view, tta_forward, views
from tests.test_predict import read, scene, tiny_bundle, tiny_net

__all__ = ["scene"]  # the fixture, imported for pytest

torch.set_num_threads(1)


def as_forward(net: nn.Module):
    """``net`` as the forward callable TTA wraps: numpy in, softmax probabilities out."""

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x))), 1).numpy()

    return forward


def test_views_are_the_dihedral_group_and_invert() -> None:
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    assert [len(views(m)) for m in TTA_MODES] == [1, 2, 4, 8]
    seen = set()
    for v in views("d4"):
        y = apply_view(x, v)
        np.testing.assert_array_equal(invert_view(y, v), x)
        seen.add(y.tobytes())
    assert len(seen) == 8  # eight distinct images
    with pytest.raises(ConfigError, match="use one of"):
        views("d8")


@pytest.mark.parametrize("mode", TTA_MODES)
@pytest.mark.parametrize("shape", [(2, 4, 64, 64), (1, 4, 32, 96)])
def test_pointwise_model_is_unchanged_by_tta(mode: str, shape: tuple[int, ...]) -> None:
    """A 1x1 convolution commutes with every view: TTA == no TTA (also non-square chips)."""
    torch.manual_seed(0)
    f = as_forward(nn.Conv2d(4, 3, 1).eval())
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    out = tta_forward(f, x, mode=mode)
    assert out.shape == (shape[0], 3, *shape[2:]) and out.dtype == np.float32
    np.testing.assert_allclose(out, f(x), atol=1e-6)


def test_tta_makes_a_real_model_equivariant() -> None:
    """3x3 convolutions are not equivariant; averaged over D4 they are."""
    f = as_forward(tiny_net(4, 3).eval())
    x = np.random.default_rng(1).normal(size=(1, 4, 64, 64)).astype(np.float32)
    flip = (0, True)
    turn = (1, False)
    plain = f(x)
    assert not np.allclose(invert_view(f(apply_view(x, flip)), flip), plain, atol=1e-4)
    d4 = tta_forward(f, x, mode="d4")
    assert not np.allclose(d4, plain, atol=1e-4)
    for v in (flip, turn):
        got = tta_forward(f, np.ascontiguousarray(apply_view(x, v)), mode="d4")
        np.testing.assert_allclose(got, apply_view(d4, v), atol=1e-5)
    flips = tta_forward(f, x, mode="flips")
    got = tta_forward(f, np.ascontiguousarray(x[..., ::-1, :]), mode="flips")
    np.testing.assert_allclose(got, flips[..., ::-1, :], atol=1e-5)


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_predict_with_tta_keeps_grid_and_nodata(scene: Path, tmp_path: Path, mode: str) -> None:
    base = predict(scene, out=tmp_path / "a.tif", model=tiny_bundle(), size=64, overlap=16)
    rep = predict(scene, out=tmp_path / "b.tif", model=tiny_bundle(), size=64, overlap=16, tta=mode)
    a, grid_a, _ = read(tmp_path / "a.tif")
    b, grid_b, _ = read(tmp_path / "b.tif")
    src, src_grid, _ = read(scene)
    nodata = (src == 0).all(axis=0)
    assert grid_b == src_grid == grid_a
    assert (b[0][nodata] == 255).all() and (b[0][~nodata] != 255).all()
    assert rep.valid_pixels == base.valid_pixels
    assert 0 < (a != b).mean() < 0.5  # TTA changes some labels, not most
    with pytest.raises(ConfigError, match="tta 'd8'"):
        predict(scene, out=tmp_path / "c.tif", model=tiny_bundle(), tta="d8")

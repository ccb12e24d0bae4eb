"""CRF refinement: it cleans noisy probabilities inside clean edges; grid and nodata kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.errors import ConfigError
from geoseg.predict import predict
from geoseg.refine import CRFParams, crf_refine, refine_batch
from tests.test_predict import read, scene, tiny_bundle

__all__ = ["scene"]  # the fixture, imported for pytest

torch.set_num_threads(1)


def noisy_disc(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth (3 classes: a disc, a strip, background), a guide image and noisy probabilities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    truth = ((yy - 48) ** 2 + (xx - 40) ** 2 < 28**2).astype(int)
    truth[:, 80:] = 2
    guide = np.stack([truth * 1.0, -0.5 * truth, np.zeros((96, 96))])
    guide = guide + rng.normal(0, 0.2, guide.shape)
    logits = np.eye(3)[truth].transpose(2, 0, 1) + rng.normal(0, 1.0, (3, 96, 96))
    p = np.exp(logits)
    p /= p.sum(0)
    return truth, guide[None].astype(np.float32), p[None].astype(np.float32)


def test_crf_cleans_noise_and_keeps_edges() -> None:
    truth, guide, p = noisy_disc()
    before = (p[0].argmax(0) == truth).mean()
    q = crf_refine(p, guide)
    after = (q[0].argmax(0) == truth).mean()
    assert before < 0.75 and after > before + 0.15 and after > 0.95
    assert q.shape == p.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    # Without the image (flat guide), smoothing alone is worse at the edges than guided.
    flat = crf_refine(p, np.zeros_like(guide))
    edge = np.zeros_like(truth, dtype=bool)
    edge[1:-1, 1:-1] = (np.diff(truth, axis=0)[:-1, 1:-1] != 0) | (
        np.diff(truth, axis=1)[1:-1, :-1] != 0
    )
    grown = edge | np.roll(edge, 1, 0) | np.roll(edge, -1, 0) | np.roll(edge, 1, 1)
    assert (q[0].argmax(0) == truth)[grown].mean() > (flat[0].argmax(0) == truth)[grown].mean()


def test_invalid_pixels_keep_their_probabilities_and_send_nothing() -> None:
    _, guide, p = noisy_disc(1)
    valid = np.ones((1, 96, 96), dtype=bool)
    valid[:, :, :30] = False
    q = crf_refine(p, guide, valid)
    np.testing.assert_array_equal(q[..., :30], p[..., :30])
    # Invalid pixels send no message: what they hold does not change any valid pixel.
    p2 = p.copy()
    p2[..., :30] = np.roll(p2[..., :30], 1, axis=1)
    q2 = crf_refine(p2, guide, valid)
    np.testing.assert_allclose(q2[..., 30:], q[..., 30:], atol=1e-6)
    assert refine_batch("none", p, guide) is p
    with pytest.raises(ConfigError, match="use one of"):
        refine_batch("dense", p, guide)
    with pytest.raises(ConfigError):
        CRFParams(radius=0)


def test_predict_with_crf_keeps_grid_and_nodata(scene: Path, tmp_path: Path) -> None:
    predict(scene, out=tmp_path / "a.tif", model=tiny_bundle(), size=64, overlap=16)
    predict(scene, out=tmp_path / "b.tif", model=tiny_bundle(), size=64, overlap=16, refine="crf")
    a, _, _ = read(tmp_path / "a.tif")
    b, grid, _ = read(tmp_path / "b.tif")
    src, src_grid, _ = read(scene)
    nodata = (src == 0).all(axis=0)
    assert grid == src_grid
    assert (b[0][nodata] == 255).all() and (b[0][~nodata] != 255).all()
    assert 0 < (a != b).mean() < 0.5
    # Smoother: fewer label changes between horizontal neighbours than without the CRF.
    assert (np.diff(b[0], axis=1) != 0).sum() < (np.diff(a[0], axis=1) != 0).sum()

"""Tests of geoseg.stitch: blend weights and the streaming row-band stitcher."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from geoseg.grid import blend_weights, plan_windows, windows_by_row
from geoseg.stitch import TRIM_WEIGHT, RowBandStitcher, chip_weights


def test_weights_full_on_scene_border_trimmed_inside() -> None:
    w = chip_weights(Window(0, 0, 64, 64), (200, 64), 16, trim=4)
    assert w.shape == (64, 64) and (w > 0).all()
    assert w[0].min() == 1.0  # top row is the scene border
    assert np.isclose(w[-1, 10], TRIM_WEIGHT)  # bottom edge borders the next chip
    assert w[-8, 10] > 0.05


def test_trim_zero_is_grid_weights() -> None:
    win = Window(48, 48, 64, 64)
    np.testing.assert_allclose(
        chip_weights(win, (300, 300), 16, trim=0), blend_weights(win, (300, 300), 16)
    )


def _stream(shape: tuple[int, int], size: int, overlap: int, chips: dict) -> tuple[np.ndarray, int]:
    st = RowBandStitcher(shape=shape, num_classes=2, overlap=overlap)
    out = np.full((2, *shape), np.nan, dtype=np.float32)
    rows = list(windows_by_row(plan_windows(shape, size, overlap)))
    for i, (_, ws) in enumerate(rows):
        for w in ws:
            st.add(w, chips[(int(w.row_off), int(w.col_off))])
        upto = rows[i + 1][0] if i + 1 < len(rows) else shape[0]
        band = st.release(upto)
        assert band is not None
        r0, n = int(band.window.row_off), int(band.window.height)
        assert np.isnan(out[:, r0 : r0 + n]).all()  # every row released exactly once
        out[:, r0 : r0 + n] = band.probabilities
    assert st.top == shape[0]
    return out, st.peak_rows


def test_stitcher_equals_whole_scene_accumulation() -> None:
    shape, size, overlap = (230, 170), 64, 16
    rng = np.random.default_rng(0)
    wins = plan_windows(shape, size, overlap)
    chips = {
        (int(w.row_off), int(w.col_off)): rng.random((2, 64, 64)).astype(np.float32) for w in wins
    }
    acc = np.zeros((2, *shape))
    wsum = np.zeros(shape)
    for w in wins:
        p = chips[(int(w.row_off), int(w.col_off))]
        wt = chip_weights(w, shape, overlap)
        sl = np.s_[int(w.row_off) : int(w.row_off) + 64, int(w.col_off) : int(w.col_off) + 64]
        acc[:, sl[0], sl[1]] += p * wt
        wsum[sl] += wt
    out, peak = _stream(shape, size, overlap, chips)
    np.testing.assert_allclose(out, acc / wsum, rtol=1e-5, atol=1e-6)
    assert peak <= size + (size - overlap)


def test_constant_predictions_survive_blending() -> None:
    shape = (150, 150)
    chips = {
        (int(w.row_off), int(w.col_off)): np.stack(
            [np.full((64, 64), 0.3), np.full((64, 64), 0.7)]
        ).astype(np.float32)
        for w in plan_windows(shape, 64, 16)
    }
    out, _ = _stream(shape, 64, 16, chips)
    np.testing.assert_allclose(out[0], 0.3, rtol=1e-5)


def test_uncovered_rows_are_flagged_and_bad_adds_refused() -> None:
    st = RowBandStitcher(shape=(100, 50), num_classes=1, overlap=8)
    st.add(Window(0, 40, 50, 32), np.ones((1, 32, 50), dtype=np.float32))
    band = st.release(100)
    assert band is not None
    assert not band.covered[:40].any() and band.covered[40:72].all() and not band.covered[72:].any()
    with pytest.raises(ValueError, match="above released rows"):
        st.add(Window(0, 0, 50, 32), np.ones((1, 32, 50), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        RowBandStitcher(shape=(100, 50), num_classes=2, overlap=8).add(
            Window(0, 0, 50, 32), np.ones((1, 32, 50))
        )


def test_chip_stitcher_owns_release_and_validity() -> None:
    """ChipStitcher = RowBandStitcher + row bookkeeping + validity; skipped chips stay uncovered."""
    from geoseg.stitch import ChipStitcher

    shape, size, overlap = (150, 120), 64, 16
    rng = np.random.default_rng(1)
    wins = plan_windows(shape, size, overlap)
    chips = {
        (int(w.row_off), int(w.col_off)): rng.random((2, 64, 64)).astype(np.float32) for w in wins
    }
    skipped = {(int(wins[-1].row_off), int(wins[-1].col_off))}  # the bottom-right chip
    valid = np.ones(shape, dtype=bool)
    valid[10:20, 30:40] = False
    st = ChipStitcher(shape=shape, num_classes=2, overlap=overlap, windows=wins)
    bands = []
    for w in wins:
        key = (int(w.row_off), int(w.col_off))
        sl = np.s_[key[0] : key[0] + 64, key[1] : key[1] + 64]
        got = st.skip(w, valid[sl] & False) if key in skipped else st.add(w, chips[key], valid[sl])
        bands += got
        for b in got:  # a band is only released once no chip still to come touches it
            later = [
                v
                for v in wins[wins.index(w) + 1 :]
                if int(v.row_off) < b.window.row_off + b.window.height
            ]
            assert not later
    bands += st.finish()
    assert sum(int(b.window.height) for b in bands) == shape[0]
    ok = np.concatenate([b.ok for b in bands])
    probs = np.concatenate([b.probabilities for b in bands], axis=1)
    assert not ok[10:20, 30:40].any()  # invalid pixels are not written
    r0, c0 = skipped.pop()
    only_skipped = np.zeros(shape, dtype=bool)
    only_skipped[r0:, c0:] = True
    for w in wins[:-1]:
        only_skipped[int(w.row_off) : int(w.row_off) + 64, int(w.col_off) : int(w.col_off) + 64] = (
            False
        )
    assert only_skipped.any() and not ok[only_skipped].any()
    acc = np.zeros((2, *shape))
    wsum = np.zeros(shape)
    for w in wins[:-1]:
        sl = np.s_[int(w.row_off) : int(w.row_off) + 64, int(w.col_off) : int(w.col_off) + 64]
        wt = chip_weights(w, shape, overlap)
        acc[:, sl[0], sl[1]] += chips[(int(w.row_off), int(w.col_off))] * wt
        wsum[sl] += wt
    cov = wsum > 0
    np.testing.assert_allclose(
        probs[:, cov], (acc / np.where(cov, wsum, 1))[:, cov], rtol=1e-5, atol=1e-6
    )


def test_ring_buffer_wraps_grows_and_is_allocated_once() -> None:
    """Chips of mixed heights (the ring must grow mid-scene, keeping held rows) and many bands
    (rows wrap around the ring): the same as a whole-scene accumulation; a uniform plan
    allocates the ring once, at the first band's height."""
    shape, overlap = (400, 90), 8
    rng = np.random.default_rng(1)
    # (row_off, height): rows of chips, the third one taller than the first two
    rows = [(0, 40), (32, 40), (64, 72), (128, 40), (160, 40), (192, 80), (264, 80), (336, 64)]
    acc, wsum = np.zeros((2, *shape)), np.zeros(shape)
    st = RowBandStitcher(shape=shape, num_classes=2, overlap=overlap)
    out = np.full((2, *shape), np.nan)
    for i, (r0, h) in enumerate(rows):
        for c0 in (0, 40):
            w = Window(c0, r0, 50, h)
            p = rng.random((2, h, 50)).astype(np.float32)
            st.add(w, p)
            wt = chip_weights(w, shape, overlap)
            acc[:, r0 : r0 + h, c0 : c0 + 50] += p * wt
            wsum[r0 : r0 + h, c0 : c0 + 50] += wt
        band = st.release(rows[i + 1][0] if i + 1 < len(rows) else shape[0])
        assert band is not None
        b0, n = int(band.window.row_off), int(band.window.height)
        out[:, b0 : b0 + n] = np.where(band.covered, band.probabilities, 0.0)
    ref = np.where(wsum > 0, acc / np.where(wsum > 0, wsum, 1), 0.0)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)

    uniform = RowBandStitcher(shape=(1000, 64), num_classes=1, overlap=16)
    caps = set()
    for r0 in range(0, 1000 - 64 + 1, 48):
        uniform.add(Window(0, r0, 64, 64), np.ones((1, 64, 64), dtype=np.float32))
        buf = uniform._acc
        uniform.release(r0 + 48)
        assert uniform._acc is buf  # released rows are reused, not reallocated
        caps.add(uniform.capacity)
    assert caps == {64}


def test_chip_stitcher_releases_wide_rows_in_small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    import geoseg.stitch as st

    shape, size, overlap = (200, 150), 64, 16
    wins = plan_windows(shape, size, overlap)
    rng = np.random.default_rng(2)
    chips = [rng.random((2, 64, 64)).astype(np.float32) for _ in wins]

    def run() -> list[st.Band]:
        cs = st.ChipStitcher(shape=shape, num_classes=2, overlap=overlap, windows=wins)
        bands = []
        for w, p in zip(wins, chips, strict=True):
            bands += cs.add(w, p, np.ones(p.shape[1:], dtype=bool))
        return bands + cs.finish()

    whole = run()
    monkeypatch.setattr(st, "RELEASE_PIXELS", 150 * 10)  # at most 10 rows per band
    small = run()
    assert max(int(b.window.height) for b in small) == 10 < max(int(b.window.height) for b in whole)
    rows = [
        r
        for b in small
        for r in range(int(b.window.row_off), int(b.window.row_off + b.window.height))
    ]
    assert rows == list(range(shape[0]))  # each row once, in order
    np.testing.assert_array_equal(
        np.concatenate([b.probabilities for b in small], axis=1),
        np.concatenate([b.probabilities for b in whole], axis=1),
    )
    assert all(b.valid is not None and b.valid.shape == b.covered.shape for b in small)

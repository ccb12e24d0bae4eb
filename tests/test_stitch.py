"""Tests of geoseg.stitch: blend weights and the streaming cell stitcher."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from geoseg.grid import blend_weights, plan_windows
from geoseg.stitch import TRIM_WEIGHT, ChipStitcher, chip_weights


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


def _assemble(bands: list, shape: tuple[int, int], k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The scene from handed-out pieces (NaN where none); each pixel must come exactly once."""
    out = np.full((k, *shape), np.nan, dtype=np.float32)
    covered = np.zeros(shape, dtype=bool)
    for b in bands:
        sl = b.window.toslices()
        assert np.isnan(out[(slice(None), *sl)]).all()  # every pixel handed out exactly once
        out[(slice(None), *sl)] = b.probabilities
        covered[sl] = b.covered
    return out, covered


def _reference(wins: list[Window], chips: list[np.ndarray], shape: tuple[int, int], overlap: int):
    acc = np.zeros((chips[0].shape[0], *shape))
    wsum = np.zeros(shape)
    for w, p in zip(wins, chips, strict=True):
        sl, wt = w.toslices(), chip_weights(w, shape, overlap)
        acc[(slice(None), *sl)] += p * wt
        wsum[sl] += wt
    return np.where(wsum > 0, acc / np.where(wsum > 0, wsum, 1), 0.0), wsum > 0


def _stream(
    shape: tuple[int, int], wins: list[Window], chips: list[np.ndarray], overlap: int
) -> tuple[np.ndarray, np.ndarray, ChipStitcher]:
    st = ChipStitcher(shape=shape, num_classes=chips[0].shape[0], overlap=overlap, windows=wins)
    bands = []
    for n, (w, p) in enumerate(zip(wins, chips, strict=True)):
        got = st.add(w, p, np.ones(p.shape[1:], dtype=bool))
        for b in got:  # a piece is only handed out once no chip still to come touches it
            assert not any(_touches(v, b.window) for v in wins[n + 1 :])
        bands += got
    bands += st.finish()
    out, covered = _assemble(bands, shape, chips[0].shape[0])
    assert not np.isnan(out).any() and st.held_pixels == 0
    return out, covered, st


def _touches(a: Window, b: Window) -> bool:
    return bool(
        a.row_off < b.row_off + b.height
        and b.row_off < a.row_off + a.height
        and a.col_off < b.col_off + b.width
        and b.col_off < a.col_off + a.width
    )


def _random_chips(wins: list[Window], k: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((k, int(w.height), int(w.width))).astype(np.float32) for w in wins]


def test_stitcher_equals_whole_scene_accumulation() -> None:
    shape, size, overlap = (230, 170), 64, 16
    wins = plan_windows(shape, size, overlap)
    chips = _random_chips(wins)
    out, covered, st = _stream(shape, wins, chips, overlap)
    ref, ref_covered = _reference(wins, chips, shape, overlap)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert covered.all() and ref_covered.all()
    # the overlap rows across the width and a few chips, not a band of chip rows (112 x 170)
    assert 0 < st.peak_pixels <= overlap * shape[1] + 3 * size * size < (size + 48) * shape[1]


def test_constant_predictions_survive_blending() -> None:
    shape = (150, 150)
    wins = plan_windows(shape, 64, 16)
    chips = [np.stack([np.full((64, 64), 0.3), np.full((64, 64), 0.7)]).astype(np.float32)] * len(
        wins
    )
    out, _, _ = _stream(shape, wins, chips, 16)
    np.testing.assert_allclose(out[0], 0.3, rtol=1e-5)


def test_wide_scene_holds_the_overlap_rows_not_a_band_of_chip_rows() -> None:
    """After a row of chips, the next row's cells hold only the rows the chips reached into."""
    shape, size, overlap = (300, 2000), 64, 16
    wins = plan_windows(shape, size, overlap)
    st = ChipStitcher(shape=shape, num_classes=1, overlap=overlap, windows=wins)
    first_row = [w for w in wins if w.row_off == 0]
    out = []
    for w in first_row:
        out += st.add(w, np.ones((1, 64, 64), np.float32), np.ones((64, 64), bool))
    # the row's cells leave joined along their strip: one write, not one per chip
    assert [b.window for b in out] == [Window(0, 0, shape[1], size - overlap)]
    # the first row's cells are out; what is held is rows 48..64 of the next: 16 x 2000
    assert st.held_pixels == overlap * shape[1]
    peak_rows = st.peak_pixels / shape[1]
    assert peak_rows < 2 * overlap + 1  # a band of chip rows would be 64 + 48
    for w in wins[len(first_row) :]:
        st.add(w, np.ones((1, 64, 64), np.float32), np.ones((64, 64), bool))
    st.finish()
    assert st.held_pixels == 0 and st.peak_pixels / shape[1] < 2 * overlap + 1


def test_mixed_heights_gaps_and_uncovered_pixels() -> None:
    """Rows of chips of mixed heights and widths, a missing chip (an AOI hole) and rows no
    chip touches: the same as a whole-scene accumulation, uncovered where no chip is."""
    shape, overlap = (400, 90), 8
    rows = [(0, 40), (32, 40), (64, 72), (128, 40), (192, 80), (264, 80), (336, 40)]
    wins = [
        Window(c0, r0, 50, h)
        for r0, h in rows
        for c0 in (0, 40)
        if (r0, c0) != (128, 40)  # a hole
    ]
    chips = _random_chips(wins, seed=1)
    out, covered, _ = _stream(shape, wins, chips, overlap)
    ref, ref_covered = _reference(wins, chips, shape, overlap)
    np.testing.assert_array_equal(covered, ref_covered)
    assert not covered[168:192].any() and not covered[376:].any()  # rows no chip touches
    np.testing.assert_allclose(np.where(covered, out, 0), ref, rtol=1e-5, atol=1e-6)


def test_bad_adds_refused() -> None:
    wins = plan_windows((100, 50), 32, 8)
    st = ChipStitcher(shape=(100, 50), num_classes=1, overlap=8, windows=wins)
    one = np.ones((1, 32, 32), np.float32)
    st.add(wins[0], one, np.ones((32, 32), bool))
    st.add(wins[1], one, np.ones((32, 32), bool))  # the first row is done: its cells are out
    with pytest.raises(ValueError, match="already handed out"):
        st.add(wins[0], one, np.ones((32, 32), bool))
    with pytest.raises(ValueError, match="shape"):
        st.add(wins[2], np.ones((2, 32, 32), np.float32), np.ones((32, 32), bool))
    with pytest.raises(ValueError, match="not in the plan"):
        st.add(Window(3, 3, 32, 32), one, np.ones((32, 32), bool))
    with pytest.raises(ValueError, match="increasing column order"):
        ChipStitcher(shape=(100, 50), num_classes=1, overlap=8, windows=wins[:2][::-1])
    with pytest.raises(ValueError, match="not a piece"):
        st.take(Window(0, 0, 5, 5))


def test_chip_stitcher_owns_release_and_validity() -> None:
    """Validity is the union of the chips' valid masks; skipped chips stay uncovered."""
    shape, size, overlap = (150, 120), 64, 16
    wins = plan_windows(shape, size, overlap)
    chips = _random_chips(wins, seed=1)
    skipped = len(wins) - 1  # the bottom-right chip
    valid = np.ones(shape, dtype=bool)
    valid[10:20, 30:40] = False
    st = ChipStitcher(shape=shape, num_classes=2, overlap=overlap, windows=wins)
    bands = []
    for n, w in enumerate(wins):
        sl = w.toslices()
        bands += st.skip(w, valid[sl] & False) if n == skipped else st.add(w, chips[n], valid[sl])
    bands += st.finish()
    probs, _ = _assemble(bands, shape)
    ok = np.zeros(shape, dtype=bool)
    for b in bands:
        ok[b.window.toslices()] = b.ok
    assert not ok[10:20, 30:40].any()  # invalid pixels are not written
    ref, cov = _reference(wins[:-1], chips[:-1], shape, overlap)
    assert (~cov).any() and not ok[~cov].any()  # only the skipped chip's pixels: not written
    np.testing.assert_allclose(probs[:, cov], ref[:, cov], rtol=1e-5, atol=1e-6)


def test_a_second_stitcher_gives_the_same_pieces_back() -> None:
    """The cloud model's stitcher accumulates the inferred chips; take() hands out the pieces
    the land-cover stitcher released, blended the same way."""
    shape, size, overlap = (200, 150), 64, 16
    wins = plan_windows(shape, size, overlap)
    chips = _random_chips(wins, seed=2)
    main = ChipStitcher(shape=shape, num_classes=2, overlap=overlap, windows=wins)
    second = ChipStitcher(shape=shape, num_classes=2, overlap=overlap, windows=wins)
    for w, p in zip(wins, chips, strict=True):
        second.accumulate(w, p[::-1].copy())  # a batch ahead of the main stitcher
        for b in main.add(w, p, np.ones(p.shape[1:], bool)):
            twin = second.take(b.window)
            assert twin.window == b.window
            np.testing.assert_allclose(twin.probabilities, b.probabilities[::-1], rtol=1e-6)
    assert second.held_pixels == 0


def test_rows_no_chip_touches_come_out_in_small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    import geoseg.stitch as stitch

    monkeypatch.setattr(stitch, "RELEASE_PIXELS", 150 * 10)  # at most 10 rows per band
    shape = (200, 150)
    wins = [w for w in plan_windows(shape, 64, 16) if w.row_off >= 96]  # an AOI's lower half
    st = ChipStitcher(shape=shape, num_classes=2, overlap=16, windows=wins)
    first = st.add(wins[0], np.ones((2, 64, 64), np.float32), np.ones((64, 64), bool))
    gap = [b for b in first if b.window.row_off < 96]
    assert sum(int(b.window.height) for b in gap) == 96
    assert max(int(b.window.height) for b in gap) == 10 and not any(b.covered.any() for b in gap)

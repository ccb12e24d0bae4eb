from __future__ import annotations

import itertools

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.errors import ChipSizeError, GridError
from geoseg.grid import (
    Grid,
    axis_spans,
    axis_starts,
    blend_weights,
    block_windows,
    min_edge_chip,
    plan_windows,
    ramp,
    windows_by_row,
)

sizes = st.integers(min_value=1, max_value=300)


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, int, int, int]:
    size = draw(st.integers(min_value=1, max_value=96))
    overlap = draw(st.integers(min_value=0, max_value=size - 1))
    height = draw(st.integers(min_value=1, max_value=400))
    width = draw(st.integers(min_value=1, max_value=400))
    return height, width, size, overlap


@given(plans())
@settings(max_examples=300, deadline=None)
def test_plan_covers_every_pixel_inside_the_scene(plan: tuple[int, int, int, int]) -> None:
    height, width, size, overlap = plan
    windows = plan_windows((height, width), size, overlap)
    cover = np.zeros((height, width), dtype=np.int32)
    for w in windows:
        r, c, h, ww = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
        assert r >= 0 and c >= 0 and r + h <= height and c + ww <= width
        assert h == min(size, height) and ww == min(size, width)
        cover[r : r + h, c : c + ww] += 1
    assert cover.min() >= 1
    assert cover[-1, :].min() >= 1 and cover[:, -1].min() >= 1


@given(plans())
@settings(max_examples=300, deadline=None)
def test_neighbours_overlap_at_least_as_asked(plan: tuple[int, int, int, int]) -> None:
    height, width, size, overlap = plan
    for length in (height, width):
        starts = axis_starts(length, size, overlap)
        assert starts == sorted(set(starts))
        for a, b in itertools.pairwise(starts):
            assert a + size - b >= overlap  # overlap as asked (or more at the last chip)
            assert b - a <= size - overlap  # never a stride larger than asked
        if len(starts) > 2:
            # all but the last step are exactly the asked stride
            steps = {b - a for a, b in itertools.pairwise(starts[:-1])}
            assert steps <= {size - overlap}


def test_scene_smaller_than_chip_gets_one_clipped_window() -> None:
    assert plan_windows((10, 7), 256, 32) == [Window(0, 0, 7, 10)]


def test_last_row_and_column_are_covered_exactly() -> None:
    windows = plan_windows((1000, 601), 256, 64)
    assert max(int(w.row_off + w.height) for w in windows) == 1000
    assert max(int(w.col_off + w.width) for w in windows) == 601
    assert axis_starts(601, 256, 64) == [0, 192, 345]


@pytest.mark.parametrize(
    ("size", "overlap"), [(0, 0), (-5, 0), (16, 16), (16, 20), (16, -1), (2.5, 0)]
)
def test_bad_chip_sizes_raise(size: int, overlap: int) -> None:
    with pytest.raises(ChipSizeError, match="--"):
        plan_windows((100, 100), size, overlap)


def test_windows_by_row_groups_row_major_windows() -> None:
    windows = plan_windows((100, 80), 32, 8)
    rows = list(windows_by_row(windows))
    assert [r for r, _ in rows] == axis_starts(100, 32, 8)
    assert all(len(ws) == len(axis_starts(80, 32, 8)) for _, ws in rows)


@given(plans(), st.sampled_from(["hann", "linear"]))
@settings(max_examples=200, deadline=None)
def test_blend_weights_positive_and_normalise_to_one(
    plan: tuple[int, int, int, int], kind: str
) -> None:
    height, width, size, overlap = plan
    total = np.zeros((height, width))
    for w in plan_windows((height, width), size, overlap):
        wt = blend_weights(w, (height, width), overlap, kind)  # type: ignore[arg-type]
        assert wt.shape == (int(w.height), int(w.width))
        assert wt.min() > 0 and wt.max() <= 1
        r, c = int(w.row_off), int(w.col_off)
        total[r : r + wt.shape[0], c : c + wt.shape[1]] += wt
    assert total.min() > 0
    # normalised weights sum to one everywhere
    norm_sum = np.zeros_like(total)
    for w in plan_windows((height, width), size, overlap):
        wt = blend_weights(w, (height, width), overlap, kind)  # type: ignore[arg-type]
        r, c = int(w.row_off), int(w.col_off)
        norm_sum[r : r + wt.shape[0], c : c + wt.shape[1]] += (
            wt / total[r : r + wt.shape[0], c : c + wt.shape[1]]
        )
    np.testing.assert_allclose(norm_sum, 1.0, rtol=1e-6)


def test_blend_weights_full_at_scene_border_and_partition_of_unity() -> None:
    shape = (64, 112)  # exact stride fit: starts 0, 48 along x
    windows = plan_windows(shape, 64, 16)
    assert [int(w.col_off) for w in windows] == [0, 48]
    left = blend_weights(windows[0], shape, 16)
    right = blend_weights(windows[1], shape, 16)
    assert left[:, 0].min() == 1.0 and right[:, -1].min() == 1.0  # scene border not reduced
    assert left[0].min() < 1.0  # inner edge fades
    np.testing.assert_allclose(
        left[:, 48:] + right[:, :16], 1.0, atol=1e-6
    )  # hann is a partition of unity


def test_ramp_is_symmetric_partition() -> None:
    r = ramp(10)
    np.testing.assert_allclose(r + r[::-1], 1.0)
    assert (np.diff(r) > 0).all()


def test_grid_is_an_immutable_hashable_value() -> None:
    g = Grid(CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5000000), (48, 64))
    h = Grid(CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5000000), (48, 64))
    assert g == h and hash(g) == hash(h) and len({g, h}) == 1
    with pytest.raises(AttributeError):
        g.shape = (1, 1)  # type: ignore[misc]
    assert g.resolution == (10.0, 10.0)
    assert tuple(g.bounds) == (500000.0, 5000000.0 - 480, 500000.0 + 640, 5000000.0)
    assert g.pixel_area == 100.0
    sub = g.window_grid(Window(16, 8, 32, 20))
    assert sub.shape == (20, 32)
    assert sub.transform.c == 500000 + 160 and sub.transform.f == 5000000 - 80
    assert sub != g


def test_grid_from_bounds_keeps_last_partial_pixel() -> None:
    g = Grid.from_bounds((0, 0, 105, 50), 10, 3857)
    assert g.shape == (5, 11)
    assert g.crs == CRS.from_epsg(3857)


@pytest.mark.parametrize("shape", [(0, 5), (5, -1), (2.5, 3)])
def test_grid_rejects_bad_shapes(shape: tuple[int, int]) -> None:
    with pytest.raises(GridError):
        Grid(None, Affine.identity(), shape)


def test_block_windows_cover_once() -> None:
    wins = block_windows((50, 70), 32)
    hits = np.zeros((50, 70), int)
    for w in wins:
        hits[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert (hits == 1).all() and len(wins) == 6


@given(plans())
@settings(max_examples=300, deadline=None)
def test_ragged_plan_covers_every_pixel_with_fewer_inferred(
    plan: tuple[int, int, int, int],
) -> None:
    height, width, size, overlap = plan
    full = plan_windows((height, width), size, overlap)
    ragged = plan_windows((height, width), size, overlap, ragged=True)
    cover = np.zeros((height, width), dtype=np.int32)
    for w in ragged:
        r, c, h, ww = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
        assert r >= 0 and c >= 0 and r + h <= height and c + ww <= width
        cover[r : r + h, c : c + ww] += 1
    assert cover.min() >= 1
    assert len(ragged) == len(full)  # the same chips, the last row/column shorter
    assert sum(int(w.height * w.width) for w in ragged) <= sum(
        int(w.height * w.width) for w in full
    )
    for length in (height, width):
        spans = axis_spans(length, size, overlap, ragged=True)
        assert [s for s, _ in spans] == axis_starts(length, size, overlap, ragged=True)
        assert all(n == min(size, length) for _, n in spans[:-1])  # only the last is ragged
        assert spans[-1][0] + spans[-1][1] == length
        assert spans[-1][1] >= min(length, min_edge_chip(size, overlap))
        for (a, n), (b, _) in itertools.pairwise(spans):
            assert a + n - b >= overlap
            assert b - a <= size - overlap


def test_ragged_last_chip_keeps_the_stride_or_half_a_chip() -> None:
    # 2048 = 4 x 448 + 256: the last chip stays on the stride, 256 long, instead of 512
    assert axis_spans(2048, 512, 64, ragged=True)[-1] == (1792, 256)
    assert axis_spans(2048, 512, 64)[-1] == (1536, 512)
    # 1860 would leave a 68-row chip on the stride: it is half a chip (256) instead
    assert axis_spans(1860, 512, 64, ragged=True)[-1] == (1604, 256)
    assert axis_spans(512, 512, 64, ragged=True) == [(0, 512)]

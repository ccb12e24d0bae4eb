from __future__ import annotations

import itertools

import numpy as np
import pytest

from geoseg.blocks import (
    SPLITS,
    BlockStats,
    Footprint,
    assign_blocks,
    block_sizes,
    check_split,
    home_block,
    no_split,
    plan_split,
    resolve_chips,
)
from geoseg.errors import ChipSizeError
from geoseg.grid import plan_windows


def _chips(
    shape: tuple[int, int], size: int, overlap: int, labels: np.ndarray, res: float = 10.0
) -> list[Footprint]:
    """Footprints of the chips of a ``shape`` grid (origin 500000, 5000000) with class pixels."""
    x0, y0 = 500000.0, 5000000.0
    n_cls = int(labels.max())
    out = []
    for w in plan_windows(shape, size, overlap):
        r, c = int(w.row_off), int(w.col_off)
        sub = labels[r : r + size, c : c + size]
        px = tuple(int(np.count_nonzero(sub == k)) for k in range(1, n_cls + 1))
        bounds = (x0 + c * res, y0 - (r + size) * res, x0 + (c + size) * res, y0 - r * res)
        out.append(Footprint("utm", bounds, (res, res), px))
    return out


def _dense(shape: tuple[int, int], n_cls: int = 4, cell: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    coarse = rng.integers(1, n_cls + 1, size=(h // cell + 1, w // cell + 1))
    return np.kron(coarse, np.ones((cell, cell), int))[:h, :w]


def _gap(a: Footprint, b: Footprint) -> float:
    """Chebyshev gap between two footprints in pixels (negative when they overlap)."""
    dx = max(b.bounds[0] - a.bounds[2], a.bounds[0] - b.bounds[2])
    dy = max(b.bounds[1] - a.bounds[3], a.bounds[1] - b.bounds[3])
    return max(dx, dy) / a.res[0]


def test_check_split() -> None:
    assert check_split((7, 1.5, 1.5)) == pytest.approx((0.7, 0.15, 0.15))
    assert check_split((1, 0)) == (1.0, 0.0, 0.0)
    with pytest.raises(ChipSizeError, match=r"train split empty.*--no-split"):
        check_split((0, 0, 1))
    with pytest.raises(ChipSizeError, match=r"--split 0\.7,0\.15,0\.15"):
        check_split((0.5, -1, 0))


def test_assign_bare_keys_proportions_and_determinism() -> None:
    keys = [("c", x, y) for x in range(10) for y in range(10)]
    a = assign_blocks(keys, (0.7, 0.15, 0.15), seed=1)
    assert a == assign_blocks(list(reversed(keys)), (0.7, 0.15, 0.15), seed=1)
    counts = {s: sum(v == s for v in a.values()) for s in SPLITS}
    assert counts == {"train": 70, "val": 15, "test": 15}
    assert a != assign_blocks(keys, (0.7, 0.15, 0.15), seed=2)
    # Three blocks and three asked splits: one each, whatever the fractions.
    three = assign_blocks(keys[:3], (0.9, 0.05, 0.05), seed=0)
    assert sorted(three.values()) == ["test", "train", "val"]


def test_assign_every_class_reaches_train_and_classes_spread() -> None:
    # 12 blocks; class 3 only in one block, class 2 in two; classes 1 and 4 everywhere.
    stats = {}
    for k in range(12):
        px = [100, 30 if k in (4, 9) else 0, 50 if k == 7 else 0, 20]
        stats[("c", k, 0)] = BlockStats(chips=4, pixels=tuple(px))
    for seed in range(5):
        a = assign_blocks(stats, (0.6, 0.2, 0.2), seed=seed)
        assert a[("c", 7, 0)] == "train"  # the only block of class 3
        assert "train" in {a[("c", 4, 0)], a[("c", 9, 0)]}  # class 2 reaches train
        counts = {s: sum(v == s for v in a.values()) for s in SPLITS}
        assert counts["val"] >= 2 and counts["test"] >= 2 and counts["train"] >= 6


def test_resolve_keeps_splits_apart_and_drops_only_what_it_must() -> None:
    shape, size, overlap, buffer = (500, 460), 64, 16, 24
    chips = _chips(shape, size, overlap, _dense(shape))
    for block, seed in itertools.product((48, 96, 200), (0, 3)):
        homes = {home_block(fp, block) for fp in chips}
        block_split = assign_blocks(sorted(homes), (0.6, 0.2, 0.2), seed=seed)
        splits = resolve_chips(chips, block_split, block_size=block, buffer=buffer)
        kept = [i for i, s in enumerate(splits) if s is not None]
        assert {splits[i] for i in kept} == set(SPLITS)
        for i, j in itertools.combinations(kept, 2):  # no leakage, buffer kept
            if splits[i] != splits[j]:
                assert _gap(chips[i], chips[j]) >= buffer - 1e-6, (block, i, j)
        for i, s in enumerate(splits):  # a dropped chip could not have been kept
            if s is None:
                own = block_split[home_block(chips[i], block)]
                assert any(
                    splits[j] not in (None, own) and _gap(chips[i], chips[j]) < buffer for j in kept
                ), (block, i)


@pytest.mark.parametrize("shape", [(300, 450), (500, 500), (97, 1000)])
@pytest.mark.parametrize("size", [64, 128])
def test_plan_auto_block_size_meets_the_split(shape: tuple[int, int], size: int) -> None:
    overlap = size // 4
    chips = _chips(shape, size, overlap, _dense(shape, seed=shape[0]))
    plan = plan_split(chips, (0.7, 0.15, 0.15), size=size, overlap=overlap, extent=max(shape))
    assert plan.problems() == [], plan
    assert plan.auto and plan.block_size in block_sizes(size, overlap, max(shape))
    assert all(plan.chips[s] > 0 for s in SPLITS) and plan.chips["train"] >= plan.chips["val"]
    assert plan.kept + plan.dropped == len(chips)
    total = np.sum([fp.pixels for fp in chips], axis=0)
    assert all(plan.pixels["train"][k] > 0 for k in range(len(total)) if total[k] > 0)
    again = plan_split(chips, (0.7, 0.15, 0.15), size=size, overlap=overlap, extent=max(shape))
    assert again == plan  # deterministic for a seed


def test_plan_reports_an_impossible_split() -> None:
    shape = (300, 450)
    labels = np.zeros(shape, int)
    labels[10:60, 10:60] = 1  # labels in one corner: the chips there all overlap
    chips = [fp for fp in _chips(shape, 64, 16, labels) if sum(fp.pixels) > 0]
    plan = plan_split(chips, (0.7, 0.15, 0.15), size=64, overlap=16, extent=450)
    assert plan.problems() and any("gets no chip" in p for p in plan.problems())
    assert plan_split(chips, (1, 0, 0), size=64, overlap=16, extent=450).problems() == []
    ns = no_split(chips)
    assert ns.chips == {"train": len(chips), "val": 0, "test": 0} and ns.dropped == 0

"""The spatial block split: pure arithmetic that deals map blocks of chips to train/val/test.

No I/O: the tiler (:mod:`geoseg.tiling`) gives one :class:`Footprint` per candidate chip
(its bounds, pixel size and labelled pixels per class) and gets back a :class:`SplitPlan`.

* **Blocks** are squares of ``block_size`` pixels anchored at the CRS origin, so overlapping
  scenes in one CRS share them. A chip's *home* block is the block of its centre.
* **Assignment** (:func:`assign_blocks`) is a seeded greedy stratification: blocks are
  shuffled with the seed, then placed class by class, rarest class first; each block goes to
  the split that most lacks that class's pixels and chips, except that the first block of a
  class always goes to train. So train always gets chips, every class reaches train, and each
  asked split (fraction > 0) gets at least one block when there are enough blocks.
* **Resolution** (:func:`resolve_chips`): a chip keeps its home block's split unless it comes
  within ``buffer`` pixels of a chip already kept in another split; chips lying wholly in
  blocks of their own split are placed first. Only chips that must go for the buffer are
  dropped, and chips of different splits never share a pixel nor come closer than the buffer.
* **Block size** (:func:`plan_split` without ``block_size``): multiples of the chip stride are
  tried and the plan kept that meets the split (train, every asked split and every class in
  train), with at least two blocks in its smallest split where possible, then the most chips
  kept in proportions closest to the fractions asked.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from geoseg.errors import ChipSizeError

__all__ = [
    "SPLITS",
    "BlockStats",
    "Footprint",
    "SplitName",
    "SplitPlan",
    "assign_blocks",
    "block_sizes",
    "check_split",
    "home_block",
    "no_split",
    "plan_split",
    "resolve_chips",
]

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, SplitName, SplitName] = ("train", "val", "test")
BlockKey = tuple[str, int, int]
Bounds = tuple[float, float, float, float]

#: multiples of the chip stride tried as block sizes when none is given
BLOCK_MULTIPLES = (1, 2, 3, 4, 6, 8, 12, 16)
#: blocks wanted in the smallest asked split when choosing the block size
WANTED_BLOCKS = 2


def check_split(split: Sequence[float]) -> tuple[float, float, float]:
    """Normalised ``(train, val, test)`` fractions; a missing test fraction is 0.

    Raises:
        ChipSizeError: not two or three non-negative finite numbers, or no train fraction.
    """
    vals = [float(v) for v in split]
    if len(vals) == 2:
        vals.append(0.0)
    if len(vals) != 3 or any(v < 0 or not math.isfinite(v) for v in vals) or sum(vals) <= 0:
        raise ChipSizeError(
            f"split must be three non-negative fractions train,val,test, got {list(split)}; "
            "e.g. --split 0.7,0.15,0.15"
        )
    if vals[0] <= 0:
        raise ChipSizeError(
            f"split {','.join(f'{v:g}' for v in vals)} leaves the train split empty; give train "
            "a positive fraction (e.g. --split 0.7,0.15,0.15), or --no-split for all chips in one"
        )
    total = sum(vals)
    return (vals[0] / total, vals[1] / total, vals[2] / total)


@dataclass(frozen=True)
class Footprint:
    """One candidate chip as the split sees it.

    Attributes:
        crs: a key of the chip's CRS (chips in different CRSs are never compared).
        bounds: ``(left, bottom, right, top)`` in CRS units.
        res: pixel size ``(x, y)`` in CRS units.
        pixels: labelled pixels per class (class-map order).
    """

    crs: str
    bounds: Bounds
    res: tuple[float, float]
    pixels: tuple[int, ...] = ()


@dataclass(frozen=True)
class BlockStats:
    """What a block holds: candidate chips (by home block) and their labelled pixels per class."""

    chips: int = 1
    pixels: tuple[int, ...] = ()


def _step(fp: Footprint, block_size: int) -> tuple[float, float]:
    return (block_size * fp.res[0], block_size * fp.res[1])


def home_block(fp: Footprint, block_size: int) -> BlockKey:
    """The block (``(crs, ix, iy)``) holding the chip's centre."""
    sx, sy = _step(fp, block_size)
    left, bottom, right, top = fp.bounds
    return (fp.crs, math.floor((left + right) / 2 / sx), math.floor((bottom + top) / 2 / sy))


def _blocks_under(crs: str, b: Bounds, step: tuple[float, float]) -> list[BlockKey]:
    def rng(lo: float, hi: float, s: float) -> range:
        return range(math.floor(lo / s + 1e-9), math.ceil(hi / s - 1e-9))

    return [(crs, ix, iy) for iy in rng(b[1], b[3], step[1]) for ix in rng(b[0], b[2], step[0])]


def _block_stats(chips: Sequence[Footprint], block_size: int) -> dict[BlockKey, BlockStats]:
    n_cls = max((len(fp.pixels) for fp in chips), default=0)
    counts: dict[BlockKey, list[Any]] = {}
    for fp in chips:
        entry = counts.setdefault(home_block(fp, block_size), [0, np.zeros(n_cls, np.int64)])
        entry[0] += 1
        entry[1][: len(fp.pixels)] += np.asarray(fp.pixels, dtype=np.int64)
    return {k: BlockStats(c, tuple(int(v) for v in px)) for k, (c, px) in counts.items()}


# ---- assignment -------------------------------------------------------------------------------
def assign_blocks(
    blocks: Mapping[Any, BlockStats] | Iterable[Any],
    split: Sequence[float],
    *,
    seed: int = 0,
) -> dict[Any, SplitName]:
    """Deal blocks to train/val/test by chips and class pixels (deterministic for a seed).

    Blocks are shuffled with ``seed``. First, for every class (rarest first) that train lacks,
    the block holding most of it goes to train. Then the other blocks, largest first, each go
    to the asked split that most lacks chips and the block's classes. Last, an asked split
    left without a block takes one from the split with most blocks.

    Args:
        blocks: block keys with what they hold, or bare keys (one chip, no classes each).
        split: train, val, test fractions.
        seed: seed of the shuffle that orders blocks of equal size.

    Returns:
        The split of every block. With bare keys the counts match the fractions (rounded).
    """
    fractions = np.asarray(check_split(split))
    stats = (
        dict(blocks)
        if isinstance(blocks, Mapping)
        else {k: BlockStats() for k in dict.fromkeys(blocks)}
    )
    keys = sorted(stats, key=repr)
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    n_cls = max((len(s.pixels) for s in stats.values()), default=0)
    px = {
        k: np.pad(np.asarray(stats[k].pixels, float), (0, n_cls - len(stats[k].pixels)))
        for k in keys
    }
    chips = {k: float(stats[k].chips) for k in keys}
    deal = _Deal(fractions, sum(px.values(), np.zeros(n_cls)), sum(chips.values()))
    out: dict[Any, SplitName] = {}
    for c in np.argsort(deal.total_px, kind="stable"):
        if deal.total_px[c] > 0 and deal.got_px[0, c] == 0:
            k = max((k for k in order if k not in out), key=lambda k: px[k][c])
            out[k] = "train"
            deal.add(0, px[k], chips[k])
    for k in sorted((k for k in order if k not in out), key=lambda k: -chips[k]):
        s = deal.pick(px[k])
        out[k] = SPLITS[s]
        deal.add(s, px[k], chips[k])
    _give_empty_splits_a_block(out, fractions, px)
    return out


@dataclass
class _Deal:
    """Running totals of the greedy placement."""

    fractions: np.ndarray
    total_px: np.ndarray
    total_chips: float
    got_px: np.ndarray = field(init=False)
    got_chips: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.got_px = np.zeros((3, self.total_px.size))
        self.got_chips = np.zeros(3)

    def pick(self, px: np.ndarray) -> int:
        """The asked split that most lacks chips and the classes of a block (``px``)."""
        need = (self.fractions * self.total_chips - self.got_chips) / max(self.total_chips, 1.0)
        held = px.sum()
        if held > 0:
            share = px / held
            want = self.fractions[:, None] * self.total_px[None] - self.got_px
            need = need + (want / np.maximum(self.total_px, 1.0)[None] * share[None]).sum(axis=1)
        need = np.where(self.fractions > 0, need, -np.inf)
        return int(np.argmax(need))

    def add(self, s: int, px: np.ndarray, chips: float) -> None:
        """Count a block in split ``s``."""
        self.got_px[s] += px
        self.got_chips[s] += chips


def _give_empty_splits_a_block(
    out: dict[Any, SplitName], fractions: np.ndarray, px: Mapping[Any, np.ndarray]
) -> None:
    """Move one block into every asked split that got none, from the split with most blocks.

    The block moved is the one whose classes train keeps elsewhere (fewest pixels first).
    """
    for s in (1, 2):
        name = SPLITS[s]
        if fractions[s] <= 0 or name in out.values():
            continue
        counts = {n: sum(v == n for v in out.values()) for n in SPLITS}
        donor = max(SPLITS, key=lambda n: counts[n])
        if counts[donor] < 2:
            return
        n_cls = len(next(iter(px.values())))
        train_px = sum((px[k] for k, v in out.items() if v == "train"), np.zeros(n_cls))
        movable = [
            k
            for k, v in out.items()
            if v == donor
            and (donor != "train" or not np.any((train_px - px[k] <= 0) & (px[k] > 0)))
        ]
        if movable:
            out[min(movable, key=lambda k: (float(px[k].sum()), repr(k)))] = name


# ---- resolution -------------------------------------------------------------------------------
def _own_share(
    fp: Footprint,
    grown: Bounds,
    split: SplitName,
    block_split: Mapping[Any, SplitName],
    block_size: int,
) -> float:
    """Fraction of the grown chip lying in blocks of its own split (or in no split's block)."""
    sx, sy = _step(fp, block_size)
    area = (grown[2] - grown[0]) * (grown[3] - grown[1])
    own = 0.0
    for key in _blocks_under(fp.crs, grown, (sx, sy)):
        if block_split.get(key, split) != split:
            continue
        _, ix, iy = key
        w = min(grown[2], (ix + 1) * sx) - max(grown[0], ix * sx)
        h = min(grown[3], (iy + 1) * sy) - max(grown[1], iy * sy)
        own += max(w, 0.0) * max(h, 0.0)
    return own / area if area > 0 else 1.0


def _grow(fp: Footprint, buffer: int) -> Bounds:
    gx, gy = buffer * fp.res[0], buffer * fp.res[1]
    left, bottom, right, top = fp.bounds
    return (left - gx, bottom - gy, right + gx, top + gy)


def _meets(a: Bounds, b: Bounds, tol: float) -> bool:
    return a[0] < b[2] - tol and b[0] < a[2] - tol and a[1] < b[3] - tol and b[1] < a[3] - tol


def resolve_chips(
    chips: Sequence[Footprint],
    block_split: Mapping[Any, SplitName],
    *,
    block_size: int,
    buffer: int,
) -> list[SplitName | None]:
    """The split of every chip, or None where the chip must go for the buffer.

    A chip takes its home block's split. Chips are placed in turns, each turn to the split
    with the smallest part of its chips placed so far (so small val/test islands are not
    eaten by train); within a split, chips by their share (grown by ``buffer`` pixels) in
    blocks of their own split, chips wholly inside first. A chip whose grown footprint meets a chip already placed in another split is
    dropped, so kept chips of different splits are at least ``buffer`` pixels apart, and
    every dropped chip had to go.
    """
    splits = [block_split[home_block(fp, block_size)] for fp in chips]
    grown = [_grow(fp, buffer) for fp in chips]
    share = [
        _own_share(fp, g, s, block_split, block_size)
        for fp, g, s in zip(chips, grown, splits, strict=True)
    ]
    placer = _Placer(chips, grown, splits, block_size)
    homes = {s: max(splits.count(s), 1) for s in SPLITS}
    queues = {
        s: deque(
            sorted(
                (i for i in range(len(chips)) if splits[i] == s),
                key=lambda i: (-round(share[i], 9), i),
            )
        )
        for s in SPLITS
    }
    while any(queues.values()):
        s = min((s for s in SPLITS if queues[s]), key=lambda s: placer.placed[s] / homes[s])
        placer.place(queues[s].popleft())
    return placer.out


class _Placer:
    """Places chips one at a time unless they meet a placed chip of another split."""

    def __init__(
        self,
        chips: Sequence[Footprint],
        grown: Sequence[Bounds],
        splits: Sequence[SplitName],
        block_size: int,
    ) -> None:
        self.chips, self.grown, self.splits, self.block_size = chips, grown, splits, block_size
        self.out: list[SplitName | None] = [None] * len(chips)
        self.placed = dict.fromkeys(SPLITS, 0)
        self._cells: dict[str, tuple[tuple[float, float], dict[tuple[int, int], list[int]]]] = {}

    def place(self, i: int) -> bool:
        """Keep chip ``i`` in its split when it meets no placed chip of another split."""
        fp, s = self.chips[i], self.splits[i]
        step, grid = self._cells.setdefault(fp.crs, (_step(fp, self.block_size), {}))
        tol = 1e-6 * min(fp.res)
        near = {j for k in _blocks_under(fp.crs, self.grown[i], step) for j in grid.get(k[1:], [])}
        if any(self.out[j] != s and _meets(self.grown[i], self.chips[j].bounds, tol) for j in near):
            return False
        self.out[i] = s
        self.placed[s] += 1
        for k in _blocks_under(fp.crs, fp.bounds, step):
            grid.setdefault(k[1:], []).append(i)
        return True


# ---- the plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitPlan:
    """The split of every candidate chip, and how it was made.

    Attributes:
        splits: per chip, its split, or None when it was dropped for the buffer.
        block_size: side of the blocks in pixels (0 with no split).
        auto: the block size was chosen here (no ``block_size`` given).
        fractions: train, val, test fractions asked (normalised).
        blocks: per split, the blocks holding its kept chips.
        pixels: per split, labelled pixels per class of its kept chips.
        present: labelled pixels per class over all candidate chips.
        held: blocks holding candidate chips (their home blocks).
    """

    splits: tuple[SplitName | None, ...]
    block_size: int
    auto: bool
    fractions: tuple[float, float, float]
    blocks: dict[SplitName, int]
    pixels: dict[SplitName, tuple[int, ...]]
    present: tuple[int, ...]
    held: int = 0

    @property
    def chips(self) -> dict[SplitName, int]:
        """Kept chips per split."""
        return {s: sum(v == s for v in self.splits) for s in SPLITS}

    @property
    def dropped(self) -> int:
        """Chips dropped for the buffer between splits."""
        return sum(v is None for v in self.splits)

    @property
    def kept(self) -> int:
        """Chips kept."""
        return len(self.splits) - self.dropped

    def problems(self, names: Sequence[str] | None = None) -> list[str]:
        """Why the plan does not meet the split asked (empty when it does).

        Each item is ``"<split> gets no chip"`` or ``"class <name> (<n> labelled px) reaches
        no train chip"``; classes are named from ``names`` (class-map order) or by index.
        """
        out = [
            f"{s} gets no chip"
            for s, f in zip(SPLITS, self.fractions, strict=True)
            if f > 0 and self.chips[s] == 0
        ]
        if self.chips["train"] == 0:
            return out
        train = self.pixels["train"]
        for k, n in enumerate(self.present):
            if n > 0 and train[k] == 0:
                name = repr(names[k]) if names is not None else f"#{k}"
                out.append(f"class {name} ({n} labelled px) reaches no train chip")
        return out

    def missing(self) -> dict[SplitName, list[int]]:
        """Per asked split other than train, the classes (indices) present but absent there."""
        out: dict[SplitName, list[int]] = {}
        for s, f in zip(SPLITS[1:], self.fractions[1:], strict=True):
            if f > 0 and self.chips[s] > 0:
                px = self.pixels[s]
                out[s] = [k for k, n in enumerate(self.present) if n > 0 and px[k] == 0]
        return out

    def balance(self) -> float:
        """1 minus the total variation distance between kept chips per split and the fractions."""
        kept = max(self.kept, 1)
        got = [self.chips[s] / kept for s in SPLITS]
        return 1.0 - 0.5 * sum(abs(g - f) for g, f in zip(got, self.fractions, strict=True))

    def score(self) -> tuple[bool, int, float, int]:
        """Order of preference among block sizes.

        Meets the split; blocks in the smallest asked split (up to :data:`WANTED_BLOCKS`);
        kept chips weighed by :meth:`balance`; the larger block.
        """
        asked = [s for s, f in zip(SPLITS, self.fractions, strict=True) if f > 0]
        smallest = min(self.blocks[s] for s in asked)
        return (
            not self.problems(),
            min(smallest, WANTED_BLOCKS),
            round(self.kept * self.balance(), 6),
            self.block_size,
        )


def _make_plan(
    chips: Sequence[Footprint],
    fractions: tuple[float, float, float],
    *,
    block_size: int,
    auto: bool,
    buffer: int,
    seed: int,
) -> SplitPlan:
    block_split = assign_blocks(_block_stats(chips, block_size), fractions, seed=seed)
    splits = resolve_chips(chips, block_split, block_size=block_size, buffer=buffer)
    return _summarise(chips, splits, block_size=block_size, auto=auto, fractions=fractions)


def _summarise(
    chips: Sequence[Footprint],
    splits: Sequence[SplitName | None],
    *,
    block_size: int,
    auto: bool,
    fractions: tuple[float, float, float],
) -> SplitPlan:
    n_cls = max((len(fp.pixels) for fp in chips), default=0)
    pixels = {s: np.zeros(n_cls, np.int64) for s in SPLITS}
    homes: dict[SplitName, set[BlockKey]] = {s: set() for s in SPLITS}
    for fp, s in zip(chips, splits, strict=True):
        if s is None:
            continue
        pixels[s][: len(fp.pixels)] += np.asarray(fp.pixels, dtype=np.int64)
        homes[s].add(home_block(fp, block_size) if block_size else (fp.crs, 0, 0))
    present = sum((np.asarray(fp.pixels, np.int64) for fp in chips), np.zeros(n_cls, np.int64))
    return SplitPlan(
        splits=tuple(splits),
        block_size=block_size,
        auto=auto,
        fractions=fractions,
        blocks={s: len(homes[s]) for s in SPLITS},
        pixels={s: tuple(int(v) for v in pixels[s]) for s in SPLITS},
        present=tuple(int(v) for v in present),
        held=len({home_block(fp, block_size) for fp in chips}) if block_size else 1,
    )


def block_sizes(size: int, overlap: int, extent: int) -> list[int]:
    """Block sizes tried when none is given: multiples of the chip stride up to ``extent``.

    ``extent`` is the largest scene side in pixels; at least one size is always returned.
    """
    stride = size - overlap
    sizes = [k * stride for k in BLOCK_MULTIPLES if k * stride <= max(extent, stride)]
    return sizes or [stride]


def plan_split(
    chips: Sequence[Footprint],
    split: Sequence[float],
    *,
    size: int,
    overlap: int,
    extent: int,
    block_size: int | None = None,
    buffer: int | None = None,
    seed: int = 0,
) -> SplitPlan:
    """The spatial split of ``chips``: at ``block_size``, or at the best of :func:`block_sizes`.

    Args:
        chips: candidate chips (all pass the tiler's nodata and label thresholds).
        split: train, val, test fractions.
        size: chip size in pixels.
        overlap: chip overlap in pixels.
        extent: largest scene side in pixels (bounds the block sizes tried).
        block_size: block side in pixels; chosen from the data when None.
        buffer: gap in pixels between chips of different splits; ``overlap`` when None
            (never less than the overlap).
        seed: seed of the block assignment.

    Returns:
        The plan; check :meth:`SplitPlan.problems` before using it.
    """
    fractions = check_split(split)
    gap = overlap if buffer is None else max(int(buffer), overlap)
    if block_size is not None:
        return _make_plan(
            chips, fractions, block_size=block_size, auto=False, buffer=gap, seed=seed
        )
    plans = [
        _make_plan(chips, fractions, block_size=b, auto=True, buffer=gap, seed=seed)
        for b in block_sizes(size, overlap, extent)
    ]
    return max(plans, key=lambda p: p.score())


def no_split(chips: Sequence[Footprint]) -> SplitPlan:
    """Every chip in train, nothing dropped (for users who hold out whole scenes)."""
    return _summarise(
        chips, ["train"] * len(chips), block_size=0, auto=False, fractions=(1.0, 0.0, 0.0)
    )

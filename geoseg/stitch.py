"""Seam-free stitching of overlapping chip predictions, streamed cell by cell.

Chips are predicted in row-major order. :class:`ChipStitcher` accumulates weighted class
probabilities ``sum(w * p)`` and weights ``sum(w)`` in *cells*: each chip owns the rows from
its row of chips' start to the next row's start and the columns from its own start to the next
chip's start (the first and last of a row reach the scene's edges). A cell can no longer
change once its chip is in: later chips of the same row start right of it, and the next row of
chips starts below it. It is then normalised, handed out as a :class:`Band` and dropped.

Storage is allocated per cell, lazily and only down to the lowest row a chip has touched: while
a row of chips is blended, the cells of the next row hold only the overlap rows the current
chips reach into. Memory is therefore about ``classes x overlap x scene width`` floats plus a
few chips, whatever the scene's height, and a quarter to an eighth of a full band of chip rows
across a wide scene (256/64 and 512/64 windows).

The weights (:func:`chip_weights`) are the grid's sin² (Hann) ramps on edges that border
another chip, full weight on the scene's own border, with an extra *trim*: the outermost
pixels of an inner edge, where a CNN sees its zero/reflect padding and predicts worst, get a
negligible weight, so every pixel is decided by chips that saw context around it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window

from geoseg.grid import TRIM_WEIGHT, BlendKind, blend_weights, windows_by_row

__all__ = [
    "TRIM_WEIGHT",
    "Band",
    "ChipStitcher",
    "chip_weights",
    "default_trim",
]


#: Most pixels in one released band: cells are handed out joined along their strip up to this
#: (or to the strip's end), and rows no chip touches (an AOI's gap rows) in bands of at most it.
RELEASE_PIXELS = 2**17


def default_trim(overlap: int) -> int:
    """Pixels trimmed (weighted ~0) on each inner chip edge for an ``overlap``: a quarter of it."""
    return max(0, overlap // 4)


def chip_weights(
    window: Window,
    shape: tuple[int, int],
    overlap: int,
    *,
    trim: int | None = None,
    kind: BlendKind = "hann",
) -> np.ndarray:
    """Blend weights (float32, window-shaped) of a chip ``window`` in a scene of ``shape``.

    Like :func:`geoseg.grid.blend_weights` (sin² ramps over ``overlap`` pixels on inner edges,
    weight 1 on the scene's border, strictly positive), with the outermost ``trim`` pixels of
    each inner edge weighted ~0 (default :func:`default_trim`). ``trim=0`` gives the plain
    grid weights.
    """
    t = default_trim(overlap) if trim is None else trim
    return blend_weights(window, shape, overlap, kind, trim=t)


@dataclass(frozen=True)
class Band:
    """A final piece of the scene: a chip's cell, or rows no chip touches.

    Attributes:
        window: the rows as a window of the scene grid.
        probabilities: blended class probabilities ``(classes, height, width)`` float32.
        covered: True where at least one chip contributed (False under skipped chips).
        valid: True where a chip read valid scene data (set by :class:`ChipStitcher`);
            ``None`` when validity is not tracked.
    """

    window: Window
    probabilities: np.ndarray
    covered: np.ndarray
    valid: np.ndarray | None = field(default=None, compare=False)

    @property
    def ok(self) -> np.ndarray:
        """Pixels to write: covered by a chip and valid."""
        return self.covered if self.valid is None else self.covered & self.valid


@dataclass(eq=False)
class _Cell:
    """One released piece: its window, the plan index after which it is final, its sums.

    ``acc``/``wsum``/``valid`` hold the cell's first ``rows`` rows (``None`` until a chip
    touches it); rows below were not reached yet.
    """

    window: Window
    ready: int
    last: bool = False  # the last cell of its strip
    rows: int = 0
    released: bool = False
    acc: np.ndarray | None = None
    wsum: np.ndarray | None = None
    valid: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class _Strip:
    """Rows ``[top, bottom)`` of the scene cut into cells at columns ``xs``."""

    top: int
    bottom: int
    xs: list[int]
    cells: list[_Cell]


class ChipStitcher:
    """Blend chip probabilities for a chip plan and hand out cells as soon as they are final.

    Give it the row-major ``windows`` that will come; for each, call :meth:`add` (with its
    probabilities and valid mask) or :meth:`skip` (an all-nodata chip, never inferred), in
    order. Each call returns the :class:`Band` pieces that became final; :meth:`finish`
    returns the rest. Every pixel of rows ``[start, stop)`` (``rows``, default the whole
    scene; a part of a scene predicted apart, :mod:`geoseg.parallel`) is handed out exactly
    once; pixels under no chip come out uncovered. Validity (``Band.valid``) is the union of the
    chips' valid masks. The weights are those of the whole scene.

    A second stitcher on the same plan that only accumulates (:meth:`accumulate`: the cloud
    model's, :mod:`geoseg.clouds`) gives the same pieces back with :meth:`take`.

    Args:
        shape: scene shape ``(height, width)``.
        num_classes: number of probability channels.
        overlap: chip overlap (for the weights).
        windows: the chip plan, row-major (rows by ``row_off``, columns increasing in a row).
        trim: pixels weighted ~0 on inner chip edges (default :func:`default_trim`).
        kind: ramp shape.
        rows: the rows held and released, ``(start, stop)``.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, int],
        num_classes: int,
        overlap: int,
        windows: Sequence[Window],
        trim: int | None = None,
        kind: BlendKind = "hann",
        rows: tuple[int, int] | None = None,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.num_classes = num_classes
        self.overlap = overlap
        self.trim = default_trim(overlap) if trim is None else trim
        self.kind: BlendKind = kind
        top, self.height = (0, self.shape[0]) if rows is None else (int(rows[0]), int(rows[1]))
        self.top = top
        self._index = {(int(w.row_off), int(w.col_off)): k for k, w in enumerate(windows)}
        self._strips = self._cut(list(windows))
        self._tops = [s.top for s in self._strips]
        self._cells = [c for s in self._strips for c in s.cells]  # in release order
        self._by_window = {
            (s.top, int(c.window.col_off)): (s, j)
            for s in self._strips
            for j, c in enumerate(s.cells)
        }
        self._run: list[Band] = []  # cells handed out, joined along their strip before leaving
        self._run_pixels = 0
        self._done = [False] * len(windows)
        self._next_chip = 0  # chips [0, _next_chip) are all in
        self._next_cell = 0  # cells [0, _next_cell) are handed out
        self._weights: dict[tuple[int, int, int, int], np.ndarray] = {}
        self.held_pixels = 0
        self.peak_pixels = 0

    # -- the plan's cells ----------------------------------------------------------------------
    def _cut(self, windows: list[Window]) -> list[_Strip]:
        width = self.shape[1]
        strips: list[_Strip] = []
        gap_rows = max(1, RELEASE_PIXELS // max(1, width))

        def gap(a: int, b: int, ready: int) -> None:
            for r in range(a, b, gap_rows):
                n = min(gap_rows, b - r)
                strips.append(_Strip(r, r + n, [0], [_Cell(Window(0, r, width, n), ready, True)]))

        by_row = list(windows_by_row(windows))
        first = int(by_row[0][0]) if by_row else self.height
        gap(self.top, min(max(first, self.top), self.height), -1)
        reach = self.top  # the lowest row any chip so far touches
        k = 0
        for i, (r, ws) in enumerate(by_row):
            cols = [int(w.col_off) for w in ws]
            if any(b <= a for a, b in itertools.pairwise(cols)):
                raise ValueError(f"chips of row {r} are not in increasing column order: {cols}")
            a = max(self.top, int(r))
            b = min(self.height, int(by_row[i + 1][0]) if i + 1 < len(by_row) else self.height)
            reach = max(reach, *(int(w.row_off + w.height) for w in ws))
            m = max(a, min(b, reach))  # rows [m, b) no chip touches: released after this row
            if m > a:
                xs = [0, *cols[1:]]
                ends = [*cols[1:], width]
                cells = [
                    _Cell(Window(x, a, e - x, m - a), k + j, j == len(xs) - 1)
                    for j, (x, e) in enumerate(zip(xs, ends, strict=True))
                ]
                strips.append(_Strip(a, m, xs, cells))
            k += len(ws)
            gap(m, b, k - 1)
        return strips

    # -- blending ------------------------------------------------------------------------------
    def _weights_for(self, window: Window) -> np.ndarray:
        h, w = self.shape
        r0, c0 = int(window.row_off), int(window.col_off)
        wh, ww = int(window.height), int(window.width)
        # Weights depend on the window size and on which of its edges are inner edges.
        key = (wh, ww, (r0 > 0) + 2 * (r0 + wh < h), (c0 > 0) + 2 * (c0 + ww < w))
        wts = self._weights.get(key)
        if wts is None:
            wts = chip_weights(window, self.shape, self.overlap, trim=self.trim, kind=self.kind)
            self._weights[key] = wts
        return wts

    def _touched(
        self, window: Window
    ) -> list[tuple[_Cell, tuple[slice, slice], tuple[slice, slice]]]:
        """The cells under ``window``: ``(cell, (rows, cols) in the chip, (rows, cols) in the cell)``."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        out = []
        s = max(0, bisect.bisect_right(self._tops, r0) - 1)
        while s < len(self._strips) and self._strips[s].top < r1:
            strip = self._strips[s]
            s += 1
            y0, y1 = max(r0, strip.top), min(r1, strip.bottom)
            if y0 >= y1:
                continue
            j = max(0, bisect.bisect_right(strip.xs, c0) - 1)
            while j < len(strip.cells) and strip.xs[j] < c1:
                cell = strip.cells[j]
                j += 1
                cx = int(cell.window.col_off)
                x0, x1 = max(c0, cx), min(c1, cx + int(cell.window.width))
                if x0 < x1:
                    in_chip = (slice(y0 - r0, y1 - r0), slice(x0 - c0, x1 - c0))
                    in_cell = (slice(y0 - strip.top, y1 - strip.top), slice(x0 - cx, x1 - cx))
                    out.append((cell, in_chip, in_cell))
        return out

    def _reach(self, cell: _Cell, rows: int) -> None:
        """Hold at least the cell's first ``rows`` rows (its full height once it grows twice)."""
        if rows <= cell.rows:
            return
        h, w = int(cell.window.height), int(cell.window.width)
        n = rows if cell.acc is None else h  # the overlap rows first, then the whole cell
        acc = np.zeros((self.num_classes, n, w), dtype=np.float32)
        wsum = np.zeros((n, w), dtype=np.float32)
        valid = np.zeros((n, w), dtype=bool)
        if cell.acc is not None and cell.wsum is not None and cell.valid is not None:
            acc[:, : cell.rows] = cell.acc
            wsum[: cell.rows] = cell.wsum
            valid[: cell.rows] = cell.valid
        self.held_pixels += (n - cell.rows) * w
        self.peak_pixels = max(self.peak_pixels, self.held_pixels)
        cell.acc, cell.wsum, cell.valid, cell.rows = acc, wsum, valid, n

    def accumulate(
        self, window: Window, probabilities: np.ndarray | None, valid: np.ndarray | None = None
    ) -> None:
        """Add a chip's class probabilities ``(classes, h, w)`` (and valid mask) at ``window``."""
        h, w = int(window.height), int(window.width)
        if probabilities is not None and probabilities.shape != (self.num_classes, h, w):
            raise ValueError(
                f"chip probabilities have shape {probabilities.shape}, "
                f"expected {(self.num_classes, h, w)}"
            )
        weighted = wts = None
        if probabilities is not None:
            wts = self._weights_for(window)
            weighted = probabilities * wts
        has_valid = valid is not None and bool(valid.any())
        if weighted is None and not has_valid:
            return
        touched = self._touched(window)
        for cell, _, _ in touched:
            if cell.released:
                raise ValueError(f"chip {window} reaches into {cell.window}, already handed out")
        for cell, (rs, cs), (lr, lc) in touched:
            self._reach(cell, lr.stop)
            if weighted is not None and wts is not None:
                cell.acc[:, lr, lc] += weighted[:, rs, cs]  # type: ignore[index]
                cell.wsum[lr, lc] += wts[rs, cs]  # type: ignore[index]
            if has_valid and valid is not None:
                cell.valid[lr, lc] |= valid[rs, cs]  # type: ignore[index]

    def _hand_out(self, cell: _Cell) -> Band:
        """Normalise the cell and drop its storage; rows no chip reached come out uncovered."""
        h, w = int(cell.window.height), int(cell.window.width)
        self._reach(cell, h)  # a no-op for a cell held whole (its arrays are handed out)
        assert cell.acc is not None and cell.wsum is not None and cell.valid is not None
        covered = cell.wsum > 0
        probs = np.divide(cell.acc, np.where(covered, cell.wsum, 1.0), out=cell.acc)
        band = Band(cell.window, probs, covered, cell.valid)
        self.held_pixels -= h * w
        cell.acc = cell.wsum = cell.valid = None
        cell.rows, cell.released = 0, True
        return band

    # -- the streaming run's calls -------------------------------------------------------------
    def add(self, window: Window, probabilities: np.ndarray, valid: np.ndarray) -> list[Band]:
        """Blend a chip's probabilities ``(classes, h, w)``; the pieces now final."""
        k = self._plan_index(window)
        self.accumulate(window, probabilities, valid)
        return self._chip_done(k)

    def skip(self, window: Window, valid: np.ndarray) -> list[Band]:
        """Count a chip that is not inferred; the pieces now final."""
        k = self._plan_index(window)
        self.accumulate(window, None, valid)
        return self._chip_done(k)

    def finish(self) -> list[Band]:
        """Every piece not yet handed out."""
        self._next_chip = len(self._done)
        return self._release()

    def take(self, window: Window) -> Band:
        """Hand out the piece at ``window`` (one :meth:`add` gave another stitcher of the plan)."""
        found = self._by_window.get((int(window.row_off), int(window.col_off)))
        cells: list[_Cell] = []
        if found is not None:
            strip, j = found
            end = int(window.col_off + window.width)
            while j < len(strip.cells) and int(strip.cells[j].window.col_off) < end:
                cells.append(strip.cells[j])
                j += 1
        if (
            not cells
            or any(c.released for c in cells)
            or int(window.height) != int(cells[0].window.height)
            or int(cells[-1].window.col_off + cells[-1].window.width) != end
        ):
            raise ValueError(f"{window} is not a piece of this plan still held")
        return _join([self._hand_out(c) for c in cells])

    def _plan_index(self, window: Window) -> int:
        k = self._index.get((int(window.row_off), int(window.col_off)))
        if k is None:
            raise ValueError(f"chip {window} is not in the plan")
        return k

    def _chip_done(self, k: int) -> list[Band]:
        self._done[k] = True
        while self._next_chip < len(self._done) and self._done[self._next_chip]:
            self._next_chip += 1
        return self._release()

    def _release(self) -> list[Band]:
        out: list[Band] = []
        while (
            self._next_cell < len(self._cells)
            and self._cells[self._next_cell].ready < self._next_chip
        ):
            cell = self._cells[self._next_cell]
            self._next_cell += 1
            self._run.append(self._hand_out(cell))
            self._run_pixels += int(cell.window.width * cell.window.height)
            # one write per run of cells along a strip, not per chip (10 000 small writes
            # into the tiled GTiff cost ~5 s more on a 20000^2 scene)
            if cell.last or self._run_pixels >= RELEASE_PIXELS:
                out.append(_join(self._run))
                self._run, self._run_pixels = [], 0
        return out


def _join(bands: list[Band]) -> Band:
    """Cells side by side along one strip, as one :class:`Band`."""
    if len(bands) == 1:
        return bands[0]
    first, last = bands[0].window, bands[-1].window
    window = Window(
        first.col_off, first.row_off, last.col_off + last.width - first.col_off, first.height
    )
    return Band(
        window,
        np.concatenate([b.probabilities for b in bands], axis=2),
        np.concatenate([b.covered for b in bands], axis=1),
        np.concatenate([b.valid for b in bands], axis=1),  # type: ignore[misc]  # set by _hand_out
    )

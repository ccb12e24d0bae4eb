"""Seam-free stitching of overlapping chip predictions, streamed row band by row band.

Chips are predicted in row-major order. :class:`RowBandStitcher` accumulates weighted class
probabilities ``sum(w * p)`` and weights ``sum(w)`` for a band of rows only: rows from the
first row not yet final down to the bottom of the lowest chip added so far. When every chip of
a row of chips has been added, the rows above the next row of chips can no longer change;
:meth:`RowBandStitcher.release` normalises them and hands them out, and the buffer drops them.
Memory is therefore ``classes x (chip size + stride) x scene width`` floats, whatever the
scene's height, held in one ring buffer that is allocated once (released rows are zeroed and
reused; nothing is concatenated or copied per row band).

The weights (:func:`chip_weights`) are the grid's sin² (Hann) ramps on edges that border
another chip, full weight on the scene's own border, with an extra *trim*: the outermost
pixels of an inner edge, where a CNN sees its zero/reflect padding and predicts worst, get a
negligible weight, so every pixel is decided by chips that saw context around it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window

from geoseg.grid import TRIM_WEIGHT, BlendKind, blend_weights, windows_by_row

__all__ = [
    "TRIM_WEIGHT",
    "Band",
    "ChipStitcher",
    "RowBandStitcher",
    "chip_weights",
    "default_trim",
]


#: Most pixels in one released band (:class:`ChipStitcher` splits larger releases by rows).
RELEASE_PIXELS = 2**19


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
    """Final rows ``[row_off, row_off + height)`` of the scene, full width.

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


class RowBandStitcher:
    """Accumulate weighted chip probabilities and release finished row bands.

    Args:
        shape: scene shape ``(height, width)``.
        num_classes: number of probability channels.
        overlap: chip overlap (for the weights).
        trim: pixels weighted ~0 on inner chip edges (default :func:`default_trim`).
        kind: ramp shape.
        top: the first row held (rows above it are never added nor released).
    """

    def __init__(
        self,
        *,
        shape: tuple[int, int],
        num_classes: int,
        overlap: int,
        trim: int | None = None,
        kind: BlendKind = "hann",
        top: int = 0,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.num_classes = num_classes
        self.overlap = overlap
        self.trim = default_trim(overlap) if trim is None else trim
        self.kind: BlendKind = kind
        self.top = int(top)  # first row not yet released (rows above it are never held)
        self.bottom = self.top  # one past the lowest row a chip has touched
        # A ring of rows: scene row r lives at ring row r % capacity. Released rows are zeroed
        # in place and reused, so no array is reallocated or copied once the ring has the
        # height of a band of chips (it grows only when a band needs more rows).
        self._acc = np.zeros((num_classes, 0, self.shape[1]), dtype=np.float32)
        self._wsum = np.zeros((0, self.shape[1]), dtype=np.float32)
        self._weights: dict[tuple[int, int, int, int], np.ndarray] = {}
        self.peak_rows = 0

    @property
    def buffered_rows(self) -> int:
        """Rows currently held in memory (accumulating, not yet released)."""
        return max(0, self.bottom - self.top)

    @property
    def capacity(self) -> int:
        """Rows the ring buffer can hold."""
        return int(self._wsum.shape[0])

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

    def _pieces(self, r0: int, n: int) -> list[tuple[slice, slice]]:
        """``(ring rows, local rows)`` of scene rows ``[r0, r0 + n)``: one or two pieces."""
        cap = self.capacity
        start = r0 % cap
        first = min(n, cap - start)
        pieces = [(slice(start, start + first), slice(0, first))]
        if first < n:
            pieces.append((slice(0, n - first), slice(first, n)))
        return pieces

    def _grow(self, bottom: int) -> None:
        """Make room for rows up to ``bottom`` (exclusive), keeping the rows held."""
        need = bottom - self.top
        if need > self.capacity:
            held = max(0, self.bottom - self.top)
            acc = np.zeros((self.num_classes, need, self.shape[1]), dtype=np.float32)
            wsum = np.zeros((need, self.shape[1]), dtype=np.float32)
            if held:
                for ring, local in self._pieces(self.top, held):
                    acc[:, local] = self._acc[:, ring]
                    wsum[local] = self._wsum[ring]
            # the new ring starts at row ``top``: rotate so that row r sits at r % need
            shift = self.top % need
            self._acc = np.roll(acc, shift, axis=1) if shift else acc
            self._wsum = np.roll(wsum, shift, axis=0) if shift else wsum
        self.bottom = max(self.bottom, bottom)
        self.peak_rows = max(self.peak_rows, self.bottom - self.top)

    def add(self, window: Window, probabilities: np.ndarray) -> None:
        """Add a chip's class probabilities ``(classes, h, w)`` at ``window``."""
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        if r0 < self.top:
            raise ValueError(f"chip at row {r0} is above released rows (< {self.top})")
        if probabilities.shape != (self.num_classes, h, w):
            raise ValueError(
                f"chip probabilities have shape {probabilities.shape}, "
                f"expected {(self.num_classes, h, w)}"
            )
        self._grow(r0 + h)
        wts = self._weights_for(window)
        cs = slice(c0, c0 + w)
        for ring, local in self._pieces(r0, h):
            self._acc[:, ring, cs] += probabilities[:, local] * wts[local]
            self._wsum[ring, cs] += wts[local]

    def release(self, upto: int) -> Band | None:
        """Normalise and hand out rows ``[top, upto)``; they are dropped from the buffer.

        Call it only when no chip still to come touches those rows. Returns ``None`` when
        there is nothing new to release.
        """
        upto = min(int(upto), self.shape[0])
        n = upto - self.top
        if n <= 0:
            return None
        self._grow(upto)
        probs = np.empty((self.num_classes, n, self.shape[1]), dtype=np.float32)
        covered = np.empty((n, self.shape[1]), dtype=bool)
        for ring, local in self._pieces(self.top, n):
            wsum = self._wsum[ring]
            covered[local] = wsum > 0
            np.divide(self._acc[:, ring], np.where(wsum > 0, wsum, 1.0), out=probs[:, local])
            self._acc[:, ring] = 0.0
            wsum[...] = 0.0
        band = Band(Window(0, self.top, self.shape[1], n), probs, covered)
        self.top = upto
        self.bottom = max(self.bottom, upto)
        return band


class ChipStitcher:
    """A :class:`RowBandStitcher` that also owns validity and row release, for a chip plan.

    Give it the row-major ``windows`` that will come; for each, call :meth:`add` (with its
    probabilities) or :meth:`skip` (an all-nodata chip, never inferred), in order. Each call
    returns the bands that became final: when the last chip of a row of chips is in, the
    rows above the next row of chips can no longer change. :meth:`finish` returns the rest.
    Validity (``Band.valid``) is the union of the chips' valid masks. ``rows``: only the rows
    ``[start, stop)`` that the windows span are held and released (default: the whole scene),
    for a part of a scene predicted apart (:mod:`geoseg.parallel`); the weights stay those of
    the whole scene.
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
        top, self.height = (0, int(shape[0])) if rows is None else (int(rows[0]), int(rows[1]))
        self.blend = RowBandStitcher(
            shape=shape, num_classes=num_classes, overlap=overlap, trim=trim, kind=kind, top=top
        )
        by_row = list(windows_by_row(windows))
        self.row_starts = [r for r, _ in by_row]
        self._remaining = [len(ws) for _, ws in by_row]
        self._row_index = {r: i for i, r in enumerate(self.row_starts)}
        self._done_rows = 0
        self._valid = _ValidRows(int(shape[1]), top)

    @property
    def peak_rows(self) -> int:
        """Most rows held at once."""
        return self.blend.peak_rows

    def add(self, window: Window, probabilities: np.ndarray, valid: np.ndarray) -> list[Band]:
        """Blend a chip's probabilities ``(classes, h, w)``; the bands now final."""
        self._valid.add(window, valid)
        self.blend.add(window, probabilities)
        return self._done(window)

    def skip(self, window: Window, valid: np.ndarray) -> list[Band]:
        """Count a chip that is not inferred; the bands now final."""
        self._valid.add(window, valid)
        return self._done(window)

    def finish(self) -> list[Band]:
        """Every row not yet released."""
        return self._release(self.height)

    def _done(self, window: Window) -> list[Band]:
        self._remaining[self._row_index[int(window.row_off)]] -= 1
        out: list[Band] = []
        n = len(self.row_starts)
        while self._done_rows < n and self._remaining[self._done_rows] == 0:
            i = self._done_rows
            self._done_rows += 1
            out += self._release(self.row_starts[i + 1] if i + 1 < n else self.height)
        return out

    def _release(self, upto: int) -> list[Band]:
        # In bands of at most RELEASE_PIXELS, so the normalised probabilities and what the
        # writer derives from them (argmax, class ids) stay small on very wide scenes.
        step = max(1, RELEASE_PIXELS // max(1, self.blend.shape[1]))
        out: list[Band] = []
        for end in [*range(self.blend.top + step, upto, step), upto]:
            band = self.blend.release(end)
            if band is None:
                continue
            valid = self._valid.take(int(band.window.height))
            out.append(Band(band.window, band.probabilities, band.covered, valid))
        return out


class _ValidRows:
    """Validity of the rows not yet released (True where a chip saw valid data)."""

    def __init__(self, width: int, top: int = 0) -> None:
        self.width = width
        self.top = top
        self._valid = np.zeros((0, width), dtype=bool)

    def add(self, window: Window, valid: np.ndarray) -> None:
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = valid.shape
        need = r0 + h - self.top - self._valid.shape[0]
        if need > 0:
            self._valid = np.concatenate([self._valid, np.zeros((need, self.width), dtype=bool)])
        self._valid[r0 - self.top : r0 - self.top + h, c0 : c0 + w] |= valid

    def take(self, n: int) -> np.ndarray:
        if self._valid.shape[0] < n:
            pad = np.zeros((n - self._valid.shape[0], self.width), dtype=bool)
            self._valid = np.concatenate([self._valid, pad])
        out = self._valid[:n]
        self._valid = self._valid[n:].copy()
        self.top += n
        return out


def release_points(row_starts: list[int], height: int) -> Iterator[tuple[int, int]]:
    """``(row_index, upto)``: once chip row ``row_index`` is done, rows ``< upto`` are final."""
    for i in range(len(row_starts)):
        yield i, (row_starts[i + 1] if i + 1 < len(row_starts) else height)

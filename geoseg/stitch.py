"""Seam-free stitching of overlapping chip predictions, streamed row band by row band.

Chips are predicted in row-major order. :class:`RowBandStitcher` accumulates weighted class
probabilities ``sum(w * p)`` and weights ``sum(w)`` for a band of rows only: rows from the
first row not yet final down to the bottom of the lowest chip added so far. When every chip of
a row of chips has been added, the rows above the next row of chips can no longer change;
:meth:`RowBandStitcher.release` normalises them and hands them out, and the buffer drops them.
Memory is therefore ``classes x (chip size + stride) x scene width`` floats, whatever the
scene's height.

The weights (:func:`chip_weights`) are the grid's sin² (Hann) ramps on edges that border
another chip, full weight on the scene's own border, with an extra *trim*: the outermost
pixels of an inner edge, where a CNN sees its zero/reflect padding and predicts worst, get a
negligible weight, so every pixel is decided by chips that saw context around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoseg.grid import BlendKind, ramp

__all__ = ["Band", "RowBandStitcher", "chip_weights", "default_trim"]

#: Weight of trimmed edge pixels: small, but positive so that a lone chip still counts.
TRIM_WEIGHT = 1e-6


def default_trim(overlap: int) -> int:
    """Pixels trimmed (weighted ~0) on each inner chip edge for an ``overlap``: a quarter of it."""
    return max(0, overlap // 4)


def _axis(
    start: int, length: int, total: int, overlap: int, trim: int, kind: BlendKind
) -> np.ndarray:
    w = np.ones(length, dtype=np.float64)
    n = min(overlap, length)
    if n <= 0 or kind == "flat":
        return w
    t = min(trim, n // 2)
    edge = np.concatenate([np.full(t, TRIM_WEIGHT), np.maximum(ramp(n - t, kind), TRIM_WEIGHT)])
    if start > 0:  # inner edge: fade in; the scene's own border keeps full weight
        w[:n] = np.minimum(w[:n], edge)
    if start + length < total:
        w[length - n :] = np.minimum(w[length - n :], edge[::-1])
    return w


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
    height, width = shape
    wy = _axis(int(window.row_off), int(window.height), height, overlap, t, kind)
    wx = _axis(int(window.col_off), int(window.width), width, overlap, t, kind)
    return np.outer(wy, wx).astype(np.float32)


@dataclass(frozen=True)
class Band:
    """Final rows ``[row_off, row_off + height)`` of the scene, full width.

    Attributes:
        window: the rows as a window of the scene grid.
        probabilities: blended class probabilities ``(classes, height, width)`` float32.
        covered: True where at least one chip contributed (False under skipped chips).
    """

    window: Window
    probabilities: np.ndarray
    covered: np.ndarray


class RowBandStitcher:
    """Accumulate weighted chip probabilities and release finished row bands.

    Args:
        shape: scene shape ``(height, width)``.
        num_classes: number of probability channels.
        overlap: chip overlap (for the weights).
        trim: pixels weighted ~0 on inner chip edges (default :func:`default_trim`).
        kind: ramp shape.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, int],
        num_classes: int,
        overlap: int,
        trim: int | None = None,
        kind: BlendKind = "hann",
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.num_classes = num_classes
        self.overlap = overlap
        self.trim = default_trim(overlap) if trim is None else trim
        self.kind: BlendKind = kind
        self.top = 0  # first row not yet released
        width = self.shape[1]
        self._acc = np.zeros((num_classes, 0, width), dtype=np.float32)
        self._wsum = np.zeros((0, width), dtype=np.float32)
        self._weights: dict[tuple[int, int, int, int], np.ndarray] = {}
        self.peak_rows = 0

    @property
    def buffered_rows(self) -> int:
        """Rows currently held in memory."""
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

    def _grow(self, bottom: int) -> None:
        need = bottom - self.top - self._wsum.shape[0]
        if need <= 0:
            return
        width = self.shape[1]
        self._acc = np.concatenate(
            [self._acc, np.zeros((self.num_classes, need, width), dtype=np.float32)], axis=1
        )
        self._wsum = np.concatenate([self._wsum, np.zeros((need, width), dtype=np.float32)])
        self.peak_rows = max(self.peak_rows, self._wsum.shape[0])

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
        rs = slice(r0 - self.top, r0 - self.top + h)
        cs = slice(c0, c0 + w)
        self._acc[:, rs, cs] += probabilities * wts
        self._wsum[rs, cs] += wts

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
        acc, wsum = self._acc[:, :n], self._wsum[:n]
        covered = wsum > 0
        probs = acc / np.where(covered, wsum, 1.0)[np.newaxis]
        band = Band(Window(0, self.top, self.shape[1], n), probs, covered)
        self._acc = self._acc[:, n:].copy()
        self._wsum = self._wsum[n:].copy()
        self.top = upto
        return band


def release_points(row_starts: list[int], height: int) -> Iterator[tuple[int, int]]:
    """``(row_index, upto)``: once chip row ``row_index`` is done, rows ``< upto`` are final."""
    for i in range(len(row_starts)):
        yield i, (row_starts[i + 1] if i + 1 < len(row_starts) else height)

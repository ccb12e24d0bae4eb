"""Test-time augmentation: average a model's probabilities over dihedral views of each chip.

:func:`tta_forward` wraps any forward callable ``f(x (n, bands, h, w) normalised) ->
probabilities (n, classes, h, w)`` (a :class:`geoseg.runtime.engines.Engine`, or the torch
step of :func:`geoseg.predict.infer_batch`): each view of the batch is predicted, mapped back
by the inverse transform and averaged. It runs per batch of chips, before blending, so the
streamed prediction keeps its memory bound (one extra probability array per batch).

Modes (the views are elements of the dihedral group D4 of the square):

* ``none``: the identity (1 view);
* ``hflip``: identity and left-right flip (2 views);
* ``flips``: identity, left-right, up-down and both (= 180° rotation) (4 views);
* ``d4``: the 4 rotations, each with and without a flip (8 views). 90° rotations swap height
  and width: a non-square batch is reflect-padded to a square first and cropped back.

Averaging over a whole group makes the prediction equivariant under it: flipping (or, for
``d4``, rotating) the input flips (rotates) the output, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import numpy as np

from geoseg.errors import ConfigError

__all__ = ["TTA_MODES", "TTAMode", "apply_view", "invert_view", "tta_forward", "views"]

TTAMode = Literal["none", "hflip", "flips", "d4"]
TTA_MODES: tuple[str, ...] = get_args(TTAMode)
#: A dihedral view: ``(quarter turns, flip left-right first)``.
View = tuple[int, bool]
Forward = Callable[[np.ndarray], np.ndarray]


def views(mode: str) -> list[View]:
    """The views of a mode, identity first."""
    if mode == "none":
        return [(0, False)]
    if mode == "hflip":
        return [(0, False), (0, True)]
    if mode == "flips":  # up-down flip = 180° turn of the left-right flip
        return [(0, False), (0, True), (2, True), (2, False)]
    if mode == "d4":
        return [(k, f) for f in (False, True) for k in range(4)]
    raise ConfigError(f"unknown test-time augmentation {mode!r}; use one of {', '.join(TTA_MODES)}")


def apply_view(x: np.ndarray, view: View) -> np.ndarray:
    """``x (..., h, w)`` seen in ``view``: flipped left-right (if asked), then turned."""
    k, flip = view
    if flip:
        x = x[..., ::-1]
    return np.rot90(x, k, axes=(-2, -1)) if k % 4 else x


def invert_view(y: np.ndarray, view: View) -> np.ndarray:
    """The inverse of :func:`apply_view` (back to the original orientation)."""
    k, flip = view
    if k % 4:
        y = np.rot90(y, -k, axes=(-2, -1))
    return y[..., ::-1] if flip else y


def _square(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[-2:]
    s = max(h, w)
    pad = [(0, 0)] * (x.ndim - 2) + [(0, s - h), (0, s - w)]
    return np.pad(x, pad, mode="reflect") if min(h, w) > 1 else np.pad(x, pad, mode="edge")


def tta_forward(forward: Forward, x: np.ndarray, *, mode: str = "none") -> np.ndarray:
    """Probabilities of ``x`` averaged over the views of ``mode``.

    Args:
        forward: ``f(x (n, bands, h, w) float32) -> (n, classes, h, w)`` probabilities.
        x: the normalised batch (nodata already set), as ``forward`` takes it.
        mode: ``none``, ``hflip``, ``flips`` or ``d4``.

    Returns:
        float32 ``(n, classes, h, w)``: the mean of the inverse-transformed view predictions
        (with ``none``, exactly ``forward(x)``).
    """
    vs = views(mode)
    if len(vs) == 1:
        return forward(x)
    h, w = x.shape[-2:]
    turns = any(k % 2 for k, _ in vs)
    xs = _square(x) if turns and h != w else x
    total = np.array(forward(xs), dtype=np.float32, copy=True)  # the identity view
    for v in vs[1:]:
        total += invert_view(forward(np.ascontiguousarray(apply_view(xs, v))), v)
    total /= np.float32(len(vs))
    return np.ascontiguousarray(total[..., :h, :w])

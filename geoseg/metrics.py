"""Segmentation metrics from a confusion matrix, accumulated block by block.

``confusion[i, j]`` counts pixels of reference class index ``i`` predicted as ``j``. Pixels
whose reference is the ignore value (or outside ``0..n-1``) are not counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ConfusionMatrix", "scores_from_confusion"]


class ConfusionMatrix:
    """An ``n x n`` confusion matrix (int64) that accumulates class-index arrays."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, reference: np.ndarray, prediction: np.ndarray) -> None:
        """Add pixels; both arrays hold class indices, invalid references are skipped."""
        ref = np.asarray(reference).ravel().astype(np.int64)
        pred = np.asarray(prediction).ravel().astype(np.int64)
        n = self.num_classes
        ok = (ref >= 0) & (ref < n) & (pred >= 0) & (pred < n)
        self.matrix += np.bincount(ref[ok] * n + pred[ok], minlength=n * n).reshape(n, n)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self

    def scores(self, names: list[str] | None = None) -> dict[str, Any]:
        """All scores, see :func:`scores_from_confusion`."""
        return scores_from_confusion(self.matrix, names)


def scores_from_confusion(matrix: np.ndarray, names: list[str] | None = None) -> dict[str, Any]:
    """Pixel accuracy, per-class precision/recall/F1/IoU, mIoU, frequency-weighted IoU, kappa.

    Classes absent from both reference and prediction get NaN per-class scores and are left
    out of the means.
    """
    cm = np.asarray(matrix, dtype=np.float64)
    n = cm.shape[0]
    names = names or [str(i) for i in range(n)]
    total = cm.sum()
    tp = np.diag(cm)
    ref = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / pred, np.nan)
        recall = np.where(ref > 0, tp / ref, np.nan)
        f1 = np.where(
            (precision + recall) > 0, 2 * precision * recall / (precision + recall), np.nan
        )
        union = ref + pred - tp
        iou = np.where(union > 0, tp / union, np.nan)
    present = union > 0
    acc = float(tp.sum() / total) if total else float("nan")
    freq = ref / total if total else np.zeros(n)
    fwiou = float(np.nansum(freq[present] * iou[present])) if total else float("nan")
    pe = float((ref * pred).sum() / total**2) if total else float("nan")
    kappa = (acc - pe) / (1 - pe) if total and pe < 1 else float("nan")
    return {
        "pixels": int(total),
        "pixel_accuracy": acc,
        "miou": float(np.nanmean(iou[present])) if present.any() else float("nan"),
        "fwiou": fwiou,
        "kappa": float(kappa),
        "per_class": {
            names[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "iou": float(iou[i]),
                "reference_pixels": int(ref[i]),
                "predicted_pixels": int(pred[i]),
            }
            for i in range(n)
        },
        "confusion_matrix": cm.astype(np.int64).tolist(),
        "class_names": names,
    }

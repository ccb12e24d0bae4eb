from __future__ import annotations

import numpy as np
import pytest

from geoseg.metrics import ConfusionMatrix


def test_scores_by_hand() -> None:
    ref = np.array([0, 0, 0, 1, 1, 2, 2, 2, 255])
    pred = np.array([0, 0, 1, 1, 1, 2, 0, 2, 0])
    cm = ConfusionMatrix(3)
    cm.update(ref, pred)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    s = cm.scores(["a", "b", "c"])
    assert s["pixel_accuracy"] == pytest.approx(6 / 8)
    # IoU: a 2/(3+3-2)=0.5, b 2/(2+3-2)=2/3, c 2/(3+2-2)=2/3
    assert s["per_class"]["a"]["iou"] == pytest.approx(0.5)
    assert s["miou"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert s["fwiou"] == pytest.approx(3 / 8 * 0.5 + 2 / 8 * 2 / 3 + 3 / 8 * 2 / 3)
    pe = (3 * 3 + 2 * 3 + 3 * 2) / 64
    assert s["kappa"] == pytest.approx((6 / 8 - pe) / (1 - pe))
    assert s["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert s["per_class"]["b"]["recall"] == pytest.approx(1.0)

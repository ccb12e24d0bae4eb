"""Accuracy of a class map against a reference: scores and area-adjusted estimates.

:func:`evaluate` streams a prediction (a class raster) block by block against a reference
given as a class raster on any grid/CRS (aligned nearest neighbour onto the prediction grid),
or as polygons or points with a class column (rasterized per block; a point labels the pixel
it falls in). It accumulates one confusion matrix and the mapped area of every class, then
reports:

* pixel accuracy, per-class precision / recall / F1 / IoU, mIoU, frequency-weighted IoU and
  Cohen's kappa (:func:`geoseg.metrics.scores_from_confusion`);
* area-adjusted accuracy (Olofsson et al. 2014, *Good practices for estimating area and
  assessing accuracy of land change*, RSE 148: 42-57): a stratified estimator with the map
  classes as strata, ``p_ij = W_i n_ij / n_i.`` where ``W_i`` is the mapped area share of map
  class ``i``; user's, producer's and overall accuracy and the area of each class, each with
  a 95 % confidence interval (:func:`area_adjusted_accuracy`).

Outputs share one base path: ``REPORT.json`` (everything), ``REPORT.md`` (tables) and
``REPORT.png`` (the confusion matrix). Areas are ellipsoidal hectares.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.area import pixel_area_m2, pixel_areas_m2
from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import EmptyResultError
from geoseg.grid import Grid, block_windows
from geoseg.io.atomic import atomic_outputs
from geoseg.io.outputs import check_outputs
from geoseg.log import progress
from geoseg.metrics import ConfusionMatrix, scores_from_confusion

if TYPE_CHECKING:
    from geoseg.labels import LabelSource

__all__ = ["EvaluationReport", "area_adjusted_accuracy", "evaluate", "report_paths"]

log = logging.getLogger(__name__)

_HA = 1e-4
_BLOCK = 1024
Z95 = 1.959963984540054


# ---- Olofsson et al. 2014 -------------------------------------------------------------------
def area_adjusted_accuracy(
    counts: np.ndarray,
    mapped_area: Sequence[float] | np.ndarray,
    *,
    names: Sequence[str] | None = None,
    z: float = Z95,
) -> dict[str, Any]:
    """Stratified area and accuracy estimates with confidence intervals (Olofsson et al. 2014).

    Args:
        counts: ``n_ij`` sample counts, rows = **map** class ``i`` (the strata), columns =
            reference class ``j`` (the transpose of :class:`~geoseg.metrics.ConfusionMatrix`).
        mapped_area: the mapped area of each map class (any unit; areas come back in it).
        names: class names.
        z: the normal quantile of the intervals (1.96 for 95 %).

    Returns:
        ``overall_accuracy`` and its ``overall_accuracy_ci`` (half-width), and per class:
        ``users_accuracy``, ``producers_accuracy``, ``area_proportion``, ``area`` (estimated),
        ``mapped_area``, each with a ``*_ci`` half-width; plus the ``proportions`` matrix
        ``p_ij``. Strata with no sample add nothing (their accuracies are NaN); variances need
        at least two samples in a stratum.
    """
    n = np.asarray(counts, dtype=np.float64)
    k = n.shape[0]
    if n.shape != (k, k):
        raise ValueError(f"counts must be a square matrix, got shape {n.shape}")
    am = np.asarray(mapped_area, dtype=np.float64)
    names = list(names) if names is not None else [str(i) for i in range(k)]
    a_tot = float(am.sum())
    w = am / a_tot if a_tot > 0 else np.zeros(k)
    ni = n.sum(axis=1)  # n_i.
    with np.errstate(divide="ignore", invalid="ignore"):
        row_frac = np.where(ni[:, None] > 0, n / ni[:, None], 0.0)  # n_ij / n_i.
        denom = np.where(ni > 1, ni - 1, np.inf)  # n_i. - 1; no variance from < 2 samples
        p = w[:, None] * row_frac  # p_ij
        p_ref = p.sum(axis=0)  # p_.j: estimated area proportion of reference class j
        users = np.where(ni > 0, np.diag(row_frac), np.nan)
        producers = np.where(p_ref > 0, np.diag(p) / p_ref, np.nan)
        overall = float(np.trace(p))
        u0 = np.nan_to_num(users)
        var_overall = float(np.sum(w**2 * u0 * (1 - u0) / denom))
        var_users = np.where(ni > 0, u0 * (1 - u0) / denom, np.nan)
        # V(p_.k) = sum_i W_i^2 (n_ik/n_i.)(1 - n_ik/n_i.)/(n_i. - 1)   (Eq. 10)
        var_prop = np.sum((w**2)[:, None] * row_frac * (1 - row_frac) / denom[:, None], axis=0)
        var_prod = _producers_variance(am, row_frac, producers, u0, ni, denom)

    def f(x: float) -> float | None:
        return None if x is None or math.isnan(x) else float(x)

    per_class = {}
    for j in range(k):
        se_prop = math.sqrt(var_prop[j])
        per_class[names[j]] = {
            "users_accuracy": f(users[j]),
            "users_accuracy_ci": f(z * math.sqrt(var_users[j])),
            "producers_accuracy": f(producers[j]),
            "producers_accuracy_ci": f(z * math.sqrt(var_prod[j])),
            "area_proportion": f(p_ref[j]),
            "area_proportion_ci": f(z * se_prop),
            "mapped_area": f(am[j]),
            "area": f(a_tot * p_ref[j]),
            "area_ci": f(z * a_tot * se_prop),
            "samples": int(ni[j]),
        }
    return {
        "overall_accuracy": f(overall),
        "overall_accuracy_ci": f(z * math.sqrt(var_overall)),
        "z": z,
        "total_mapped_area": a_tot,
        "per_class": per_class,
        "proportions": p.tolist(),
    }


def _producers_variance(
    n_map: np.ndarray,
    row_frac: np.ndarray,
    producers: np.ndarray,
    u0: np.ndarray,
    ni: np.ndarray,
    denom: np.ndarray,
) -> np.ndarray:
    """V(P_j), Eq. 7, with N_i. the mapped area and N_.j = sum_i N_i. n_ij / n_i."""
    k = len(n_map)
    n_ref = (n_map[:, None] * row_frac).sum(axis=0)
    var_prod = np.full(k, np.nan)
    for j in range(k):
        if n_ref[j] <= 0 or ni[j] == 0:
            continue
        pj = producers[j]
        first = n_map[j] ** 2 * (1 - pj) ** 2 * u0[j] * (1 - u0[j]) / denom[j]
        others = [
            n_map[i] ** 2 * row_frac[i, j] * (1 - row_frac[i, j]) / denom[i]
            for i in range(k)
            if i != j
        ]
        var_prod[j] = (first + pj**2 * float(np.sum(others))) / n_ref[j] ** 2
    return var_prod


# ---- report --------------------------------------------------------------------------------
def report_paths(out: str | os.PathLike[str]) -> dict[str, Path]:
    """The files of a report at ``out``: ``{json, md, png}``.

    ``out`` is a base path (``results/eval`` -> ``results/eval.json``, ``.md``, ``.png``; a
    ``.json``/``.md``/``.png`` suffix is dropped). An existing folder, or a path ending with
    a separator, holds ``evaluation.json``, ``evaluation.md`` and ``evaluation.png``.
    """
    s = os.fspath(out)
    p = Path(s)
    if p.is_dir() or s.endswith(("/", os.sep)):
        base = p / "evaluation"
    elif p.suffix.lower() in (".json", ".md", ".png"):
        base = p.with_suffix("")
    else:
        base = p
    return {ext: base.with_name(base.name + "." + ext) for ext in ("json", "md", "png")}


@dataclass(frozen=True)
class EvaluationReport:
    """The scores of a prediction against a reference (see :func:`evaluate`)."""

    prediction: str
    reference: str
    class_ids: list[int]
    class_names: list[str]
    confusion: np.ndarray  # rows = reference, columns = prediction
    scores: dict[str, Any]
    area_adjusted: dict[str, Any]
    pixels_compared: int
    pixel_area_ha: float
    outputs: dict[str, Path]

    @property
    def pixel_accuracy(self) -> float:
        """Share of compared pixels predicted right."""
        return float(self.scores["pixel_accuracy"])

    @property
    def miou(self) -> float:
        """Mean IoU over the classes present."""
        return float(self.scores["miou"])

    @property
    def kappa(self) -> float:
        """Cohen's kappa."""
        return float(self.scores["kappa"])

    @property
    def one_class_note(self) -> str | None:
        """A warning when prediction and reference hold one class: the scores mean nothing."""
        if len(self.class_ids) != 1:
            return None
        return (
            f"warning: only one class ({self.class_names[0]}) in the prediction and the "
            "reference, so mIoU and accuracy are trivially 1; evaluate against a reference "
            "with more classes"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (NaN becomes null)."""
        return _nan_to_none(
            {
                "prediction": self.prediction,
                "reference": self.reference,
                "classes": [
                    {"id": i, "name": n}
                    for i, n in zip(self.class_ids, self.class_names, strict=True)
                ],
                "pixels_compared": self.pixels_compared,
                "warning": self.one_class_note,
                "confusion_matrix": {
                    "rows": "reference",
                    "columns": "prediction",
                    "counts": self.confusion.astype(np.int64).tolist(),
                },
                "scores": {k: v for k, v in self.scores.items() if k != "confusion_matrix"},
                "area_adjusted": {
                    **self.area_adjusted,
                    "area_unit": "ha",
                    "method": "Olofsson et al. 2014, stratified by map class, 95% CI",
                },
                "outputs": {k: str(v) for k, v in self.outputs.items()},
            }
        )

    def summary(self) -> str:
        """A few lines for the command line."""
        aa = self.area_adjusted
        return "\n".join(
            [
                f"{self.pixels_compared} pixels compared, {len(self.class_ids)} classes",
                *([self.one_class_note] if self.one_class_note else []),
                f"pixel accuracy {self.pixel_accuracy:.4f}  mIoU {self.miou:.4f}  "
                f"fwIoU {self.scores['fwiou']:.4f}  kappa {self.kappa:.4f}",
                f"area-adjusted overall accuracy {aa['overall_accuracy']:.4f} "
                f"± {aa['overall_accuracy_ci']:.4f} (95% CI)",
                *(f"Wrote {p}" for p in self.outputs.values()),
            ]
        )

    def to_markdown(self) -> str:
        """The report as Markdown tables."""
        s, aa = self.scores, self.area_adjusted
        lines = [
            "# Accuracy report",
            "",
            f"- prediction: `{self.prediction}`",
            f"- reference: `{self.reference}`",
            f"- pixels compared: {self.pixels_compared}",
            "",
            "| pixel accuracy | mIoU | fwIoU | kappa | area-adjusted overall accuracy (95% CI) |",
            "|---|---|---|---|---|",
            f"| {_fmt(s['pixel_accuracy'])} | {_fmt(s['miou'])} | {_fmt(s['fwiou'])} "
            f"| {_fmt(s['kappa'])} | {_fmt(aa['overall_accuracy'])} "
            f"± {_fmt(aa['overall_accuracy_ci'])} |",
            "",
            "## Per class",
            "",
            "| id | class | precision | recall | F1 | IoU | reference px | predicted px |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for cid, name in zip(self.class_ids, self.class_names, strict=True):
            c = s["per_class"][name]
            lines.append(
                f"| {cid} | {name} | {_fmt(c['precision'])} | {_fmt(c['recall'])} "
                f"| {_fmt(c['f1'])} | {_fmt(c['iou'])} | {c['reference_pixels']} "
                f"| {c['predicted_pixels']} |"
            )
        lines += [
            "",
            "## Area-adjusted accuracy and area (Olofsson et al. 2014, 95% CI)",
            "",
            "| class | user's accuracy | producer's accuracy | mapped area (ha) | estimated area (ha) |",
            "|---|---|---|---|---|",
        ]
        for name in self.class_names:
            c = aa["per_class"][name]
            lines.append(
                f"| {name} | {_fmt(c['users_accuracy'])} ± {_fmt(c['users_accuracy_ci'])} "
                f"| {_fmt(c['producers_accuracy'])} ± {_fmt(c['producers_accuracy_ci'])} "
                f"| {_fmt(c['mapped_area'], 2)} | {_fmt(c['area'], 2)} ± {_fmt(c['area_ci'], 2)} |"
            )
        lines += [
            "",
            "## Confusion matrix (rows: reference, columns: prediction)",
            "",
            "| reference \\ prediction | " + " | ".join(self.class_names) + " |",
            "|---" * (len(self.class_names) + 1) + "|",
        ]
        for name, row in zip(self.class_names, self.confusion.tolist(), strict=True):
            lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
        return "\n".join(lines) + "\n"


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


def _plot_confusion(path: Path, cm: np.ndarray, names: list[str]) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(rows > 0, cm / rows, 0.0)
    k = len(names)
    size = 2.5 + 0.6 * k
    fig = Figure(figsize=(size + 1, size), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title("Confusion matrix (row-normalised; counts)")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}\n{int(cm[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


# ---- the operation --------------------------------------------------------------------------
def evaluate(
    prediction: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    class_column: str | None = None,
    overwrite: bool = False,
) -> EvaluationReport:
    """Score a class raster against a reference and write the report.

    Args:
        prediction: the predicted class raster (class ids; its nodata is skipped).
        reference: a class raster on any grid/CRS, or vector file(s) of polygons or points.
        out: the report's base path (see :func:`report_paths`): ``.json``, ``.md``, ``.png``.
        class_column: the vector attribute holding the class (names or ids). Names are
            matched to the prediction's class names (``CLASS_NAMES`` tag) when it has them.
        overwrite: replace existing report files.

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        LabelError: the reference cannot be used or lies outside the prediction.
        EmptyResultError: no pixel has both a prediction and a reference.
    """
    paths = report_paths(out)
    check_outputs(
        {f"--out {out}": list(paths.values())},
        inputs={"prediction": prediction} | _inputs("reference", reference),
        overwrite=overwrite,
    )
    acc = _accumulate(prediction, reference, class_column=class_column)
    grid, mapped, pred_classes, labels = acc.grid, acc.mapped, acc.pred_classes, acc.labels
    full = acc.confusion.matrix
    total = int(full.sum())
    if total == 0:
        raise EmptyResultError(
            f"{prediction}: no pixel has both a prediction and a reference class; "
            "check that the reference covers the prediction and shares its class ids"
        )
    seen = (full.sum(axis=0) + full.sum(axis=1)) > 0
    ids = [int(i) for i in np.nonzero(seen | (mapped > 0))[0] if i != IGNORE_INDEX]
    names = [_class_name(i, pred_classes, labels.classes) for i in ids]
    sub = full[np.ix_(ids, ids)]
    scores = scores_from_confusion(sub, names)
    area = area_adjusted_accuracy(sub.T, mapped[ids], names=names)
    report = EvaluationReport(
        prediction=str(prediction),
        reference=str(reference),
        class_ids=ids,
        class_names=names,
        confusion=sub,
        scores=scores,
        area_adjusted=area,
        pixels_compared=total,
        pixel_area_ha=pixel_area_m2(grid) * _HA,
        outputs=paths,
    )
    with atomic_outputs(list(paths.values()), overwrite=overwrite) as (tj, tm, tp):
        tj.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        tm.write_text(report.to_markdown())
        _plot_confusion(tp, sub, names)
    if report.one_class_note:
        log.warning("%s: %s", prediction, report.one_class_note)
    log.info("evaluate: %s", report.summary().splitlines()[1])
    return report


def _say_outside(labels: LabelSource, grid: Grid, prediction: str | os.PathLike[str]) -> None:
    """Warn how many reference features lie outside the prediction (never scored)."""
    n = labels.outside(grid)
    if n:  # only feature labels (sized) have features outside
        log.warning(
            "%s: %d of %d reference feature(s) lie outside the prediction and are not scored",
            prediction,
            n,
            len(labels) if isinstance(labels, Sized) else n,
        )


def _inputs(
    role: str, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
) -> dict[str, str | os.PathLike[str] | None]:
    """Input files by role (``reference``, ``reference 2``...) for the output check."""
    many = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    return {role + (f" {i + 1}" if i else ""): p for i, p in enumerate(many)}


def _class_name(cid: int, *maps: ClassMap | None) -> str:
    for m in maps:
        if m is not None and cid in m.ids:
            return m.by_id(cid).name
    return f"class_{cid}"


@dataclass
class _Accumulated:
    """What one pass over the prediction gathers: the confusion matrix and mapped areas."""

    grid: Grid
    confusion: ConfusionMatrix  # over all 256 values: rows reference, columns prediction
    mapped: np.ndarray  # mapped area (ha) per class id
    pred_classes: ClassMap | None
    labels: LabelSource


def _accumulate(
    prediction: str | os.PathLike[str],
    reference: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    class_column: str | None,
) -> _Accumulated:
    """Stream the prediction block by block against the reference (rasterized per block)."""
    from geoseg.io.raster import check_grid, open_raster, raster_classes
    from geoseg.labels import load_labels

    cm = ConfusionMatrix(256)
    mapped = np.zeros(256, dtype=np.float64)  # mapped area (ha) per class id
    with open_raster(prediction) as ds:
        grid = Grid.from_dataset(ds)
        check_grid(grid, prediction)
        pred_classes = raster_classes(ds)
        labels = load_labels(
            reference if isinstance(reference, str | os.PathLike) else list(reference),
            class_column=class_column,
            classes=pred_classes,
        )
        labels.require_overlap(grid, scene=str(prediction))
        _say_outside(labels, grid, prediction)
        nodata = ds.nodata
        windows = block_windows(grid.shape, _BLOCK)
        for window in progress(windows, desc="evaluate", unit="block"):
            pred = ds.read(1, window=window)
            pvalid = ds.read_masks(1, window=window) > 0
            if nodata is not None:
                pvalid &= pred != nodata
            pvalid &= (pred >= 0) & (pred < IGNORE_INDEX)
            areas = np.broadcast_to(pixel_areas_m2(grid, window) * _HA, pred.shape)
            pv = pred[pvalid].astype(np.int64)
            mapped += np.bincount(pv, weights=areas[pvalid], minlength=256)
            ref = labels.read_mask(grid.window_grid(window))
            ok = pvalid & (ref != IGNORE_INDEX)
            cm.update(ref[ok], pred[ok])
    return _Accumulated(grid, cm, mapped, pred_classes, labels)

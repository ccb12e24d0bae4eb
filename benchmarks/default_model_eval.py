"""Held-out accuracy of the default model on its source data (North Carolina Landsat 7).

The scene is predicted exactly as users do (``geoseg.predict.predict``: chips, blending, COG),
then the class raster is compared with the dense reference map (strata.tif) on each strip of
the spatial split the model was trained with (read from the bundle's training config): the
``test`` strip was never trained on nor used to pick the epoch. Prints a markdown table for
docs/model-card.md and writes the scores as JSON.

    python benchmarks/default_model_eval.py                       # the shipped model
    python benchmarks/default_model_eval.py --model other.pt --json scores.json
    python benchmarks/default_model_eval.py --model m.pt --half --stamp --baseline

``--half`` stores the weights as float16 (half the file size; scores are then those of the
float16 weights), ``--stamp`` writes the contract description and these held-out scores into the
bundle, ``--baseline`` adds a per-pixel random forest trained on the same training strip.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geoseg.bundle import ModelBundle
from geoseg.classes import IGNORE_INDEX
from geoseg.data import SplitRule, split_windows
from geoseg.datasets import DEFAULT_MODEL_DESCRIPTION, DatasetFetchError, prepare_nc_landsat
from geoseg.grid import Grid
from geoseg.metrics import ConfusionMatrix
from geoseg.predict import default_model_path, predict


def split_rule(bundle: ModelBundle) -> SplitRule:
    s = dict(bundle.config.get("split") or {})
    return SplitRule(
        val_fraction=float(s.get("val_fraction", 0.2)),
        test_fraction=float(s.get("test_fraction", 0.0)),
        axis=s.get("axis", "x"),
        buffer=int(s.get("buffer", 0)),
    )


def to_index(ids: np.ndarray, class_ids: list[int]) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for i, cid in enumerate(class_ids):
        lut[cid] = i
    return lut[ids]


def scores_by_split(
    pred: np.ndarray,
    ref: np.ndarray,
    grid: Grid,
    rule: SplitRule,
    class_ids: list[int],
    names: list[str],
) -> dict[str, Any]:
    out = {}
    for name, win in split_windows(grid, rule).items():
        r0, c0, h, w = win.row_off, win.col_off, win.height, win.width
        p = to_index(pred[win.toslices()], class_ids)
        y = to_index(ref[win.toslices()], class_ids)
        ok = (y != IGNORE_INDEX) & (p != IGNORE_INDEX)
        cm = ConfusionMatrix(len(class_ids))
        cm.update(y[ok], p[ok])
        out[name] = cm.scores(names)
        out[name]["window"] = [int(r0), int(c0), int(h), int(w)]
    return out


def rf_baseline(
    scene: Path,
    ref: np.ndarray,
    grid: Grid,
    rule: SplitRule,
    class_ids: list[int],
    names: list[str],
) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier

    with rasterio.open(scene) as ds:
        img = ds.read()
    valid = (img != 0).all(axis=0)
    wins = split_windows(grid, rule)
    rows, cols = wins["train"].toslices()
    x = img[:, rows, cols].reshape(img.shape[0], -1).T
    y = ref[rows, cols].ravel()
    ok = valid[rows, cols].ravel() & (y != IGNORE_INDEX)
    rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=0, min_samples_leaf=2)
    rf.fit(x[ok], y[ok])
    pred = np.full(ref.shape, IGNORE_INDEX, dtype=np.uint8)
    flat = img.reshape(img.shape[0], -1).T
    vflat = valid.ravel()
    pred.ravel()[vflat] = rf.predict(flat[vflat]).astype(np.uint8)
    return scores_by_split(pred, ref, grid, rule, class_ids, names)


def table(scores: dict[str, Any], names: list[str], title: str) -> str:
    splits = [s for s in ("train", "val", "test") if s in scores]
    lines = [f"**{title}**", "", "| | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for key, label in (
        ("miou", "mIoU"),
        ("pixel_accuracy", "pixel accuracy"),
        ("fwiou", "FW-IoU"),
        ("kappa", "kappa"),
    ):
        lines.append(f"| {label} | " + " | ".join(f"{scores[s][key]:.3f}" for s in splits) + " |")
    lines.append("| pixels | " + " | ".join(f"{scores[s]['pixels']:,}" for s in splits) + " |")
    for n in names:
        cells = []
        for s in splits:
            pc = scores[s]["per_class"][n]
            iou = "n/a" if np.isnan(pc["iou"]) else f"{pc['iou']:.3f}"
            cells.append(f"{iou} ({pc['reference_pixels']:,} px)")
        lines.append(f"| IoU {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def portable(config: dict[str, Any]) -> dict[str, Any]:
    """The training config with this machine's paths made relative to the repository."""
    root = str(Path(__file__).resolve().parents[1]) + "/"
    text = json.dumps(config).replace(root + "workflows/../", "").replace(root, "")
    out = json.loads(text)
    out["out"] = "geoseg/assets/default_model.pt"
    return out


def halve(bundle: ModelBundle) -> ModelBundle:
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in bundle.state_dict.items()}
    return bundle.replace(state_dict=sd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(default_model_path()), help="bundle to evaluate")
    ap.add_argument("--cache", default="data-cache", help="sample-data cache folder")
    ap.add_argument("--json", default=None, help="write the scores here")
    ap.add_argument("--half", action="store_true", help="store float16 weights (with --stamp)")
    ap.add_argument(
        "--stamp", action="store_true", help="write description + scores into the bundle"
    )
    ap.add_argument("--baseline", action="store_true", help="add a per-pixel random forest")
    args = ap.parse_args(argv)

    try:
        sample = prepare_nc_landsat(args.cache)
    except DatasetFetchError as exc:
        print(f"skipped: {exc}")
        return 0
    bundle = ModelBundle.load(args.model)
    if args.half:
        bundle = halve(bundle)
    rule = split_rule(bundle)
    names, class_ids = bundle.classes.names, bundle.classes.ids
    with rasterio.open(sample.labels) as ds:
        ref = ds.read(1)
        grid = Grid.from_dataset(ds)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = predict(sample.scene, out=Path(tmp) / "pred.tif", model=bundle, overwrite=True)
        with rasterio.open(Path(tmp) / "pred.tif") as ds:
            pred = ds.read(1)
    seconds = time.perf_counter() - t
    scores = scores_by_split(pred, ref, grid, rule, class_ids, names)
    result: dict[str, Any] = {
        "model": args.model,
        "arch": f"{bundle.arch}/{bundle.encoder}",
        "split": {
            "axis": rule.axis,
            "val_fraction": rule.val_fraction,
            "test_fraction": rule.test_fraction,
            "buffer": rule.buffer,
        },
        "predict_seconds": round(seconds, 2),
        "predict_report": report.to_dict(),
        "scores": scores,
    }
    print(
        table(
            scores,
            names,
            f"{bundle.arch}/{bundle.encoder} ({Path(args.model).name}), whole-scene prediction",
        )
    )
    if args.baseline:
        base = rf_baseline(sample.scene, ref, grid, rule, class_ids, names)
        result["baseline_random_forest"] = base
        print()
        print(table(base, names, "per-pixel random forest (100 trees, same training strip)"))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float) + "\n")
    if args.stamp:
        metrics = dict(bundle.metrics)
        metrics["heldout"] = {
            s: {k: scores[s][k] for k in ("miou", "pixel_accuracy", "fwiou", "kappa", "pixels")}
            | {"iou": {n: scores[s]["per_class"][n]["iou"] for n in names}}
            for s in scores
        }
        metrics["heldout"]["evaluated_by"] = (
            "benchmarks/default_model_eval.py (whole-scene predict)"
        )
        stamped = bundle.replace(
            description=DEFAULT_MODEL_DESCRIPTION, metrics=metrics, config=portable(bundle.config)
        )
        stamped.save(args.model, overwrite=True)
        size = Path(args.model).stat().st_size / 2**20
        print(f"\nstamped {args.model} ({size:.1f} MiB): description + held-out scores")
    return 0


if __name__ == "__main__":
    sys.exit(main())

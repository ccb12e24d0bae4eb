"""Compare architectures on aber-s2 (spatial split), and TTA / CRF on vs off, in ONE run.

Every model is trained with the same budget (``--epochs`` x ``--steps`` batches of
``--batch-size`` chips of ``--size`` px; flips/rotations only, as in bench_train_aber.py) on
the west strip, then predicts the WHOLE scene with ``geoseg.predict`` (256 px chips, 64 px
overlap, ``--threads`` CPU threads); the test strip (east 30 %, 16 px buffer) of the written
class COG is scored against ``landcover.tif``. For ``--post-model`` the prediction is repeated
with ``--tta flips``, ``--tta d4``, ``--refine crf`` and both, on the same bundle.

    python benchmarks/bench_models_aber.py --epochs 10 --steps 40 --json /tmp/bench17.json

Columns: test mIoU and per-class IoU, train minutes (wall, incl. per-epoch validation), predict
Mpx/s (whole scene, wall); for TTA/CRF: mIoU delta and predict-time ratio vs plain.
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train_aber import NAMES, SPLIT  # noqa: E402

from geoseg.classes import ClassMap  # noqa: E402
from geoseg.data import split_windows  # noqa: E402
from geoseg.grid import Grid  # noqa: E402
from geoseg.metrics import ConfusionMatrix  # noqa: E402
from geoseg.predict import predict  # noqa: E402
from geoseg.train import AugmentConfig, TrainConfig, train  # noqa: E402

MODELS = [
    ("U-Net", "unet", "resnet18"),
    ("DeepLabV3+", "deeplabv3plus", "resnet18"),
    ("SegFormer", "segformer", "mit_b0"),
    ("LR-ASPP (light)", "lraspp", "tu-mobilenetv3_large_100"),
]
POST = [("TTA flips", "flips", "none"), ("TTA d4", "d4", "none"), ("CRF", "none", "crf")]
POST += [("TTA d4 + CRF", "d4", "crf")]


def score_test_strip(pred_path: Path, labels: Path) -> dict[str, Any]:
    """mIoU and per-class IoU of a class COG on the test strip of the spatial split."""
    import rasterio

    with rasterio.open(labels) as ds:
        win = split_windows(Grid.from_dataset(ds), SPLIT.rule())["test"]
        truth = ds.read(1, window=win)
    with rasterio.open(pred_path) as ds:
        pred = ds.read(1, window=win)
    ok = (truth > 0) & (pred != 255)
    cm = ConfusionMatrix(len(NAMES))
    cm.update(truth[ok].astype(np.int64) - 1, pred[ok].astype(np.int64) - 1)
    s = cm.scores(NAMES)
    return {"miou": s["miou"], "iou": {k: v["iou"] for k, v in s["per_class"].items()}}


def run_predict(
    scene: Path, bundle: Path, out: Path, *, threads: int, tta: str = "none", refine: str = "none"
) -> tuple[float, float]:
    """Whole-scene prediction; (wall seconds, Mpx/s)."""
    t0 = time.perf_counter()
    rep = predict(
        scene, out=out, model=bundle, overwrite=True, threads=threads, tta=tta, refine=refine
    )
    return time.perf_counter() - t0, rep.mpx_per_s


def main() -> None:
    """Train every model, predict, score; print the table (and write --json)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "aber-s2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--post-model", default="U-Net", help="model for the TTA/CRF rows")
    ap.add_argument("--only", nargs="*", default=None, help="subset of model names")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    scene, labels = a.data / "s2_10band.tif", a.data / "landcover.tif"
    if not scene.exists():
        print(f"skipped: {scene} not found")
        return
    torch.set_num_threads(a.threads)
    work = a.work or Path(tempfile.mkdtemp(prefix="bench17-"))
    work.mkdir(parents=True, exist_ok=True)
    cls_yaml = work / "classes.yaml"
    ClassMap.from_names(NAMES, start=1).write(cls_yaml)
    steps = a.epochs * a.steps
    results: list[dict[str, Any]] = []
    post: list[dict[str, Any]] = []
    for label, arch, enc in MODELS:
        if a.only and label not in a.only:
            continue
        out = work / f"{arch}.pt"
        cfg = TrainConfig(
            out=out,
            scenes=[{"image": scene, "labels": [labels]}],
            classes=cls_yaml,
            model=arch,
            encoder=enc,
            epochs=a.epochs,
            steps_per_epoch=a.steps,
            batch_size=a.batch_size,
            chip_size=a.size,
            split=SPLIT,
            augment=AugmentConfig(scale=None, jitter=0.0),
            seed=a.seed,
            overwrite=True,
        )
        res = train(config=cfg)
        params = sum(v.numel() for k, v in torch.load(out, weights_only=True)["state_dict"].items())
        sec, mpx = run_predict(scene, out, work / f"{arch}.tif", threads=a.threads)
        row = {
            "model": f"{label} {arch}/{enc}",
            "label": label,
            "params_m": params / 1e6,
            "train_min": res.seconds / 60,
            "predict_s": sec,
            "mpx_s": mpx,
            **score_test_strip(work / f"{arch}.tif", labels),
        }
        results.append(row)
        print(json.dumps(row, default=float), flush=True)
        if label == a.post_model:
            for name, tta, refine in POST:
                p_out = work / f"{arch}_{tta}_{refine}.tif"
                s2, _ = run_predict(scene, out, p_out, threads=a.threads, tta=tta, refine=refine)
                sc = score_test_strip(p_out, labels)
                prow = {
                    "variant": name,
                    "miou": sc["miou"],
                    "delta_miou": sc["miou"] - row["miou"],
                    "time_ratio": s2 / sec,
                    "predict_s": s2,
                    "iou": sc["iou"],
                }
                post.append(prow)
                print(json.dumps(prow, default=float), flush=True)
    print_table(results, post, a, steps)
    if a.json:
        a.json.write_text(json.dumps({"models": results, "post": post}, indent=1, default=float))


def print_table(
    results: list[dict[str, Any]], post: list[dict[str, Any]], a: argparse.Namespace, steps: int
) -> None:
    """The markdown tables."""
    print(
        f"\naber-s2, test strip (east {SPLIT.test_fraction:.0%}, buffer {SPLIT.buffer} px); "
        f"each model trained {steps} steps ({a.epochs} x {a.steps}) of {a.batch_size} chips of "
        f"{a.size} px on {a.threads} CPU threads; predict: whole scene, 256 px chips, 64 overlap\n"
    )
    head = "| model | params (M) | test mIoU | " + " | ".join(NAMES) + " | train min | Mpx/s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in results:
        iou = " | ".join(f"{r['iou'][n]:.3f}" for n in NAMES)
        print(
            f"| {r['model']} | {r['params_m']:.1f} | {r['miou']:.3f} | {iou} | "
            f"{r['train_min']:.1f} | {r['mpx_s']:.3f} |"
        )
    if post:
        print(f"\n{a.post_model}: test-time augmentation and CRF refinement (same bundle)\n")
        print("| variant | test mIoU | delta mIoU | predict time ratio |")
        print("|---|---|---|---|")
        for p in post:
            print(
                f"| {p['variant']} | {p['miou']:.3f} | {p['delta_miou']:+.3f} | "
                f"{p['time_ratio']:.2f}x |"
            )


if __name__ == "__main__":
    main()

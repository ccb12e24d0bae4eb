"""Train a segmentation model on aber-s2 (spatial split) and compare with a per-pixel random forest.

Scene: ../shared/data/aber-s2/s2_10band.tif (10 bands), labels landcover.tif (1 forest, 2 grass,
3 urban, 4 water; 0 nodata). Split along x: west = train, then val, then east = test, with a
buffer of unused columns between strips. The random forest uses the same bands, the same
training strip and is scored on the same test pixels.

    python benchmarks/bench_train_aber.py --model unet --encoder resnet18 --epochs 12 \
        --out /tmp/aber_unet.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geoseg.classes import ClassMap  # noqa: E402
from geoseg.data import SceneData  # noqa: E402
from geoseg.metrics import ConfusionMatrix  # noqa: E402
from geoseg.train import AugmentConfig, SplitConfig, TrainConfig, train  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "aber-s2"
NAMES = ["forest", "grass", "urban", "water"]
SPLIT = SplitConfig(val_fraction=0.15, test_fraction=0.3, axis="x", buffer=16)


def random_forest(classes_yaml: Path, *, seed: int, max_train: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier

    data = SceneData(
        scenes=[DATA / "s2_10band.tif"],
        labels=[[DATA / "landcover.tif"]],
        classes=ClassMap.read(classes_yaml),
        split=SPLIT.rule(),
    )
    try:
        x, y = data.pixel_sample(max_pixels=max_train, seed=seed)
        t0 = time.perf_counter()
        rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=seed)
        rf.fit(x, y)
        cm = ConfusionMatrix(len(NAMES))
        import rasterio

        win = data.region(0, "test")
        with rasterio.open(data.scenes[0]) as ds, rasterio.open(data.mask_paths[0]) as ms:
            img = ds.read(window=win)
            m = ms.read(1, window=win)
        ok = m != 255
        pred = rf.predict(img[:, ok].T.astype(np.float32))
        cm.update(m[ok], pred)
        s = cm.scores(NAMES)
        s["seconds"] = time.perf_counter() - t0
        s["train_pixels"] = len(y)
        return s
    finally:
        data.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="unet")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--loss", default="ce")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rf-pixels", type=int, default=100_000)
    ap.add_argument("--no-rf", action="store_true")
    ap.add_argument(
        "--augment",
        choices=["light", "full"],
        default="light",
        help="light: flips/rotations only (labels here come from a per-pixel classifier, "
        "so zoom resampling and colour jitter blur the very signal to learn)",
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/aber_unet.pt"))
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    a = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return
    torch.set_num_threads(a.threads)
    cls_yaml = a.out.with_name(a.out.stem + "_classes.yaml")
    ClassMap.from_names(NAMES, start=1).write(cls_yaml)
    cfg = TrainConfig(
        out=a.out,
        scenes=[{"image": DATA / "s2_10band.tif", "labels": [DATA / "landcover.tif"]}],
        classes=cls_yaml,
        model=a.model,
        encoder=a.encoder,
        epochs=a.epochs,
        steps_per_epoch=a.steps,
        batch_size=a.batch_size,
        chip_size=a.size,
        lr=a.lr,
        loss=a.loss,
        split=SPLIT,
        augment=AugmentConfig() if a.augment == "full" else AugmentConfig(scale=None, jitter=0.0),
        seed=a.seed,
        overwrite=True,
    )
    res = train(config=cfg)
    report: dict = {
        "config": cfg.model_dump(mode="json"),
        "seconds": res.seconds,
        "best_epoch": res.best_epoch,
        "epochs_run": res.epochs_run,
        "val": res.val,
        "test": res.test,
    }
    rows = [(f"{a.model}/{a.encoder}", res.test)]
    if not a.no_rf:
        rf = random_forest(cls_yaml, seed=a.seed, max_train=a.rf_pixels)
        report["random_forest"] = {
            "miou": rf["miou"],
            "fwiou": rf["fwiou"],
            "pixel_accuracy": rf["pixel_accuracy"],
            "iou": {k: v["iou"] for k, v in rf["per_class"].items()},
            "seconds": rf["seconds"],
            "train_pixels": rf["train_pixels"],
        }
        rows.append(("random forest", report["random_forest"]))
    print(
        f"aber-s2 test strip (east {SPLIT.test_fraction:.0%}, buffer {SPLIT.buffer} px); "
        f"{a.model}/{a.encoder} trained in {res.seconds:.0f} s, best epoch {res.best_epoch}"
    )
    print(
        f"{'model':24s} {'mIoU':>6s} {'FW-IoU':>6s} {'OA':>6s} "
        + " ".join(f"{n:>7s}" for n in NAMES)
    )
    for name, s in rows:
        if s is None:
            continue
        iou = s["iou"]
        print(
            f"{name:24s} {s['miou']:6.3f} {s['fwiou']:6.3f} {s['pixel_accuracy']:6.3f} "
            + " ".join(f"{iou[n]:7.3f}" for n in NAMES)
        )
    if a.json:
        a.json.write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()

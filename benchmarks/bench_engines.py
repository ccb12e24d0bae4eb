"""ONNX Runtime vs torch inside ``geoseg predict``: same model, same scene, same stream.

.venv/bin/python benchmarks/bench_engines.py [--model M.pt] [--threads 2] [--repeat 3]
    [--device cpu|cuda] [--size 256 --overlap 64] [--json OUT.json]

The bundle (default: a random-init U-Net/ResNet-18 whose head bias is balanced so that every
class wins somewhere; or ``--model``, e.g. the aber_training bundle) is exported with
``geoseg export`` and the real aber-s2 scene (930 x 947, 10 bands) is predicted with the
``.pt`` (TorchEngine) and the ``.onnx`` (OrtEngine), alternated ``--repeat`` times; the best
wall time of each is reported with the ratio, the infer-stage seconds and the pixel agreement
of the two class maps (the issue's bar: >= 99.9 %).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "aber-s2" / "s2_10band.tif"
CLASSES = ["forest", "grass", "urban", "water"]


def _bundle(model: str | None, bands: tuple[str, ...], size: int, overlap: int):
    import torch

    from geoseg.bundle import ModelBundle, Normalization
    from geoseg.classes import ClassMap

    if model:
        return ModelBundle.load(model)
    b = ModelBundle.random_init(
        bands=bands,
        classes=ClassMap.from_names(CLASSES),
        normalization=Normalization("meanstd", (1000.0,) * len(bands), (1000.0,) * len(bands)),
        dtype="uint16",
        resolution=(10.0, 10.0),
        chip_size=size,
        overlap=overlap,
    )
    with rasterio.open(SCENE) as ds:
        x = b.normalization.apply(ds.read(window=((0, 256), (0, 256)))[np.newaxis])
    with torch.no_grad():
        mean_logits = b.build()(torch.from_numpy(x)).mean(dim=(0, 2, 3))
    sd = dict(b.state_dict)
    sd["segmentation_head.0.bias"] = sd["segmentation_head.0.bias"] - mean_logits
    return b.replace(state_dict=sd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not SCENE.exists():
        sys.exit(f"real data not available at {SCENE}; nothing to benchmark")
    from geoseg.export import export_onnx
    from geoseg.predict import predict

    with rasterio.open(SCENE) as ds:
        bands = tuple(ds.descriptions)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        pt = _bundle(args.model, bands, args.size, args.overlap).save(t / "m.pt")
        onnx = export_onnx(pt, t / "m.onnx")
        export_s = time.perf_counter() - t0
        runs: dict[str, list[dict]] = {"torch": [], "onnx": []}
        common = {
            "size": args.size,
            "overlap": args.overlap,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "device": args.device,
            "overwrite": True,
        }
        for _ in range(args.repeat):
            for name, model in (("torch", pt), ("onnx", onnx)):
                rep = predict(SCENE, out=t / f"{name}.tif", model=model, **common)
                runs[name].append(rep.to_dict())
        maps = {}
        for name in runs:
            with rasterio.open(t / f"{name}.tif") as ds:
                maps[name] = ds.read(1)
    valid = maps["torch"] != 255
    best = {k: min(v, key=lambda r: r["seconds"]["total"]) for k, v in runs.items()}
    result = {
        "scene": str(SCENE.relative_to(ROOT.parent)),
        "model": args.model or "random-init unet/resnet18 (balanced head)",
        "device": {k: best[k]["device"] for k in best},
        "threads": args.threads,
        "size": args.size,
        "overlap": args.overlap,
        "repeat": args.repeat,
        "export_s": round(export_s, 2),
        "total_s": {k: best[k]["seconds"]["total"] for k in best},
        "infer_s": {k: best[k]["seconds"]["infer"] for k in best},
        "all_total_s": {k: [r["seconds"]["total"] for r in v] for k, v in runs.items()},
        "onnx_over_torch_total": round(
            best["onnx"]["seconds"]["total"] / best["torch"]["seconds"]["total"], 3
        ),
        "onnx_over_torch_infer": round(
            best["onnx"]["seconds"]["infer"] / best["torch"]["seconds"]["infer"], 3
        ),
        "agreement": float((maps["torch"][valid] == maps["onnx"][valid]).mean()),
        "classes_present": len(np.unique(maps["torch"][valid])),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""INT8 (ONNX Runtime static quantization) vs fp32 torch predict: seconds, held-out scores, size.

.venv/bin/python benchmarks/bench_int8.py --model /tmp/aber_unet.pt [--default] [--threads 2]

For each model (``--model``: a bundle trained on aber-s2 with ``bench_train_aber.py``, whose
training scene and spatial split are read from its config; ``--default``: the shipped model on
its North Carolina Landsat 7 scene from ``data-cache``), the bundle is exported to fp32 ONNX and
to INT8 (``geoseg export --int8``, calibrated on its training strip), the whole scene is
predicted with each (same scene, chip size, batch, threads; best of ``--repeat``) and the class
maps are scored on the held-out ``test`` strip of the model's split. One run prints all.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from default_model_eval import scores_by_split, split_rule  # noqa: E402

from geoseg.bundle import ModelBundle  # noqa: E402
from geoseg.export import export_onnx  # noqa: E402
from geoseg.grid import Grid  # noqa: E402
from geoseg.predict import default_model_path, predict  # noqa: E402


def one_model(name: str, bundle_path: Path, scene: Path, labels: Path, args: Any) -> dict:
    bundle = ModelBundle.load(bundle_path)
    rule = split_rule(bundle)
    with rasterio.open(labels) as ds:
        ref, grid = ds.read(1), Grid.from_dataset(ds)
    res: dict[str, Any] = {"model": name, "scene": str(scene), "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        fp32 = export_onnx(bundle_path, t / "fp32.onnx")
        int8 = export_onnx(bundle_path, t / "int8.onnx", int8=True)
        contenders = {"torch_fp32": bundle_path, "onnx_fp32": fp32, "onnx_int8": int8}
        secs: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.repeat):
            for k, m in contenders.items():
                rep = predict(
                    scene,
                    out=t / f"{k}.tif",
                    model=m,
                    batch_size=args.batch_size,
                    threads=args.threads,
                    device="cpu",
                    overwrite=True,
                )
                secs[k].append(rep.seconds["total"])
        maps = {}
        for k in contenders:
            with rasterio.open(t / f"{k}.tif") as ds:
                maps[k] = ds.read(1)
                if k == "onnx_int8":
                    res["provenance_quantization"] = ds.tags().get("GEOSEG_MODEL_QUANTIZATION")
        sizes = {k: Path(m).stat().st_size for k, m in contenders.items()}
    ids, names = bundle.classes.ids, bundle.classes.names
    scores = {k: scores_by_split(v, ref, grid, rule, ids, names)["test"] for k, v in maps.items()}
    valid = maps["torch_fp32"] != 255
    best = {k: min(v) for k, v in secs.items()}
    res.update(
        {
            "seconds_best": best,
            "seconds_all": secs,
            "int8_speedup_vs_torch_fp32": round(best["torch_fp32"] / best["onnx_int8"], 3),
            "int8_speedup_vs_onnx_fp32": round(best["onnx_fp32"] / best["onnx_int8"], 3),
            "test_miou": {k: round(s["miou"], 4) for k, s in scores.items()},
            "test_pixel_accuracy": {k: round(s["pixel_accuracy"], 4) for k, s in scores.items()},
            "miou_loss": round(scores["torch_fp32"]["miou"] - scores["onnx_int8"]["miou"], 4),
            "pixel_accuracy_loss": round(
                scores["torch_fp32"]["pixel_accuracy"] - scores["onnx_int8"]["pixel_accuracy"], 4
            ),
            "agreement_int8_vs_torch": round(
                float((maps["onnx_int8"][valid] == maps["torch_fp32"][valid]).mean()), 4
            ),
            "nodata_kept": bool(((maps["onnx_int8"] == 255) == ~valid).all()),
            "bytes": sizes,
            "size_ratio_int8_over_onnx_fp32": round(sizes["onnx_int8"] / sizes["onnx_fp32"], 3),
        }
    )
    print(json.dumps(res, indent=1), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="aber-s2 bundle")
    ap.add_argument("--default", action="store_true", help="also the shipped default model")
    ap.add_argument("--cache", default="data-cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out = []
    if args.model is not None:
        cfg = ModelBundle.load(args.model).config
        scene = Path(cfg["scenes"][0]["image"])
        labels = Path(cfg["scenes"][0]["labels"][0])
        if not scene.exists():
            sys.exit(f"real data not available at {scene}; nothing to benchmark")
        out.append(one_model("aber-s2 " + args.model.name, args.model, scene, labels, args))
    if args.default:
        from geoseg.datasets import DatasetFetchError, prepare_nc_landsat

        try:
            s = prepare_nc_landsat(args.cache, fetch=False)
        except DatasetFetchError as exc:
            print(f"default model skipped: {exc}")
        else:
            # the shipped config names data-cache/... relative to the repository: point it here
            b = ModelBundle.load(default_model_path())
            cfg = json.loads(json.dumps(b.config).replace("data-cache/", f"{args.cache}/"))
            with tempfile.TemporaryDirectory() as tmp:
                path = b.replace(config=cfg).save(Path(tmp) / "default_model.pt")
                out.append(one_model("default", path, s.scene, s.labels, args))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

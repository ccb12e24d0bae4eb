"""INT8 (ONNX Runtime static quantization) vs fp32 torch predict: seconds, held-out scores, size.

.venv/bin/python benchmarks/bench_int8.py --model /tmp/aber_unet.pt [--default] [--threads 2]
    [--speed-n 2048]

For each model (``--model``: a bundle trained on aber-s2 with ``bench_train_aber.py``, whose
training scene and spatial split are read from its config; ``--default``: the shipped model on
its North Carolina Landsat 7 scene from ``data-cache``), the bundle is exported to fp32 ONNX and
to INT8 (``geoseg export --int8``, calibrated on its training strip), the whole scene is
predicted with each (same scene, chip size, batch, threads; best of ``--repeat``) and the class
maps are scored on the held-out ``test`` strip of the model's split. One run prints all.

``--speed-n N`` (aber-s2 bundle only) also times the three on the aber-s2 scene mirrored to
N x N (``bench_predict.mirror_scene``, all the bundle's bands), where reading and the COG
weigh less than on the small scene: whole ``predict`` (best of ``--repeat``, alternated) and
the network alone (each engine of ``geoseg.runtime.engines`` on the same batch of prepared
chips of that scene). Accuracy is still scored on the original scene's test strip.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_predict import mirror_scene  # noqa: E402
from default_model_eval import scores_by_split, split_rule  # noqa: E402

from geoseg.bundle import ModelBundle  # noqa: E402
from geoseg.export import export_onnx  # noqa: E402
from geoseg.grid import Grid  # noqa: E402
from geoseg.predict import default_model_path, predict  # noqa: E402
from geoseg.runtime.engines import OrtEngine, TorchEngine  # noqa: E402
from geoseg.runtime.quantize import calibration_chips  # noqa: E402


def network_seconds(
    bundle_path: Path, files: dict[str, Path], chips: np.ndarray, args: Any
) -> dict:
    """Best seconds of each engine alone on the batch ``chips`` (alternated, 3 x ``--repeat``)."""
    bundle = ModelBundle.load(bundle_path)
    engines: dict[str, Any] = {
        "torch_fp32": TorchEngine.from_bundle(bundle, device="cpu", threads=args.threads),
        "onnx_fp32": OrtEngine(files["onnx_fp32"], output="probabilities", threads=args.threads),
        "onnx_int8": OrtEngine(files["onnx_int8"], output="probabilities", threads=args.threads),
    }
    for e in engines.values():
        e(chips)  # warm-up
    best = {k: float("inf") for k in engines}
    for _ in range(3 * args.repeat):
        for k, e in engines.items():
            t0 = time.perf_counter()
            e(chips)
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: round(v, 4) for k, v in best.items()}


def timed_runs(
    scene: Path, contenders: dict[str, Path], out_dir: Path, prefix: str, args: Any
) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """``predict`` of ``scene`` by each contender, alternated ``--repeat`` times.

    Returns the seconds of every run per contender and the stages of each one's best run.
    """
    secs: dict[str, list[float]] = {k: [] for k in contenders}
    stages: dict[str, dict] = {}
    for _ in range(args.repeat):
        for k, m in contenders.items():
            rep = predict(
                scene,
                out=out_dir / f"{prefix}{k}.tif",
                model=m,
                batch_size=args.batch_size,
                threads=args.threads,
                device="cpu",
                overwrite=True,
            )
            secs[k].append(round(rep.seconds["total"], 3))
            if secs[k][-1] <= min(secs[k]):
                stages[k] = {s: round(v, 3) for s, v in rep.seconds.items()}
    return secs, stages


def speed_large(bundle_path: Path, files: dict[str, Path], tmp: Path, args: Any) -> dict:
    """Whole predict and network alone of each contender on aber-s2 mirrored to N x N."""
    bundle = ModelBundle.load(bundle_path)
    scene = mirror_scene(
        args.speed_n, tmp / "mirror.tif", bands=tuple(range(1, bundle.in_channels + 1))
    )
    contenders = {"torch_fp32": bundle_path, **files}
    secs, stages = timed_runs(scene, contenders, tmp, "big_", args)
    chips = calibration_chips(bundle, calibration=scene, count=args.batch_size)
    net = network_seconds(bundle_path, files, chips, args)
    best = {k: min(v) for k, v in secs.items()}
    return {
        "scene": f"aber-s2 mirrored to {args.speed_n} x {args.speed_n} x {bundle.in_channels}",
        "seconds_best": best,
        "seconds_all": secs,
        "stages_best": stages,
        "int8_speedup_vs_torch_fp32": round(best["torch_fp32"] / best["onnx_int8"], 3),
        "int8_speedup_vs_onnx_fp32": round(best["onnx_fp32"] / best["onnx_int8"], 3),
        "network_batch": list(chips.shape),
        "network_seconds": net,
        "network_int8_speedup_vs_torch_fp32": round(net["torch_fp32"] / net["onnx_int8"], 3),
        "network_int8_speedup_vs_onnx_fp32": round(net["onnx_fp32"] / net["onnx_int8"], 3),
    }


def one_model(
    name: str, bundle_path: Path, scene: Path, labels: Path, args: Any, *, large: bool = False
) -> dict:
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
        secs, _ = timed_runs(scene, contenders, t, "", args)
        maps = {}
        for k in contenders:
            with rasterio.open(t / f"{k}.tif") as ds:
                maps[k] = ds.read(1)
                if k == "onnx_int8":
                    res["provenance_quantization"] = ds.tags().get("GEOSEG_MODEL_QUANTIZATION")
        sizes = {k: Path(m).stat().st_size for k, m in contenders.items()}
        if large and args.speed_n:
            files = {"onnx_fp32": fp32, "onnx_int8": int8}
            res["large"] = speed_large(bundle_path, files, t, args)
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
    ap.add_argument(
        "--speed-n",
        type=int,
        default=0,
        help="also time predict and the network alone on aber-s2 mirrored to N x N (0: off)",
    )
    args = ap.parse_args()
    out = []
    if args.model is not None:
        cfg = ModelBundle.load(args.model).config
        scene = Path(cfg["scenes"][0]["image"])
        labels = Path(cfg["scenes"][0]["labels"][0])
        if not scene.exists():
            sys.exit(f"real data not available at {scene}; nothing to benchmark")
        name = "aber-s2 " + args.model.name
        out.append(one_model(name, args.model, scene, labels, args, large=True))
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

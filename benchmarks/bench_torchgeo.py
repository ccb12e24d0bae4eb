"""geoseg predict side by side with the plain torchgeo loop (and geoai when importable).

.venv/bin/python benchmarks/bench_torchgeo.py [--n 2048] [--size 512 --overlap 64] [--threads 2]

Same model (one U-Net/ResNet-18 bundle saved once; ``--model`` for a trained one), same scene
(aber-s2 bands B2 B3 B4 B8 mirrored to N x N, a tiled DEFLATE GeoTIFF), same torch threads,
same chips (``--size`` px every ``--size - --overlap`` px). Each contender runs in its own
fresh process, so its peak RSS (``VmHWM``, :mod:`peak`) is its own; seconds are those of the work
(imports and process start excluded), best of ``--repeat``:

* ``full_frame``: one forward pass over the whole scene (the physical floor on this machine).
* ``geoseg``: ``geoseg.predict.predict``: blended, written as a styled COG (the whole job).
* ``torchgeo``: ``RasterDataset`` + ``GridGeoSampler`` + ``DataLoader`` + the model on each
  batch, normalised like geoseg, **writing nothing and blending nothing** (model only).
* ``geoai``: ``geoai.predict_geotiff`` when the package is importable; otherwise reported as
  skipped (it is not installed here and the registry has no usable release).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_predict as bp
from peak import peak_rss_mb


def _peak_mb() -> float:
    return peak_rss_mb()


def _load(model: str) -> object:
    from geoseg.bundle import ModelBundle

    return ModelBundle.load(model)


def run_full_frame(args: argparse.Namespace) -> dict:
    from geoseg._malloc import tune_malloc
    from geoseg.predict import inference_model

    tune_malloc()  # the floor gets the allocator settings geoseg's predict runs with

    b = _load(args.model)
    net = inference_model(b, torch.device("cpu"))  # type: ignore[arg-type]
    with rasterio.open(args.scene) as ds:
        x, valid = ds.read(), ds.dataset_mask() > 0
    xn = b.normalization.apply(x) * valid  # type: ignore[attr-defined]
    h, w = xn.shape[1:]
    xp = np.pad(xn, [(0, 0), (0, -h % 32), (0, -w % 32)], mode="reflect")[np.newaxis]
    runs = []
    with torch.inference_mode():
        net(torch.zeros(1, xp.shape[1], 64, 64).contiguous(memory_format=torch.channels_last))
        # best of 2: the first full-size call also page-faults its ~2.7 GB of activations
        # (7-8 s against 3-4 s for the second on 2026-12-08), which is not the model's cost
        for _ in range(2):
            t0 = time.perf_counter()
            net(
                torch.from_numpy(np.ascontiguousarray(xp)).contiguous(
                    memory_format=torch.channels_last
                )
            )
            runs.append(round(time.perf_counter() - t0, 3))
    return {"seconds": min(runs), "seconds_all": runs}


def run_geoseg(args: argparse.Namespace) -> dict:
    from geoseg.predict import predict

    t0 = time.perf_counter()
    r = predict(
        args.scene,
        out=args.out,
        model=args.model,
        size=args.size,
        overlap=args.overlap,
        threads=args.threads,
        overwrite=True,
    )
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "batch_size": r.batch_size,
        "chips": r.windows,
        "writes": "class COG",
    }


def run_torchgeo(args: argparse.Namespace) -> dict:
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    from geoseg.predict import inference_model

    b = _load(args.model)
    net = inference_model(b, torch.device("cpu"))  # type: ignore[arg-type]
    norm = b.normalization  # type: ignore[attr-defined]
    mean = torch.tensor(norm.offset, dtype=torch.float32)[:, None, None]
    std = torch.tensor(norm.scale, dtype=torch.float32)[:, None, None]
    scene = Path(args.scene)
    cls = type(
        "Scene", (RasterDataset,), {"filename_glob": scene.name, "is_image": True, "separate_files": False}
    )  # fmt: skip
    t0 = time.perf_counter()
    ds = cls(paths=[scene])
    sampler = GridGeoSampler(ds, size=args.size, stride=args.size - args.overlap)
    loader = DataLoader(ds, sampler=sampler, batch_size=4, collate_fn=stack_samples)
    chips = 0
    with torch.inference_mode():
        for batch in loader:
            x = (batch["image"].float() - mean) / std
            h, w = x.shape[-2:]
            x = torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32), mode="reflect")
            net(x.contiguous(memory_format=torch.channels_last)).softmax(1)
            chips += len(x)
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "batch_size": 4,
        "chips": chips,
        "writes": "nothing (model only)",
    }


def run_geoai(args: argparse.Namespace) -> dict:  # pragma: no cover - geoai not installed here
    import geoai  # type: ignore[import-not-found]

    t0 = time.perf_counter()
    geoai.predict_geotiff(args.scene, args.out, model=args.model)  # API as documented upstream
    return {"seconds": round(time.perf_counter() - t0, 3), "writes": "GeoTIFF"}


CONTENDERS = {
    "full_frame": run_full_frame,
    "geoseg": run_geoseg,
    "torchgeo": run_torchgeo,
    "geoai": run_geoai,
}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    # Every contender builds the same smp network; its import (smp -> timm -> torchvision,
    # ~1.7 s here) is paid before the clock by all of them alike, and reported apart.
    t0 = time.perf_counter()
    import segmentation_models_pytorch  # noqa: F401

    import_s = round(time.perf_counter() - t0, 3)
    res = CONTENDERS[args.contender](args)
    res["smp_import_s"] = import_s
    res["peak_rss_mb"] = _peak_mb()
    print("RESULT" + json.dumps(res))


def _spawn(args: argparse.Namespace, name: str, scene: Path, model: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--scene", str(scene), "--model", str(model)]
    cmd += ["--out", str(out), "--size", str(args.size), "--overlap", str(args.overlap)]
    cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "GEOSEG_PROGRESS": "0", "OMP_NUM_THREADS": str(args.threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT")), None)
    if p.returncode != 0 or line is None:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(line[len("RESULT") :])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--model", default=None, help="a trained bundle (default: random init)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scene", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.contender = args.child
        child(args)
        return
    bp._need_data()
    with tempfile.TemporaryDirectory(prefix="bench_torchgeo_") as t:
        tmp = Path(t)
        scene = bp.mirror_scene(args.n, tmp / "scene.tif")
        model = Path(args.model) if args.model else tmp / "unet.pt"
        if not args.model:
            with rasterio.open(scene) as ds:
                torch.manual_seed(0)
                bp._bundle(None, tuple(ds.descriptions)).save(model)
        results: dict[str, dict] = {}
        for name in CONTENDERS:
            if name == "geoai" and importlib.util.find_spec("geoai") is None:
                results[name] = {"skipped": "geoai is not importable (not installed)"}
                continue
            runs = [
                _spawn(args, name, scene, model, tmp / f"{name}{i}.tif") for i in range(args.repeat)
            ]
            ok = [r for r in runs if "seconds" in r]
            results[name] = min(ok, key=lambda r: r["seconds"]) if ok else runs[-1]
            print(json.dumps({name: results[name]}), flush=True)
    floor = results["full_frame"].get("seconds")
    summary = {
        "scene": f"aber-s2 B2,B3,B4,B8 mirrored to {args.n} x {args.n}",
        "model": args.model or "U-Net/ResNet-18 (random init)",
        "chips": f"{args.size}/{args.overlap}",
        "threads": args.threads,
        "contenders": results,
        "seconds_over_full_frame": {
            k: round(v["seconds"] / floor, 3)
            for k, v in results.items()
            if floor and "seconds" in v
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

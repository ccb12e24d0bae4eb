"""Benchmarks of ``geoseg predict`` (ratios measured in one run; see benchmarks/README.md).

.venv/bin/python benchmarks/bench_predict.py speed [--n 2048] [--size 512 --overlap 64] [--serial]
    end-to-end predict time (each run in a fresh process: seconds of the call, peak RSS) / one
    full-frame forward pass of the same model over the same scene: aber-s2 mirrored to N x N.
.venv/bin/python benchmarks/bench_predict.py seam --model M.pt [--png /tmp/seam.png]
    tiled (256/64) vs single window vs another tiling (320/96): agreement, accuracy.
.venv/bin/python benchmarks/bench_predict.py scale [--sizes 5000 20000] [--engine torch|onnx]
    peak RSS of predicting an N x N 4-band scene (a VRT mosaic of aber-s2), one subprocess each;
    ``--engine onnx``: the same tiny model exported to ONNX (geoseg metadata) and predicted
    through ONNX Runtime in a child that never imports torch (it reports ``torch_imported``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from peak import peak_rss_mb, status_mb  # noqa: E402

SCENE = ROOT.parent / "shared" / "data" / "aber-s2" / "s2_10band.tif"
LABELS = SCENE.with_name("landcover.tif")
CLASSES = ["forest", "grass", "urban", "water"]


def _need_data() -> None:
    if not SCENE.exists():
        sys.exit(f"real data not available at {SCENE}; nothing to benchmark")


def _bundle(
    model: str | None, bands: tuple[str, ...], arch: str = "unet", encoder: str = "resnet18"
):
    from geoseg.bundle import ModelBundle, Normalization
    from geoseg.classes import ClassMap

    if model:
        return ModelBundle.load(model)
    return ModelBundle.random_init(
        arch=arch,
        encoder=encoder,
        bands=bands,
        classes=ClassMap.from_names(CLASSES),
        normalization=Normalization("meanstd", (1000.0,) * len(bands), (1000.0,) * len(bands)),
        dtype="uint16",
        resolution=(10.0, 10.0),
    )


def mirror_scene(n: int, path: Path, bands: tuple[int, ...] = (1, 2, 3, 7)) -> Path:
    """An n x n GeoTIFF of aber-s2 bands mirrored (seamless) to size: real data, tiled DEFLATE."""
    with rasterio.open(SCENE) as ds:
        x, prof = ds.read(list(bands)), ds.profile
        names = [ds.descriptions[i - 1] for i in bands]
    h, w = x.shape[1:]

    def mirror(k: int, m: int) -> np.ndarray:
        i = np.arange(k) % (2 * m)
        return np.where(i < m, i, 2 * m - 1 - i)

    rows, cols = mirror(n, h), mirror(n, w)
    prof.update(
        driver="GTiff", count=len(bands), height=n, width=n, tiled=True, blockxsize=256,
        blockysize=256, compress="deflate", interleave="pixel", BIGTIFF="IF_SAFER",
    )  # fmt: skip
    with rasterio.open(path, "w", **prof) as dst:
        for r0 in range(0, n, 1024):
            part = x[:, rows[r0 : r0 + 1024]][:, :, cols]
            dst.write(part, window=rasterio.windows.Window(0, r0, n, part.shape[1]))
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return path


def predict_child(args: argparse.Namespace) -> dict:
    """One ``predict`` in this (fresh) process: seconds of the call, stages, peak RSS."""
    import torch

    import geoseg.predict as gp

    torch.set_num_threads(args.threads)
    gp.WRITE_THREAD = not args.serial
    with rasterio.open(args.scene) as ds:
        bands = tuple(ds.descriptions)
    b = _bundle(args.model, bands)
    t0 = time.perf_counter()
    r = gp.predict(
        args.scene,
        out=args.out,
        model=b,
        size=args.size,
        overlap=args.overlap,
        batch_size=args.batch_size or None,
        threads=args.threads,
        overwrite=True,
    )
    res = {
        "seconds": round(time.perf_counter() - t0, 3),
        "stages": r.to_dict()["seconds"],
        "batch_size": r.batch_size,
        "windows": r.windows,
        "windows_skipped": r.windows_skipped,
        "redundancy": round(r.redundancy, 4),
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(res))
    return res


def _run_child(args: argparse.Namespace, scene: Path, out: Path, *, serial: bool) -> dict:
    cmd = [sys.executable, __file__, "predict-child", "--scene", str(scene), "--out", str(out)]
    cmd += ["--size", str(args.size), "--overlap", str(args.overlap)]
    cmd += ["--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    cmd += (["--model", args.model] if args.model else []) + (["--serial"] if serial else [])
    env = {**os.environ, "GEOSEG_PROGRESS": "0", "OMP_NUM_THREADS": str(args.threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if p.returncode != 0:
        sys.exit(f"predict child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def speed(args: argparse.Namespace) -> dict:
    """``predict`` (each run in its own process) / one full-frame forward pass, same scene."""
    import torch

    from geoseg.predict import inference_model

    _need_data()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        scene = mirror_scene(args.n, Path(tmp) / "scene.tif") if args.n else SCENE
        with rasterio.open(scene) as ds:
            bands, x, valid = tuple(ds.descriptions), ds.read(), ds.dataset_mask() > 0
        b = _bundle(args.model, bands)
        net = inference_model(b, torch.device("cpu"))  # the model exactly as predict runs it
        xn = b.normalization.apply(x) * valid
        del x
        h, w = xn.shape[1:]
        xp = np.pad(xn, [(0, 0), (0, -h % 32), (0, -w % 32)], mode="reflect")[np.newaxis]
        del xn
        # best of --repeat for each side, alternated, so a noisy moment does not decide a ratio
        forwards: list[float] = []
        on_chips: list[float] = []
        runs: dict[str, list[dict]] = {"overlapped": [], "serial": []}
        with torch.inference_mode():
            net(torch.from_numpy(xp[..., :64, :64].copy()))  # warm-up
        for i in range(args.repeat):
            with torch.inference_mode():
                t0 = time.perf_counter()
                frame = torch.from_numpy(np.ascontiguousarray(xp))
                net(frame.contiguous(memory_format=torch.channels_last))
                forwards.append(time.perf_counter() - t0)
            on_chips.append(chips_forward(net, xp[0, :, :h, :w], args))
            out = Path(tmp) / f"o{i}.tif"
            runs["overlapped"].append(_run_child(args, scene, out, serial=False))
            if args.serial:
                runs["serial"].append(_run_child(args, scene, out, serial=True))
    forward = min(forwards)
    res: dict = {
        "scene": f"aber-s2 mirrored to {h} x {w}" if args.n else str(SCENE),
        "model": args.model or "U-Net/ResNet-18 (random init)",
        "size": args.size,
        "overlap": args.overlap,
        "threads": args.threads,
        "repeat": args.repeat,
        "full_frame_forward_s": round(forward, 3),
        # the model alone over predict's own plan (same chips, batch size, padding)
        "chips_forward_s": round(min(on_chips), 3),
    }
    for name, rs in runs.items():
        if not rs:
            continue
        r = min(rs, key=lambda d: d["seconds"])
        res[name] = {
            **r,
            "ratio": round(r["seconds"] / forward, 3),
            "ratio_to_chips_forward": round(r["seconds"] / min(on_chips), 3),
        }
    print(json.dumps(res, indent=2))
    return res


def chips_forward(net: Any, x: np.ndarray, args: argparse.Namespace) -> float:
    """Seconds of the model alone over predict's plan of ``x`` (bands, h, w), batched as predict.

    Ragged edge chips as predict plans them for a model of any input size, same-shaped chips
    batched together (``--batch-size``, 0: predict's CPU default), each padded to a multiple of 32.
    """
    import torch

    from geoseg.grid import plan_windows
    from geoseg.pipeline import default_batch_size
    from geoseg.predict import pad_to

    windows = plan_windows(x.shape[1:], args.size, args.overlap, ragged=True)
    bs = args.batch_size or default_batch_size(args.size * args.size)
    t = 0.0
    with torch.inference_mode():
        i = 0
        while i < len(windows):
            shape = (int(windows[i].height), int(windows[i].width))
            j = i
            while (
                j < len(windows) and j - i < bs and (windows[j].height, windows[j].width) == shape
            ):
                j += 1
            chips = np.stack(
                [
                    x[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
                    for w in windows[i:j]
                ]
            )
            batch = pad_to(chips, shape[0] + -shape[0] % 32, shape[1] + -shape[1] % 32)
            t0 = time.perf_counter()
            net(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))
            t += time.perf_counter() - t0
            i = j
    return t


def seam(args: argparse.Namespace) -> dict:
    import torch

    from geoseg.predict import predict

    _need_data()
    torch.set_num_threads(args.threads)
    with rasterio.open(SCENE) as ds:
        bands = tuple(ds.descriptions)
    b = _bundle(args.model, bands)
    outs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, ov in [("single", 2048, 0), ("t256", 256, 64), ("t320", 320, 96)]:
            predict(SCENE, out=f"{tmp}/{name}.tif", model=b, size=size, overlap=ov, batch_size=4)
            with rasterio.open(f"{tmp}/{name}.tif") as ds:
                outs[name] = ds.read(1)
    with rasterio.open(LABELS) as ds:
        ref = ds.read(1)
    valid = outs["single"] != 255
    lab = valid & (ref > 0)
    res = {
        "agree_256_vs_single": float((outs["t256"][valid] == outs["single"][valid]).mean()),
        "agree_256_vs_320": float((outs["t256"][valid] == outs["t320"][valid]).mean()),
        "accuracy_single": float((outs["single"][lab] == ref[lab]).mean()),
        "accuracy_256": float((outs["t256"][lab] == ref[lab]).mean()),
        "nodata_kept": bool(((outs["t256"] == 255) == ~valid).all()),
    }
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 8))
        ax.imshow(outs["t256"] != outs["single"], cmap="gray_r", interpolation="nearest")
        for s in range(0, max(valid.shape), 192):  # chip starts of the 256/64 tiling
            ax.axhline(s, color="r", lw=0.3)
            ax.axvline(s, color="r", lw=0.3)
        ax.set_title("pixels where 256/64 tiling != single window (red: chip starts)")
        fig.savefig(args.png, dpi=120)
        res["png"] = args.png
    print(json.dumps(res, indent=2))
    return res


def tiny_net(bands: int, classes: int) -> Any:
    """A light network for the scale run: 2 convs at 1/4 resolution (a torch module)."""
    from torch import nn

    return nn.Sequential(
        nn.AvgPool2d(4),
        nn.Conv2d(bands, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, classes, 3, padding=1),
        nn.Upsample(scale_factor=4),
    )


TINY_BANDS = ("B2_blue", "B3_green", "B4_red", "B8_nir")


def tiny_bundle() -> Any:
    """The scale run's bundle: :func:`tiny_net` with seeded random weights (imports torch)."""
    import torch

    from geoseg.bundle import ModelBundle, Normalization
    from geoseg.classes import ClassMap

    class TinyBundle(ModelBundle):
        def build(self, device: str | torch.device = "cpu") -> torch.nn.Module:
            m = tiny_net(len(self.bands), self.num_classes)
            m.load_state_dict(self.state_dict)
            return m.to(device).eval()

    torch.manual_seed(0)
    return TinyBundle(
        arch="tiny",
        encoder="none",
        bands=TINY_BANDS,
        classes=ClassMap.from_names(CLASSES),
        normalization=Normalization("meanstd", (1000.0,) * 4, (1000.0,) * 4),
        state_dict=tiny_net(4, 4).state_dict(),
        dtype="uint16",
        resolution=(10.0, 10.0),
    )


def tiny_onnx(path: Path) -> Path:
    """:func:`tiny_bundle` exported to ONNX at ``path`` with geoseg's metadata properties."""
    import torch

    from geoseg.export import OPSET, _export_graph, _set_metadata, geoseg_properties

    b = tiny_bundle()
    net = torch.nn.Sequential(b.build("cpu"), torch.nn.Softmax(dim=1)).eval()
    _export_graph(net, torch.zeros(1, 4, 64, 64), path, opset=OPSET)
    _set_metadata(path, geoseg_properties(b), doc="geoseg tiny (bench_predict scale)")
    return path


def build_vrt(n: int, path: Path) -> Path:
    """An n x n 4-band VRT mosaicking copies of aber-s2 (B2, B3, B4, B8).

    The copied tile is first extracted (4 bands, uncompressed) beside the VRT, so that the
    benchmark measures geoseg rather than DEFLATE decoding of the 10-band source.
    """
    src = path.with_name("aber4.tif")
    with rasterio.open(SCENE) as ds:
        w, h, t = ds.width, ds.height, ds.transform
        crs = ds.crs.to_wkt()
        prof = {**ds.profile, "count": 4, "compress": None, "interleave": "band"}
        with rasterio.open(src, "w", **prof) as dst:
            dst.write(ds.read([1, 2, 3, 7]))
    idx = [1, 2, 3, 4]
    names = ["B2_blue", "B3_green", "B4_red", "B8_nir"]
    parts = [
        f'<VRTDataset rasterXSize="{n}" rasterYSize="{n}"><SRS>{crs}</SRS>'
        f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>"
    ]
    for k, (i, name) in enumerate(zip(idx, names, strict=True), start=1):
        parts.append(
            f'<VRTRasterBand dataType="UInt16" band="{k}"><Description>{name}</Description><NoDataValue>0</NoDataValue>'
        )
        for r in range(0, n, h):
            for c in range(0, n, w):
                parts.append(
                    f"<SimpleSource><SourceFilename>{src}</SourceFilename><SourceBand>{i}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/><DstRect xOff="{c}" yOff="{r}" xSize="{w}" ySize="{h}"/></SimpleSource>'
                )
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    path.write_text("".join(parts))
    return path


def rss_child(args: argparse.Namespace) -> dict:
    """One predict of an N x N mosaic in this (fresh) process: peak RSS, RSS after imports."""
    from geoseg.predict import predict

    if args.engine == "torch":
        import torch

        torch.set_num_threads(args.threads)
    else:
        import onnxruntime  # noqa: F401  (the engine's library, counted with the imports)
    rss_imports = status_mb()
    if args.engine == "onnx" and not args.model:
        sys.exit("rss --engine onnx needs --model TINY.onnx (scale exports it)")
    model: Any = tiny_bundle() if args.engine == "torch" else args.model
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        vrt = build_vrt(args.n, Path(tmp) / "mosaic.vrt")
        r = predict(
            vrt,
            out=f"{tmp}/o.tif",
            model=model,
            size=args.size,
            overlap=args.overlap,
            batch_size=args.batch_size or None,
            threads=args.threads,
        )
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {
        "n": args.n,
        "engine": args.engine,
        "rss_after_imports_mb": rss_imports,
        "peak_rss_mb": peak_rss_mb(),
        "ru_maxrss_mb": round(maxrss_mb, 1),
        "torch_imported": "torch" in sys.modules,
        "seconds": r.to_dict()["seconds"],
        "mpx_per_s": round(r.mpx_per_s, 2),
        "peak_buffer_pixels": r.peak_buffer_pixels,
    }
    print(json.dumps(res))
    return res


def scale(args: argparse.Namespace) -> dict:
    """Peak RSS of predict at each of ``--sizes``, one child process each, and their ratio."""
    _need_data()
    out: dict[Any, Any] = {}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        model = str(tiny_onnx(Path(tmp) / "tiny.onnx")) if args.engine == "onnx" else None
        for n in args.sizes:
            cmd = [sys.executable, __file__, "rss", "--n", str(n), "--engine", args.engine]
            cmd += ["--threads", str(args.threads), "--size", str(args.size)]
            cmd += ["--overlap", str(args.overlap), "--batch-size", str(args.batch_size)]
            cmd += ["--model", model] if model else []
            env = {**os.environ, "GEOSEG_PROGRESS": "0"}
            p = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if p.returncode != 0:
                sys.exit(f"rss child failed:\n{p.stderr[-3000:]}")
            out[n] = json.loads(p.stdout.strip().splitlines()[-1])
            print(json.dumps(out[n]), flush=True)
    if len(args.sizes) == 2:
        a, b = args.sizes
        out["rss_ratio"] = round(out[b]["peak_rss_mb"] / out[a]["peak_rss_mb"], 3)
        print(json.dumps({"engine": args.engine, "rss_ratio": out["rss_ratio"]}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["speed", "seam", "scale", "rss", "predict-child"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=0, help="0: predict's own choice")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--png", default=None)
    ap.add_argument("--repeat", type=int, default=3, help="speed: best of N runs of each side")
    ap.add_argument(
        "--n", type=int, default=None, help="rss: N; speed: mirror to N x N (0: 930 x 947)"
    )
    ap.add_argument("--serial", action="store_true", help="speed: also the serial pipeline")
    ap.add_argument("--scene", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        default="torch",
        help="scale/rss: the tiny model as a torch bundle or as ONNX (a torch-free child)",
    )
    args = ap.parse_args()
    if args.n is None:
        args.n = 2048 if args.what == "speed" else 5000
    run = {
        "speed": speed,
        "seam": seam,
        "scale": scale,
        "rss": rss_child,
        "predict-child": predict_child,
    }
    run[args.what](args)


if __name__ == "__main__":
    main()

"""Benchmarks of ``geoseg predict`` (ratios measured in one run; see benchmarks/README.md).

.venv/bin/python benchmarks/bench_predict.py speed [--model M.pt] [--size 256 --overlap 64]
    end-to-end predict time / one full-frame forward pass over the same scene (aber-s2).
.venv/bin/python benchmarks/bench_predict.py seam --model M.pt [--png /tmp/seam.png]
    tiled (256/64) vs single window vs another tiling (320/96): agreement, accuracy.
.venv/bin/python benchmarks/bench_predict.py scale [--sizes 5000 20000]
    peak RSS of predicting an N x N 4-band scene (a VRT mosaic of aber-s2), one subprocess each.
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

import numpy as np
import rasterio
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
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


def speed(args: argparse.Namespace) -> dict:
    from geoseg.predict import inference_model, predict

    _need_data()
    torch.set_num_threads(args.threads)
    with rasterio.open(SCENE) as ds:
        bands, x, valid = tuple(ds.descriptions), ds.read(), ds.dataset_mask() > 0
    b = _bundle(args.model, bands)
    net = inference_model(b, torch.device("cpu"))  # the model exactly as predict runs it
    xn = b.normalization.apply(x) * valid
    h, w = x.shape[1:]
    xp = np.pad(xn, [(0, 0), (0, -h % 32), (0, -w % 32)], mode="reflect")[np.newaxis]
    # best of --repeat for both sides, alternated, so a noisy moment does not decide the ratio
    forwards, runs = [], []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        net(torch.from_numpy(xp[..., :64, :64].copy()))  # warm-up
        for i in range(args.repeat):
            t0 = time.perf_counter()
            frame = torch.from_numpy(np.ascontiguousarray(xp))
            net(frame.contiguous(memory_format=torch.channels_last))
            forwards.append(time.perf_counter() - t0)
            runs.append(
                predict(
                    SCENE,
                    out=f"{tmp}/o{i}.tif",
                    model=b,
                    size=args.size,
                    overlap=args.overlap,
                    batch_size=args.batch_size,
                    threads=args.threads,
                )
            )
    forward = min(forwards)
    r = min(runs, key=lambda rep: rep.seconds["total"])
    inferred = r.windows * min(args.size, h) * min(args.size, w) - r.windows_skipped
    res = {
        "scene": str(SCENE),
        "size": args.size,
        "overlap": args.overlap,
        "threads": args.threads,
        "repeat": args.repeat,
        "full_frame_forward_s": round(forward, 3),
        "predict_s": round(r.seconds["total"], 3),
        "ratio": round(r.seconds["total"] / forward, 3),
        "inferred_px_over_scene_px": round(inferred / (h * w), 3),
        "stages": r.to_dict()["seconds"],
    }
    print(json.dumps(res, indent=2))
    return res


def seam(args: argparse.Namespace) -> dict:
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


class Tiny(nn.Module):
    """A light network for the scale run: 2 convs at 1/4 resolution."""

    def __init__(self, bands: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AvgPool2d(4),
            nn.Conv2d(bands, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, classes, 3, padding=1),
            nn.Upsample(scale_factor=4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
    from geoseg.bundle import ModelBundle, Normalization
    from geoseg.classes import ClassMap
    from geoseg.predict import predict

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bands = ("B2_blue", "B3_green", "B4_red", "B8_nir")

    class TinyBundle(ModelBundle):
        def build(self, device: str | torch.device = "cpu") -> nn.Module:
            m = Tiny(len(self.bands), self.num_classes)
            m.load_state_dict(self.state_dict)
            return m.to(device).eval()

    b = TinyBundle(
        arch="tiny",
        encoder="none",
        bands=bands,
        classes=ClassMap.from_names(CLASSES),
        normalization=Normalization("meanstd", (1000.0,) * 4, (1000.0,) * 4),
        state_dict=Tiny(4, 4).state_dict(),
        dtype="uint16",
        resolution=(10.0, 10.0),
    )
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        vrt = build_vrt(args.n, Path(tmp) / "mosaic.vrt")
        r = predict(
            vrt,
            out=f"{tmp}/o.tif",
            model=b,
            size=args.size,
            overlap=args.overlap,
            batch_size=args.batch_size,
            threads=args.threads,
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {
        "n": args.n,
        "peak_rss_mb": round(peak_mb, 1),
        "seconds": r.to_dict()["seconds"],
        "mpx_per_s": round(r.mpx_per_s, 2),
        "peak_buffer_rows": r.peak_buffer_rows,
    }
    print(json.dumps(res))
    return res


def scale(args: argparse.Namespace) -> dict:
    _need_data()
    out = {}
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "rss",
            "--n",
            str(n),
            "--threads",
            str(args.threads),
            "--size",
            str(args.size),
            "--overlap",
            str(args.overlap),
            "--batch-size",
            str(args.batch_size),
        ]
        env = {**os.environ, "GEOSEG_PROGRESS": "0"}
        p = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        out[n] = json.loads(p.stdout.strip().splitlines()[-1])
        print(json.dumps(out[n]), flush=True)
    if len(args.sizes) == 2:
        a, b = args.sizes
        print(json.dumps({"rss_ratio": round(out[b]["peak_rss_mb"] / out[a]["peak_rss_mb"], 3)}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["speed", "seam", "scale", "rss"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--png", default=None)
    ap.add_argument("--repeat", type=int, default=3, help="speed: best of N runs of each side")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    args = ap.parse_args()
    {"speed": speed, "seam": seam, "scale": scale, "rss": rss_child}[args.what](args)


if __name__ == "__main__":
    main()

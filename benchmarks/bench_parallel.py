"""One large real mosaic predicted in row bands on 1 and on 2 Dask workers, vs one process.

    .venv/bin/python benchmarks/bench_parallel.py [--size 20000] [--model tiny|default]

The mosaic is ``../shared/data/aber-s2/s2_10band.tif`` (930 x 947, Sentinel-2, its nodata row
kept) mirrored into a ``size`` x ``size`` VRT under a temporary folder (four flipped copies, so
the mosaic is continuous; nothing is copied into the repo). The model is ``tiny`` (a random-init
FCN/MobileNetV2 on B2,B3,B4, 256 px chips, 32 px overlap: the default model, a U-Net/ResNet-18,
is ~10x slower, hours at 20000^2 on 2 cores) or ``default`` (bands B2,B3,B4,B8,B11,B12 of the
scene). Runs, in one go:

* ``predict``: the single-process :func:`geoseg.predict.predict` in a subprocess, with
  ``--threads`` torch threads (default: all cores): the reference bytes and peak RSS;
* ``workers=1``, ``workers=1,threads=1`` and ``workers=2``:
  :func:`geoseg.parallel.predict_parallel` on a fresh LocalCluster each (torch threads = cores
  / workers, or 1), timed from the plan submitted (cluster start shown apart); peak RSS of
  each worker process.

Prints the speed-ups (2 workers vs 1 worker with all cores, vs 1 worker with 1 thread, vs one
process), whether the sha256 of the four class COGs agree, the cores kept busy, and the
machine's load average before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCENE = ROOT.parent / "shared" / "data" / "aber-s2" / "s2_10band.tif"
TINY_BANDS = ("B2", "B3", "B4")
DEFAULT_BANDS = "1,2,3,4,5,6"  # B2,B3,B4,B8,B11,B12 of the mosaic


def _flipped(src: Path, folder: Path, bands: tuple[int, ...]) -> dict[tuple[bool, bool], Path]:
    """The scene (``bands`` only) and its three mirror images as small GeoTIFFs."""
    with rasterio.open(src) as ds:
        data = ds.read(list(bands))
        profile = {**ds.profile, "count": len(bands), "tiled": True, "compress": "deflate"}
        names = [ds.descriptions[b - 1] for b in bands]
    out = {}
    for fy in (False, True):
        for fx in (False, True):
            arr = data[:, ::-1] if fy else data
            arr = arr[:, :, ::-1] if fx else arr
            p = folder / f"tile_{int(fy)}{int(fx)}.tif"
            with rasterio.open(p, "w", **profile) as dst:
                dst.write(np.ascontiguousarray(arr))
                for i, n in enumerate(names, start=1):
                    dst.set_band_description(i, n)
            out[(fy, fx)] = p
    return out


def build_mosaic(folder: Path, size: int, bands: tuple[int, ...]) -> Path:
    """A ``size`` x ``size`` mirror mosaic of the real scene as a VRT (no pixel copied)."""
    tiles = _flipped(SCENE, folder, bands)
    with rasterio.open(tiles[(False, False)]) as ds:
        h, w, t, dtype = ds.height, ds.width, ds.transform, ds.dtypes[0]
        crs, nodata, names = ds.crs.to_wkt(), ds.nodata, ds.descriptions
    gdt = {"uint16": "UInt16", "uint8": "Byte", "int16": "Int16", "float32": "Float32"}[dtype]
    xml = [
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">',
        f"<SRS>{crs.replace('&', '&amp;').replace('<', '&lt;')}</SRS>",
        f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>",
    ]
    for b, name in enumerate(names, start=1):
        xml.append(f'<VRTRasterBand dataType="{gdt}" band="{b}"><Description>{name}</Description>')
        if nodata is not None:
            xml.append(f"<NoDataValue>{nodata:g}</NoDataValue>")
        for iy, y in enumerate(range(0, size, h)):
            for ix, x in enumerate(range(0, size, w)):
                ch, cw = min(h, size - y), min(w, size - x)
                xml.append(
                    f'<SimpleSource><SourceFilename relativeToVRT="1">'
                    f"{tiles[(iy % 2 == 1, ix % 2 == 1)].name}</SourceFilename>"
                    f"<SourceBand>{b}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{cw}" ySize="{ch}"/>'
                    f'<DstRect xOff="{x}" yOff="{y}" xSize="{cw}" ySize="{ch}"/></SimpleSource>'
                )
        xml.append("</VRTRasterBand>")
    xml.append("</VRTDataset>")
    vrt = folder / f"mosaic_{size}.vrt"
    vrt.write_text("\n".join(xml))
    return vrt


def tiny_model(path: Path) -> Path:
    from geoseg.bundle import ModelBundle
    from geoseg.classes import ClassMap

    ModelBundle.random_init(
        arch="fcn",
        encoder="mobilenet_v2",
        bands=TINY_BANDS,
        classes=ClassMap.from_names(["forest", "grass", "urban", "water"]),
        dtype="uint16",
        chip_size=256,
        overlap=32,
        seed=0,
    ).save(path)
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM, as ``peak.py``; self-contained: it runs on workers)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _bands(value: str | None) -> list[str | int] | None:
    return [int(v) if v.isdigit() else v for v in value.split(",")] if value else None


def single_process(scene: Path, out: Path, model: str, bands: str | None, threads: int) -> dict:
    """``predict`` in a fresh process: seconds and its peak RSS."""
    code = (
        f"import json, sys, time; sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "from peak import peak_rss_mb\n"
        "from geoseg.predict import predict\n"
        "t = time.perf_counter(); c = time.process_time()\n"
        f"predict({str(scene)!r}, out={str(out)!r}, model={model!r}, threads={threads}, "
        f"bands={_bands(bands)!r})\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'cpu_s': time.process_time() - c, "
        "'peak_rss_mb': peak_rss_mb()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GEOSEG_PROGRESS": "0"}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def on_workers(
    scene: Path, out: Path, model: str, bands: str | None, workers: int, threads: int | None = None
) -> dict:
    """``predict_parallel`` on a fresh LocalCluster of ``workers``: seconds, RSS per worker."""
    from geoseg.batch.client import dask_client, default_threads
    from geoseg.parallel import predict_parallel

    t0 = time.perf_counter()
    threads = threads or default_threads(workers)
    with dask_client(None, workers, threads, dashboard=False) as (client, _):
        client.run(lambda: __import__("geoseg.predict"))  # imports at start-up, apart
        t_start = time.perf_counter() - t0
        cpu0 = client.run(_cpu_s)
        t1 = time.perf_counter()
        rep = predict_parallel(
            scene,
            out=out,
            model=model,
            client=client,
            threads=threads,
            row_bands=None,  # default_bands: 2 per worker at 20000^2, 1 on small mosaics
            bands=_bands(bands),
        )
        seconds = time.perf_counter() - t1
        cpu = sum(v - cpu0[k] for k, v in client.run(_cpu_s).items())
        rss = client.run(_peak_rss_mb)
    return {
        "seconds": seconds,
        "cpu_s": cpu,  # the workers' CPU seconds (the client's assembly apart)
        "cluster_start_s": t_start,
        "threads_per_worker": threads,
        "bands": len(rep.bands),
        "halo_windows": rep.windows_predicted - rep.windows,
        "windows": rep.windows,
        "assemble_s": rep.seconds.get("assemble", 0.0),
        "peak_rss_mb_per_worker": sorted(round(v) for v in rss.values()),
        "client_peak_rss_mb": round(_peak_rss_mb()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--model", choices=["tiny", "default"], default="tiny")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    if not SCENE.exists():
        print(f"skipped: {SCENE} is absent (../shared/data)")
        return
    os.environ.setdefault("GEOSEG_PROGRESS", "0")
    tmp = Path(tempfile.mkdtemp(prefix="bench_parallel_"))
    try:
        if args.model == "tiny":
            bands_idx, model, bands = (1, 2, 3), str(tiny_model(tmp / "tiny.pt")), "1,2,3"
        else:
            bands_idx, model, bands = (1, 2, 3, 7, 9, 10), "default", DEFAULT_BANDS
        scene = build_mosaic(tmp, args.size, bands_idx)
        load_before = os.getloadavg()
        runs = {
            "predict": single_process(scene, tmp / "one.tif", model, bands, args.threads),
            "workers=1": on_workers(scene, tmp / "w1.tif", model, bands, 1),
            "workers=1,threads=1": on_workers(scene, tmp / "w1t1.tif", model, bands, 1, 1),
            "workers=2": on_workers(scene, tmp / "w2.tif", model, bands, 2),
        }
        for k, v in runs.items():
            print(
                f"{k}: {json.dumps({n: (round(x, 2) if isinstance(x, float) else x) for n, x in v.items()})}",
                flush=True,
            )
        files = {"predict": "one.tif", "workers=1": "w1.tif", "workers=1,threads=1": "w1t1.tif"}
        digests = {k: sha256(tmp / f) for k, f in {**files, "workers=2": "w2.tif"}.items()}
        s = {k: v["seconds"] for k, v in runs.items()}
        print(
            json.dumps(
                {
                    "mosaic": f"{args.size}x{args.size} mirror mosaic of aber-s2",
                    "model": args.model,
                    "cpus": os.cpu_count(),
                    "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                    "seconds": {k: round(v, 2) for k, v in s.items()},
                    # cores kept busy: CPU seconds / wall; below the core count on a loaded
                    # machine, whatever geoseg does
                    "cores_used": {
                        k: round(v["cpu_s"] / max(v["seconds"], 1e-9), 2) for k, v in runs.items()
                    },
                    # 2 workers x 1 thread vs 1 worker x (all cores) threads
                    "speedup_2_vs_1_worker": round(s["workers=1"] / s["workers=2"], 2),
                    # the same threads per worker: how the bands scale
                    "speedup_2_vs_1_worker_1_thread_each": round(
                        s["workers=1,threads=1"] / s["workers=2"], 2
                    ),
                    "speedup_2_workers_vs_one_process": round(s["predict"] / s["workers=2"], 2),
                    "identical_bytes": len(set(digests.values())) == 1,
                    "sha256": digests["predict"],
                    "peak_rss_mb": {
                        "one_process": round(runs["predict"]["peak_rss_mb"]),
                        "per_worker_1": runs["workers=1"]["peak_rss_mb_per_worker"],
                        "per_worker_1_1_thread": runs["workers=1,threads=1"][
                            "peak_rss_mb_per_worker"
                        ],
                        "per_worker_2": runs["workers=2"]["peak_rss_mb_per_worker"],
                    },
                },
                indent=2,
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

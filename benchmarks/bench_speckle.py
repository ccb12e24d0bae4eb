"""vectorize and ``--min-area`` on a speckled raster vs the plain path and GDAL's sieve.

Issue 19 item 3: on a 297k-polygon change raster ``vectorize`` took 185 s (plain rasterio
shapes -> GeoPackage: 21 s) and ``--min-area`` did not finish in 20 min (GDAL's sieve: 0.5 s).
This writes a thresholded smoothed-noise field (3 classes, uint8, 10 m UTM, deflate, tiled)
of ``--size``^2 pixels under /tmp and runs, each in its own process (seconds include imports;
peak RSS = the process plus, where geoseg uses worker processes, the CPU count times the
largest worker):

* ``plain``: whole raster -> ``rasterio.features.shapes`` -> shapely -> geopandas -> GPKG;
* ``gdal_sieve``: whole raster -> ``rasterio.features.sieve`` (GDAL) only;
* ``plain_sieved``: GDAL sieve then the plain path;
* ``geoseg``: ``geoseg.vectorize.vectorize`` (blocks, seams, true areas, styled GPKG);
* ``geoseg_sieved``: the same with ``min_area`` (GDAL sieve on halo'd strips).

Ratios are printed from this one run. Features of the sieved outputs must agree.

    .venv/bin/python benchmarks/bench_speckle.py [--size 4000] [--min-px 20] [--block-size 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time
mode, src, out, min_px, block = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t0 = time.perf_counter()
if mode in ("plain", "plain_sieved", "gdal_sieve"):
    import rasterio
    from rasterio.features import shapes, sieve
    with rasterio.open(src) as ds:
        a = ds.read(1); m = ds.read_masks(1) > 0; crs = ds.crs; tr = ds.transform
    if mode != "plain":
        a = sieve(a, min_px, mask=m, connectivity=4)
    n = 0
    if mode != "gdal_sieve":
        import geopandas as gpd, pyogrio
        from shapely.geometry import shape
        geoms, vals = [], []
        for g, v in shapes(a, mask=m, connectivity=4, transform=tr):
            geoms.append(shape(g)); vals.append(int(v))
        gdf = gpd.GeoDataFrame({"class_id": vals}, geometry=geoms, crs=crs)
        gdf["area_ha"] = gdf.area / 1e4
        gdf["perimeter_m"] = gdf.length
        pyogrio.write_dataframe(gdf, out, driver="GPKG")
        n = len(gdf)
else:
    from geoseg.vectorize import vectorize
    kw = {"min_area": min_px} if mode == "geoseg_sieved" else {}
    n = vectorize(src, out, overwrite=True, block_size=block, **kw).features
secs = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
total = rss + (os.cpu_count() or 1) * kids if kids else rss
print(json.dumps({"mode": mode, "features": n, "seconds": round(secs, 3),
                  "peak_rss_mb": round(total, 1), "parent_rss_mb": round(rss, 1),
                  "worker_rss_mb": round(kids, 1)}))
"""


def make_speckle(path: Path, size: int, sigma: float = 1.5) -> int:
    """Write the speckled class raster; returns its polygon count (4-connectivity)."""
    import numpy as np
    import rasterio
    from affine import Affine
    from scipy import ndimage

    rng = np.random.default_rng(0)
    f = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype("float32"), sigma)
    a = (np.digitize(f, np.quantile(f[::7, ::7], [0.6, 0.85])) + 1).astype("uint8")
    del f
    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", nodata=0,
        crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000), tiled=True,
        compress="deflate",
    ) as dst:  # fmt: skip
        dst.write(a, 1)
    _, n1 = ndimage.label(a == 1)
    _, n2 = ndimage.label(a == 2)
    _, n3 = ndimage.label(a == 3)
    return int(n1 + n2 + n3)


def run(mode: str, src: Path, out: Path, min_px: int, block: int) -> dict:
    """One case in a fresh process."""
    env = {**os.environ, "GEOSEG_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(src), str(out), str(min_px), str(block)],
        capture_output=True, text=True, check=True, cwd=ROOT, env=env,
    )  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--min-px", type=int, default=20)
    ap.add_argument("--block-size", type=int, default=2048)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_speckle_"))
    src = tmp / f"speckle_{args.size}.tif"
    polygons = make_speckle(src, args.size)
    print(json.dumps({"raster": str(src), "size": args.size, "polygons": polygons}), flush=True)
    res = {}
    for mode in ("plain", "geoseg", "gdal_sieve", "plain_sieved", "geoseg_sieved"):
        res[mode] = run(mode, src, tmp / f"{mode}.gpkg", args.min_px, args.block_size)
        print(json.dumps(res[mode]), flush=True)
    s = {k: v["seconds"] for k, v in res.items()}
    print(json.dumps({
        "geoseg_vs_plain_throughput": round(s["plain"] / s["geoseg"], 3),
        "geoseg_sieved_vs_plain_sieved_throughput": round(s["plain_sieved"] / s["geoseg_sieved"], 3),
        "sieve_overhead_geoseg_s": round(s["geoseg_sieved"] - s["geoseg"], 3),
        "gdal_sieve_alone_s": s["gdal_sieve"],
        "features_equal": res["plain"]["features"] == res["geoseg"]["features"]
        and res["plain_sieved"]["features"] == res["geoseg_sieved"]["features"],
        "rss_geoseg_vs_plain": round(res["geoseg"]["peak_rss_mb"] / res["plain"]["peak_rss_mb"], 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()

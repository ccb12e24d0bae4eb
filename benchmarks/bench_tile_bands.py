"""Tiling a many-band scene: seconds per chip, one read per band (main before) vs one per window.

Issue 19 item 8: a 224-band EnMAP mosaic took 9.5 min for 56 chips because the tiler read each
chip band by band (``labels.read_on_grid`` once per band: a boundless masked read each, and a
pixel-interleaved file decompresses every block once per band). The tiler now reads all bands
of a file over a window in one call. This script writes a generated pixel-interleaved,
deflate-compressed int16 scene (``--bands`` x ``--size``^2, nodata -1) and a class raster under
/tmp, then tiles it twice in this one process: with the per-band reader of the previous code
(restored here by monkeypatching ``tiling._SceneReader.read``) and with the current one,
the current one before and after (best of two), and checks that both wrote identical chips.

    .venv/bin/python benchmarks/bench_tile_bands.py [--bands 112] [--size 512] [--chip 128]

Measured (2 cores, loaded): 112 bands, 512^2, 16 chips of 128 px: 15.2 s per chip per band,
0.28 s per chip in one read (53.7x). The per-band cost grows with the square of the band
count on a pixel-interleaved file: keep the defaults small.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from geoseg import tiling
from geoseg.grid import Grid
from geoseg.labels import read_on_grid


def _per_band_read(self: Any, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """The previous ``_SceneReader.read``: one ``read_on_grid`` call per band."""
    image = np.empty((len(self.scene.bands), *grid.shape), dtype=self.scene.dtype)
    valid = np.ones(grid.shape, dtype=bool)
    for k, b in enumerate(self.scene.bands):
        arr = read_on_grid(self.datasets[b.path], b.index, grid, resampling=Resampling.bilinear)
        image[k] = arr.data
        valid &= ~np.ma.getmaskarray(arr)
    return image, valid


def _write_inputs(tmp: Path, bands: int, size: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    t = Affine(30.0, 0, 500000.0, 0, -30.0, 5_800_000.0)
    prof = dict(driver="GTiff", width=size, height=size, crs="EPSG:32633", transform=t,
                tiled=True, blockxsize=256, blockysize=256, compress="deflate")  # fmt: skip
    scene = tmp / "hyper.tif"
    with rasterio.open(scene, "w", count=bands, dtype="int16", nodata=-1,
                       interleave="pixel", **prof) as dst:  # fmt: skip
        for r in range(0, size, 256):
            h = min(256, size - r)
            block = rng.integers(0, 4000, size=(bands, h, size), dtype=np.int16)
            dst.write(block, window=rasterio.windows.Window(0, r, size, h))
    labels = tmp / "labels.tif"
    cls = (np.arange(size)[None, :] // 64 % 3 + 1).repeat(size, 0).astype("uint8")
    with rasterio.open(labels, "w", count=1, dtype="uint8", nodata=0, **prof) as dst:
        dst.write(cls, 1)
    return scene, labels


def _tile(scene: Path, labels: Path, out: Path, chip: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    rep = tiling.tile_scenes([scene], labels=[labels], out_dir=out, size=chip, overlap=0,
                             no_split=True, overwrite=True)  # fmt: skip
    return time.perf_counter() - t0, rep.total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bands", type=int, default=112)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--chip", type=int, default=128)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_tile_bands_"))
    scene, labels = _write_inputs(tmp, args.bands, args.size)
    current = tiling._SceneReader.read
    secs: dict[str, list[float]] = {"per_band": [], "one_read": []}
    chips = 0
    for mode in ("one_read", "per_band", "one_read"):  # the slow one once
        tiling._SceneReader.read = _per_band_read if mode == "per_band" else current  # type: ignore[method-assign]
        s, chips = _tile(scene, labels, tmp / mode, args.chip)
        secs[mode].append(s)
    tiling._SceneReader.read = current  # type: ignore[method-assign]
    for f in sorted((tmp / "one_read" / "images").iterdir()):
        with rasterio.open(f) as a, rasterio.open(tmp / "per_band" / "images" / f.name) as b:
            assert np.array_equal(a.read(), b.read()), f.name
    best = {k: min(v) for k, v in secs.items()}
    print(json.dumps({
        "bands": args.bands, "size": args.size, "chip": args.chip, "chips": chips,
        "s_per_chip_per_band_read": best["per_band"] / chips,
        "s_per_chip_one_read": best["one_read"] / chips,
        "speedup": best["per_band"] / best["one_read"],
        "chips_identical": True,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


if __name__ == "__main__":
    main()

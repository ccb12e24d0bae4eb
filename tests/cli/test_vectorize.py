"""``geoseg vectorize`` through click's CliRunner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
from click.testing import CliRunner

from geoseg.cli.main import cli


def _classes(raster_factory: Callable[..., Path]) -> Path:
    a = np.kron(np.arange(1, 10).reshape(3, 3) % 4 + 1, np.ones((8, 8), dtype=int)).astype("uint8")
    a[0, 0] = 0
    return raster_factory("classes.tif", a, nodata=0)


def test_vectorize_command(raster_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = _classes(raster_factory)
    out = tmp_path / "out.gpkg"
    res = CliRunner().invoke(
        cli, ["vectorize", str(src), "--out", str(out), "--min-area", "2px", "--block-size", "5"]
    )
    assert res.exit_code == 0, res.output
    assert "polygons" in res.output
    gdf = gpd.read_file(out, layer=0)
    assert len(gdf) == 9 and gdf.is_valid.all()


def test_vectorize_json_format_and_crs(raster_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = _classes(raster_factory)
    out = tmp_path / "out.data"
    res = CliRunner().invoke(
        cli,
        [
            "vectorize",
            str(src),
            "-o",
            str(out),
            "--format",
            "fgb",
            "--to-crs",
            "EPSG:4326",
            "--simplify",
            "5",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["format"] == "fgb" and rep["crs"] == "EPSG:4326"
    assert out.with_suffix(".qml").exists()


def test_vectorize_errors_are_one_line(raster_factory: Callable[..., Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli, ["vectorize", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "o.gpkg")]
    )
    assert res.exit_code == 1
    assert "no such file" in res.output and "Traceback" not in res.output
    src = _classes(raster_factory)
    res = CliRunner().invoke(
        cli, ["vectorize", str(src), "-o", str(tmp_path / "o.gpkg"), "--min-area", "big"]
    )
    assert res.exit_code == 1 and "0.5ha" in res.output


def test_vectorize_workers_import_no_torch_or_geopandas(
    raster_factory: Callable[..., Path],
) -> None:
    # a spawned worker imports geoseg.vectorize and runs one row task (sieve + polygonize):
    # neither may pull torch or geopandas (their imports would be paid per worker)
    import subprocess
    import sys

    src = _classes(raster_factory)
    code = (
        "import sys; from rasterio.windows import Window; import geoseg.vectorize as gv; "
        f"b = gv._polygonize_row({str(src)!r}, 1, [Window(0, 0, 24, 24)], (24, 24), 3); "
        "assert len(b) == 1 and len(b[0].final); "
        "print(','.join(m for m in ('torch', 'geopandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

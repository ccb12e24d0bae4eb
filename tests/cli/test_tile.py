from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
from click.testing import CliRunner

from geoseg.cli.main import cli
from tests.data.labels import pixel_box, write_vector


def _inputs(tmp_path: Path, raster_factory: Callable[..., Path]) -> tuple[Path, Path]:
    scene = raster_factory("scene.tif", count=2, width=128, height=128, descriptions=["B4", "B8"])
    rng = np.random.default_rng(0)
    boxes = [pixel_box(c, r, c + 30, r + 30) for c, r in rng.uniform(0, 100, (20, 2))]
    names = [str(v) for v in rng.choice(["forest", "water"], 20)]
    labels = write_vector(tmp_path / "labels.geojson", boxes, landcover=names)
    return scene, labels


def test_tile_command_writes_layout_and_summary(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    scene, labels = _inputs(tmp_path, raster_factory)
    out = tmp_path / "chips"
    args = ["tile", str(scene), "--labels", str(labels), "--out", str(out), "--class-column",
            "landcover", "--size", "32", "--overlap", "8", "--block-size", "64", "--bands", "B8,1",
            "--split", "0.5,0.25,0.25"]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    index = gpd.read_file(out / "index.gpkg")
    assert "split leakage: 0 pixels" in r.output and f"{len(index)} chips" in r.output
    assert {"split", "scene", "px_forest", "px_water"} <= set(index.columns)
    assert len(list((out / "images").glob("*.tif"))) == len(index)
    assert (out / "classes.yaml").is_file()
    r2 = CliRunner().invoke(cli, args)  # second run without --overwrite
    assert r2.exit_code == 1 and "--overwrite" in r2.output and "Traceback" not in r2.output
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0


def test_tile_command_bad_column_one_line(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    scene, labels = _inputs(tmp_path, raster_factory)
    r = CliRunner().invoke(cli, ["tile", str(scene), "--labels", str(labels), "--out",
                                 str(tmp_path / "o"), "--class-column", "fclass"])  # fmt: skip
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "available columns: landcover" in lines[0]
    assert not (tmp_path / "o" / "index.gpkg").exists()

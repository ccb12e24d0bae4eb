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
    assert not (tmp_path / "o").exists()  # no folder left behind


def test_tile_command_reports_the_split_and_no_split(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    import json

    scene, labels = _inputs(tmp_path, raster_factory)
    base = ["tile", str(scene), "--labels", str(labels), "--class-column", "landcover",
            "--size", "32", "--overlap", "8"]  # fmt: skip
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "a" / "tile_report.json").read_text())
    assert report["block_size_auto"] and report["chips"]["train"] > 0
    for s in ("train", "val", "test"):
        assert report["chips"][s] > 0
        assert f"{s:5s} {report['chips'][s]} chips, labelled pixels: forest" in r.output
    assert f"dropped {report['dropped']['buffer']} for the 8 px buffer" in r.output
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "b"), "--no-split"])
    assert r.exit_code == 0, r.output
    index = gpd.read_file(tmp_path / "b" / "index.gpkg")
    assert set(index["split"]) == {"train"} and "no split" in r.output


def test_tile_command_refusals_write_nothing(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    scene, _ = _inputs(tmp_path, raster_factory)
    corner = write_vector(tmp_path / "corner.geojson", [pixel_box(0, 0, 30, 30)], c=["x"])
    nocrs = raster_factory("nocrs.tif", crs=None, width=128, height=128)
    out = tmp_path / "new" / "chips"
    for args in (
        [str(scene), "--labels", str(corner), "--class-column", "c", "--size", "32"],
        [str(nocrs), "--labels", str(corner), "--class-column", "c", "--size", "32"],
        [str(scene), "--labels", str(corner), "--split", "0,0,1"],
    ):
        r = CliRunner().invoke(cli, ["tile", *args, "--out", str(out)])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), r.output
        assert not (tmp_path / "new").exists()
    assert "cannot be made: val gets no chip" in CliRunner().invoke(cli, [
        "tile", str(scene), "--labels", str(corner), "--class-column", "c", "--size", "32",
        "--out", str(out)]).output  # fmt: skip

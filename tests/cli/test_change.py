from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from geoseg.cli.main import cli

AOI = Path(__file__).resolve().parents[2] / "aoi" / "guadeloupe.geojson"


def test_change_cli(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    before = np.ones((20, 20), "uint8")
    after = before.copy()
    after[:5, :5] = 0
    b = raster_factory("b.tif", before, nodata=255)
    a = raster_factory("a.tif", after, nodata=255)
    out = tmp_path / "loss.tif"
    args = ["change", str(b), str(a), "--from", "1", "--out", str(out)]
    r = CliRunner().invoke(cli, [*args, "--before-date", "2019-01-01", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["loss_pixels"] == 25 and d["date_before"] == "2019-01-01" and d["date_after"] == "a"
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "--overwrite" in r.output
    r = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert r.exit_code == 0 and "loss 0.25 ha (25 px)" in r.output


def test_change_cli_guadeloupe_prints_loss_and_table(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "forest-guadeloupe"
    out = tmp_path / "loss.tif"
    r = CliRunner().invoke(
        cli,
        [
            "change",
            str(d / "forest_t1.tif"),
            str(d / "forest_t2.tif"),
            "--from",
            "1",
            "--out",
            str(out),
            "--aoi",
            str(AOI),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "(30195 px)" in r.output and "Basse-Terre: loss" in r.output
    assert (tmp_path / "loss.csv").read_text().startswith("name,loss_ha,gain_ha")


def test_change_cli_cloud_mask(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    before = np.ones((20, 20), "uint8")
    after = before.copy()
    after[:10] = 0  # half lost, but the top quarter is a cloud
    mask = np.zeros((20, 20), "uint8")
    mask[:5] = 1
    b = raster_factory("b.tif", before, nodata=255)
    a = raster_factory("a.tif", after, nodata=255)
    m = raster_factory("m.tif", mask, nodata=255)
    out = tmp_path / "loss.tif"
    args = ["change", str(b), str(a), "--from", "1", "--out", str(out), "--after-mask", str(m)]
    r = CliRunner().invoke(cli, [*args, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert (d["loss_pixels"], d["unobserved_pixels"]) == (100, 100)
    r = CliRunner().invoke(cli, [*args, "--overwrite", "--mask-values", "2"])
    assert r.exit_code == 0 and "loss 2.00 ha (200 px)" in r.output
    assert "Not observed (cloud masks): 0.00 ha (0 px)" in r.output
    r = CliRunner().invoke(cli, [*args, "--overwrite", "--mask-values", "cloud"])
    assert r.exit_code == 2 and "--mask-values" in r.output
    r = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "nope.tif"), "--overwrite"])
    assert r.exit_code == 1 and "nope.tif" in r.output and "Traceback" not in r.output

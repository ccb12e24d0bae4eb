from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from geoseg.cli.main import cli


def test_evaluate_cli(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    ref = np.ones((20, 20), "uint8")
    ref[10:] = 2
    pred = ref.copy()
    pred[:2] = 2
    p = raster_factory("pred.tif", pred, nodata=0)
    r_ = raster_factory("ref.tif", ref, nodata=0)
    out = tmp_path / "reports" / "eval"
    r = CliRunner().invoke(cli, ["evaluate", str(p), "--reference", str(r_), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "pixel accuracy 0.9000" in r.output
    for ext in ("json", "md", "png"):
        assert (tmp_path / "reports" / f"eval.{ext}").exists()
    r = CliRunner().invoke(
        cli,
        ["evaluate", str(p), "--reference", str(r_), "--out", str(out), "--overwrite", "--json"],
    )
    assert json.loads(r.output)["scores"]["pixel_accuracy"] == 0.9


def test_evaluate_cli_missing_reference_one_line(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    p = raster_factory("pred.tif", np.ones((8, 8), "uint8"))
    r = CliRunner().invoke(
        cli, ["evaluate", str(p), "--reference", str(tmp_path / "nope.tif"), "--out", str(tmp_path)]
    )
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "nope.tif" in r.output

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from geoseg import __version__
from geoseg.cli.main import cli


def test_version_and_help() -> None:
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "info" in r.output


def test_cli_starts_without_heavy_imports() -> None:
    # `geoseg --help` / `geoseg info` / spawned vectorize workers must not pay for torch (~1.2 s)
    code = (
        "import sys, geoseg.cli.main; "
        "print(','.join(m for m in ('torch', 'geopandas', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_info_text_and_json(projected_tif: Path) -> None:
    r = CliRunner().invoke(cli, ["info", str(projected_tif)])
    assert r.exit_code == 0, r.output
    for token in ("GTiff", "64 x 48", "B8", "EPSG:32633", "uint16"):
        assert token in r.output
    r = CliRunner().invoke(cli, ["info", "--json", str(projected_tif)])
    d = json.loads(r.output)
    assert d["band_descriptions"] == ["B2", "B3", "B4", "B8"] and d["count"] == 4


def test_info_bad_inputs_one_line_no_traceback(tmp_path: Path, corrupt_tif: Path) -> None:
    for path in (tmp_path / "missing.tif", corrupt_tif):
        r = CliRunner().invoke(cli, ["info", str(path)])
        assert r.exit_code == 1
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and path.name in lines[0]
        assert "Traceback" not in r.output


def test_quiet_and_verbose_flags(projected_tif: Path) -> None:
    assert CliRunner().invoke(cli, ["-q", "info", str(projected_tif)]).exit_code == 0
    assert CliRunner().invoke(cli, ["-vv", "info", str(projected_tif)]).exit_code == 0


def test_real_s2_lists_ten_band_names(shared_data: Path) -> None:
    r = CliRunner().invoke(cli, ["info", str(shared_data / "aber-s2" / "s2_10band.tif")])
    assert r.exit_code == 0
    import rasterio

    with rasterio.open(shared_data / "aber-s2" / "s2_10band.tif") as ds:
        for name in ds.descriptions:
            assert name in r.output

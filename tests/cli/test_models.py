"""``geoseg models`` through the real CLI: registered names, paths, JSON, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from geoseg.bundle import ModelBundle
from geoseg.classes import ClassMap
from geoseg.cli.main import cli
from geoseg.runtime import sources


def test_models_lists_registered_and_given(tmp_path: Path) -> None:
    pt = ModelBundle.random_init(
        encoder="mobilenet_v2",
        arch="fcn",
        bands=("B4", "B8"),
        classes=ClassMap.from_names(["forest", "water"]),
        chip_size=128,
    ).save(tmp_path / "mine.pt")
    r = CliRunner().invoke(cli, ["models", str(pt), "--json"])
    assert r.exit_code == 0, r.output
    listing = {m["name"]: m for m in json.loads(r.output)}
    assert set(sources.registry()) <= set(listing)
    mine = listing["mine.pt"]
    assert mine["source"] == "bundle" and mine["bands"] == ["B4", "B8"]
    assert [c["name"] for c in mine["classes"]] == ["forest", "water"] and mine["chip_size"] == 128
    if sources.csmask_available():
        cs = listing["csmask-6b-l2a"]
        assert cs["input"] == "reflectance" and cs["resolution"] == [30.0, 30.0]
    r = CliRunner().invoke(cli, ["models", str(pt)])
    assert r.exit_code == 0 and "mine.pt  [bundle]" in r.output and "B4, B8" in r.output


def test_models_refuses_a_bad_path_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage")
    r = CliRunner().invoke(cli, ["models", str(junk)])
    assert r.exit_code == 1 and "junk.onnx: not an ONNX model" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1

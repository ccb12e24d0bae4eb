"""``geoseg export MODEL --onnx OUT`` through the real CLI."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from geoseg.bundle import ModelBundle
from geoseg.classes import ClassMap
from geoseg.cli.main import cli


def test_export_cli(tmp_path: Path) -> None:
    import onnx

    src = ModelBundle.random_init(
        encoder="mobilenet_v2", bands=("a", "b"), classes=ClassMap.from_names(["x", "y"])
    ).save(tmp_path / "m.pt")
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(cli, ["export", str(src), "--onnx", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.key for p in onnx.load(str(out)).metadata_props} >= {"geoseg", "bands", "classes"}
    r = CliRunner().invoke(cli, ["export", str(src), "--onnx", str(out)])
    assert r.exit_code == 1 and "--overwrite" in r.output
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "none.pt"), "--onnx", str(out)])
    assert r.exit_code == 1 and "no such model file" in r.output

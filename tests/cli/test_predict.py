"""``geoseg predict`` through click's CliRunner, with a tiny model on generated data."""

from __future__ import annotations

import json
from pathlib import Path

import rasterio
import torch
from click.testing import CliRunner

from geoseg.bundle import ModelBundle
from geoseg.classes import ClassMap
from geoseg.cli.main import cli
from tests.data.rasters import write_raster

torch.set_num_threads(1)


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    scene = write_raster(
        tmp_path / "s.tif", width=80, height=70, count=3, descriptions=["B2", "B3", "B4"]
    )
    b = ModelBundle.random_init(
        arch="fcn",
        encoder="mobilenet_v2",
        bands=("B4", "B3", "B2"),
        classes=ClassMap.from_names(["water", "urban"]),
        dtype="uint16",
        chip_size=64,
        overlap=16,
    )
    return scene, b.save(tmp_path / "m.pt")


def test_predict_cli_json_report_and_probabilities(tmp_path: Path) -> None:
    scene, model = _setup(tmp_path)
    out = tmp_path / "out" / "c.tif"
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            str(scene),
            "--model",
            str(model),
            "--out",
            str(out),
            "--probabilities",
            "--json",
            "--report",
            str(tmp_path / "r.json"),
            "--batch-size",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["size"] == 64 and d["windows"] == 4
    assert json.loads((tmp_path / "r.json").read_text())["out"] == str(out)
    assert (tmp_path / "out" / "c_proba.tif").exists()
    with rasterio.open(out) as ds:
        assert ds.tags()["GEOSEG_SCENE_BANDS"] == "3,2,1"  # matched by name


def test_predict_cli_errors_are_one_line(tmp_path: Path) -> None:
    scene, model = _setup(tmp_path)
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            str(scene),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "o.tif"),
            "--bands",
            "1,2",
        ],
    )
    assert res.exit_code == 1
    assert res.output.startswith("Error: --bands gives 2 band(s) but the model expects 3")
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            str(scene),
            "--model",
            str(tmp_path / "missing.pt"),
            "--out",
            str(tmp_path / "o.tif"),
        ],
    )
    assert res.exit_code == 1 and "no such model file" in res.output


def test_predict_cli_text_summary(tmp_path: Path) -> None:
    scene, model = _setup(tmp_path)
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            str(scene),
            "-m",
            str(model),
            "-o",
            str(tmp_path / "o.tif"),
            "--size",
            "32",
            "--overlap",
            "8",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Seconds: read" in res.output and "Mpx/s" in res.output


def test_predict_cli_reflectance_preset_equals_scale_offset(tmp_path: Path) -> None:
    """--reflectance s2 and --scale 0.0001 --offset -0.1 are the same scaling, same bytes."""
    import importlib.util

    import pytest
    from affine import Affine

    if importlib.util.find_spec("ukis_csmask") is None:
        pytest.skip("the clouds extra is not installed")
    scene = write_raster(
        tmp_path / "s2.tif",
        width=96,
        height=80,
        count=4,
        descriptions=["B02", "B03", "B04", "B08"],
        transform=Affine(30.0, 0, 500000.0, 0, -30.0, 5000000.0),
    )
    outs = {}
    for name, opts in {
        "preset": ["--reflectance", "s2"],
        "given": ["--scale", "0.0001", "--offset", "-0.1"],
    }.items():
        out = tmp_path / f"{name}.tif"
        args = ["predict", str(scene), "-m", "csmask-4b-l1c", "-o", str(out), "--json", *opts]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        rep = json.loads(res.output)
        assert rep["model_source"] == "csmask" and rep["reflectance"]["offset"] == [-0.1] * 4
        with rasterio.open(out) as ds:
            outs[name] = ds.read(1)
            assert ds.tags()["GEOSEG_REFLECTANCE_OFFSET"] == "-0.1,-0.1,-0.1,-0.1"
    assert (outs["preset"] == outs["given"]).all()
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            str(scene),
            "-m",
            "csmask-4b-l1c",
            "-o",
            str(tmp_path / "x.tif"),
            "--scale",
            "a",
        ],
    )
    assert res.exit_code == 2 and "--scale" in res.output


def test_predict_cli_cloud_mask(tmp_path: Path) -> None:
    import numpy as np
    import pytest
    from affine import Affine

    pytest.importorskip("ukis_csmask", reason="the clouds extra (pip install geoseg[clouds])")
    refl = np.full((4, 128, 128), 0.06, dtype="float32")  # reflectance 0..1: no scaling needed
    refl[:, 30:90, 30:90] = 0.9  # a bright flat square
    scene = write_raster(
        tmp_path / "s.tif",
        refl,
        descriptions=["blue", "green", "red", "nir"],
        transform=Affine(30.0, 0, 500000.0, 0, -30.0, 5000000.0),
    )
    out, mask = tmp_path / "c.tif", tmp_path / "clouds.tif"
    args = ["predict", str(scene), "--model", "csmask-4b-l1c", "--out", str(out)]
    res = CliRunner().invoke(cli, [*args, "--cloud-mask", "--cloud-mask-out", str(mask), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["clouds"]["model"] == "csmask-4b-l1c" and str(mask) in d["outputs"]
    with rasterio.open(out) as c, rasterio.open(mask) as m:
        cls, cm = c.read(1), m.read(1)
    assert d["clouds"]["cloud_pixels"] == int((cm == 1).sum()) > 0
    assert ((cls == 255) == np.isin(cm, [1, 2])).all()  # clouds and shadows only are nodata
    res = CliRunner().invoke(cli, [*args, "--overwrite", "--cloud-mask", "--cloud-bands", "1,2,3"])
    assert res.exit_code == 1 and "--cloud-bands gives 3" in res.output
    assert "Traceback" not in res.output


def test_predict_cli_workers_gives_the_single_process_bytes(tmp_path: Path) -> None:
    scene, model = _setup(tmp_path)
    outs = {}
    for name, extra in (("one", []), ("par", ["--workers", "2", "--row-bands", "2", "--json"])):
        out = tmp_path / name / "c.tif"
        args = ["predict", str(scene), "--model", str(model), "--out", str(out), "--confidence"]
        res = CliRunner().invoke(cli, args + extra)
        assert res.exit_code == 0, res.output
        outs[name] = {p.name: p.read_bytes() for p in sorted(out.parent.iterdir())}
    assert outs["par"] == outs["one"]
    assert sorted(outs["par"]) == ["c.qml", "c.tif", "c.tif.aux.xml", "c_confidence.tif"]
    assert json.loads(res.stdout)["workers"] == 2  # warnings, if any, go to stderr


def test_predict_cli_workers_refuses_what_it_cannot_split(tmp_path: Path) -> None:
    scene, model = _setup(tmp_path)
    out = tmp_path / "c.tif"
    args = ["predict", str(scene), "--model", str(model), "--out", str(out), "--workers", "2"]
    res = CliRunner().invoke(cli, [*args, "--resample"])
    assert res.exit_code == 2
    assert "--resample is not available with --workers" in res.output
    assert not out.exists()

"""``geoseg train`` through the real CLI (CliRunner): tiny model, a few steps, bundle reloads."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import torch
from click.testing import CliRunner

from geoseg.bundle import ModelBundle
from geoseg.cli.main import cli
from tests.test_data import make_scene, make_tiler_inputs

torch.set_num_threads(1)


def test_train_cli_tiny_model(tmp_path: Path) -> None:
    scene, labels = make_scene(tmp_path)
    out = tmp_path / "model.pt"
    args = ["train", "--scene", str(scene), "--labels", str(labels), "--model", "unet"]
    args += ["--encoder", "mobilenet_v2", "--epochs", "1", "--steps", "2", "--batch-size", "2"]
    args += ["--size", "32", "--out", str(out)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "val mIoU" in r.output
    b = ModelBundle.load(out)
    assert b.encoder == "mobilenet_v2" and b.classes.ids == [1, 2, 3] and b.in_channels == 3
    assert (tmp_path / "model_metrics.csv").exists() and (tmp_path / "model_metrics.png").exists()
    with torch.no_grad():
        assert b.build()(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    # An existing output is a one-line error; --overwrite replaces it.
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "--overwrite" in r.output and "Traceback" not in r.output


def test_train_cli_config_file_with_override(tmp_path: Path) -> None:
    scene, labels = make_scene(tmp_path)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"out: ignored.pt\nscenes:\n  - image: {scene.name}\n    labels: [{labels.name}]\n"
        "encoder: mobilenet_v2\nepochs: 1\nsteps_per_epoch: 1\nbatch_size: 2\nchip_size: 32\n"
    )
    out = tmp_path / "m.pt"
    r = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert ModelBundle.load(out).config["steps_per_epoch"] == 1


def test_tile_then_train_on_chips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scene, labels = make_tiler_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["-q", "tile", scene.name, "--labels", labels[0].name, "--labels", labels[1].name]
    args += ["--out", "chips", "--size", "32", "--overlap", "8", "--block-size", "48"]
    args += ["--split", "0.5,0.25,0.25", "--seed", "1"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    index = gpd.read_file(tmp_path / "chips" / "index.gpkg")
    assert set(index["split"]) == {"train", "val", "test"}
    args = ["train", "--chips", "chips", "--epochs", "1", "--steps", "2", "--size", "32"]
    args += ["--batch-size", "2", "--model", "unet", "--encoder", "mobilenet_v2", "--out", "m.pt"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "val mIoU" in r.output and "test mIoU" in r.output
    b = ModelBundle.load(tmp_path / "m.pt")
    assert b.classes.names == ["forest", "water"] and b.bands == ("red", "green", "nir")
    labelled = {
        s: int(index.loc[index["split"] == s, ["px_forest", "px_water"]].to_numpy().sum())
        for s in ("val", "test")
    }
    assert b.metrics["val"]["pixels"] == labelled["val"]
    assert b.metrics["test"]["pixels"] == labelled["test"]
    with torch.no_grad():
        assert b.build()(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_train_cli_config_without_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cfg").mkdir()
    scene, labels = make_scene(tmp_path / "cfg")
    cfg = tmp_path / "cfg" / "t.yaml"
    cfg.write_text(
        f"scenes:\n  - image: {scene.name}\n    labels: [{labels.name}]\n"
        "encoder: mobilenet_v2\nepochs: 1\nsteps_per_epoch: 1\nbatch_size: 2\nchip_size: 32\n"
    )
    monkeypatch.chdir(tmp_path)
    # --out comes from the command line (relative to the cwd), scenes from the YAML (relative
    # to its folder).
    r = CliRunner().invoke(cli, ["-q", "train", "--config", "cfg/t.yaml", "--out", "m.pt"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.pt").is_file() and not (tmp_path / "cfg" / "m.pt").exists()
    # A bad value in the file is still reported with its line; one given on the command line
    # without the line of the value it overrides.
    r = CliRunner().invoke(
        cli, ["train", "--config", "cfg/t.yaml", "--epochs", "0", "--out", "n.pt"]
    )
    assert r.exit_code == 1 and "cfg/t.yaml: epochs: Input should be greater" in r.output
    cfg.write_text(cfg.read_text() + "patience: 0\n")
    r = CliRunner().invoke(cli, ["train", "--config", "cfg/t.yaml", "--out", "n.pt"])
    assert r.exit_code == 1 and "cfg/t.yaml:9: patience" in r.output, r.output
    assert not (tmp_path / "n.pt").exists()


def test_train_cli_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "m.pt")])
    assert r.exit_code == 1 and "either chips" in r.output
    r = CliRunner().invoke(
        cli, ["train", "--chips", str(tmp_path), "--out", str(tmp_path / "m.pt")]
    )
    assert r.exit_code == 1 and "geoseg tile" in r.output


def test_train_cli_encoder_weights(tmp_path: Path) -> None:
    """--encoder-weights: a torchvision file starts the encoder; a wrong one is one clear line."""
    import torchvision

    scene, labels = make_scene(tmp_path)
    torch.manual_seed(4)
    tv = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(tv, tmp_path / "r18.pth")
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "mnv2.pth")
    args = ["-q", "train", "--scene", str(scene), "--labels", str(labels), "--encoder"]
    args += ["resnet18", "--epochs", "1", "--steps", "1", "--batch-size", "2", "--size", "32"]
    args += ["--lr", "1e-12"]
    out = tmp_path / "m.pt"
    r = CliRunner().invoke(
        cli, [*args, "--encoder-weights", str(tmp_path / "r18.pth"), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    sd = ModelBundle.load(out).state_dict
    torch.testing.assert_close(sd["net.encoder.layer4.1.conv2.weight"], tv["layer4.1.conv2.weight"])
    r = CliRunner().invoke(
        cli,
        [*args, "--encoder-weights", str(tmp_path / "mnv2.pth"), "--out", str(tmp_path / "n.pt")],
    )
    assert r.exit_code == 1 and "of 100 tensors of the resnet18 encoder" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "n.pt").exists()


def test_train_cli_cutmix_mixup_merge_into_config_augment(tmp_path: Path) -> None:
    scene, labels = make_scene(tmp_path)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        f"scenes:\n  - image: {scene.name}\n    labels: [{labels.name}]\nencoder: mobilenet_v2\n"
        "epochs: 1\nsteps_per_epoch: 1\nbatch_size: 2\nchip_size: 32\naugment: {jitter: 0.0}\n"
    )
    out = tmp_path / "m.pt"
    args = ["-q", "train", "--config", str(cfg), "--cutmix", "0.3", "--mixup", "0.2"]
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    aug = ModelBundle.load(out).config["augment"]
    assert aug["cutmix"] == 0.3 and aug["mixup"] == 0.2 and aug["jitter"] == 0.0
    bad = [*args[:4], "--cutmix", "0.8", "--mixup", "0.5", "--out", str(tmp_path / "n.pt")]
    r = CliRunner().invoke(cli, bad)
    assert r.exit_code == 1 and "summing to <= 1" in r.output, r.output


def test_train_cli_scene_may_be_a_folder_of_band_files(tmp_path: Path) -> None:
    """Issue 19 item 9: ``train --scene`` takes a folder of band files as ``tile`` does.

    One file per band gives the same model (same seed) as the same bands in one GeoTIFF.
    """
    import numpy as np
    import rasterio

    from tests.data.rasters import write_raster

    scene, labels = make_scene(tmp_path)
    folder = tmp_path / "bands"
    folder.mkdir()
    with rasterio.open(scene) as ds:
        for k, name in enumerate(ds.descriptions, start=1):
            write_raster(folder / f"T33_{name}.tif", ds.read(k), nodata=0)
    common = ["-q", "train", "--labels", str(labels), "--encoder", "mobilenet_v2", "--epochs"]
    common += ["1", "--steps", "2", "--batch-size", "2", "--size", "32", "--seed", "3"]
    for src, out in ((folder, "folder.pt"), (scene, "stack.pt")):
        r = CliRunner().invoke(cli, [*common, "--scene", str(src), "--out", str(tmp_path / out)])
        assert r.exit_code == 0, r.output
    a, b = ModelBundle.load(tmp_path / "folder.pt"), ModelBundle.load(tmp_path / "stack.pt")
    assert a.bands == b.bands == ("B2", "B3", "B4")
    assert a.normalization == b.normalization
    for key, value in b.state_dict.items():
        assert np.array_equal(a.state_dict[key].numpy(), value.numpy()), key

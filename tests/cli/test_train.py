"""``geoseg train`` through the real CLI (CliRunner): tiny model, a few steps, bundle reloads."""

from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner

from geoseg.bundle import ModelBundle
from geoseg.cli.main import cli
from tests.test_data import make_scene

torch.set_num_threads(1)


def test_train_cli_tiny_model(tmp_path: Path) -> None:
    scene, labels = make_scene(tmp_path)
    out = tmp_path / "model.pt"
    args = ["--quiet", "train", "--scene", str(scene), "--labels", str(labels), "--model", "unet"]
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
    r = CliRunner().invoke(cli, ["-q", "train", "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert ModelBundle.load(out).config["steps_per_epoch"] == 1


def test_train_cli_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "m.pt")])
    assert r.exit_code == 1 and "either chips" in r.output
    r = CliRunner().invoke(
        cli, ["train", "--chips", str(tmp_path), "--out", str(tmp_path / "m.pt")]
    )
    assert r.exit_code == 1 and "geoseg tile" in r.output

"""Training: tiny runs on generated scenes (CPU, one thread); determinism, resume, config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from geoseg.bundle import ModelBundle
from geoseg.config import load_yaml
from geoseg.errors import ConfigError, OutputExistsError
from geoseg.train import TrainConfig, train
from tests.test_data import make_scene

torch.set_num_threads(1)


def tiny(tmp_path: Path, out: str = "m.pt", **kw: object) -> TrainConfig:
    scene, labels = make_scene(tmp_path)
    base: dict[str, object] = {
        "out": tmp_path / out,
        "scenes": [{"image": scene, "labels": [labels]}],
        "encoder": "resnet18",
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "chip_size": 32,
        "split": {"val_fraction": 0.25, "test_fraction": 0.2, "buffer": 2},
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_train_writes_bundle_and_metrics(tmp_path: Path) -> None:
    res = train(config=tiny(tmp_path, loss="ce+dice", normalization="percentile"))
    b = ModelBundle.load(res.bundle_path)
    assert b.arch == "unet" and b.bands == ("B2", "B3", "B4") and b.classes.ids == [1, 2, 3]
    assert b.normalization.method == "percentile" and b.resolution == (10.0, 10.0)
    assert b.metrics["best_epoch"] == 1 and "test" in b.metrics and b.config["loss"] == "ce+dice"
    assert res.metrics_csv.exists() and res.metrics_json.exists() and res.metrics_png is not None
    assert res.metrics_png.exists() and res.test is not None and 0 <= res.test["miou"] <= 1
    assert "val_miou" in res.metrics_csv.read_text().splitlines()[0]
    assert not res.bundle_path.with_suffix(".ckpt").exists()
    b.build()(torch.zeros(1, 3, 64, 64))
    with pytest.raises(OutputExistsError):
        train(config=tiny(tmp_path))


def test_metrics_plot_leaves_the_backend_alone(tmp_path: Path) -> None:
    # The metrics PNG is drawn on a Figure: the caller's backend stays, pyplot is not imported.
    code = (
        "import matplotlib; matplotlib.use('svg'); import sys\n"
        "from pathlib import Path\n"
        "from geoseg.train import _write_metrics\n"
        f"t = Path({str(tmp_path)!r})\n"
        "h = [{'epoch': e, 'train_loss': 1.0 / e, 'val_miou': 0.1 * e} for e in (1, 2)]\n"
        "png = _write_metrics(h, {}, t / 'm.csv', t / 'm.json', t / 'm.png')\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules, png.exists())\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["svg", "False", "True"]
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_weights_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import geoseg.train as tr

    a = train(config=tiny(tmp_path, "a.pt", epochs=2, steps_per_epoch=1))
    b = train(config=tiny(tmp_path, "b.pt", epochs=2, steps_per_epoch=1))
    sa = ModelBundle.load(a.bundle_path).state_dict
    sb = ModelBundle.load(b.bundle_path).state_dict
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # Interrupt the second epoch's scoring, then resume: the same weights as uninterrupted.
    calls = {"n": 0}
    real = tr.evaluate

    def flaky(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tr, "evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(config=tiny(tmp_path, "c.pt", epochs=2, steps_per_epoch=1))
    monkeypatch.setattr(tr, "evaluate", real)
    assert (tmp_path / "c.ckpt").exists() and not (tmp_path / "c.pt").exists()
    c = train(config=tiny(tmp_path, "c.pt", epochs=2, steps_per_epoch=1, resume=True))
    assert c.epochs_run == 2
    sc = ModelBundle.load(c.bundle_path).state_dict
    assert all(torch.equal(sa[k], sc[k]) for k in sa)


def test_config_from_yaml(tmp_path: Path) -> None:
    scene, labels = make_scene(tmp_path)
    y = tmp_path / "train.yaml"
    y.write_text(
        f"out: model.pt\nscenes:\n  - image: {scene.name}\n    labels: [{labels.name}]\nmodel: fcn\nepochs: 3\n"
    )
    cfg = load_yaml(y, TrainConfig)
    assert cfg.out == tmp_path / "model.pt" and cfg.scenes[0].image == scene and cfg.model == "fcn"
    y.write_text("out: m.pt\nepochz: 3\n")
    with pytest.raises(ConfigError, match=r"train.yaml:2: epochz: unknown key"):
        load_yaml(y, TrainConfig)


def test_needs_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="either chips"):
        train(config=TrainConfig(out=tmp_path / "m.pt"))


def test_aber_unet_learns(aber_training: dict[str, Any]) -> None:
    """Real data: a short U-Net run on aber-s2 (west train, east test) beats chance clearly."""
    test = aber_training["test"]
    assert test is not None and test["miou"] > 0.4
    assert ModelBundle.load(aber_training["bundle"]).bands[0] == "B2_blue"


def test_cutmix_and_mixup_train_and_are_recorded(tmp_path: Path) -> None:
    """Training with CutMix and MixUp on every batch runs, is seeded, and is in the bundle."""
    kw: dict[str, Any] = {"augment": {"cutmix": 0.5, "mixup": 0.5}, "steps_per_epoch": 2}
    a = train(config=tiny(tmp_path, "a.pt", **kw))
    b = train(config=tiny(tmp_path, "b.pt", **kw))
    plain = train(config=tiny(tmp_path, "c.pt", steps_per_epoch=2))
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.history[0]["train_loss"] != plain.history[0]["train_loss"]
    assert ModelBundle.load(a.bundle_path).config["augment"]["cutmix"] == 0.5

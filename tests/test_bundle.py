from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.bundle import ModelBundle, Normalization
from geoseg.classes import ClassMap
from geoseg.errors import InputFileNotFoundError, ModelBundleError


def test_roundtrip_keeps_contract_and_outputs(tmp_path: Path) -> None:
    b = ModelBundle.random_init(
        arch="unet",
        encoder="mobilenet_v2",
        bands=("B2", "B3", "B4"),
        classes=ClassMap.from_names(["forest", "water"]),
        normalization=Normalization("meanstd", (1.0, 2.0, 3.0), (2.0, 2.0, 2.0)),
        resolution=(10.0, 10.0),
        seed=3,
    )
    path = b.save(tmp_path / "m.pt")
    back = ModelBundle.load(path)
    assert back.metadata() | {"version": ""} == b.metadata() | {"version": ""}
    assert back.version
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(b.build()(x), back.build()(x))


def test_normalization_applies_per_band() -> None:
    n = Normalization("meanstd", (1.0, 10.0), (2.0, 5.0))
    x = np.stack([np.full((2, 2), 3.0), np.full((2, 2), 20.0)])
    np.testing.assert_allclose(n.apply(x)[:, 0, 0], [1.0, 2.0])


def test_not_a_bundle(tmp_path: Path) -> None:
    p = tmp_path / "x.pt"
    p.write_text("nope")
    with pytest.raises(ModelBundleError, match="not a geoseg model bundle"):
        ModelBundle.load(p)
    torch.save({"a": torch.zeros(1)}, p)
    with pytest.raises(ModelBundleError, match="not a geoseg model bundle"):
        ModelBundle.load(p)
    with pytest.raises(InputFileNotFoundError):
        ModelBundle.load(tmp_path / "missing.pt")


def test_newer_format_is_refused(tmp_path: Path) -> None:
    b = ModelBundle.random_init(
        arch="fcn", encoder="mobilenet_v2", bands=("a",), classes=ClassMap.from_names(["x", "y"])
    )
    p = b.save(tmp_path / "m.pt")
    payload = torch.load(p, weights_only=True)
    payload["metadata"]["format_version"] = 99
    torch.save(payload, p)
    with pytest.raises(ModelBundleError, match="newer geoseg"):
        ModelBundle.load(p)

"""geoseg.batch.manifest: unit planning, checksums, the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.batch import Manifest, plan_units, sha256_file
from geoseg.errors import ConfigError
from geoseg.workflow import Workflow


def test_plan_units_ids_are_unique_and_safe(tmp_path: Path) -> None:
    wf = Workflow.model_validate(
        {
            "output": str(tmp_path / "o"),
            "scenes": [str(tmp_path / "a" / "s 1.tif"), str(tmp_path / "b" / "s 1.tif")],
            "stages": ["areas"],
        }
    )
    assert [u.id for u in plan_units(wf)] == ["s_1", "b_s_1"]


def test_manifest_round_trip_and_errors(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "manifest.json")
    f = tmp_path / "units" / "a" / "x.tif"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"abc")
    m.units["a"] = {
        "status": "done",
        "fingerprint": "fp",
        "outputs": {"units/a/x.tif": sha256_file(f)},
    }
    m.save()
    m2 = Manifest.load(tmp_path / "manifest.json")
    assert m2.is_done("a", "fp", tmp_path)
    assert not m2.is_done("a", "other", tmp_path)
    f.write_bytes(b"abd")
    assert not m2.is_done("a", "fp", tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"manifest.json: manifest cannot be read.*--no-resume"):
        Manifest.load(tmp_path / "manifest.json")
    assert not [p for p in tmp_path.iterdir() if ".geoseg-tmp-" in p.name]

"""Tests for geoseg.io.outputs: all outputs of a run checked together, before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geoseg.errors import OutputExistsError, OutputWriteError
from geoseg.io.outputs import (
    check_outputs,
    check_predict_outputs,
    class_raster_files,
    vector_files,
)


def test_files_with_their_styles(tmp_path: Path) -> None:
    out = tmp_path / "x.tif"
    assert class_raster_files(out) == [out, tmp_path / "x.qml", tmp_path / "x.tif.aux.xml"]
    assert vector_files(tmp_path / "x.geojson") == [tmp_path / "x.geojson", tmp_path / "x.qml"]
    assert vector_files(tmp_path / "x.gpkg") == [tmp_path / "x.gpkg"]  # style inside


def test_a_shared_style_is_refused_before_anything_exists(tmp_path: Path) -> None:
    with pytest.raises(
        OutputWriteError, match=r"x.qml: would be written by both --out .* --vector"
    ):
        check_predict_outputs(
            tmp_path / "x.tif",
            probabilities=None,
            confidence=False,
            vector=tmp_path / "x.geojson",
            inputs={},
            overwrite=True,
        )
    got = check_predict_outputs(
        tmp_path / "x.tif",
        probabilities=None,
        confidence=True,
        vector=tmp_path / "x.gpkg",
        inputs={},
        overwrite=False,
    )
    assert got.confidence == tmp_path / "x_confidence.tif"
    assert list(tmp_path.iterdir()) == []


def test_an_input_is_never_an_output(tmp_path: Path) -> None:
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"scene")
    link = tmp_path / "link.tif"
    os.symlink(scene, link)
    for out in (scene, link, tmp_path / "sub" / ".." / "scene.tif"):
        with pytest.raises(
            OutputWriteError, match=r"is the scene of this run.*even with --overwrite"
        ):
            check_outputs({f"--out {out}": [out]}, inputs={"scene": scene}, overwrite=True)
    assert scene.read_bytes() == b"scene"


def test_an_existing_sidecar_needs_overwrite(tmp_path: Path) -> None:
    (tmp_path / "x.qml").write_text("<qgis/>")
    out = tmp_path / "x.tif"
    with pytest.raises(OutputExistsError, match=r"x.qml: output exists; pass --overwrite"):
        check_outputs({f"--out {out}": class_raster_files(out)}, inputs={}, overwrite=False)
    check_outputs({f"--out {out}": class_raster_files(out)}, inputs={}, overwrite=True)

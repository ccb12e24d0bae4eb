from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.classes import ClassMap
from geoseg.errors import OutputExistsError
from geoseg.grid import Grid, plan_windows
from geoseg.io.atomic import TMP_MARK
from geoseg.io.cog import CogWriter, sidecar_paths


@pytest.fixture
def grid() -> Grid:
    return Grid(CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5000000), (1100, 900))


def _write(path: Path, grid: Grid, data: np.ndarray, **kw: object) -> None:
    with CogWriter(path, grid=grid, **kw) as w:  # type: ignore[arg-type]
        for win in plan_windows(grid.shape, 256, 0):
            r, c, h, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
            w.write(data[r : r + h, c : c + ww], win)


def test_class_cog_on_grid_styled_and_valid(tmp_path: Path, grid: Grid) -> None:
    classes = ClassMap.from_names(["forest", "grass", "water"])
    data = np.random.default_rng(0).integers(1, 4, size=grid.shape).astype("uint8")
    data[:10] = 255
    out = tmp_path / "classes.tif"
    _write(out, grid, data, classes=classes, nodata=255, tags={"GEOSEG_MODEL": "m"})
    with rasterio.open(out) as ds:
        assert Grid.from_dataset(ds) == grid
        assert ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), data)
        assert ds.profile["tiled"] and ds.compression.value == "DEFLATE"
        assert ds.colormap(1)[1][:3] == classes.by_id(1).color
        assert ds.tags()["GEOSEG_MODEL"] == "m"
        assert ds.tags(1)["CLASS_NAMES"] == "forest,grass,water"
        assert ds.overviews(1)  # 1100 px > one block: overviews built
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    sides = sidecar_paths(out)
    assert "paletted" in sides["qml"].read_text() and 'label="water"' in sides["qml"].read_text()
    assert "<Category>forest</Category>" in sides["aux"].read_text()
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_failure_inside_writer_leaves_no_output(tmp_path: Path, grid: Grid) -> None:
    out = tmp_path / "x.tif"
    with (
        pytest.raises(RuntimeError),
        CogWriter(out, grid=grid, classes=ClassMap.from_names(["a"]), nodata=255) as w,
    ):
        w.write(np.ones((256, 256), "uint8"), plan_windows(grid.shape, 256, 0)[0])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_interrupt_while_opening_leaves_no_temporary(
    tmp_path: Path, grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C after the temporaries exist but before __enter__ returns: ``with`` calls no
    # __exit__, so __enter__ itself must remove them (a CI run once left two stage files).
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write_colormap", interrupted)
    with (
        pytest.raises(KeyboardInterrupt),
        CogWriter(tmp_path / "x.tif", grid=grid, classes=ClassMap.from_names(["a"]), nodata=255),
    ):
        pytest.fail("the writer must not open")
    assert list(tmp_path.iterdir()) == []


def test_prediction_writer_drops_the_first_output_when_the_second_cannot_open(
    tmp_path: Path, grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geoseg import predict as gp

    real = CogWriter._open

    def second_interrupted(self: CogWriter) -> None:
        if "proba" in self.path.name:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(CogWriter, "_open", second_interrupted)
    writer = gp.PredictionWriter(
        out=tmp_path / "classes.tif",
        grid=grid,
        classes=ClassMap.from_names(["a", "b"]),
        tags={},
        probabilities=tmp_path / "classes_proba.tif",
        probability_dtype="uint8",
        confidence=None,
        overwrite=False,
    )
    with pytest.raises(KeyboardInterrupt), writer:
        pytest.fail("the writer must not open")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, grid: Grid) -> None:
    out = tmp_path / "x.tif"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        CogWriter(out, grid=grid)
    assert out.read_bytes() == b"precious"


def test_float_multiband(tmp_path: Path, grid: Grid) -> None:
    data = np.random.default_rng(1).random((2, *grid.shape)).astype("float32")
    out = tmp_path / "p.tif"
    with CogWriter(
        out, grid=grid, count=2, dtype="float32", descriptions=["p_a", "p_b"], resampling="average"
    ) as w:
        w.write(data, grid.full_window)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), data)
        assert ds.descriptions == ("p_a", "p_b")

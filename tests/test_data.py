"""Training data: spatial split, normalisation, scene sampling through torchgeo, chips."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.data import ChipData, SceneData, SplitRule, compute_normalization, normalize_batch
from geoseg.errors import ConfigError, InputFileNotFoundError, LabelError
from geoseg.tiling import tile_scenes
from tests.data.labels import pixel_box, write_vector
from tests.data.rasters import write_raster

torch.set_num_threads(1)


def make_scene(folder: Path, *, h: int = 96, w: int = 128, seed: int = 0) -> tuple[Path, Path]:
    """A 3-band uint16 scene whose values follow a 3-class label raster (0 = nodata)."""
    rng = np.random.default_rng(seed)
    lab = np.ones((h, w), np.uint8)
    lab[: h // 2] = 2
    lab[int(h * 0.6) :, int(w * 0.6) :] = 3
    lab[:4] = 0
    img = rng.normal(size=(3, h, w)) * 40 + lab[None].astype(float) * 300 + 1000
    img[:, :2] = 0  # nodata rows
    scene = write_raster(
        folder / "scene.tif", img.astype("uint16"), nodata=0, descriptions=["B2", "B3", "B4"]
    )
    labels = write_raster(folder / "labels.tif", lab[None], nodata=0)
    return scene, labels


def test_split_rule_ranges_with_buffer() -> None:
    rule = SplitRule(val_fraction=0.2, test_fraction=0.3, buffer=5)
    r = rule.ranges(100)
    assert r == {"train": (0, 50), "val": (55, 70), "test": (75, 100)}
    assert rule.split_of(52, 100) is None  # in the buffer
    assert rule.split_of(90, 100) == "test"
    with pytest.raises(ConfigError):
        SplitRule(val_fraction=0.6, test_fraction=0.5)


def test_normalization_meanstd_and_percentile() -> None:
    x = np.stack([np.arange(100.0), np.full(100, 7.0)], axis=1)
    n = compute_normalization(x, method="meanstd")
    assert n.offset[0] == pytest.approx(49.5) and n.scale[1] == 1.0  # constant band: scale 1
    p = compute_normalization(x, method="percentile")
    assert p.offset[0] == pytest.approx(1.98) and p.scale[0] == pytest.approx(97.02 - 1.98)
    z = compute_normalization(np.vstack([x, np.zeros((50, 2))]), nodata=0)
    assert z.offset[0] == pytest.approx(49.5)
    img = torch.zeros(1, 2, 2, 2)
    out = normalize_batch(img, n, nodata=0)
    assert torch.all(out == 0)


def test_scene_data_samples_and_scores_each_pixel_once(tmp_path: Path) -> None:
    scene, labels = make_scene(tmp_path)
    data = SceneData(
        scenes=[scene],
        labels=[[labels]],
        split=SplitRule(val_fraction=0.25, test_fraction=0.25, buffer=4),
    )
    try:
        assert data.classes is not None and data.classes.ids == [1, 2, 3]
        assert data.bands == ("B2", "B3", "B4")
        gen = torch.Generator().manual_seed(0)
        batches = list(data.train_batches(size=32, batch_size=3, length=5, generator=gen))
        assert [b.image.shape[0] for b in batches] == [3, 2]
        assert batches[0].image.shape[1:] == (3, 32, 32) and batches[0].mask.dtype == torch.int64
        assert set(torch.unique(batches[0].mask).tolist()) <= {0, 1, 2, IGNORE_INDEX}
        # Validation: every labelled pixel of the val strip scored exactly once.
        win = data.region(0, "val")
        assert win is not None and win.col_off > 0 and win.row_off == 0  # the east strip
        with rasterio.open(data.mask_paths[0]) as ds:
            expected = int((ds.read(1, window=win) != IGNORE_INDEX).sum())
        got = sum(
            int((b.mask != IGNORE_INDEX).sum())
            for b in data.eval_batches("val", size=32, batch_size=2)
        )
        assert got == expected
        x, y = data.pixel_sample(max_pixels=500)
        assert x.shape == (500, 3) and y.max() <= 2
    finally:
        data.close()


def test_scene_data_reproducible(tmp_path: Path) -> None:
    scene, labels = make_scene(tmp_path)
    data = SceneData(
        scenes=[scene], labels=[[labels]], classes=ClassMap.from_names(["a", "b", "c"])
    )
    try:
        a = next(
            data.train_batches(
                size=32, batch_size=2, length=2, generator=torch.Generator().manual_seed(3)
            )
        )
        b = next(
            data.train_batches(
                size=32, batch_size=2, length=2, generator=torch.Generator().manual_seed(3)
            )
        )
        assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    finally:
        data.close()


def test_chip_data_reads_tiler_layout(tmp_path: Path) -> None:
    import geopandas as gpd
    from affine import Affine
    from shapely import box

    root = tmp_path / "chips"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for k in range(4):
        t = Affine(10, 0, 500000 + k * 320, 0, -10, 5000000)
        write_raster(
            root / "images" / f"c{k}.tif", count=2, width=32, height=32, transform=t, seed=k
        )
        m = np.full((1, 32, 32), 5, np.uint8)
        m[:, :8] = 255
        write_raster(root / "masks" / f"c{k}.tif", m, transform=t)
        rows.append(
            {
                "chip": f"c{k}",
                "image": f"images/c{k}.tif",
                "mask": f"masks/c{k}.tif",
                "split": "train" if k in (0, 2, 3) else "val",
                "geometry": box(0, 0, 1, 1),
            }
        )
    ClassMap.from_ids([5, 7]).write(root / "classes.yaml")
    rows.reverse()  # rows are matched by file, not by order
    gpd.GeoDataFrame(rows, crs="EPSG:32633").to_file(root / "index.gpkg")
    chips = ChipData(root)
    assert chips.splits == ["train", "val", "train", "train"]
    b = next(chips.train_batches(size=32, batch_size=2, length=2, generator=torch.Generator()))
    assert b.image.shape == (2, 2, 32, 32)
    assert set(torch.unique(b.mask).tolist()) == {0, IGNORE_INDEX}  # id 5 -> index 0
    assert sum(x.image.shape[0] for x in chips.eval_batches("val", size=32, batch_size=4)) == 1


# ---- `geoseg tile` -> ChipData -> train, run together --------------------------------------
TILE_KW: dict[str, Any] = {
    "size": 32,
    "overlap": 8,
    "block_size": 48,
    "split": (0.5, 0.25, 0.25),
    "seed": 1,  # gives chips in all three splits
}
TILE_CLASSES = ClassMap.from_ids([3, 7], {3: "forest", 7: "water"})


def make_tiler_inputs(folder: Path) -> tuple[Path, list[Path]]:
    """A 3-band 160 x 128 px scene and two polygon files (forest, water) covering most of it."""
    h, w = 128, 160
    data = np.random.default_rng(0).integers(1, 3000, size=(3, h, w)).astype("uint16")
    scene = write_raster(folder / "scene.tif", data, descriptions=["red", "green", "nir"])
    forest = write_vector(
        folder / "forest.gpkg", [pixel_box(0, 0, 80, h), pixel_box(120, 0, w, 40)]
    )
    water = write_vector(
        folder / "water.gpkg", [pixel_box(80, 0, 120, h), pixel_box(120, 70, w, h)]
    )
    return scene, [forest, water]


@pytest.fixture
def tiled(tmp_path: Path) -> Path:
    """A chip folder written by the real tiler."""
    scene, labels = make_tiler_inputs(tmp_path)
    out = tmp_path / "chips"
    tile_scenes([scene], labels=labels, classes=TILE_CLASSES, out_dir=out, **TILE_KW)
    return out


def _px(index: Any, split: str) -> list[int]:
    rows = index[index["split"] == split]
    return [int(rows["px_forest"].sum()), int(rows["px_water"].sum())]


def test_chip_data_on_tiler_output_keeps_splits_and_trains(
    tiled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geopandas as gpd

    from geoseg.bundle import ModelBundle
    from geoseg.train import TrainConfig, train

    index = gpd.read_file(tiled / "index.gpkg")
    assert set(index["split"]) == {"train", "val", "test"}
    data = ChipData(tiled)
    assert data.bands == ("red", "green", "nir") and data.classes.ids == [3, 7]
    # Every index row is exactly one chip, with the index's split and mask.
    assert sorted(p.stem for p, _ in data.pairs) == sorted(index["chip"])
    rows = index.set_index("chip")
    for k, (img_p, mask_p) in enumerate(data.pairs):
        rec = rows.loc[img_p.stem]
        assert data.splits[k] == rec["split"]
        assert mask_p == tiled / rec["mask"] and img_p == tiled / rec["image"]
        with rasterio.open(img_p) as im, rasterio.open(mask_p) as ms:
            raw_img, raw_mask = im.read(), ms.read(1)
            assert im.transform == ms.transform
        assert set(np.unique(raw_mask).tolist()) <= {3, 7, IGNORE_INDEX}
        b = data._load(k)
        assert b.image.shape == (1, 3, 32, 32) and b.mask.shape == (1, 32, 32)
        np.testing.assert_array_equal(b.image[0].numpy(), raw_img.astype(np.float32))
        expected = np.select([raw_mask == 3, raw_mask == 7], [0, 1], IGNORE_INDEX)
        np.testing.assert_array_equal(b.mask[0].numpy(), expected)  # ids 3, 7 -> indices 0, 1
        assert [np.count_nonzero(expected == i) for i in (0, 1)] == [
            rec["px_forest"],
            rec["px_water"],
        ]
    # Training draws train chips only; statistics and scores use each split's chips only.
    split_of = {data._load(k).image.numpy().tobytes(): s for k, s in enumerate(data.splits)}
    gen = torch.Generator().manual_seed(0)
    drawn = [
        split_of[img[None].numpy().tobytes()]
        for b in data.train_batches(size=32, batch_size=4, length=16, generator=gen)
        for img in b.image
    ]
    assert len(drawn) == 16 and set(drawn) == {"train"}
    _, y = data.pixel_sample()
    assert np.bincount(y, minlength=2).tolist() == _px(index, "train")
    for split in ("val", "test"):
        masks = [b.mask for b in data.eval_batches(split, size=32, batch_size=2)]  # type: ignore[arg-type]
        m = torch.cat(masks)
        assert [int((m == i).sum()) for i in (0, 1)] == _px(index, split)

    # A 2-step training run: every trained chip is a train chip; val/test scored on theirs.
    torch.set_num_threads(1)
    trained: list[str] = []
    real = ChipData.train_batches

    def spy(self: ChipData, **kw: Any) -> Any:
        for b in real(self, **kw):
            trained.extend(split_of[img[None].numpy().tobytes()] for img in b.image)
            yield b

    monkeypatch.setattr(ChipData, "train_batches", spy)
    config = TrainConfig(
        out=tmp_path / "m.pt",
        chips=tiled,
        model="unet",
        encoder="mobilenet_v2",
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        chip_size=32,
        device="cpu",
    )
    res = train(config=config)
    assert trained and set(trained) == {"train"} and len(trained) == 4
    assert res.val["pixels"] == sum(_px(index, "val"))
    assert res.test is not None and res.test["pixels"] == sum(_px(index, "test"))
    bundle = ModelBundle.load(res.bundle_path)
    assert bundle.bands == ("red", "green", "nir") and bundle.classes.ids == [3, 7]


def test_chip_data_index_mismatch_is_a_label_error(tiled: Path) -> None:
    import geopandas as gpd

    index = gpd.read_file(tiled / "index.gpkg")
    first = sorted((tiled / "images").iterdir())[0]
    # A chip file that the index does not list.
    extra = first.with_name("stray.tif")
    shutil.copy(first, extra)
    shutil.copy(tiled / "masks" / first.name, tiled / "masks" / "stray.tif")
    with pytest.raises(LabelError, match=r"stray\.tif: chip not listed in .*index\.gpkg"):
        ChipData(tiled)
    extra.unlink()
    # An index row whose image is missing.
    moved = first.with_suffix(".bak")
    first.rename(moved)
    with pytest.raises(LabelError, match=rf"image of chip {first.stem} .* is missing"):
        ChipData(tiled)
    moved.rename(first)
    assert len(ChipData(tiled).pairs) == len(index)
    # An index without the tiler's columns, or with an unknown split.
    index.drop(columns=["mask"]).to_file(tiled / "index.gpkg", layer="chips")
    with pytest.raises(LabelError, match=r"no column.*mask.*geoseg tile"):
        ChipData(tiled)
    index.assign(split="holdout").to_file(tiled / "index.gpkg", layer="chips")
    with pytest.raises(LabelError, match="split 'holdout'"):
        ChipData(tiled)


def test_chip_data_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputFileNotFoundError, match="geoseg tile"):
        ChipData(tmp_path)

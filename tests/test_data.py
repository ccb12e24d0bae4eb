"""Training data: spatial split, normalisation, scene sampling through torchgeo, chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.data import ChipData, SceneData, SplitRule, compute_normalization, normalize_batch
from geoseg.errors import ConfigError, InputFileNotFoundError
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
        r, c, h, w = data.region(0, "val")  # type: ignore[misc]
        with rasterio.open(data.mask_paths[0]) as ds:
            expected = int((ds.read(1)[r : r + h, c : c + w] != IGNORE_INDEX).sum())
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
    from shapely import box

    root = tmp_path / "chips"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for k in range(4):
        from affine import Affine

        t = Affine(10, 0, 500000 + k * 320, 0, -10, 5000000)
        write_raster(
            root / "images" / f"c{k}.tif", count=2, width=32, height=32, transform=t, seed=k
        )
        m = np.full((1, 32, 32), 5, np.uint8)
        m[:, :8] = 255
        write_raster(root / "masks" / f"c{k}.tif", m, transform=t)
        rows.append(
            {
                "image": f"images/c{k}.tif",
                "split": "train" if k < 3 else "val",
                "geometry": box(0, 0, 1, 1),
            }
        )
    ClassMap.from_ids([5, 7]).write(root / "classes.yaml")
    gpd.GeoDataFrame(rows, crs="EPSG:32633").to_file(root / "index.gpkg")
    chips = ChipData(root)
    assert chips.splits == ["train", "train", "train", "val"]
    b = next(chips.train_batches(size=32, batch_size=2, length=2, generator=torch.Generator()))
    assert b.image.shape == (2, 2, 32, 32)
    assert set(torch.unique(b.mask).tolist()) == {0, IGNORE_INDEX}  # id 5 -> index 0
    assert sum(x.image.shape[0] for x in chips.eval_batches("val", size=32, batch_size=4)) == 1


def test_chip_data_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputFileNotFoundError, match="geoseg tile"):
        ChipData(tmp_path)

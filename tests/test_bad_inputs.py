"""Bad inputs, every command: one clear ``Error:`` line, a non-zero exit, no traceback, no output.

The table :data:`CASES` is data: each :class:`Case` builds its inputs in a fresh folder (the
working directory while it runs, so paths and messages are short and relative) and returns
the command line. :func:`run_case` runs the real CLI (click's ``CliRunner``, or a subprocess
for cases that need process limits) and :func:`check_case` asserts the contract:

* failing cases: exit code != 0, exactly one line starting ``Error: `` that names the
  offending file or value, no ``Traceback``, and the folder is unchanged: no new file (no
  partial output, no temporary), no existing file changed or lost;
* must-work cases (``ok=True``): exit code 0, the expected outputs exist, no temporary left.

``docs/gen_errors.py`` imports the same table to regenerate ``docs/errors.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg.io.atomic import TMP_MARK
from tests.data import bad_inputs as bi
from tests.data.labels import pixel_box

IN = Path("in")
OUT = Path("out")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One bad (or must-work) input: how to build it and what the CLI must do."""

    id: str
    command: str
    description: str
    build: Callable[[], list[str]]
    mentions: tuple[str, ...] = ()  # substrings the Error line must contain
    ok: bool = False  # must work (exit 0) instead of failing
    outputs: tuple[str, ...] = ()  # for ok cases: paths that must exist afterwards
    fsize: int | None = None  # run in a subprocess with RLIMIT_FSIZE (disk full)
    xfail: str | None = None  # a known bug in another module (strict xfail)
    hide: tuple[str, ...] = ()  # packages that look not installed while it runs (extras)


@dataclass
class Outcome:
    """What one run of a case gave."""

    exit_code: int
    output: str  # stdout + stderr
    stderr: str
    before: dict[str, str]
    after: dict[str, str]
    error_lines: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """The one ``Error:`` line (or the last line of output)."""
        if self.error_lines:
            return self.error_lines[0]
        lines = [ln for ln in self.output.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


# ---- small builders ---------------------------------------------------------------------------
def _predict(scene: Path, *extra: str, model: Path | None = None) -> list[str]:
    m = model if model is not None else bi.model(IN)
    return ["predict", str(scene), "--model", str(m), "--out", str(OUT / "classes.tif"), *extra]


def _yaml(name: str, text: str) -> Path:
    IN.mkdir(exist_ok=True)
    p = IN / name
    p.write_text(textwrap.dedent(text))
    return p


def _workflow(body: str) -> list[str]:
    bi.scene(IN)
    return ["run", str(_yaml("workflow.yaml", body))]


def _empty_vector() -> Path:
    import geopandas as gpd

    IN.mkdir(exist_ok=True)
    frame = gpd.GeoDataFrame({"class": np.array([], dtype=object)}, geometry=[], crs=bi.UTM)
    p = IN / "empty.gpkg"
    frame.to_file(p, engine="pyogrio")
    return p


def _tile(labels: Path, *extra: str, scene: Path | None = None) -> list[str]:
    s = scene if scene is not None else bi.scene(IN)
    return [
        "tile",
        str(s),
        "--labels",
        str(labels),
        "--out",
        str(OUT / "chips"),
        "--size",
        "32",
        "--overlap",
        "8",
        "--min-labelled",
        "0",
        *extra,
    ]


FAR = Affine(10.0, 0, 700000.0, 0, -10.0, 5500000.0)  # a grid 200 km away from the default one
ROTATED = Affine.translation(500000, 5000000) * Affine.rotation(30) * Affine.scale(10, -10)
GEOGRAPHIC = Affine(0.0001, 0, 15.0, 0, -0.0001, 45.0)


def _all_nodata() -> Path:
    data = np.zeros((3, 40, 48), dtype="uint16")
    return bi.scene(IN, "nodata.tif", data=data, nodata=0)


def _nan_scene() -> Path:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 40, 48)).astype("float32")
    data[:, 5:15, 10:30] = np.nan
    return bi.scene(IN, "nan.tif", data=data)


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _existing(path: Path, content: bytes = b"precious earlier result") -> Path:
    """An output that already exists (it must survive the failing run unchanged)."""
    _folder(path.parent)
    path.write_bytes(content)
    return path


def _existing_output() -> list[str]:
    _existing(OUT / "classes.tif")
    return _predict(bi.scene(IN))


def _out_of_range_reference() -> list[str]:
    pred = bi.class_raster(IN, "pred.tif")
    data = np.ones((40, 48), dtype="uint8")
    data[:10] = 7
    ref = bi.class_raster(IN, "reference.tif", data, styled=False)
    return ["evaluate", str(pred), "--reference", str(ref), "--out", str(OUT / "eval")]


def _warped(src: Path, crs: str) -> Path:
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    dst = src.with_name(src.stem + "_" + crs.replace(":", "") + ".tif")
    with rasterio.open(src) as s:
        transform, w, h = calculate_default_transform(s.crs, crs, s.width, s.height, *s.bounds)
        profile = {**s.profile, "crs": crs, "transform": transform, "width": w, "height": h}
        profile.pop("photometric", None)
        with rasterio.open(dst, "w", **profile) as d:
            reproject(rasterio.band(s, 1), rasterio.band(d, 1), resampling=Resampling.nearest)
            d.update_tags(1, **s.tags(1))
    return dst


def _train_config(body: str) -> list[str]:
    cfg = _yaml("train.yaml", body)
    return ["train", "--config", str(cfg), "--out", str(OUT / "model.pt")]


# ---- the table --------------------------------------------------------------------------------
CASES: list[Case] = [
    # info
    Case(
        "info-missing",
        "info",
        "scene file does not exist",
        lambda: ["info", str(IN / "missing.tif")],
        ("in/missing.tif", "no such file"),
    ),
    Case(
        "info-truncated",
        "info",
        "GeoTIFF truncated a third of the way",
        lambda: ["info", str(bi.corrupt_scene(IN))],
        ("in/corrupt.tif",),
    ),
    Case(
        "info-not-raster",
        "info",
        "a text file named .tif",
        lambda: ["info", str(bi.text_file(IN, "notes.tif"))],
        ("in/notes.tif",),
    ),
    Case(
        "info-folder",
        "info",
        "a folder instead of a file",
        lambda: ["info", str(_folder(IN))],
        ("'in'", "directory"),
    ),
    # predict: scene problems
    Case(
        "predict-missing-scene",
        "predict",
        "scene file does not exist",
        lambda: _predict(IN / "missing.tif"),
        ("in/missing.tif",),
    ),
    Case(
        "predict-truncated",
        "predict",
        "truncated GeoTIFF",
        lambda: _predict(bi.corrupt_scene(IN)),
        ("in/corrupt.tif",),
    ),
    Case(
        "predict-not-raster",
        "predict",
        "a text file as the scene",
        lambda: _predict(bi.text_file(IN, "scene.tif")),
        ("in/scene.tif",),
    ),
    Case(
        "predict-no-crs",
        "predict",
        "scene without a CRS",
        lambda: _predict(bi.scene(IN, "nocrs.tif", crs=None)),
        ("in/nocrs.tif", "CRS"),
    ),
    Case(
        "predict-rotated",
        "predict",
        "rotated (sheared) geotransform",
        lambda: _predict(bi.scene(IN, "rotated.tif", transform=ROTATED)),
        ("in/rotated.tif", "rotated"),
    ),
    Case(
        "predict-geographic",
        "predict",
        "scene in EPSG:4326 (geographic) must work",
        lambda: _predict(bi.scene(IN, "wgs84.tif", crs="EPSG:4326", transform=GEOGRAPHIC)),
        ok=True,
        outputs=("out/classes.tif",),
    ),
    Case(
        "predict-smaller-than-chip",
        "predict",
        "20x12 px scene, 32 px chips: must work",
        lambda: _predict(bi.scene(IN, "tiny.tif", width=20, height=12)),
        ok=True,
        outputs=("out/classes.tif",),
    ),
    Case(
        "predict-all-nodata",
        "predict",
        "every pixel is nodata",
        lambda: _predict(_all_nodata()),
        ("in/nodata.tif",),
    ),
    Case(
        "predict-nan-bands",
        "predict",
        "float bands with NaN holes: must work (NaN = nodata)",
        lambda: _predict(_nan_scene(), model=bi.model(IN, dtype="float32")),
        ok=True,
        outputs=("out/classes.tif",),
    ),
    Case(
        "predict-band-count",
        "predict",
        "2-band scene for a 3-band model",
        lambda: _predict(bi.scene(IN, "two.tif", count=2, descriptions=["B2", "B3"])),
        ("in/two.tif", "B4"),
    ),
    Case(
        "predict-band-names",
        "predict",
        "scene bands B2,B3,B8 for a B2,B3,B4 model",
        lambda: _predict(bi.scene(IN, "other.tif", descriptions=["B2", "B3", "B8"])),
        ("in/other.tif", "B4"),
    ),
    Case(
        "predict-band-order",
        "predict",
        "bands in another order (B4,B3,B2): matched by name",
        lambda: _predict(bi.scene(IN, "bgr.tif", descriptions=["B4", "B3", "B2"])),
        ok=True,
        outputs=("out/classes.tif",),
    ),
    Case(
        "predict-bands-option",
        "predict",
        "--bands names a band the scene lacks",
        lambda: _predict(bi.scene(IN), "--bands", "B2,B3,B9"),
        ("B9",),
    ),
    Case(
        "predict-dtype",
        "predict",
        "float32 scene for a uint16 model",
        lambda: _predict(_nan_scene()),
        ("in/nan.tif", "uint16"),
    ),
    # predict: model problems
    Case(
        "predict-model-missing",
        "predict",
        "model file does not exist",
        lambda: _predict(bi.scene(IN), model=IN / "nomodel.pt"),
        ("in/nomodel.pt",),
    ),
    Case(
        "predict-model-text",
        "predict",
        "a text file as the model",
        lambda: _predict(bi.scene(IN), model=bi.text_file(IN, "model.pt")),
        ("in/model.pt", "bundle"),
    ),
    Case(
        "predict-model-state-dict",
        "predict",
        "a torch state dict that is not a bundle",
        lambda: _predict(bi.scene(IN), model=bi.not_a_bundle(IN)),
        ("in/weights.pt", "bundle"),
    ),
    Case(
        "predict-model-newer",
        "predict",
        "bundle written by a newer geoseg (format 99)",
        lambda: _predict(bi.scene(IN), model=bi.newer_model(IN)),
        ("in/future.pt", "newer"),
    ),
    Case(
        "predict-model-not-onnx",
        "predict",
        "a text file named .onnx as the model",
        lambda: _predict(bi.scene(IN), model=bi.text_file(IN, "model.onnx")),
        ("in/model.onnx", "not an ONNX model"),
    ),
    Case(
        "predict-onnx-no-metadata",
        "predict",
        "an ONNX model without geoseg or Deepness metadata",
        lambda: _predict(bi.scene(IN), model=bi.bare_onnx(IN)),
        ("in/bare.onnx", "no geoseg or Deepness metadata", "geoseg export"),
    ),
    Case(
        "predict-onnx-wrong-bands",
        "predict",
        "a 2-band scene for a 3-band `geoseg export` ONNX model",
        lambda: _predict(
            bi.scene(IN, "two.tif", count=2, descriptions=["B2", "B3"]), model=bi.onnx_model(IN)
        ),
        ("in/two.tif", "expects 3", "a scene with all of them"),
    ),
    Case(
        "predict-clouds-extra-missing",
        "predict",
        "a csmask model without the clouds extra (ukis-csmask) installed",
        lambda: _predict(bi.scene(IN), model=Path("csmask-6b-l1c")),
        ("csmask-6b-l1c", "pip install geoseg[clouds]"),
        hide=("ukis_csmask",),
    ),
    Case(
        "predict-reflectance-unknown",
        "predict",
        "a csmask model and an unknown --reflectance preset",
        lambda: _predict(
            bi.scene(IN, count=4, descriptions=["B02", "B03", "B04", "B08"]),
            "--resample",
            "--reflectance",
            "sentinel",
            model=Path("csmask-4b-l1c"),
        ),
        ("--reflectance 'sentinel'", "s2"),
    ),
    Case(
        "predict-reflectance-needed",
        "predict",
        "uint16 DN without scale/offset for a model that takes reflectance",
        lambda: _predict(
            bi.scene(IN, count=4, descriptions=["B02", "B03", "B04", "B08"]),
            "--resample",
            model=Path("csmask-4b-l1c"),
        ),
        ("in/scene.tif", "takes reflectance", "--reflectance s2"),
    ),
    Case(
        "predict-scaling-raw-model",
        "predict",
        "--reflectance for a model trained on raw band values",
        lambda: _predict(bi.scene(IN), "--reflectance", "s2"),
        ("model.pt", "raw band values", "drop --reflectance"),
    ),
    Case(
        "predict-cloud-mask-no-bands",
        "predict",
        "--cloud-mask on a scene without the blue/green/red/nir bands a cloud model needs",
        lambda: _predict(bi.scene(IN), "--cloud-mask", "--reflectance", "s2"),
        ("in/scene.tif", "cloud"),  # with the extra: "no cloud model fits ... --cloud-bands"
    ),
    Case(
        "predict-cloud-mask-no-extra",
        "predict",
        "--cloud-mask without the clouds extra (ukis-csmask) installed",
        lambda: _predict(
            bi.scene(IN, count=4, descriptions=["B2", "B3", "B4", "B8"]),
            "--cloud-mask",
            "--reflectance",
            "s2",
        ),
        ("in/scene.tif", "pip install geoseg[clouds]"),
        hide=("ukis_csmask",),
    ),
    # predict: options
    Case(
        "predict-overlap-ge-size",
        "predict",
        "--overlap equal to --size",
        lambda: _predict(bi.scene(IN), "--size", "32", "--overlap", "32"),
        ("overlap", "32"),
    ),
    Case(
        "predict-size-zero",
        "predict",
        "--size 0",
        lambda: _predict(bi.scene(IN), "--size", "0"),
        ("size", "0"),
    ),
    Case(
        "predict-overlap-negative",
        "predict",
        "--overlap -4",
        lambda: _predict(bi.scene(IN), "--overlap", "-4"),
        ("overlap", "-4"),
    ),
    Case(
        "predict-batch-zero",
        "predict",
        "--batch-size 0",
        lambda: _predict(bi.scene(IN), "--batch-size", "0"),
        ("--batch-size", "0"),
    ),
    Case(
        "predict-aoi-outside",
        "predict",
        "AOI polygons 200 km away from the scene",
        lambda: _predict(
            bi.scene(IN),
            "--aoi",
            str(bi.vector(IN, "aoi.gpkg", boxes=[pixel_box(20000, 20000, 20010, 20010)])),
        ),
        ("in/aoi.gpkg",),
    ),
    # outputs
    Case(
        "predict-existing-output",
        "predict",
        "output exists, no --overwrite (kept intact)",
        _existing_output,
        ("out/classes.tif", "--overwrite"),
    ),
    Case(
        "predict-output-folder-is-file",
        "predict",
        "output folder cannot be created (a file has its name)",
        lambda: [
            "predict",
            str(bi.scene(IN)),
            "--model",
            str(bi.model(IN)),
            "--out",
            str(IN / "scene.tif" / "classes.tif"),
        ],
        ("in/scene.tif",),
    ),
    Case(
        "predict-output-is-folder",
        "predict",
        "--out names an existing folder",
        lambda: [
            "predict",
            str(bi.scene(IN)),
            "--model",
            str(bi.model(IN)),
            "--out",
            str(_folder(OUT)),
        ],
        ("'out'", "directory"),
    ),
    Case(
        "predict-disk-full",
        "predict",
        "disk full while writing (RLIMIT_FSIZE 4 kB: EFBIG); no partial file",
        lambda: _predict(
            bi.scene(IN, "s64.tif", width=64, height=64),
            "--probabilities",
            "--probability-dtype",
            "float16",
        ),
        ("out/classes", "disk space"),
        fsize=4_000,
    ),
    # tile (labels)
    Case(
        "tile-labels-other-crs",
        "tile",
        "labels in EPSG:4326, scene in UTM 33N: must work",
        lambda: _tile(bi.vector(IN, to_crs="EPSG:4326"), "--split", "1,0,0"),
        ok=True,
        outputs=("out/chips/classes.yaml",),
    ),
    Case(
        "tile-labels-outside",
        "tile",
        "labels entirely outside the scene",
        lambda: _tile(
            bi.vector(IN, boxes=[pixel_box(20000, 20000, 20010, 20010)], classes=["water"])
        ),
        ("labels.gpkg", "outside"),
    ),
    Case(
        "tile-class-column",
        "tile",
        "--class-column that does not exist",
        lambda: _tile(bi.vector(IN), "--class-column", "landcover"),
        ("landcover",),
    ),
    Case(
        "tile-empty-vector",
        "tile",
        "a vector file with no features",
        lambda: _tile(_empty_vector()),
        ("in/empty.gpkg",),
    ),
    Case(
        "tile-labels-missing",
        "tile",
        "label file does not exist",
        lambda: _tile(IN / "nolabels.gpkg"),
        ("in/nolabels.gpkg",),
    ),
    Case(
        "tile-overlap-ge-size",
        "tile",
        "--overlap larger than --size",
        lambda: _tile(bi.vector(IN), "--size", "16", "--overlap", "24"),
        ("overlap", "24"),
    ),
    Case(
        "tile-no-crs",
        "tile",
        "scene without a CRS (no folder left behind)",
        lambda: _tile(bi.vector(IN), scene=bi.scene(IN, "nocrs.tif", crs=None)),
        ("in/nocrs.tif", "CRS"),
    ),
    Case(
        "tile-split-impossible",
        "tile",
        "labels in one corner: the chips there overlap, no leak-free val/test",
        lambda: _tile(bi.vector(IN, boxes=[pixel_box(0, 0, 10, 10)], classes=["water"])),
        ("cannot be made", "--block-size", "--no-split"),
    ),
    Case(
        "tile-split-no-train",
        "tile",
        "--split 0,0,1 (an empty train split)",
        lambda: _tile(bi.vector(IN), "--split", "0,0,1"),
        ("0,0,1", "train"),
    ),
    Case(
        "tile-out-is-file",
        "tile",
        "--out names an existing file (kept intact)",
        lambda: _tile(bi.vector(IN)) if _existing(OUT / "chips") else [],
        ("out/chips", "file"),
    ),
    Case(
        "tile-no-split",
        "tile",
        "--no-split on a scene too small for three splits: must work (all chips train)",
        lambda: _tile(bi.vector(IN), "--no-split"),
        ok=True,
        outputs=("out/chips/index.gpkg", "out/chips/tile_report.json"),
    ),
    # train / export
    Case(
        "train-config-unknown-key",
        "train",
        "training YAML with a misspelt key",
        lambda: _train_config("out: m.pt\nepohcs: 2\n"),
        ("in/train.yaml:2", "epohcs"),
    ),
    Case(
        "train-config-wrong-type",
        "train",
        "training YAML with a wrong value type",
        lambda: _train_config("out: m.pt\nepochs: many\n"),
        ("in/train.yaml:2", "epochs"),
    ),
    Case(
        "train-config-no-out",
        "train",
        "training YAML without `out` (given by --out) and a missing chips folder",
        lambda: _train_config("epochs: 1\nchips: nochips\n"),
        ("nochips",),
    ),
    Case(
        "train-chips-missing",
        "train",
        "--chips folder does not exist",
        lambda: ["train", "--chips", str(IN / "nochips"), "--out", str(OUT / "model.pt")],
        ("in/nochips",),
    ),
    Case(
        "export-not-bundle",
        "export",
        "a text file as the model",
        lambda: ["export", str(bi.text_file(IN, "model.pt")), "--onnx", str(OUT / "m.onnx")],
        ("in/model.pt",),
    ),
    # vectorize
    Case(
        "vectorize-missing",
        "vectorize",
        "class raster does not exist",
        lambda: ["vectorize", str(IN / "missing.tif"), "--out", str(OUT / "p.gpkg")],
        ("in/missing.tif",),
    ),
    Case(
        "vectorize-truncated",
        "vectorize",
        "truncated class raster",
        lambda: ["vectorize", str(bi.corrupt_scene(IN)), "--out", str(OUT / "p.gpkg")],
        ("in/corrupt.tif",),
    ),
    Case(
        "vectorize-float-scene",
        "vectorize",
        "a multi-band float scene, not a class raster",
        lambda: ["vectorize", str(_nan_scene()), "--out", str(OUT / "p.gpkg")],
        ("in/nan.tif",),
    ),
    Case(
        "vectorize-all-nodata",
        "vectorize",
        "class raster that is all nodata",
        lambda: [
            "vectorize",
            str(bi.class_raster(IN, data=np.full((40, 48), 255, "uint8"))),
            "--out",
            str(OUT / "p.gpkg"),
        ],
        ("in/classes.tif", "nodata"),
    ),
    Case(
        "vectorize-bad-min-area",
        "vectorize",
        "--min-area with an unknown unit",
        lambda: [
            "vectorize",
            str(bi.class_raster(IN)),
            "--out",
            str(OUT / "p.gpkg"),
            "--min-area",
            "3 acres",
        ],
        ("3 acres",),
    ),
    Case(
        "vectorize-bad-format",
        "vectorize",
        "output suffix of no known vector format",
        lambda: ["vectorize", str(bi.class_raster(IN)), "--out", str(OUT / "p.xyz")],
        ("p.xyz",),
    ),
    Case(
        "vectorize-existing-output",
        "vectorize",
        "output exists, no --overwrite (kept intact)",
        lambda: ["vectorize", str(bi.class_raster(IN)), "--out", str(_existing(OUT / "p.gpkg"))],
        ("out/p.gpkg", "--overwrite"),
    ),
    Case(
        "vectorize-disk-full",
        "vectorize",
        "disk full while writing the GeoPackage (RLIMIT_FSIZE 16 kB: EFBIG)",
        lambda: ["vectorize", str(bi.class_raster(IN)), "--out", str(OUT / "p.gpkg")],
        ("out/p.gpkg", "disk"),
        fsize=16_000,
    ),
    # evaluate
    Case(
        "evaluate-reference-other-crs",
        "evaluate",
        "reference polygons in EPSG:4326, prediction in UTM 33N: must work",
        lambda: [
            "evaluate",
            str(bi.class_raster(IN, "pred.tif")),
            "--reference",
            str(bi.vector(IN, to_crs="EPSG:4326")),
            "--class-column",
            "class",
            "--out",
            str(OUT / "eval"),
        ],
        ok=True,
        outputs=("out/eval.json",),
    ),
    Case(
        "evaluate-reference-missing",
        "evaluate",
        "reference file does not exist",
        lambda: [
            "evaluate",
            str(bi.class_raster(IN, "pred.tif")),
            "--reference",
            str(IN / "noref.tif"),
            "--out",
            str(OUT / "eval"),
        ],
        ("in/noref.tif",),
    ),
    Case(
        "evaluate-out-of-range-ids",
        "evaluate",
        "reference raster holds class id 7 (classes 1-2)",
        _out_of_range_reference,
        ("in/reference.tif", "7"),
    ),
    Case(
        "evaluate-class-column",
        "evaluate",
        "reference polygons without the --class-column",
        lambda: [
            "evaluate",
            str(bi.class_raster(IN, "pred.tif")),
            "--reference",
            str(bi.vector(IN)),
            "--class-column",
            "landcover",
            "--out",
            str(OUT / "eval"),
        ],
        ("landcover",),
    ),
    Case(
        "evaluate-no-overlap",
        "evaluate",
        "reference raster 200 km away from the prediction",
        lambda: [
            "evaluate",
            str(bi.class_raster(IN, "pred.tif")),
            "--reference",
            str(bi.class_raster(IN, "far.tif", transform=FAR)),
            "--out",
            str(OUT / "eval"),
        ],
        ("far.tif", "outside"),
    ),
    # change
    Case(
        "change-no-overlap",
        "change",
        "before and after rasters do not overlap",
        lambda: [
            "change",
            str(bi.class_raster(IN, "t1.tif")),
            str(bi.class_raster(IN, "t2.tif", transform=FAR)),
            "--from",
            "1",
            "--out",
            str(OUT / "loss.tif"),
        ],
        ("in/t2.tif",),
    ),
    Case(
        "change-other-crs",
        "change",
        "after raster in EPSG:4326: aligned, must work",
        lambda: [
            "change",
            str(bi.class_raster(IN, "t1.tif")),
            str(_warped(bi.class_raster(IN, "t2.tif", seed=1), "EPSG:4326")),
            "--from",
            "1",
            "--out",
            str(OUT / "loss.tif"),
        ],
        ok=True,
        outputs=("out/loss.tif",),
    ),
    Case(
        "change-unknown-class",
        "change",
        "--from names a class that does not exist",
        lambda: [
            "change",
            str(bi.class_raster(IN, "t1.tif")),
            str(bi.class_raster(IN, "t2.tif", seed=1)),
            "--from",
            "mangrove",
            "--out",
            str(OUT / "loss.tif"),
        ],
        ("mangrove",),
    ),
    Case(
        "change-existing-output",
        "change",
        "output exists, no --overwrite (kept intact)",
        lambda: [
            "change",
            str(bi.class_raster(IN, "t1.tif")),
            str(bi.class_raster(IN, "t2.tif", seed=1)),
            "--from",
            "1",
            "--out",
            str(_existing(OUT / "loss.tif")),
        ],
        ("out/loss.tif", "--overwrite"),
    ),
    Case(
        "change-mask-no-overlap",
        "change",
        "--after-mask: a cloud mask that does not overlap the maps",
        lambda: [
            "change",
            str(bi.class_raster(IN, "t1.tif")),
            str(bi.class_raster(IN, "t2.tif", seed=1)),
            "--from",
            "1",
            "--out",
            str(OUT / "loss.tif"),
            "--after-mask",
            str(bi.class_raster(IN, "clouds.tif", transform=FAR)),
        ],
        ("in/clouds.tif", "does not overlap"),
    ),
    Case(
        "change-mask-values-not-ints",
        "change",
        "--mask-values given as names",
        lambda: [
            "change",
            str(bi.class_raster(IN, "t1.tif")),
            str(bi.class_raster(IN, "t2.tif", seed=1)),
            "--from",
            "1",
            "--out",
            str(OUT / "loss.tif"),
            "--after-mask",
            str(bi.class_raster(IN, "clouds.tif")),
            "--mask-values",
            "cloud,shadow",
        ],
        ("--mask-values", "integer"),
    ),
    # run (workflows)
    Case(
        "run-unknown-key",
        "run",
        "workflow YAML with an unknown key",
        lambda: _workflow("""\
             output: ../out
             scenes: [scene.tif]
             stages: [predict]
             predcit: {size: 64}
             """),
        ("in/workflow.yaml:4", "predcit"),
    ),
    Case(
        "run-wrong-type",
        "run",
        "workflow YAML with a wrong value type",
        lambda: _workflow("""\
             output: ../out
             scenes: [scene.tif]
             stages: [predict]
             predict:
               batch_size: lots
             """),
        ("in/workflow.yaml:5", "batch_size"),
    ),
    Case(
        "run-bad-yaml",
        "run",
        "workflow file that is not valid YAML",
        lambda: _workflow("output: ../out\nscenes: [scene.tif\nstages: [predict]\n"),
        ("in/workflow.yaml",),
    ),
    Case(
        "run-glob-no-match",
        "run",
        "a scene glob that matches no file",
        lambda: _workflow("""\
             output: ../out
             scenes: ["*.jp2"]
             stages: [predict]
             """),
        ("in/workflow.yaml:2", "*.jp2"),
    ),
    Case(
        "run-missing",
        "run",
        "workflow file does not exist",
        lambda: ["run", str(IN / "nowhere.yaml")],
        ("in/nowhere.yaml",),
    ),
    # ---- scene inputs: folders of band files, STAC, geographic (issues 18, 19; i18s) ----------
    Case(
        "predict-band-folder",
        "predict",
        "a folder of band files (one file per band) must work",
        lambda: _predict(bi.band_folder(IN)),
        ok=True,
        outputs=("out/classes.tif",),
    ),
    Case(
        "predict-band-folder-empty",
        "predict",
        "a scene folder without raster files",
        lambda: _predict(_folder(IN / "bands")),
        ("in/bands", "no raster files"),
    ),
    Case(
        "train-scene-band-folder-empty",
        "train",
        "train --scene names a folder without raster files",
        lambda: [
            "train",
            "--scene",
            str(_folder(IN / "bands")),
            "--labels",
            str(bi.vector(IN)),
            "--out",
            str(OUT / "model.pt"),
        ],
        ("in/bands", "no raster files"),
    ),
    Case(
        "predict-stac-item",
        "predict",
        "a STAC item JSON over local GeoTIFFs must work",
        lambda: _predict(bi.stac_item(IN)),
        ok=True,
        outputs=("out/classes.tif",),
    ),
    Case(
        "predict-stac-missing-band",
        "predict",
        "a STAC item without an asset for one of the model's bands",
        lambda: _predict(bi.stac_item(IN, bands=("B2", "B3"))),
        ("in/item.json", "B4", "--bands"),
    ),
    Case(
        "predict-stac-mixed-crs",
        "predict",
        "a STAC ItemCollection whose items are in two CRSs",
        lambda: _predict(
            bi.stac_item(IN, "search.json", items=2, crss=("EPSG:32633", "EPSG:32632"))
        ),
        ("in/search.json", "different CRSs", "EPSG:32632"),
    ),
    Case(
        "predict-stac-several-dates",
        "predict",
        "a STAC ItemCollection of two dates (a search result not filtered to one date)",
        lambda: _predict(
            bi.stac_item(
                IN, "search.json", items=2, dates=("2020-05-01T10:00:00Z", "2020-06-01T10:00:00Z")
            )
        ),
        ("in/search.json", "2 dates", "one date"),
    ),
    Case(
        "predict-stac-not-stac",
        "predict",
        "a GeoJSON file that is not STAC given as the scene",
        lambda: _predict(bi.text_file(IN, "aoi.geojson", '{"type": "FeatureCollection"}')),
        ("in/aoi.geojson", "no STAC items"),
    ),
    Case(
        "predict-geographic-resample",
        "predict",
        "--resample on an EPSG:4326 scene with a 10 m model: warped to UTM, must work",
        lambda: _predict(
            bi.scene(IN, "wgs84.tif", crs="EPSG:4326", transform=GEOGRAPHIC),
            "--resample",
            model=bi.model_at(IN, 10.0),
        ),
        ok=True,
        outputs=("out/classes.tif",),
    ),
    Case(
        "predict-geographic-10m-model",
        "predict",
        "an EPSG:4326 scene with a 10 m model, without --resample: names the flag that works",
        lambda: _predict(
            bi.scene(IN, "wgs84.tif", crs="EPSG:4326", transform=GEOGRAPHIC),
            model=bi.model_at(IN, 10.0),
        ),
        ("in/wgs84.tif", "geographic", "--resample", "UTM zone 33N"),
    ),
]


# ---- issue 19 (trust on real inputs): styled GeoPackages, outputs that are inputs, messages,
# silent outcomes. One block, appended, so that merges with other tables stay easy.
def _two_layers() -> Path:
    import geopandas as gpd

    p = bi.vector(IN, "two.gpkg")
    frame = gpd.read_file(p, engine="pyogrio")
    frame.to_file(p, layer="roads", engine="pyogrio")
    return p


def _floats() -> np.ndarray:
    return np.random.default_rng(0).random((3, 40, 48)).astype("float32")


def _change(*extra: str, out: Path = OUT / "loss.tif") -> list[str]:
    before = bi.class_raster(IN, "t1.tif")
    after = bi.class_raster(IN, "t2.tif", seed=1)
    return ["change", str(before), str(after), "--from", "1", "--out", str(out), *extra]


TRUST_CASES: list[Case] = [
    Case(
        "tile-styled-gpkg",
        "tile",
        "labels in a GeoPackage with a QGIS style (layer_styles), no --class-column: must work",
        lambda: _tile(bi.styled_vector(IN), "--no-split"),
        ok=True,
        outputs=("out/chips/index.gpkg",),
    ),
    Case(
        "tile-two-layers",
        "tile",
        "--class-column on a GeoPackage with two feature layers",
        lambda: _tile(_two_layers(), "--class-column", "class"),
        ("in/two.gpkg", "roads", "ogr2ogr", "drop --class-column"),
    ),
    Case(
        "evaluate-styled-gpkg",
        "evaluate",
        "reference polygons in a styled GeoPackage (layer_styles), no --class-column: must work",
        lambda: [
            "evaluate",
            str(bi.class_raster(IN, "pred.tif")),
            "--reference",
            str(bi.styled_vector(IN)),
            "--out",
            str(OUT / "eval"),
        ],
        ok=True,
        outputs=("out/eval.json",),
    ),
    Case(
        "predict-aoi-styled-gpkg",
        "predict",
        "AOI in a styled GeoPackage (layer_styles): must work",
        lambda: _predict(bi.scene(IN), "--aoi", str(bi.styled_vector(IN, "aoi.gpkg"))),
        ok=True,
        outputs=("out/classes.tif",),
    ),
    Case(
        "predict-out-is-scene",
        "predict",
        "--out names the input scene, with --overwrite (the scene is kept intact)",
        lambda: [*_predict(bi.scene(IN))[:-1], str(IN / "scene.tif"), "--overwrite"],
        ("in/scene.tif", "is the scene", "input"),
    ),
    Case(
        "predict-vector-style-collision",
        "predict",
        "--out X.tif --vector X.geojson: both styles would be X.qml (nothing written)",
        lambda: _predict(bi.scene(IN), "--vector", str(OUT / "classes.geojson")),
        ("out/classes.qml", "--vector", "different names"),
    ),
    Case(
        "predict-style-exists",
        "predict",
        "the output's style file out/classes.qml exists, no --overwrite (kept intact)",
        lambda: [*_predict(bi.scene(IN))] if _existing(OUT / "classes.qml") else [],
        ("out/classes.qml", "--overwrite"),
    ),
    Case(
        "vectorize-out-is-input",
        "vectorize",
        "--out names the class raster itself (--format gpkg --overwrite; kept intact)",
        lambda: [
            "vectorize",
            str(bi.class_raster(IN)),
            "--out",
            str(IN / "classes.tif"),
            "--format",
            "gpkg",
            "--overwrite",
        ],
        ("in/classes.tif", "input"),
    ),
    Case(
        "change-out-is-input",
        "change",
        "--out names the before map, with --overwrite (kept intact)",
        lambda: _change("--overwrite", out=IN / "t1.tif"),
        ("in/t1.tif", "before map"),
    ),
    Case(
        "evaluate-out-is-input",
        "evaluate",
        "--out prefix whose .json is the reference file (kept intact)",
        lambda: [
            "evaluate",
            str(bi.class_raster(IN, "pred.tif")),
            "--reference",
            str(bi.text_file(IN, "ref.json", "{}")),
            "--out",
            str(IN / "ref"),
            "--overwrite",
        ],
        ("in/ref.json", "reference"),
    ),
    Case(
        "predict-default-model-all-problems",
        "predict",
        "default model, a 3-band float32 20 m scene: bands, dtype and pixel size in one line",
        lambda: [
            "predict",
            str(bi.scene(IN, "f3.tif", data=_floats(), transform=Affine(20, 0, 5e5, 0, -20, 5e6))),
            "--out",
            str(OUT / "classes.tif"),
        ],
        ("in/f3.tif", "3 problems", "a scene with all of them", "-ot Byte -scale", "--resample"),
    ),
    Case(
        "predict-bands-repeated",
        "predict",
        "--bands 1,1,1 (one scene band for every model band)",
        lambda: _predict(bi.scene(IN), "--bands", "1,1,1"),
        ("--bands 1,1,1", "more than once"),
    ),
    Case(
        "predict-device-missing",
        "predict",
        "--device cuda:99 (no such GPU): one line, no torch traceback",
        lambda: _predict(bi.scene(IN), "--device", "cuda:99"),
        ("--device cuda:99",),
    ),
    Case(
        "predict-not-georeferenced",
        "predict",
        "a scene with no georeferencing at all: no rasterio warning before the error",
        lambda: _predict(bi.scene(IN, "plain.tif", crs=None, transform=Affine.identity())),
        ("in/plain.tif", "CRS"),
    ),
    Case(
        "train-resume-no-checkpoint",
        "train",
        "--resume with no checkpoint of an interrupted run (used to start over silently)",
        lambda: [
            "train",
            "--chips",
            str(_folder(IN / "chips")),
            "--out",
            str(OUT / "model.pt"),
            "--resume",
        ],
        ("out/model.ckpt", "drop --resume"),
    ),
    Case(
        "change-aoi-no-name-column",
        "change",
        "AOI polygons without a `name` column: must work (AOIs named by row number)",
        lambda: _change("--aoi", str(bi.vector(IN, "aoi.gpkg"))),
        ok=True,
        outputs=("out/loss.tif", "out/loss.csv"),
    ),
    Case(
        "run-aoi-land-cover",
        "run",
        "an `aoi` key in a land-cover workflow (predict only; it used to be ignored)",
        lambda: (
            [
                *_workflow("""\
             output: ../out
             scenes: [scene.tif]
             stages: [predict]
             aoi: aoi.gpkg
             """),
            ]
            if bi.vector(IN, "aoi.gpkg")
            else []
        ),
        ("in/workflow.yaml", "'aoi' is used by the change stage only"),
    ),
]
CASES += TRUST_CASES


# ---- running and checking ---------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = str(p.relative_to(root))
            try:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                out[rel] = "?"
    return out


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _limit_fsize(limit: int) -> Callable[[], None]:
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def run_case(case: Case, folder: Path) -> Outcome:
    """Build ``case`` in ``folder`` (empty) and run the CLI there; return what happened."""
    folder.mkdir(parents=True, exist_ok=True)
    with _cwd(folder):
        argv = case.build()
        before = _snapshot(Path("."))
        if case.fsize is not None:
            env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
            proc = subprocess.run(
                [sys.executable, "-m", "geoseg", "-q", *argv],
                capture_output=True,
                text=True,
                env=env,
                preexec_fn=_limit_fsize(case.fsize),
                timeout=300,
                check=False,
            )
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        else:
            from click.testing import CliRunner

            from geoseg.cli.main import cli

            with _hidden(case.hide):
                res = CliRunner().invoke(cli, ["-q", *argv], catch_exceptions=True)
            code, stdout, stderr = res.exit_code, res.stdout, res.stderr
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                assert res.exc_info is not None
                stderr += "".join(traceback.format_exception(*res.exc_info))
                code = code or 1
        after = _snapshot(Path("."))
    errors = [ln for ln in (stdout + "\n" + stderr).splitlines() if ln.startswith("Error: ")]
    return Outcome(code, stdout + stderr, stderr, before, after, errors, argv)


@contextlib.contextmanager
def _hidden(packages: tuple[str, ...]) -> Iterator[None]:
    """``importlib.util.find_spec`` answers ``None`` for ``packages`` (an extra not installed)."""
    if not packages:
        yield
        return
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: object, **kw: object) -> object:
        return None if name.split(".")[0] in packages else real(name, *args, **kw)  # type: ignore[arg-type]

    importlib.util.find_spec = find_spec  # type: ignore[assignment]
    try:
        yield
    finally:
        importlib.util.find_spec = real


def _click_usage(line: str) -> bool:
    """The usage lines click prints with an option value it rejects (exit 2)."""
    return line.startswith(("Usage: ", "Try '"))


def check_case(case: Case, o: Outcome) -> None:
    """Assert the contract of ``case`` on its outcome."""
    assert "Traceback" not in o.output, o.output
    temps = [f for f in o.after if TMP_MARK in f]
    assert not temps, f"temporary files left: {temps}"
    lost = {f for f, h in o.before.items() if o.after.get(f) != h}
    assert not lost, f"existing files changed or lost: {sorted(lost)}"
    lines = [ln for ln in o.output.splitlines() if ln.strip()]
    if case.ok:
        assert o.exit_code == 0, o.output
        assert not lines, f"-q printed more than errors:\n{o.output}"
        missing = [f for f in case.outputs if f not in o.after]
        assert not missing, f"outputs missing: {missing}\n{o.output}"
        return
    assert o.exit_code != 0, o.output
    new = sorted(set(o.after) - set(o.before))
    assert not new, f"new files after a failure: {new}\n{o.output}"
    assert len(o.error_lines) == 1, f"expected one 'Error: ' line:\n{o.output}"
    if case.fsize is None:  # (a full disk: libtiff prints its own line from C)
        extra = [ln for ln in lines if ln not in o.error_lines and not _click_usage(ln)]
        assert not extra, f"-q printed more than the error (warnings?):\n{o.output}"
    for m in case.mentions:
        assert m in o.message, f"{m!r} not in {o.message!r}"


def _params() -> list[object]:
    out: list[object] = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


def test_table_is_large_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 25
    assert {"info", "predict", "tile", "train", "vectorize", "evaluate", "change", "run"} <= {
        c.command for c in CASES
    }


def test_docs_list_every_case() -> None:
    doc = (REPO / "docs" / "errors.md").read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"docs/errors.md lacks {missing}; run python docs/gen_errors.py"


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, run_case(case, tmp_path / "case"))


# ---- no folder left behind (a refusal creates no output folder) -------------------------------
def _folders(root: Path) -> set[str]:
    return {str(Path(d).relative_to(root)) for d, _, _ in os.walk(root)} - {"."}


FOLDER_CASES = [
    c
    for c in CASES
    if not c.ok
    and c.fsize is None
    and (
        c.command == "tile"
        or c.id
        in {
            "predict-missing-scene",
            "predict-no-crs",
            "predict-all-nodata",
            "predict-aoi-outside",
            "train-config-no-out",
            "train-chips-missing",
            "vectorize-missing",
            "vectorize-bad-min-area",
            "evaluate-reference-missing",
            "evaluate-no-overlap",
            "change-no-overlap",
            "change-unknown-class",
        }
    )
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in FOLDER_CASES])
def test_refusal_leaves_no_folder(case: Case, tmp_path: Path) -> None:
    """The inputs are checked before any output folder is made (files are checked above)."""
    built = tmp_path / "built"
    built.mkdir()
    with _cwd(built):
        case.build()  # the folders the inputs themselves make
    outcome = run_case(case, tmp_path / "case")
    assert outcome.exit_code != 0, outcome.output
    new = sorted(_folders(tmp_path / "case") - _folders(built))
    assert not new, f"folders left behind: {new}\n{outcome.output}"

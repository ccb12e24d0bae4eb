"""STAC input: an Item, an ItemCollection or a saved search result (JSON) as a scene.

The JSON is read with the standard library (a local file, or an ``http(s)`` URL); each data
asset of an item is one band (or, with several ``eo:bands``, several), named by its asset key
and carrying its ``eo`` common name (``blue``, ``nir``, ``swir16``...), nodata and
``raster:bands`` scale/offset (STAC 1.0 ``eo:bands`` / ``raster:bands`` and STAC 1.1
``bands``). Asset hrefs are resolved against the item (relative paths against the JSON's
folder or URL; ``http(s)://`` -> ``/vsicurl/``, ``s3://`` -> ``/vsis3/``, ``gs://`` ->
``/vsigs/``), so GDAL reads the pixels where they are, window by window.

Several items (a collection or a search result) are one scene only when they are one date
on one CRS: they are mosaicked band by band (later items drawn over earlier ones where they
have data). Items of several dates or CRSs are refused with one line that says what to do;
geoseg does not warp a mosaic onto another CRS. The stacking itself (bands at several
resolutions onto one grid, read lazily) is :func:`geoseg.io.scene.stack_vrt`.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.errors import (
    BandMismatchError,
    GridError,
    InputFileNotFoundError,
    RasterReadError,
    first_line,
)
from geoseg.io.scene import SceneBand
from geoseg.labels import RASTER_SUFFIXES

__all__ = ["asset_path", "read_items", "stac_bands"]

PathLike = str | os.PathLike[str]
#: Asset roles that are never bands.
_NOT_DATA = {"thumbnail", "overview", "metadata", "visual-thumbnail"}
#: Media types of raster assets (a missing type is judged by the file suffix).
_RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-hdf")
_URL_TIMEOUT_S = 60


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _load_json(path: PathLike) -> Any:
    s = str(path)
    try:
        if _is_url(s):
            with urllib.request.urlopen(s, timeout=_URL_TIMEOUT_S) as r:
                return json.loads(r.read().decode("utf-8"))
        p = Path(s)
        if not p.is_file():
            raise InputFileNotFoundError(f"{path}: no such STAC file; check the path")
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RasterReadError(
            f"{path}: is not valid JSON ({first_line(exc)}); give a STAC Item or ItemCollection"
        ) from None
    except OSError as exc:
        if isinstance(exc, InputFileNotFoundError):
            raise
        raise RasterReadError(f"{path}: cannot be read ({first_line(exc)})") from None


def read_items(path: PathLike) -> list[dict[str, Any]]:
    """The STAC items of an Item, an ItemCollection or a saved search result (JSON).

    Raises:
        InputFileNotFoundError, RasterReadError: unreadable, not STAC, or no items.
    """
    doc = _load_json(path)
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        items = [doc]
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        items = list(doc.get("features") or [])
    else:
        items = []
    if not items:
        raise RasterReadError(
            f"{path}: holds no STAC items (expected a STAC Item or an ItemCollection / search "
            "result with features); give a STAC item JSON or a raster file"
        )
    for k, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("assets"), dict):
            raise RasterReadError(
                f"{path}: feature {k + 1} has no STAC assets; give a STAC Item or ItemCollection"
            )
    return items


def asset_path(href: str, base: PathLike) -> Path | str:
    """The GDAL path of an asset ``href`` of an item read from ``base`` (file or URL)."""
    scheme = urllib.parse.urlparse(href).scheme.lower()
    if scheme in ("http", "https"):
        return "/vsicurl/" + href
    if scheme in ("s3", "gs"):
        return f"/vsi{scheme}/" + href.split("://", 1)[1]
    if scheme == "file":
        return Path(urllib.parse.unquote(urllib.parse.urlparse(href).path))
    if href.startswith("/vsi") or Path(href).is_absolute():
        return Path(href) if not href.startswith("/vsi") else href
    b = str(base)
    if _is_url(b):
        return "/vsicurl/" + urllib.parse.urljoin(b, href)
    return Path(os.path.normpath(Path(b).resolve().parent / href))


def _band_infos(asset: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per band of an asset: name, common_name, nodata, scale, offset."""
    eo = asset.get("eo:bands") or []
    raster = asset.get("raster:bands") or []
    v11 = asset.get("bands") or []
    n = max(len(eo), len(raster), len(v11), 1)
    out = []
    for k in range(n):
        e = eo[k] if k < len(eo) else {}
        r = raster[k] if k < len(raster) else {}
        b = v11[k] if k < len(v11) else {}
        out.append(
            {
                "name": e.get("name") or b.get("name"),
                "common_name": e.get("common_name") or b.get("eo:common_name"),
                "nodata": r.get("nodata", b.get("nodata", asset.get("nodata"))),
                "scale": r.get("scale", b.get("raster:scale", asset.get("raster:scale"))),
                "offset": r.get("offset", b.get("raster:offset", asset.get("raster:offset"))),
            }
        )
    return out


def _is_data(asset: dict[str, Any]) -> bool:
    roles = set(asset.get("roles") or [])
    if roles & _NOT_DATA and "data" not in roles:
        return False
    typ = str(asset.get("type") or "").lower()
    if typ:
        return typ.startswith(_RASTER_TYPES)
    href = str(asset.get("href", "")).split("?", 1)[0]
    return "data" in roles or Path(href).suffix.lower() in RASTER_SUFFIXES


def _float(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str) and v.lower() == "nan":
        return float("nan")
    return float(v)


def _item_bands(item: dict[str, Any], base: PathLike) -> dict[str, SceneBand]:
    """The bands of one item by name (asset key; ``key.k`` for the k-th of a multi-band asset)."""
    out: dict[str, SceneBand] = {}
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict) or "href" not in asset or not _is_data(asset):
            continue
        path = asset_path(str(asset["href"]), base)
        infos = _band_infos(asset)
        for k, info in enumerate(infos, start=1):
            name = key if len(infos) == 1 else f"{key}.{k}"
            out[name] = SceneBand(
                path=path,
                index=k,
                name=name,
                nodata=_float(info["nodata"]),
                common_name=info["common_name"],
                band_name=info["name"],
                scale=_float(info["scale"]),
                offset=_float(info["offset"]),
            )
    return out


def _date(item: dict[str, Any]) -> str:
    props = item.get("properties") or {}
    value = props.get("datetime") or props.get("start_datetime") or ""
    return str(value)[:10]


def _crs_code(item: dict[str, Any]) -> str | None:
    props = item.get("properties") or {}
    if props.get("proj:code"):
        return str(props["proj:code"])
    epsg = props.get("proj:epsg")
    return f"EPSG:{epsg}" if epsg else None


def _check_one_scene(path: PathLike, items: Sequence[dict[str, Any]]) -> None:
    """Items of one date and CRS, or a one-line refusal saying what to do."""
    dates = sorted({_date(it) for it in items} - {""})
    if len(dates) > 1:
        raise BandMismatchError(
            f"{path}: its {len(items)} items span {len(dates)} dates ({', '.join(dates[:4])}"
            f"{'...' if len(dates) > 4 else ''}); a scene is one date: filter the search to one "
            "date or give the items one by one"
        )
    crss: dict[str, str] = {}
    for it in items:
        code = _crs_code(it)
        if code is not None:
            crss.setdefault(code, str(it.get("id", "?")))
    if len(crss) > 1:
        shown = ", ".join(f"{i} ({c})" for c, i in crss.items())
        raise GridError(
            f"{path}: items are in different CRSs: {shown}; geoseg mosaics items of one CRS "
            "only: predict each CRS's items as their own scene (split the collection)"
        )


def stac_bands(path: PathLike) -> list[SceneBand]:
    """The data bands of a STAC scene; several items are mosaicked band by band.

    Raises:
        RasterReadError: not STAC, or no data asset.
        BandMismatchError: items of several dates, or an item lacking a band the first has.
        GridError: items whose ``proj`` metadata gives different CRSs.
    """
    items = read_items(path)
    _check_one_scene(path, items)
    per_item = [_item_bands(it, path) for it in items]
    first = per_item[0]
    if not first:
        raise RasterReadError(
            f"{path}: item {items[0].get('id', '?')} has no raster data asset (GeoTIFF/JP2 with "
            "role 'data' or eo:bands); give an item with band assets"
        )
    out = []
    for name, band in first.items():
        more: list[Path | str] = []
        for it, bands in zip(items[1:], per_item[1:], strict=True):
            if name not in bands:
                raise BandMismatchError(
                    f"{path}: item {it.get('id', '?')} has no asset {name!r} that item "
                    f"{items[0].get('id', '?')} has; mosaic items with the same assets"
                )
            more.append(bands[name].path)
        out.append(SceneBand(**{**band.__dict__, "mosaic": tuple(more)}))
    return out

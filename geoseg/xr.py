"""xarray in, xarray out: :func:`geoseg.predict.predict` for notebook users.

:func:`predict_dataarray` takes a georeferenced :class:`xarray.DataArray` (``band, y, x``, with
a CRS and transform as rioxarray keeps them: ``da.rio.crs``, ``da.rio.transform()``) and
returns the class map as a DataArray on the same grid. It writes the scene to a temporary
GeoTIFF, runs the library's :func:`~geoseg.predict.predict` on it (the same seam-free path as
``geoseg predict``) and reads the class COG back with rioxarray, so results are identical to
the command line's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.errors import GridError

__all__ = ["predict_dataarray"]


def _band_names(scene: Any) -> list[str] | None:
    """Band names from a string ``band`` coordinate or a ``long_name`` attribute."""
    if "band" in scene.coords and scene["band"].dtype.kind in "OUS":
        return [str(v) for v in scene["band"].values]
    long_name = scene.attrs.get("long_name")
    if isinstance(long_name, list | tuple) and len(long_name) == scene.sizes.get("band", 0):
        return [str(v) for v in long_name]
    return None


def predict_dataarray(
    scene: Any,
    *,
    model: str | os.PathLike[str] | Any = None,
    bands: Sequence[str | int] | None = None,
    **options: Any,
) -> Any:
    """Segment a georeferenced DataArray; returns the class map as a DataArray.

    Args:
        scene: an :class:`xarray.DataArray` with dimensions ``(band, y, x)`` (or ``(y, x)``),
            a CRS and a transform (rioxarray: ``rioxarray.open_rasterio(path)``, or
            ``da.rio.write_crs(...)``); its nodata (``da.rio.nodata``) is kept. Band names
            come from a string ``band`` coordinate or the ``long_name`` attribute.
        model: bundle path or :class:`~geoseg.bundle.ModelBundle` (default: the default model).
        bands: scene bands for the model's bands, by name or 1-based index.
        **options: other keyword arguments of :func:`geoseg.predict.predict` (``size``,
            ``overlap``, ``batch_size``, ``device``...; not the output paths).

    Returns:
        A ``uint8`` DataArray ``(y, x)`` named ``classes`` on the scene's grid, 255 where the
        scene is nodata, with the COG's tags (``CLASS_NAMES``, ``CLASS_IDS``, provenance) as
        attributes.

    Raises:
        GridError: the DataArray has no CRS or transform.
    """
    import rioxarray
    import rioxarray.exceptions

    from geoseg.predict import predict

    da = scene if "band" in scene.dims else scene.expand_dims("band")
    try:
        crs = da.rio.crs
    except rioxarray.exceptions.RioXarrayError as exc:
        raise GridError(f"the DataArray cannot be georeferenced ({exc})") from exc
    if crs is None:
        raise GridError("the DataArray has no CRS; set one with da.rio.write_crs('EPSG:...')")
    names = _band_names(da)
    with tempfile.TemporaryDirectory(prefix="geoseg-xr-") as tmp:
        src, out = Path(tmp) / "scene.tif", Path(tmp) / "classes.tif"
        to_write = da.assign_coords(band=range(1, da.sizes["band"] + 1))
        if names is not None:
            to_write.attrs["long_name"] = tuple(names)
        to_write.rio.to_raster(src, tiled=True)
        predict(src, out=out, model=model, bands=bands, **options)
        classes = rioxarray.open_rasterio(out, mask_and_scale=False).load()
    result = classes.squeeze("band", drop=True).rename("classes")
    return result.assign_coords(x=da["x"], y=da["y"])

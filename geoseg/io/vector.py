"""Vector files: one reader (labels, AOIs) and one writer (styled polygons), one-line errors.

:func:`write_vector` is the only place geoseg writes vector data (``vectorize``, ``change
--vector``): GeoPackage with the QGIS style stored in its ``layer_styles`` table as the layer's
default style, or GeoParquet / FlatGeobuf / GeoJSON with a ``.qml`` beside; atomic, and
byte-identical on rerun (GeoPackage timestamps fixed with ``OGR_CURRENT_DATE``).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from geoseg.errors import (
    ConfigError,
    InputFileNotFoundError,
    OutputWriteError,
    VectorReadError,
    first_line,
)

__all__ = [
    "FIXED_DATE",
    "FORMATS",
    "PARQUET_SUFFIXES",
    "read_polygons",
    "read_style",
    "read_vector",
    "spatial_layers",
    "vector_format",
    "vector_outputs",
    "write_vector",
]

PARQUET_SUFFIXES = frozenset({".parquet", ".geoparquet"})

#: Output formats: key -> (OGR driver, or None for GeoParquet; suffixes).
FORMATS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "gpkg": ("GPKG", (".gpkg",)),
    "parquet": (None, (".parquet", ".geoparquet")),
    "fgb": ("FlatGeobuf", (".fgb",)),
    "geojson": ("GeoJSON", (".geojson", ".json")),
}
#: Timestamp written into GeoPackages (so reruns are byte-identical).
FIXED_DATE = "2000-01-01T00:00:00.000Z"


def read_vector(path: str | os.PathLike[str], *, layer: str | None = None) -> Any:
    """A GeoDataFrame from any OGR vector file or GeoParquet.

    Without ``layer``, the file's one layer with geometries (:func:`spatial_layers`: a QGIS
    style table is not a layer); a file with several such layers is refused with their names.

    Raises:
        InputFileNotFoundError: no such file.
        VectorReadError: unreadable (the message says what GDAL/pyarrow said and the fix).
    """
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise InputFileNotFoundError(f"{p}: no such file; check the path")
    try:
        if p.suffix.lower() in PARQUET_SUFFIXES:
            return gpd.read_parquet(p)
        if layer is None:
            layer = _the_spatial_layer(p)
        return gpd.read_file(p, layer=layer, engine="pyogrio")
    except VectorReadError:
        raise
    except ImportError as exc:
        raise VectorReadError(
            f"{p}: reading GeoParquet needs pyarrow ({exc}); `pip install pyarrow`"
        ) from exc
    except Exception as exc:
        raise VectorReadError(
            f"{p}: cannot be read as vector data ({first_line(exc)}); "
            "re-export it as GeoPackage or GeoJSON"
        ) from exc


def spatial_layers(path: str | os.PathLike[str]) -> list[str]:
    """The names of the layers of a vector file that hold geometries, in file order.

    Tables without geometry (the ``layer_styles`` table where QGIS and geoseg store a
    GeoPackage's style, attribute tables) are skipped. A GeoParquet file has one layer.

    Raises:
        VectorReadError: the file cannot be opened as vector data.
    """
    import pyogrio

    p = Path(path)
    if p.suffix.lower() in PARQUET_SUFFIXES:
        return [p.stem]
    try:
        listed = pyogrio.list_layers(p)
    except Exception as exc:
        raise VectorReadError(
            f"{p}: cannot be read as vector data ({first_line(exc)}); "
            "re-export it as GeoPackage or GeoJSON"
        ) from exc
    return [str(name) for name, geometry_type in listed if geometry_type is not None]


def _the_spatial_layer(p: Path) -> str:
    """The one layer with geometries of ``p``; a clear error when there are none or several."""
    layers = spatial_layers(p)
    if len(layers) == 1:
        return layers[0]
    if not layers:
        raise VectorReadError(
            f"{p}: has no layer with geometries (only attribute tables); "
            "give a file with polygon or point features"
        )
    raise VectorReadError(
        f"{p}: has {len(layers)} layers with geometries ({', '.join(layers)}) and geoseg "
        f"reads one; keep the one you mean, e.g. `ogr2ogr {p.stem}_{layers[0]}{p.suffix} "
        f"{p} {layers[0]}`"
    )


def read_polygons(path: str | os.PathLike[str], *, what: str = "AOI") -> Any:
    """The (multi)polygon features of a vector file, which must have a CRS.

    ``what`` names the file's role in messages ("AOI").

    Raises:
        InputFileNotFoundError, VectorReadError: missing, unreadable, no CRS, no polygons.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileNotFoundError(f"{p}: no such {what} file; check the path")
    frame = read_vector(p)
    if frame.crs is None:
        raise VectorReadError(f"{p}: {what} has no CRS; set one (e.g. `ogr2ogr -a_srs EPSG:4326`)")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    frame = frame[frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        raise VectorReadError(f"{p}: has no polygons; an {what} file needs polygon features")
    return frame


# ---- writing ----------------------------------------------------------------------------------
def vector_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format key (``gpkg``, ``parquet``, ``fgb``, ``geojson``) of ``fmt`` or of the suffix.

    Raises:
        ConfigError: unknown format or suffix.
    """
    if fmt is not None:
        key = fmt.lower()
        if key not in FORMATS:
            raise ConfigError(f"unknown vector format {fmt!r}; use one of {', '.join(FORMATS)}")
        return key
    out = Path(path)
    suffix = out.suffix.lower()
    for key, (_, suffixes) in FORMATS.items():
        if suffix in suffixes:
            return key
    raise ConfigError(
        f"{out}: cannot tell the format from the suffix {suffix!r}; use .gpkg, .parquet, "
        ".fgb or .geojson, or pass --format"
    )


def vector_outputs(path: str | os.PathLike[str], fmt: str) -> list[Path]:
    """The files :func:`write_vector` writes: the layer, plus a ``.qml`` unless GeoPackage."""
    out = Path(path)
    return [out] if fmt == "gpkg" else [out, out.with_suffix(".qml")]


def write_vector(
    frame: Any,
    path: str | os.PathLike[str],
    *,
    qml: str,
    layer: str | None = None,
    format: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write a GeoDataFrame with its QGIS style, atomically; returns the files written.

    Args:
        frame: the features (a GeoDataFrame).
        path: the output; the format follows the suffix unless ``format`` is given.
        qml: the QGIS style (e.g. :func:`geoseg.io.style.vector_qml`): stored in a GeoPackage's
            ``layer_styles`` table as the default style, else written beside as ``.qml``.
        layer: the layer name (default: the file stem).
        format: ``gpkg``, ``parquet``, ``fgb`` or ``geojson``.
        overwrite: replace existing outputs.

    Raises:
        ConfigError: unknown format; OutputExistsError: an output exists without ``overwrite``;
        OutputWriteError: writing failed (disk full, permissions...).
    """
    import pyogrio.errors

    from geoseg.io.atomic import atomic_outputs

    fmt = vector_format(path, format)
    paths = vector_outputs(path, fmt)
    name = layer or paths[0].stem
    with atomic_outputs(paths, overwrite=overwrite) as tmps:
        try:
            _write_layer(frame, tmps[0], fmt, name)
            if fmt == "gpkg":
                _store_style(tmps[0], name, qml)
            else:
                tmps[1].write_text(qml)
        except (
            OSError,
            sqlite3.Error,
            pyogrio.errors.DataSourceError,
            pyogrio.errors.FeatureError,
        ) as exc:
            raise OutputWriteError(
                f"{paths[0]}: writing failed ({first_line(exc)}); check free disk space or "
                "write elsewhere"
            ) from exc
    return paths


def read_style(path: str | os.PathLike[str], layer: str | None = None) -> str | None:
    """The default QGIS style (QML) stored for ``layer`` in a GeoPackage, or None."""
    p = Path(path)
    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        row = con.execute(
            "SELECT styleQML FROM layer_styles WHERE f_table_name = ? AND useAsDefault = 1",
            (layer or p.stem,),
        ).fetchone()
    except sqlite3.OperationalError:  # no layer_styles table
        row = None
    finally:
        con.close()
    return str(row[0]) if row else None


def _write_layer(frame: Any, path: Path, fmt: str, layer: str) -> None:
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
        return
    import pyogrio

    driver = FORMATS[fmt][0]
    options: dict[str, Any] = {}
    if fmt == "gpkg":
        options["GEOMETRY_NAME"] = "geom"
    if fmt == "fgb":
        options["SPATIAL_INDEX"] = "YES"
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    try:
        pyogrio.write_dataframe(frame, path, layer=layer, driver=driver, **options)
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})


def _store_style(path: Path, layer: str, qml: str) -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage's ``layer_styles``."""
    con = sqlite3.connect(path)
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256), "
            "f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT, "
            "useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
            "update_time DATETIME)"
        )
        con.execute(
            "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, "
            "description, last_change) VALUES ('layer_styles', 'attributes', 'layer_styles', "
            "'', ?)",
            (FIXED_DATE,),
        )
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            "owner, ui, update_time) VALUES ('', '', ?, 'geom', ?, ?, '', 1, "
            "'geoseg class style', '', NULL, ?)",
            (layer, layer, qml, FIXED_DATE),
        )
        con.commit()
    finally:
        con.close()

"""Tests for geoseg.io.vector: one reader, one-line errors naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from geoseg.errors import InputFileNotFoundError, VectorReadError
from geoseg.io.vector import read_polygons, read_vector


def _frame(geoms: list[object], crs: str | None = "EPSG:32633") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"name": [f"f{i}" for i in range(len(geoms))]}, geometry=geoms, crs=crs)


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".parquet"])
def test_reads_every_format(tmp_path: Path, suffix: str) -> None:
    f = _frame([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)])
    p = tmp_path / f"a{suffix}"
    f.to_parquet(p) if suffix == ".parquet" else f.to_file(p)
    got = read_vector(p)
    assert len(got) == 2 and got.crs == f.crs
    assert shapely.equals(got.geometry.to_numpy(), f.geometry.to_numpy()).all()


def test_polygons_only_and_checks(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.gpkg"
    _frame([shapely.box(0, 0, 1, 1), shapely.Point(5, 5)]).to_file(mixed)
    assert list(read_polygons(mixed).geom_type) == ["Polygon"]
    points = tmp_path / "points.gpkg"
    _frame([shapely.Point(5, 5)]).to_file(points)
    with pytest.raises(VectorReadError, match=r"points.gpkg: has no polygons"):
        read_polygons(points)
    nocrs = tmp_path / "nocrs.gpkg"  # GeoJSON would default to WGS 84
    _frame([shapely.box(0, 0, 1, 1)], crs=None).to_file(nocrs)
    with pytest.raises(VectorReadError, match=r"nocrs.gpkg: AOI has no CRS; set one"):
        read_polygons(nocrs)


def test_missing_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(InputFileNotFoundError, match=r"nope.gpkg: no such AOI file"):
        read_polygons(tmp_path / "nope.gpkg")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(VectorReadError) as info:
        read_vector(bad)
    assert "\n" not in str(info.value) and "re-export it as GeoPackage" in str(info.value)


# ---- the writer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".gpkg", ".parquet", ".fgb", ".geojson"])
def test_write_vector_keeps_the_style(tmp_path: Path, suffix: str) -> None:
    from geoseg.classes import ClassMap
    from geoseg.io.style import vector_qml
    from geoseg.io.vector import read_style, write_vector

    qml = vector_qml(ClassMap.from_names(["forest", "water"]))
    f = _frame([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)])
    out = tmp_path / f"polys{suffix}"
    paths = write_vector(f, out, qml=qml)
    got = read_vector(out)
    assert len(got) == 2 and got.crs == f.crs
    if suffix == ".gpkg":
        assert paths == [out] and read_style(out) == qml
        assert gpd.list_layers(out)["name"].tolist() == ["polys", "layer_styles"]
    else:
        assert paths == [out, out.with_suffix(".qml")]
        assert out.with_suffix(".qml").read_text() == qml


def test_write_vector_refuses_to_overwrite(tmp_path: Path) -> None:
    from geoseg.errors import ConfigError, OutputExistsError
    from geoseg.io.vector import read_style, write_vector

    out = tmp_path / "a.gpkg"
    write_vector(_frame([shapely.box(0, 0, 1, 1)]), out, qml="<qgis/>")
    with pytest.raises(OutputExistsError):
        write_vector(_frame([shapely.box(0, 0, 1, 1)]), out, qml="<qgis/>")
    write_vector(_frame([shapely.box(0, 0, 2, 2)]), out, qml="<qgis a='1'/>", overwrite=True)
    assert read_style(out) == "<qgis a='1'/>"
    with pytest.raises(ConfigError, match="suffix"):
        write_vector(_frame([shapely.box(0, 0, 1, 1)]), tmp_path / "a.shp", qml="")
    assert not (tmp_path / "a.shp").exists()


def test_styled_geopackage_reads_its_feature_layer(tmp_path: Path) -> None:
    """A GeoPackage with a QGIS style (``layer_styles`` table): the features, not the style."""
    from geoseg.io.vector import spatial_layers, write_vector

    p = tmp_path / "styled.gpkg"
    write_vector(_frame([shapely.box(0, 0, 1, 1)]), p, qml="<qgis/>")
    import pyogrio

    assert "layer_styles" in [str(n) for n, _ in pyogrio.list_layers(p)]
    assert spatial_layers(p) == ["styled"]
    got = read_polygons(p)
    assert list(got["name"]) == ["f0"] and got.geometry.name in got.columns


def test_several_spatial_layers_refused_with_their_names(tmp_path: Path) -> None:
    p = tmp_path / "two.gpkg"
    _frame([shapely.box(0, 0, 1, 1)]).to_file(p, layer="fields")
    _frame([shapely.box(2, 2, 3, 3)]).to_file(p, layer="roads")
    with pytest.raises(VectorReadError, match=r"two.gpkg: has 2 layers .*fields, roads.*ogr2ogr"):
        read_vector(p)
    assert len(read_vector(p, layer="roads")) == 1

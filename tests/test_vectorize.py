"""Tests for geoseg.vectorize: blocked == whole, exact round trip, sieve, simplify, outputs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage

from geoseg.area import pixel_areas_m2
from geoseg.errors import ConfigError, OutputExistsError
from geoseg.grid import Grid, block_windows
from geoseg.vectorize import (
    parse_area,
    polygonize_array,
    sieve,
    vectorize,
)

TRANSFORM = Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)


def class_array(seed: int, shape: tuple[int, int] = (75, 83), nodata: bool = True) -> np.ndarray:
    """Blobs of 4 classes crossing many 16-px seams, salt noise, a nodata corner (0)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 5, size=(shape[0] // 3 + 1, shape[1] // 3 + 1))
    a = ndimage.zoom(coarse, 3, order=0)[: shape[0], : shape[1]].astype("uint8")
    noise = rng.random(shape) < 0.08
    a[noise] = rng.integers(1, 5, size=int(noise.sum()))
    a[:, shape[1] // 2] = 2  # a long thin region across every block row
    if nodata:
        a[:6, :9] = 0
        a[50:53, 60:70] = 0
    return a


@pytest.fixture(params=[0, 1])
def classes_tif(request: pytest.FixtureRequest, raster_factory: Callable[..., Path]) -> Path:
    return raster_factory(f"classes{request.param}.tif", class_array(request.param), nodata=0)


def read(path: Path) -> gpd.GeoDataFrame:
    if path.suffix == ".parquet":
        return gpd.read_parquet(path)
    return gpd.read_file(path, layer=0)


def test_block_windows_tile_without_overlap() -> None:
    ws = block_windows((37, 50), 16)
    cover = np.zeros((37, 50), int)
    for w in ws:
        cover[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert (cover == 1).all()


@pytest.mark.parametrize(("block_size", "processes"), [(7, False), (16, False), (7, True)])
def test_blocked_equals_whole_raster(
    classes_tif: Path,
    tmp_path: Path,
    block_size: int,
    processes: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import geoseg.vectorize as gv

    pools: list[int] = []
    make_pool = gv._make_pool

    def counting_pool(n: int) -> Any:
        pools.append(n)
        return make_pool(n)

    monkeypatch.setattr(gv, "_make_pool", counting_pool)
    if processes:  # large-raster path on a small raster: rows of blocks on 2 worker processes
        monkeypatch.setattr(gv, "PROCESS_MIN_PIXELS", 0)
    with rasterio.open(classes_tif) as ds:
        a = ds.read(1)
        grid = Grid.from_dataset(ds)
    ref, ref_ids = polygonize_array(a, grid, mask=a != 0)
    out = tmp_path / "v.gpkg"
    rep = vectorize(classes_tif, out, block_size=block_size, workers=2)
    assert pools == ([2] if processes else [])
    assert rep.blocks == len(block_windows(a.shape, block_size)) > 9
    gdf = read(out)
    assert len(gdf) == len(ref) == rep.features
    got = shapely.normalize(gdf.geometry.to_numpy())
    assert shapely.equals_exact(got, ref).all()
    assert (gdf["class_id"].to_numpy() == ref_ids).all()
    assert shapely.area(shapely.symmetric_difference(got, ref)).sum() == 0


def test_rasterize_back_gives_input(classes_tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.fgb"
    vectorize(classes_tif, out, block_size=16)
    gdf = read(out)
    with rasterio.open(classes_tif) as ds:
        a = ds.read(1)
        back = rasterize(
            zip(gdf.geometry, gdf["class_id"], strict=True),
            out_shape=a.shape,
            transform=ds.transform,
            fill=0,
            dtype="uint8",
        )
    np.testing.assert_array_equal(back, a)
    assert gdf.is_valid.all()
    assert set(gdf.columns) >= {"class_id", "class_name", "area_ha", "perimeter_m"}
    with rasterio.open(classes_tif) as ds:
        grid = Grid.from_dataset(ds)
    px_ha = np.broadcast_to(pixel_areas_m2(grid, grid.full_window), a.shape) / 1e4
    areas = gdf.groupby("class_id")["area_ha"].sum()
    for cid, ha in areas.items():
        # true areas (geoseg.area): the polygons measure exactly the pixels they cover
        assert ha == pytest.approx(px_ha[a == cid].sum(), rel=1e-7)
    assert gdf["perimeter_m"].to_numpy() == pytest.approx(gdf.length.to_numpy())
    assert (out.with_suffix(".qml")).exists()


@pytest.mark.parametrize("min_area", ["5px", "500m2", 12])
def test_min_area_equals_sieve_then_polygonize(
    classes_tif: Path, tmp_path: Path, min_area: str | int
) -> None:
    with rasterio.open(classes_tif) as ds:
        a = ds.read(1)
        grid = Grid.from_dataset(ds)
    px = parse_area(min_area, 100.0)
    sieved = sieve(a, px, mask=a != 0)
    ref, ref_ids = polygonize_array(sieved, grid, mask=a != 0)
    out = tmp_path / "s.gpkg"
    vectorize(classes_tif, out, block_size=16, min_area=min_area)
    gdf = read(out)
    assert len(gdf) == len(ref)
    assert shapely.equals_exact(shapely.normalize(gdf.geometry.to_numpy()), ref).all()
    assert (gdf["class_id"].to_numpy() == ref_ids).all()
    # only regions with no valid neighbour may stay below the threshold
    assert (shapely.area(ref) / 100 >= px).sum() >= len(ref) - 1


def test_sieve_rule_largest_neighbour() -> None:
    a = np.array(
        [
            [1, 1, 1, 2, 2],
            [1, 3, 1, 2, 2],
            [1, 1, 4, 2, 2],
            [1, 1, 1, 2, 2],
        ],
        dtype="uint8",
    )
    out = sieve(a, 2)
    # the 3 is surrounded by 1; the 4 touches 1 (region of 9) and 2 (region of 8)
    assert out[1, 1] == 1 and out[2, 2] == 1
    assert (out[:, 3:] == 2).all()
    assert (sieve(a, 0) == a).all()
    island = np.array([[0, 0, 0], [0, 5, 0], [0, 0, 0]], dtype="uint8")
    assert (sieve(island, 10, mask=island > 0) == island).all()


def test_parse_area() -> None:
    assert parse_area("20px", 9.0) == 20
    assert parse_area(20, 9.0) == 20
    assert parse_area("900m2", 9.0) == pytest.approx(100)
    assert parse_area("0.5ha", 9.765625) == pytest.approx(512)
    assert parse_area("1 km2", 1e4) == pytest.approx(100)
    with pytest.raises(ConfigError, match=r"0\.5ha"):
        parse_area("half a field", 9.0)
    with pytest.raises(ConfigError):
        parse_area(-1, 9.0)


def test_simplify_keeps_a_valid_coverage(classes_tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "simple.gpkg"
    vectorize(classes_tif, out, block_size=16, simplify=15.0)
    gdf = read(out)
    geoms = gdf.geometry.to_numpy()
    assert gdf.is_valid.all()
    assert shapely.coverage_is_valid(geoms)
    union = shapely.coverage_union_all(geoms)
    assert union.area == pytest.approx(shapely.area(geoms).sum(), rel=1e-9)
    with rasterio.open(classes_tif) as ds:
        total = float((ds.read(1) != 0).sum()) * 100
    assert union.area == pytest.approx(total, rel=0.02)
    plain = read(vectorize(classes_tif, tmp_path / "plain.gpkg", block_size=16).path)
    assert (
        shapely.get_num_coordinates(geoms).sum()
        < shapely.get_num_coordinates(plain.geometry.to_numpy()).sum()
    )


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".geojson", ".parquet"])
def test_rerun_is_byte_identical(
    raster_factory: Callable[..., Path], tmp_path: Path, suffix: str
) -> None:
    src = raster_factory("c.tif", class_array(3, (40, 45)), nodata=0)
    a = vectorize(src, tmp_path / f"a{suffix}", block_size=16, min_area=3, layer="lc")
    b = vectorize(src, tmp_path / f"b{suffix}", block_size=2048, min_area=3, layer="lc")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert len(read(a.path)) == a.features


def test_gpkg_carries_qgis_style(raster_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = raster_factory("c.tif", class_array(4, (30, 30)), nodata=0)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(1, CLASS_NAMES="forest,grass,urban,water", CLASS_IDS="1,2,3,4")
        ds.write_colormap(1, {1: (1, 2, 3, 255), 2: (4, 5, 6, 255)})
    out = tmp_path / "styled.gpkg"
    vectorize(src, out)
    con = sqlite3.connect(out)
    rows = con.execute(
        "SELECT f_table_name, f_geometry_column, styleName, styleQML, useAsDefault "
        "FROM layer_styles"
    ).fetchall()
    con.close()
    assert len(rows) == 1
    table, geom_col, _, qml, default = rows[0]
    assert (table, geom_col, default) == ("styled", "geom", 1)
    assert "forest" in qml and "1,2,3,255" in qml
    gdf = read(out)
    assert set(gdf["class_name"]) == {"forest", "grass", "urban", "water"}
    assert not out.with_suffix(".qml").exists()


def test_to_crs_and_geographic_areas(raster_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = raster_factory("c.tif", class_array(5, (30, 30)), nodata=0)
    proj = read(vectorize(src, tmp_path / "p.gpkg").path)
    wgs = read(vectorize(src, tmp_path / "w.gpkg", to_crs="EPSG:4326").path)
    assert wgs.crs.to_epsg() == 4326
    np.testing.assert_allclose(wgs["area_ha"], proj["area_ha"])
    geo = raster_factory(
        "geo.tif",
        class_array(5, (30, 30)),
        nodata=0,
        crs="EPSG:4326",
        transform=Affine(0.001, 0, 10.0, 0, -0.001, 50.0),
    )
    g = read(vectorize(geo, tmp_path / "g.gpkg", min_area="1ha").path)
    # a 0.001 degree pixel at 50 N is about 71.7 m x 111.2 m
    total = g["area_ha"].sum()
    assert total == pytest.approx((class_array(5, (30, 30)) != 0).sum() * 0.797, rel=0.01)


def test_errors(classes_tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.gpkg"
    vectorize(classes_tif, out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        vectorize(classes_tif, out)
    vectorize(classes_tif, out, overwrite=True)
    with pytest.raises(ConfigError, match="format"):
        vectorize(classes_tif, tmp_path / "v.shp")
    with pytest.raises(ConfigError, match="block size"):
        vectorize(classes_tif, tmp_path / "b.gpkg", block_size=0)
    assert not (tmp_path / "b.gpkg").exists()


def test_cdl_areas_exact_and_valid(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "cdl-iowa" / "CDL_2016_19_train.tif"
    out = tmp_path / "cdl.gpkg"
    vectorize(src, out)
    gdf = read(out)
    assert gdf.is_valid.all()
    with rasterio.open(src) as ds:
        a = ds.read(1)
        m = ds.read_masks(1) > 0
        grid = Grid.from_dataset(ds)
    px_ha = np.broadcast_to(pixel_areas_m2(grid, grid.full_window), a.shape) / 1e4
    got = gdf.groupby("class_id")["area_ha"].sum()
    for cid in np.unique(a[m]):
        want = px_ha[m & (a == cid)].sum()
        # edges split every 30 m (10 pixels): within 1e-6 of the pixels' true areas
        assert abs(got[cid] - want) / want < 1e-6


def speckle(shape: tuple[int, int], seed: int = 0, sigma: float = 1.2) -> np.ndarray:
    """A thresholded smoothed-noise field: 3 classes of speckle, classes 1..3, uint8."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (np.digitize(f, np.quantile(f, [0.6, 0.85])) + 1).astype("uint8")


@pytest.mark.parametrize(("seed", "sigma", "min_px"), [(4, 0.8, 5), (3, 0.8, 9), (5, 1.2, 25)])
def test_min_area_is_gdal_sieve_across_seams(
    raster_factory: Callable[..., Path], tmp_path: Path, seed: int, sigma: float, min_px: int
) -> None:
    # issue 19 item 3: the sieve is GDAL's, and a region crossing a block seam is measured
    # whole: vectorize(min_area) rasterized back == rasterio's sieve of the whole raster
    # (these cases differ from the previous order-independent rule by 6 to 31 pixels)
    from rasterio.features import sieve as gdal_sieve

    a = speckle((96, 90), seed=seed, sigma=sigma)
    a[40:47, 10:30] = 0  # nodata: never a neighbour, left alone
    valid = a != 0
    src = raster_factory(f"speckle{min_px}.tif", a[None], nodata=0)
    want = np.where(valid, gdal_sieve(a, min_px, mask=valid, connectivity=4), 0)
    # the case matters: small regions cross the 16-row seams and are sieved there
    lab, n = ndimage.label(valid & (want != a))
    rows = [np.unique(np.nonzero(lab == i)[0] // 16) for i in range(1, n + 1)]
    assert sum(len(r) > 1 for r in rows) >= 1
    out = tmp_path / "s.fgb"
    vectorize(src, out, block_size=16, min_area=min_px)
    gdf = read(out)
    back = rasterize(zip(gdf.geometry, gdf["class_id"], strict=True), out_shape=a.shape,
                     transform=TRANSFORM, fill=0, dtype="uint8")  # fmt: skip
    np.testing.assert_array_equal(back, want)
    np.testing.assert_array_equal(sieve(a, min_px, mask=valid), want)
    # unsieved, the speckle's polygons rasterized back are the class raster
    vectorize(src, tmp_path / "all.fgb", block_size=16)
    gdf = read(tmp_path / "all.fgb")
    back = rasterize(zip(gdf.geometry, gdf["class_id"], strict=True), out_shape=a.shape,
                     transform=TRANSFORM, fill=0, dtype="uint8")  # fmt: skip
    np.testing.assert_array_equal(back, a)


@pytest.mark.parametrize("delay", [0.0, 1.0], ids=["workers-starting", "workers-busy"])
def test_ctrl_c_stops_promptly_without_output(
    raster_factory: Callable[..., Path], tmp_path: Path, delay: float
) -> None:
    # issue 19 item 3: Ctrl-C (SIGINT to the process group, as a terminal sends it) during a
    # sieved, multi-process vectorize ends it in about a second: exit 130, no output file.
    # delay 0: the signal reaches workers still importing (they printed a traceback until the
    # pool was started with SIGINT ignored; 3 of 6 runs failed); delay 1: workers are sieving
    import os
    import signal
    import subprocess
    import sys
    import time

    src = raster_factory("big.tif", speckle((3000, 3000), sigma=1.5)[None], nodata=0)
    out = tmp_path / "out.gpkg"
    env = {**os.environ, "GEOSEG_PROGRESS": "0", "PYTHONPATH": str(Path(__file__).parents[1])}
    argv = [sys.executable, "-m", "geoseg", "-q", "vectorize", str(src), "--out", str(out),
            "--min-area", "20", "--workers", "2", "--block-size", "1000"]  # fmt: skip
    from tests.test_interrupt import default_sigint  # SIGINT as a terminal gives it

    proc = subprocess.Popen(
        argv, env=env, start_new_session=True, stderr=subprocess.PIPE, preexec_fn=default_sigint
    )
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    status = Path(f"/proc/{proc.pid}/status")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and proc.poll() is None:
        # the pool is up (the resource tracker and 2 workers) and the parent handles Ctrl-C
        # again (SigIgn: it ignores SIGINT, bit 1, only while it starts the workers)
        ignoring = any(
            line.startswith("SigIgn:") and int(line.split()[1], 16) & 2
            for line in status.read_text().splitlines()
        )
        if len(children.read_text().split()) >= 3 and not ignoring:
            break
        time.sleep(0.01)
    time.sleep(delay)
    assert proc.poll() is None, "vectorize ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    t1 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    # about a second on a quiet machine; the bound leaves room for a loaded CI runner and
    # still fails the old code (it ignored Ctrl-C and wrote its output ~39 s later)
    assert time.monotonic() - t1 < 10.0
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("out*"))

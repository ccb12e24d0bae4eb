"""Determinism on CPU: the same inputs, model and options give byte-identical outputs.

``predict`` (classes, probabilities, confidence, polygons and every sidecar) and ``vectorize``
are run twice into two folders and every file is compared by SHA-256; a tiny ``train`` run
through the CLI twice with the same seed gives identical weights. A property test checks that
predict's streamed blending (row band by row band) is a partition of unity and gives the same
probabilities as blending the whole scene at once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from geoseg.bundle import ModelBundle
from geoseg.cli.main import cli
from geoseg.grid import plan_windows
from geoseg.stitch import ChipStitcher, chip_weights
from tests.data import bad_inputs as bi
from tests.data.labels import pixel_box

torch.set_num_threads(1)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _invoke(argv: list[str]) -> None:
    res = CliRunner().invoke(cli, ["-q", *argv])
    assert res.exit_code == 0, res.output


def test_predict_twice_byte_identical(tmp_path: Path) -> None:
    scene = bi.scene(tmp_path / "in", width=90, height=70, nodata=0)
    model = bi.model(tmp_path / "in")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        _invoke(
            [
                "predict",
                str(scene),
                "--model",
                str(model),
                "--out",
                str(out / "classes.tif"),
                "--probabilities",
                "--confidence",
                "--vector",
                str(out / "classes.gpkg"),
                "--batch-size",
                "3",
            ]
        )
        runs.append(_digests(out))
    assert set(runs[0]) >= {
        "classes.tif",
        "classes.qml",
        "classes.tif.aux.xml",
        "classes_proba.tif",
        "classes.gpkg",
    }, runs[0]
    diff = [f for f in runs[0] if runs[0][f] != runs[1].get(f)]
    assert set(runs[0]) == set(runs[1]) and not diff, f"outputs differ between runs: {diff}"


def test_vectorize_twice_byte_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(1, 3, size=(60, 70)).astype("uint8")  # many tiny regions
    data[:5] = 255
    raster = bi.class_raster(tmp_path / "in", data=data)
    for fmt in ("gpkg", "fgb"):
        runs = []
        for name in ("a", "b"):
            out = tmp_path / f"{name}-{fmt}"
            _invoke(
                [
                    "vectorize",
                    str(raster),
                    "--out",
                    str(out / f"p.{fmt}"),
                    "--min-area",
                    "3",
                    "--simplify",
                    "5",
                    "--block-size",
                    "32",
                ]
            )
            runs.append(_digests(out))
        assert runs[0] and runs[0] == runs[1], f"{fmt}: {runs}"


def test_train_same_seed_same_weights(tmp_path: Path) -> None:
    scene = bi.scene(tmp_path / "in", width=96, height=96)
    labels = bi.vector(
        tmp_path / "in",
        boxes=[pixel_box(0, 0, 48, 96), pixel_box(48, 0, 96, 96)],
        classes=["water", "forest"],
    )
    states = []
    for name in ("a", "b"):
        out = tmp_path / name / "m.pt"
        _invoke(
            [
                "train",
                "--scene",
                str(scene),
                "--labels",
                str(labels),
                "--class-column",
                "class",
                "--model",
                "fcn",
                "--encoder",
                "mobilenet_v2",
                "--epochs",
                "1",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--size",
                "32",
                "--seed",
                "7",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        states.append(ModelBundle.load(out).state_dict)
    a, b = states
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"weights differ: {differ[:5]}"


# ---- the stitching predict actually does -------------------------------------------------------
@st.composite
def _stitch_plans(draw: st.DrawFn) -> tuple[int, int, int, int, int, int, bool]:
    h = draw(st.integers(1, 120))
    w = draw(st.integers(1, 120))
    size = draw(st.integers(4, 48))
    overlap = draw(st.integers(0, size - 1))
    ragged = draw(st.booleans())
    return h, w, size, overlap, draw(st.integers(1, 4)), draw(st.integers(0, 2**16)), ragged


@given(_stitch_plans())
@settings(max_examples=60, deadline=None)
def test_streamed_blend_is_a_partition_of_unity_and_schedule_free(
    plan: tuple[int, int, int, int, int, int, bool],
) -> None:
    """Predict's cell stitching: every pixel handed out once, after the last chip that touches
    it, every pixel covered, class probabilities summing to 1 everywhere, equal to blending
    the whole scene at once (full and ragged plans, any overlap)."""
    h, w, size, overlap, k, seed, ragged = plan
    rng = np.random.default_rng(seed)
    windows = plan_windows((h, w), size, overlap, ragged=ragged)
    chips = []
    for win in windows:
        p = rng.random((k, int(win.height), int(win.width))).astype(np.float32) + 0.01
        chips.append(p / p.sum(axis=0, keepdims=True))
    # Whole-scene reference: sum(w * p) / sum(w) with the same weights.
    acc = np.zeros((k, h, w), np.float64)
    wsum = np.zeros((h, w), np.float64)
    for win, p in zip(windows, chips, strict=True):
        wt = chip_weights(win, (h, w), overlap)
        r, c = int(win.row_off), int(win.col_off)
        acc[:, r : r + p.shape[1], c : c + p.shape[2]] += p * wt
        wsum[r : r + p.shape[1], c : c + p.shape[2]] += wt
    assert (wsum > 0).all()
    ref = acc / wsum
    # Streamed, handed out piece by piece as predict does.
    stitcher = ChipStitcher(shape=(h, w), num_classes=k, overlap=overlap, windows=windows)
    out = np.full((k, h, w), np.nan, np.float32)
    for n, (win, p) in enumerate(zip(windows, chips, strict=True)):
        for band in stitcher.add(win, p, np.ones(p.shape[1:], bool)):
            sl = band.window.toslices()
            assert np.isnan(out[(slice(None), *sl)]).all()  # handed out once
            assert not any(_overlaps(v, band.window) for v in windows[n + 1 :])  # final
            assert band.covered.all() and band.valid is not None and band.valid.all()
            out[(slice(None), *sl)] = band.probabilities
    assert stitcher.finish() == [] and stitcher.held_pixels == 0
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def _overlaps(a: Window, b: Window) -> bool:
    return (
        a.row_off < b.row_off + b.height
        and b.row_off < a.row_off + a.height
        and a.col_off < b.col_off + b.width
        and b.col_off < a.col_off + a.width
    )

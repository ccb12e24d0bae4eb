"""The overlapped predict pipeline (geoseg.pipeline inside geoseg.predict).

Same bytes with and without the write thread, errors in either thread propagating with no
partial output, no hang and no thread left behind, and the batch size chosen when not given.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

import geoseg.predict as gp
from geoseg.errors import OutputWriteError
from geoseg.pipeline import MAX_AUTO_BATCH
from geoseg.predict import predict
from tests.data.rasters import write_raster
from tests.test_predict import BANDS, smooth_scene, tiny_bundle


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = smooth_scene(230, 190, seed=3)
    data[:, 100:104, :] = 0  # a nodata stripe
    data[:, :64, :64] = 0  # an all-nodata chip (skipped)
    return write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=list(BANDS))


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _geoseg_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("geoseg-")]


def test_overlapped_pipeline_writes_the_same_bytes_as_serial(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = {}
    for mode in (True, False):
        monkeypatch.setattr(gp, "WRITE_THREAD", mode)
        out = tmp_path / f"threaded_{mode}"
        out.mkdir()
        predict(
            scene,
            out=out / "c.tif",
            model=tiny_bundle(),
            batch_size=3,
            probabilities=out / "p.tif",
            confidence=True,
        )
        runs[mode] = _digest(out)
    assert runs[True] == runs[False]
    assert len(runs[True]) >= 4  # classes + sidecars + probabilities
    with rasterio.open(tmp_path / "threaded_True" / "c.tif") as ds:
        cls = ds.read(1)
    assert (cls[:64, :64] == 255).all() and (cls[120:, 80:] != 255).all()


def test_writer_error_propagates_and_leaves_no_partial_output(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gp.PredictionWriter.write
    calls = {"n": 0}

    def failing(self: gp.PredictionWriter, band: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OutputWriteError("out.tif: writing failed (disk full); write elsewhere")
        return real(self, band)

    monkeypatch.setattr(gp.PredictionWriter, "write", failing)
    keep = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(OutputWriteError, match="disk full"):
        predict(scene, out=tmp_path / "out.tif", model=tiny_bundle(), batch_size=1)
    assert _leftovers(tmp_path, keep) == []
    assert not _geoseg_threads()


class _Interrupting:
    """An engine that raises ``exc`` on its ``at``-th call (Ctrl-C in the model's thread)."""

    def __init__(self, inner: Any, exc: BaseException, at: int) -> None:
        self.inner, self.exc, self.at, self.calls = inner, exc, at, 0
        self.device = inner.device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.at:
            raise self.exc
        return np.asarray(self.inner(x))


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("model exploded")])
def test_interrupt_in_the_model_thread_stops_everything(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    from geoseg.runtime import sources

    real = sources.make_engine
    monkeypatch.setattr(
        sources, "make_engine", lambda *a, **k: _Interrupting(real(*a, **k), exc, at=3)
    )
    keep = {p.name for p in tmp_path.iterdir()}
    t0 = time.perf_counter()
    with pytest.raises(type(exc)):
        predict(scene, out=tmp_path / "out.tif", model=tiny_bundle(), batch_size=1)
    assert time.perf_counter() - t0 < 60
    assert _leftovers(tmp_path, keep) == []
    assert not _geoseg_threads()


def test_reads_start_before_the_model_is_built(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geoseg.runtime import sources

    reads: list[float] = []
    built: list[float] = []
    real_read, real_engine = gp.ChipReader.read, sources.make_engine

    def read(self: gp.ChipReader, window: Any) -> gp.Chip:
        reads.append(time.perf_counter())
        return real_read(self, window)

    def make_engine(*a: Any, **k: Any) -> Any:
        time.sleep(0.3)  # a slow model build: the first chips are read meanwhile
        built.append(time.perf_counter())
        return real_engine(*a, **k)

    monkeypatch.setattr(gp.ChipReader, "read", read)
    monkeypatch.setattr(sources, "make_engine", make_engine)
    predict(scene, out=tmp_path / "out.tif", model=tiny_bundle(), batch_size=2)
    assert len([t for t in reads if t < built[0]]) >= 2


def test_batch_size_from_the_machine_when_not_given(scene: Path, tmp_path: Path) -> None:
    r = predict(scene, out=tmp_path / "auto.tif", model=tiny_bundle())
    # CPU: about 1 Mpx of chips; the tiny bundle's 64 px chips hit the cap
    assert r.batch_size == MAX_AUTO_BATCH
    r = predict(scene, out=tmp_path / "given.tif", model=tiny_bundle(), batch_size=5)
    assert r.batch_size == 5
    with rasterio.open(tmp_path / "auto.tif") as a, rasterio.open(tmp_path / "given.tif") as b:
        assert np.array_equal(a.read(), b.read())  # the batch does not change the answer

"""Interrupted runs leave nothing behind: no output, and no temporary after the next run.

A real ``python -m geoseg predict`` process works on a scene big enough to take several
seconds with a tiny model; once its staging temporary appears in the output folder it is sent
SIGINT (Ctrl-C: exit 130, temporaries removed at once) or SIGKILL (no chance to clean: the
temporaries stay until the next run into that folder, which removes them because their
writer's process id is gone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.io.atomic import TMP_MARK
from tests.data import bad_inputs as bi

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "GEOSEG_PROGRESS": "0",
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def default_sigint() -> None:
    """In the child: Ctrl-C as a terminal gives it. A shell starting a job in the background
    (``cmd &`` without job control, as a CI runner may) leaves SIGINT ignored, the child
    inherits that, and Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_predict(tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    scene = bi.scene(tmp / "in", "big.tif", width=2048, height=2048)  # ~30 s of work: killed early
    model = bi.model(tmp / "in")
    out = tmp / "out"
    out.mkdir()
    argv = [
        sys.executable,
        "-m",
        "geoseg",
        "-q",
        "predict",
        str(scene),
        "--model",
        str(model),
        "--out",
        str(out / "classes.tif"),
        "--probabilities",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(
        argv,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    return proc, out


def _wait_for_temp(
    proc: subprocess.Popen[str], folder: Path, timeout: float = 120, *, stage: bool = False
) -> list[str]:
    """Wait until the process has a geoseg temporary (``stage``: a COG stage file, i.e. chips
    are being written) in ``folder``; return the names."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        temps = [p.name for p in folder.iterdir() if TMP_MARK in p.name]
        if temps and (not stage or any("-stage" in t for t in temps)):
            return temps
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"predict ended before its temporary appeared: {proc.returncode}\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no temporary appeared in time")


def _rerun_small(out: Path, tmp: Path) -> None:
    """The next run into the same folder (a small scene): must work and clean up."""
    small = bi.scene(tmp / "in", "small.tif", width=40, height=40)
    res = CliRunner().invoke(
        cli,
        [
            "-q",
            "predict",
            str(small),
            "--model",
            str(tmp / "in" / "model.pt"),
            "--out",
            str(out / "classes.tif"),
            "--probabilities",
        ],
    )
    assert res.exit_code == 0, res.output
    left = sorted(p.name for p in out.iterdir())
    assert left == ["classes.qml", "classes.tif", "classes.tif.aux.xml", "classes_proba.tif"], left


def test_sigint_predict_leaves_nothing(tmp_path: Path) -> None:
    proc, out = _start_predict(tmp_path)
    _wait_for_temp(proc, out, stage=True)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert sorted(os.listdir(out)) == [], "SIGINT must leave no output and no temporary"
    _rerun_small(out, tmp_path)


def test_sigkill_predict_then_next_run_cleans(tmp_path: Path) -> None:
    proc, out = _start_predict(tmp_path)
    _wait_for_temp(proc, out)
    time.sleep(0.3)  # let it write some chips into the stage file
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    names = sorted(os.listdir(out))
    assert names, "a killed run leaves its temporaries"
    assert all(TMP_MARK in n for n in names), f"no final output may exist: {names}"
    assert str(proc.pid) in names[0]
    _rerun_small(out, tmp_path)  # asserts that only the new outputs are left


def test_stale_vectorize_temporary_is_cleaned(tmp_path: Path) -> None:
    """A temporary of a dead vectorize process (SIGKILL) is removed by the next vectorize."""
    # A pid that is surely gone: a child we started and reaped.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".polygons{TMP_MARK}{dead.pid}-0123abcd.gpkg"
    stale.write_bytes(b"half a geopackage")
    alive = out / f".other{TMP_MARK}{os.getpid()}-0123abcd.gpkg"  # a live writer's: kept
    alive.write_bytes(b"in progress")
    raster = bi.class_raster(tmp_path / "in", data=np.ones((20, 20), dtype="uint8"))
    argv = ["-q", "vectorize", str(raster), "--out", str(out / "polygons.gpkg")]
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 0, res.output
    assert not stale.exists()
    assert alive.exists()
    assert (out / "polygons.gpkg").exists()

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geoseg.errors import OutputExistsError, OutputWriteError
from geoseg.io.atomic import TMP_MARK, atomic_outputs, check_output, clean_stale_temporaries


def test_success_renames_into_place(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    with atomic_outputs([out]) as (tmp,):
        tmp.write_text("x")
        assert not out.exists()
    assert out.read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    with pytest.raises(RuntimeError), atomic_outputs([out, tmp_path / "b.txt"]) as temps:
        for t in temps:
            t.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    out.write_text("precious")
    with pytest.raises(OutputExistsError, match="--overwrite"), atomic_outputs([out]):
        pass
    assert out.read_text() == "precious"
    with atomic_outputs([out], overwrite=True) as (tmp,):
        tmp.write_text("new")
    assert out.read_text() == "new"


def test_unwritable_folder(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(OutputWriteError, match="cannot create the output folder"):
            check_output(blocker / "sub" / "out.tif")
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(OutputWriteError, match="not writable"):
        check_output(ro / "out.tif")


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(proc.stdout)
    stale = tmp_path / f".out{TMP_MARK}{dead}-abcd1234.tif"
    stale.write_text("half")
    live = tmp_path / f".out{TMP_MARK}{os.getpid()}-abcd1234.tif"
    live.write_text("in progress")
    assert clean_stale_temporaries(tmp_path) == [stale]
    assert live.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_temporaries_of_killed_but_unreaped_processes_are_removed(tmp_path: Path) -> None:
    # a SIGKILLed writer stays a zombie until its parent reaps it; its temporaries are stale
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".out{TMP_MARK}{proc.pid}-abcd1234.tif"
        stale.write_text("half")
        assert clean_stale_temporaries(tmp_path) == []  # still running: kept
        proc.kill()
        for _ in range(200):  # until the kernel marks it a zombie (not reaped: no wait() yet)
            if Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] == "Z":
                break
            time.sleep(0.01)
        assert clean_stale_temporaries(tmp_path) == [stale]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl")
def test_file_lock_makes_other_processes_wait(tmp_path: Path) -> None:
    from geoseg.io.atomic import file_lock

    lock, mark = tmp_path / ".lock", tmp_path / "mark"
    code = (
        "import sys; from geoseg.io.atomic import file_lock\n"
        f"with file_lock({str(lock)!r}): open({str(mark)!r}, 'w').write('child')"
    )
    with file_lock(lock):
        child = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(1.0)
        assert not mark.exists()  # still waiting for us
    assert child.wait(timeout=60) == 0
    assert mark.read_text() == "child"


def test_check_creates_nothing_and_a_failed_write_removes_the_folders_it_made(
    tmp_path: Path,
) -> None:
    out = tmp_path / "a" / "b" / "out.tif"
    assert check_output(out) == out
    assert not (tmp_path / "a").exists()  # a refusal after the check leaves no folder
    with pytest.raises(RuntimeError), atomic_outputs([out]) as (tmp,):
        assert tmp.parent.is_dir()
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_outputs([out]) as (tmp,):
        tmp.write_text("done")
    assert out.read_text() == "done"

"""Atomic outputs: write to a temporary name in the target folder, rename when complete.

Nothing half-written is ever left under an output's name, and an existing output is never
replaced unless ``overwrite`` is asked for. Temporary files carry the writer's process id,
so stale ones left by a killed process are recognised and removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from geoseg.errors import OutputExistsError, OutputWriteError

__all__ = [
    "TMP_MARK",
    "atomic_outputs",
    "check_output",
    "clean_stale_temporaries",
    "file_lock",
    "temporary_path",
]

TMP_MARK = ".geoseg-tmp-"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.geoseg-tmp-(?P<pid>\d+)-[0-9a-f]+(?P<suffix>\.[^.]*)?$")


def check_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that ``path`` may be written; raise a clear error otherwise.

    Nothing is created: a missing parent folder is made only when the output is written
    (:func:`atomic_outputs`), so a run refused later leaves no empty folder behind. Raises
    :class:`OutputExistsError` when the file exists and ``overwrite`` is false,
    :class:`OutputWriteError` when the folder cannot be created or written.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(
            f"{p}: output exists; pass --overwrite to replace it or choose another name"
        )
    if p.is_dir():
        raise OutputWriteError(f"{p}: is a folder, not a file; give a file name for the output")
    parent = p.parent if str(p.parent) else Path(".")
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputWriteError(
            f"{parent}: cannot create the output folder ({existing} is a file, not a folder); "
            "choose a writable folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputWriteError(
            f"{existing}: output folder is not writable; choose a writable folder"
        )
    return p


def _make_folders(folders: Sequence[Path]) -> list[Path]:
    """Create missing ``folders`` (and parents); return those created, innermost first."""
    made: list[Path] = []
    for folder in folders:
        missing: list[Path] = []
        p = folder
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _remove_empty(made)
            raise OutputWriteError(
                f"{folder}: cannot create the output folder ({exc.strerror}); "
                "choose a writable folder"
            ) from exc
        made.extend(missing)
    return made


def _remove_empty(folders: Sequence[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def temporary_path(path: str | os.PathLike[str]) -> Path:
    """A hidden temporary name beside ``path`` that keeps its suffix (GDAL picks drivers by it)."""
    p = Path(path)
    return p.with_name(f".{p.stem}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{p.suffix}")


def _pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs; a killed process not yet reaped (zombie) is gone."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] not in "ZX"  # state follows "(comm) "
    return True


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove geoseg temporaries in ``folder`` whose writing process is gone; return them."""
    removed: list[Path] = []
    d = Path(folder)
    if not d.is_dir():
        return removed
    for entry in d.iterdir():
        m = _TMP_RE.match(entry.name)
        if m and not _pid_alive(int(m.group("pid"))):
            with contextlib.suppress(OSError):
                if entry.is_dir():
                    import shutil

                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_outputs(
    paths: Sequence[str | os.PathLike[str]], *, overwrite: bool = False
) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; rename them all into place when the block succeeds.

    Missing parent folders are created here. On any exception (including KeyboardInterrupt)
    the temporaries, and the folders made for them, are removed and no output is created or
    replaced. Existing outputs raise :class:`OutputExistsError` up front unless
    ``overwrite``. Sidecars that GDAL writes beside a temporary (``.aux.xml``, ``.ovr``) are
    removed too.
    """
    finals = [check_output(p, overwrite=overwrite) for p in paths]
    made = _make_folders(sorted({f.parent for f in finals}))
    for f in {f.parent for f in finals}:
        clean_stale_temporaries(f)
    temps = [temporary_path(f) for f in finals]
    try:
        yield temps
        for tmp, final in zip(temps, finals, strict=True):
            if not tmp.exists():
                continue
            os.replace(tmp, final)
    except OSError as exc:
        for tmp in temps:
            _cleanup(tmp)
        _remove_empty(made)
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise OutputWriteError(
                f"{finals[0]}: ran out of disk space while writing ({exc.strerror}); free space or write elsewhere"
            ) from exc
        raise
    except BaseException:
        for tmp in temps:
            _cleanup(tmp)
        _remove_empty(made)
        raise
    finally:
        for tmp in temps:
            for side in (".aux.xml", ".ovr", ".msk"):
                _remove(tmp.with_name(tmp.name + side))


def _cleanup(tmp: Path) -> None:
    _remove(tmp)
    for side in (".aux.xml", ".ovr", ".msk"):
        _remove(tmp.with_name(tmp.name + side))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock on ``path`` while the block runs: processes wait for each other.

    Where ``fcntl`` is missing (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

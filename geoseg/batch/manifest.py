"""The units of a batch and its manifest: planning, fingerprints, checksums, resume."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from geoseg.errors import ConfigError
from geoseg.io.atomic import atomic_outputs
from geoseg.workflow import Workflow

__all__ = [
    "MANIFEST_NAME",
    "SUMMARY_DIR",
    "UNITS_DIR",
    "Manifest",
    "Unit",
    "fingerprint",
    "plan_units",
    "sha256_file",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "geoseg-batch-manifest"
UNITS_DIR = "units"
SUMMARY_DIR = "summary"
#: GeoPackages store a "last change" timestamp; fixing it makes reruns byte-identical.
OGR_DATE = "2000-01-01T00:00:00Z"

UnitKind = Literal["scene", "pair"]


# ---- planning ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One unit of work: a scene to classify or a date pair to compare.

    Attributes:
        id: a file-name-safe identifier, unique in the workflow (the scene's file stem, or
            the pair's name).
        kind: ``scene`` or ``pair``.
        inputs: the input paths (one scene; or before, after).
        masks: a pair's per-date cloud masks (before, after), ``None`` where not given.
    """

    id: str
    kind: UnitKind
    inputs: tuple[Path, ...]
    masks: tuple[Path | None, Path | None] = (None, None)


def _safe_id(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
    return out.strip("_") or "unit"


def plan_units(workflow: Workflow) -> list[Unit]:
    """The units of ``workflow`` in order, with unique ids."""
    raw: list[tuple[str, UnitKind, tuple[Path, ...], tuple[Path | None, Path | None]]] = []
    if workflow.pairs:
        for p in workflow.pairs:
            name = p.name or f"{p.before.stem}-{p.after.stem}"
            raw.append((_safe_id(name), "pair", (p.before, p.after), (p.before_mask, p.after_mask)))
    else:
        for s in workflow.scenes:
            raw.append((_safe_id(s.stem), "scene", (s,), (None, None)))
    units: list[Unit] = []
    used: set[str] = set()
    for uid, kind, inputs, masks in raw:
        candidate, n = uid, 1
        if candidate in used and kind == "scene":
            candidate = _safe_id(f"{inputs[0].parent.name}_{uid}")
        while candidate in used:
            n += 1
            candidate = f"{uid}_{n}"
        used.add(candidate)
        units.append(Unit(candidate, kind, inputs, masks))
    return units


def _stat(path: Path | None) -> list[Any]:
    if path is None:
        return [None]
    try:
        st = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]


def fingerprint(unit: Unit, workflow: Workflow) -> str:
    """A hash of everything a unit's outputs depend on (inputs, model, AOI, options)."""
    from geoseg import __version__

    stages = set(workflow.stages)
    payload = {
        "geoseg": __version__,
        "kind": unit.kind,
        "inputs": [_stat(p) for p in unit.inputs],
        "stages": list(workflow.stages),
        "model": _stat(workflow.model_path) if "predict" in stages else None,
        "predict": workflow.predict.model_dump(mode="json") if "predict" in stages else None,
        "vectorize": workflow.vectorize.model_dump(mode="json") if "vectorize" in stages else None,
        "change": workflow.change.model_dump(mode="json") if workflow.change else None,
        "aoi": _stat(workflow.aoi) if workflow.aoi else None,
        "aoi_name_column": workflow.aoi_name_column if workflow.aoi else None,
    }
    if any(m is not None for m in unit.masks):  # keys only when used: older hashes stay valid
        payload["masks"] = [_stat(m) for m in unit.masks]
    if workflow.cloud_mask is not None and "predict" in stages:
        payload["cloud_mask"] = workflow.cloud_mask.model_dump(mode="json")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ---- checksums and manifest ----------------------------------------------------------------
def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Manifest:
    """The JSON record of a batch run: one entry per unit, rewritten atomically.

    Each entry holds ``status`` (``pending``, ``done`` or ``failed``), ``fingerprint``,
    ``started``/``finished`` times, ``seconds`` per stage, ``outputs`` (path relative to the
    output folder -> sha256), ``error`` (one line) and the unit's summary values.
    """

    def __init__(self, path: Path, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = data or {"format": MANIFEST_FORMAT, "version": 1, "units": {}}

    @property
    def units(self) -> dict[str, dict[str, Any]]:
        """Unit id -> record."""
        units: dict[str, dict[str, Any]] = self.data.setdefault("units", {})
        return units

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest; an absent file gives an empty one."""
        p = Path(path)
        if not p.exists():
            return cls(p)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{p}: manifest cannot be read ({exc.__class__.__name__}); "
                "delete it or rerun with --no-resume"
            ) from exc
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ConfigError(
                f"{p}: not a geoseg batch manifest; choose another output folder or delete it"
            )
        return cls(p, data)

    def save(self) -> None:
        """Write the manifest atomically (temporary file, then rename)."""
        text = json.dumps(self.data, indent=2, sort_keys=True) + "\n"
        with atomic_outputs([self.path], overwrite=True) as (tmp,):
            tmp.write_text(text)

    def is_done(self, unit_id: str, fp: str, root: Path) -> bool:
        """Whether ``unit_id`` is done with fingerprint ``fp`` and outputs matching checksums."""
        rec = self.units.get(unit_id)
        if not rec or rec.get("status") != "done" or rec.get("fingerprint") != fp:
            return False
        outputs = rec.get("outputs") or {}
        for rel, digest in outputs.items():
            p = root / rel
            if not p.is_file() or sha256_file(p) != digest:
                log.info("%s: %s changed or missing; redoing the unit", unit_id, rel)
                return False
        return True

"""Batch workflow files: the YAML read by ``geoseg run``, validated by pydantic models.

A workflow lists its inputs (``scenes`` to classify, or ``pairs`` of dated class rasters to
compare), the model, the AOIs, the output folder and the stages to run. Relative paths resolve
against the folder of the YAML file; globs in ``scenes`` are expanded when the file is read (a
glob that matches nothing is an error naming its line). Unknown keys are errors too::

    name: landcover
    output: ../runs/landcover
    model: default
    scenes: [../../shared/data/aber-s2/*.tif]
    stages: [predict, vectorize, areas]
    vectorize: {min_area: 500}
    cloud_mask: auto          # clouds and shadows -> nodata in the class maps (docs/clouds.md)

Use :func:`load_workflow` to read one; :func:`geoseg.batch.run_workflow` runs it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from geoseg.config import StrictModel, load_yaml

__all__ = [
    "ChangeOptions",
    "CloudMaskOptions",
    "DatePair",
    "PredictOptions",
    "Stage",
    "VectorizeOptions",
    "Workflow",
    "load_workflow",
    "resolve_model",
]

Stage = Literal["predict", "vectorize", "areas", "change"]
DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default_model.pt"


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    base = ctx.get("base_dir") if isinstance(ctx, dict) else None
    return Path(base) if base is not None else Path.cwd()


def _resolve(value: str | os.PathLike[str], info: ValidationInfo) -> Path:
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else (_base_dir(info) / p)


def _norm(p: Path) -> Path:
    """Lexically normalised absolute path (no symlink resolution)."""
    return Path(os.path.normpath(p))


class PredictOptions(StrictModel):
    """Options of the ``predict`` stage (see :func:`geoseg.predict.predict`)."""

    size: int | None = Field(default=None, gt=0, description="chip size in pixels")
    overlap: int | None = Field(default=None, ge=0, description="chip overlap in pixels")
    batch_size: int = Field(default=8, gt=0)
    bands: tuple[int | str, ...] | None = Field(
        default=None,
        description="scene bands to feed the model: 1-based indexes or names (band "
        "descriptions; STAC asset keys or common names)",
    )
    reflectance: str | None = Field(
        default=None,
        description="DN -> reflectance preset (s2, s2-pre04, landsat-c2-l2...) for reflectance "
        "models and the cloud mask",
    )
    row_bands: int | None = Field(
        default=None,
        gt=0,
        description="predict each scene in this many row bands spread over the cluster's "
        "workers (one COG, byte-identical to one process; geoseg.parallel), for a few large "
        "scenes; not with cloud_mask",
    )


class CloudMaskOptions(StrictModel):
    """Cloud and shadow masking in the ``predict`` stage (see ``docs/clouds.md``).

    ``cloud_mask: auto`` (or ``true``) is short for ``cloud_mask: {model: auto}``; a model
    name is short for ``{model: NAME}``.
    """

    model: str = Field(
        default="auto",
        min_length=1,
        description="cloud/shadow model (e.g. csmask-6b-l1c); auto: the one the bands fit",
    )
    write_mask: bool = Field(
        default=True, description="also write the mask COG <scene>_clouds.tif beside each map"
    )
    bands: tuple[str | int, ...] | None = Field(
        default=None,
        description="scene bands for blue, green, red, nir[, swir16, swir22] (names or 1-based)",
    )


class VectorizeOptions(StrictModel):
    """Options of the ``vectorize`` stage (see :func:`geoseg.vectorize.vectorize`)."""

    min_area: float | str | None = Field(
        default=None, description="sieve: pixels as a number, or '500m2', '0.5ha'"
    )
    simplify: float | None = Field(default=None, ge=0, description="tolerance in CRS units")


class ChangeOptions(StrictModel):
    """Options of the ``change`` stage (see :func:`geoseg.change.change`)."""

    from_classes: tuple[int, ...] = Field(min_length=1, description="class ids lost (e.g. forest)")
    to_classes: tuple[int, ...] | None = None
    min_area: float | str | None = Field(
        default=None, description="smallest change patch: pixels, or '500m2', '0.5ha'"
    )
    vector: bool = Field(default=True, description="also write the change polygons")
    mask_values: tuple[int, ...] | None = Field(
        default=None, description="cloud-mask values meaning not observed (default: nonzero)"
    )


class DatePair(StrictModel):
    """Two class rasters of the same place at two dates."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    before: Path
    after: Path
    before_mask: Path | None = Field(
        default=None, description="cloud mask of the before date: nonzero = not observed"
    )
    after_mask: Path | None = Field(default=None, description="cloud mask of the after date")

    @field_validator("before", "after", "before_mask", "after_mask", mode="before")
    @classmethod
    def _paths(cls, v: str | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _norm(_resolve(v, info))


class Workflow(StrictModel):
    """A batch workflow: inputs, model, AOIs, output folder and stages.

    Attributes:
        name: a short name, used in the summary titles.
        output: the output folder (created); the manifest and summary go here.
        model: ``default`` (the model shipped with geoseg) or the path of a model bundle.
        scenes: scenes to classify (paths; globs are expanded, sorted). Without the
            ``predict`` stage they are taken as class rasters already.
        pairs: date pairs of class rasters for the ``change`` stage.
        aoi: a vector file of areas of interest (per-AOI loss for ``change``).
        aoi_name_column: the AOI attribute that names each area.
        stages: what to run per scene (``predict``, ``vectorize``, ``areas``) or per pair
            (``change``).
        predict: options of the predict stage.
        vectorize: options of the vectorize stage.
        change: options of the change stage (required with ``change``).
        cloud_mask: mask clouds and shadows in the ``predict`` stage (nodata in the class
            maps, mask COGs beside them); pairs take per-date masks instead
            (``before_mask``/``after_mask``).
    """

    name: str = Field(default="workflow", min_length=1)
    output: Path
    model: str = "default"
    scenes: tuple[Path, ...] = ()
    pairs: tuple[DatePair, ...] = ()
    aoi: Path | None = None
    aoi_name_column: str = "name"
    stages: tuple[Stage, ...] = Field(min_length=1)
    predict: PredictOptions = PredictOptions()
    vectorize: VectorizeOptions = VectorizeOptions()
    change: ChangeOptions | None = Field(default=None, validate_default=True)
    cloud_mask: CloudMaskOptions | None = None

    @field_validator("output", "aoi", mode="before")
    @classmethod
    def _path(cls, v: str | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _norm(_resolve(v, info))

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v: str, info: ValidationInfo) -> str:
        if not isinstance(v, str | os.PathLike):
            raise ValueError("give 'default' or the path of a model bundle (.pt)")
        return "default" if str(v) == "default" else str(_norm(_resolve(v, info)))

    @field_validator("scenes", mode="before")
    @classmethod
    def _scenes(cls, v: object, info: ValidationInfo) -> tuple[Path, ...]:
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list | tuple):
            raise ValueError("give a list of scene paths or globs")
        out: list[Path] = []
        for item in items:
            if not isinstance(item, str | os.PathLike):
                raise ValueError(f"{item!r} is not a path; give a path or a glob")
            p = _resolve(item, info)
            if glob.has_magic(str(p)):
                found = sorted(glob.glob(str(p), recursive=True))
                if not found:
                    raise ValueError(f"{item!r} matches no file; check the pattern")
                out.extend(_norm(Path(f)) for f in found)
            else:
                out.append(_norm(p))
        seen: set[Path] = set()
        return tuple(p for p in out if not (p in seen or seen.add(p)))  # type: ignore[func-returns-value]

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: tuple[Stage, ...], info: ValidationInfo) -> tuple[Stage, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"stages are repeated in {list(v)}; list each once")
        scenes = info.data.get("scenes") or ()
        pairs = info.data.get("pairs") or ()
        if "change" in v:
            if set(v) != {"change"}:
                raise ValueError("'change' runs on date pairs alone; use stages: [change]")
            if not pairs:
                raise ValueError("the change stage needs 'pairs' (before/after class rasters)")
            if scenes:
                raise ValueError("give 'pairs' for the change stage, not 'scenes'")
        else:
            if not scenes:
                raise ValueError(f"stages {list(v)} need 'scenes' (paths or globs)")
            if pairs:
                raise ValueError("'pairs' are used by the change stage only; add stages: [change]")
        order = [s for s in ("predict", "vectorize", "areas", "change") if s in v]
        return tuple(order)  # type: ignore[arg-type]

    @field_validator("change")
    @classmethod
    def _change(cls, v: ChangeOptions | None, info: ValidationInfo) -> ChangeOptions | None:
        if v is None and "change" in (info.data.get("stages") or ()):
            raise ValueError("the change stage needs options: change: {from_classes: [1]}")
        return v

    @field_validator("cloud_mask", mode="before")
    @classmethod
    def _cloud_mask_short(cls, v: object) -> object:
        if v is True:
            return {}
        if v is False:
            return None
        return {"model": v} if isinstance(v, str) else v

    @field_validator("cloud_mask")
    @classmethod
    def _cloud_mask(
        cls, v: CloudMaskOptions | None, info: ValidationInfo
    ) -> CloudMaskOptions | None:
        if v is not None and "predict" not in (info.data.get("stages") or ()):
            raise ValueError(
                "cloud_mask runs in the predict stage; for change pairs give each pair "
                "before_mask/after_mask instead"
            )
        return v

    @field_validator("cloud_mask", mode="after")
    @classmethod
    def _cloud_mask_bands(
        cls, v: CloudMaskOptions | None, info: ValidationInfo
    ) -> CloudMaskOptions | None:
        opts = info.data.get("predict")
        if v is not None and opts is not None and opts.row_bands:
            raise ValueError("cloud_mask is not available with predict.row_bands; drop one of them")
        return v

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: tuple[DatePair, ...]) -> tuple[DatePair, ...]:
        names = [p.name for p in v if p.name]
        if len(set(names)) != len(names):
            raise ValueError(f"pair names must be unique, got {names}")
        return v

    @model_validator(mode="after")
    def _aoi_needs_change(self) -> Workflow:
        if self.aoi is not None and "change" not in self.stages:
            raise ValueError(
                "'aoi' is used by the change stage only (per-AOI loss and gain) and would be "
                "ignored here; remove it, or clip the scenes to the AOI before the run"
            )
        return self

    @property
    def model_path(self) -> Path:
        """The model bundle file (``default`` is the one shipped with geoseg)."""
        return resolve_model(self.model)


def resolve_model(model: str) -> Path:
    """The path of a model: ``default`` is ``geoseg/assets/default_model.pt``."""
    return DEFAULT_MODEL if model == "default" else Path(model)


def load_workflow(path: str | os.PathLike[str]) -> Workflow:
    """Read and validate a workflow YAML file; errors name the file, line and key."""
    return load_yaml(path, Workflow)

"""The one contract geoseg checks before any work, whatever the model's source.

A :class:`ModelContract` says what a model takes (bands by name and order, with their STAC
``eo`` common names; data type; pixel size; raw values or reflectance 0..1; normalisation)
and what it gives (classes, logits or probabilities), and how to feed it (chip size,
overlap, input size multiple). Every model source (:mod:`geoseg.runtime.sources`) turns its
file into one. :func:`check_scene` checks a scene against it and binds the scene's
reflectance scaling; :meth:`ModelContract.prepare` is then the whole chip transform:
``DN * scale + offset`` -> normalisation -> nodata to 0.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geoseg.bundle import Normalization
from geoseg.classes import ClassMap
from geoseg.errors import BandMismatchError
from geoseg.grid import Grid

__all__ = [
    "REFLECTANCE_PRESETS",
    "RESOLUTION_RTOL",
    "ModelContract",
    "SceneFit",
    "Source",
    "check_contract",
    "check_scene",
    "fits_bands",
    "resolve_bands",
    "resolve_scaling",
]

PathLike = str | os.PathLike[str]
Source = Literal["bundle", "geoseg-onnx", "deepness-onnx", "csmask"]
Output = Literal["logits", "probabilities"]
InputKind = Literal["raw", "reflectance"]

#: Relative tolerance of the resolution check.
RESOLUTION_RTOL = 0.01

#: Named DN -> reflectance conversions (``reflectance = DN * scale + offset``) for ``--reflectance``.
REFLECTANCE_PRESETS: dict[str, tuple[float, float, str]] = {
    "s2": (
        1e-4,
        -0.1,
        "Sentinel-2 L1C/L2A, processing baseline 04.00+ (2022-01-25 on): (DN - 1000) / 10000",
    ),
    "s2-pre04": (1e-4, 0.0, "Sentinel-2 L1C/L2A before baseline 04.00: DN / 10000"),
    "landsat-c2-l2": (2.75e-5, -0.2, "Landsat Collection 2 Level-2 surface reflectance"),
    "landsat-c2-l1": (
        2e-5,
        -0.1,
        "Landsat Collection 2 Level-1 TOA reflectance (no sun-angle correction)",
    ),
    "none": (1.0, 0.0, "the bands already hold reflectance 0..1"),
}

#: Common names of Sentinel-2 band names (as in band descriptions: B02 or B2, B8A...).
SENTINEL2_COMMON_NAMES: dict[str, str] = {
    "b01": "coastal",
    "b02": "blue",
    "b03": "green",
    "b04": "red",
    "b05": "rededge071",
    "b06": "rededge075",
    "b07": "rededge078",
    "b08": "nir",
    "b8a": "nir08",
    "b09": "nir09",
    "b10": "cirrus",
    "b11": "swir16",
    "b12": "swir22",
}


@dataclass(frozen=True)
class ModelContract:
    """What a model takes and gives; see the module docstring.

    Attributes:
        name: how the user named the model (registered name or file name).
        source: where it came from: a geoseg bundle, ``geoseg export`` ONNX, an ONNX with
            Deepness metadata, or a ukis-csmask model.
        bands: the model's band names, in input order.
        common_names: STAC ``eo`` common names of those bands (``blue``, ``nir``,
            ``swir16``...) where known, else ``None``; scene bands are matched by them too.
        classes: output classes, in output-channel order.
        normalization: ``(x - offset) / scale`` applied after reflectance scaling.
        dtype: the band data type the model was trained on; ``None`` accepts any numeric type.
        resolution: pixel size ``(x, y)`` the model expects, ``None`` for any.
        input: ``raw`` (band values as stored) or ``reflectance`` (0..1; the scene's
            DN -> reflectance scaling is bound by :func:`check_scene`).
        reflectance_scale: per-band DN -> reflectance scale, ``None`` = feed raw values.
        reflectance_offset: per-band DN -> reflectance offset (with ``reflectance_scale``).
        chip_size: chip size to predict with.
        overlap: chip overlap to predict with.
        multiple: input height and width must be a multiple of this (chips are padded).
        input_size: a fixed input height = width, when the model has one (chips are padded
            to it and ``chip_size`` cannot exceed it).
        output: what the network returns: ``logits`` (softmax applied) or ``probabilities``.
        description: one line on what the model is for.
        path: the model file, when there is one.
        extra: source-specific values (e.g. architecture) for provenance and listings.
    """

    name: str
    source: Source
    bands: tuple[str, ...]
    classes: ClassMap
    normalization: Normalization
    common_names: tuple[str | None, ...] = ()
    dtype: str | None = None
    resolution: tuple[float, float] | None = None
    input: InputKind = "raw"
    reflectance_scale: tuple[float, ...] | None = None
    reflectance_offset: tuple[float, ...] | None = None
    chip_size: int = 256
    overlap: int = 64
    multiple: int = 32
    input_size: int | None = None
    output: Output = "logits"
    description: str = ""
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.common_names:
            object.__setattr__(self, "common_names", (None,) * len(self.bands))
        if len(self.common_names) != len(self.bands):
            raise ValueError("common_names must give one entry per band")

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of input bands."""
        return len(self.bands)

    def replace(self, **changes: Any) -> ModelContract:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def prepare(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The model input of raw chips ``(n, bands, h, w)`` with validity ``(n, h, w)``.

        ``DN * scale + offset`` (when a reflectance scaling is bound), the normalisation,
        then 0 where not valid; float32, not padded.
        """
        if self.reflectance_scale is not None:
            sc = np.asarray(self.reflectance_scale, dtype=np.float32).reshape(1, -1, 1, 1)
            off = np.asarray(
                self.reflectance_offset or (0.0,) * len(sc.ravel()), dtype=np.float32
            ).reshape(1, -1, 1, 1)
            x = x.astype(np.float32) * sc + off
        x = self.normalization.apply(x)
        return np.where(valid[:, np.newaxis], x, np.float32(0.0)).astype(np.float32, copy=False)

    def pad_target(self, h: int, w: int) -> tuple[int, int]:
        """Input height and width for a chip of ``h`` x ``w``: the fixed size or the next multiple."""
        if self.input_size:
            return max(h, self.input_size), max(w, self.input_size)
        m = max(1, self.multiple)
        return h + (-h) % m, w + (-w) % m

    def summary(self) -> str:
        """A few lines for ``geoseg models``."""
        bands = ", ".join(
            b if c in (None, b) else f"{b} ({c})"
            for b, c in zip(self.bands, self.common_names, strict=True)
        )
        res = f"{self.resolution[0]:g} x {self.resolution[1]:g}" if self.resolution else "any"
        classes = ", ".join(f"{c.id} {c.name}" for c in self.classes)
        takes = "reflectance 0..1" if self.input == "reflectance" else (self.dtype or "any type")
        size = f"{self.chip_size}" + (
            f" (fixed input {self.input_size})" if self.input_size else ""
        )
        return "\n".join(
            [
                f"{self.name}  [{self.source}]"
                + (f"  {self.description}" if self.description else ""),
                f"  bands:      {bands}",
                f"  input:      {takes}, pixel size {res}",
                f"  classes:    {classes}",
                f"  chip:       {size}, overlap {self.overlap}",
            ]
            + ([f"  file:       {self.path}"] if self.path else [])
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for ``geoseg models --json``)."""
        return {
            "name": self.name,
            "source": self.source,
            "path": self.path,
            "bands": list(self.bands),
            "common_names": list(self.common_names),
            "dtype": self.dtype,
            "resolution": list(self.resolution) if self.resolution else None,
            "input": self.input,
            "normalization": self.normalization.to_dict(),
            "classes": self.classes.to_records(),
            "chip_size": self.chip_size,
            "overlap": self.overlap,
            "multiple": self.multiple,
            "input_size": self.input_size,
            "output": self.output,
            "description": self.description,
        }


# ---- bands ------------------------------------------------------------------------------------
def _key(name: str | None) -> str:
    return (name or "").strip().lower()


def _looks_sentinel2(names: Sequence[str]) -> bool:
    """Band names that can only be Sentinel-2's: B8A, B12 or zero-padded (B02); never Landsat's."""
    return any(n in ("b8a", "b12") or (len(n) == 3 and n.startswith("b0")) for n in names)


def _common_names_of(descriptions: Sequence[str | None]) -> list[str]:
    """The common name each scene band description stands for (``B02`` -> ``blue``), else itself.

    Sentinel-2 band names are translated only when the scene is recognisably Sentinel-2
    (:func:`_looks_sentinel2`): ``B2`` is blue in Sentinel-2 and Landsat 8 but green in
    Landsat 5/7, so a bare ``B2`` alone is never guessed.
    """
    names = [_key(d) for d in descriptions]
    if not _looks_sentinel2(names):
        return names
    out = []
    for key in names:
        s2 = "b0" + key[1] if key.startswith("b") and len(key) == 2 and key[1].isdigit() else key
        out.append(SENTINEL2_COMMON_NAMES.get(s2, key))
    return out


def resolve_bands(
    *,
    descriptions: Sequence[str | None],
    model_bands: Sequence[str],
    bands: Sequence[str | int] | None = None,
    path: PathLike = "scene",
    common_names: Sequence[str | None] | None = None,
) -> tuple[int, ...]:
    """1-based band indexes of the scene to feed the model, in the model's band order.

    ``bands`` (from ``--bands``) maps the model's bands to scene bands by name (band
    description, case-insensitive) or 1-based index, one per model band. Without it, bands
    are matched by description when the scene has descriptions for all model bands (by the
    model's band names, else by their ``common_names``: a description ``blue``, or a
    Sentinel-2 name ``B02``, matches common name ``blue``), else by position when the counts
    agree.

    Raises:
        BandMismatchError: counts or names do not fit; the message names both sides.
    """
    count = len(descriptions)
    names = [_key(d) for d in descriptions]
    model = list(model_bands)
    shown = ", ".join(d or "-" for d in descriptions)
    if bands is not None:
        return _explicit_bands(bands, names, model, count, shown, path)
    found = _match(names, model)
    if any(names) and all(i is not None for i in found):
        return tuple(i for i in found if i is not None)
    if common_names and any(common_names):
        by_common = _match(_common_names_of(descriptions), list(common_names))
        if any(names) and all(i is not None for i in by_common):
            return tuple(i for i in by_common if i is not None)
    if any(names) and count == len(model) and any(i is not None for i in found):
        missing = [m for m, i in zip(model, found, strict=True) if i is None]
        raise BandMismatchError(
            f"{path}: band(s) {', '.join(missing)} expected by the model are not among the "
            f"scene's bands ({shown}); map them with --bands"
        )
    if count != len(model):
        fix = (
            "select them with --bands"
            if count > len(model)
            else "use a scene with all of them or a model trained on these bands"
        )
        raise BandMismatchError(
            f"{path}: has {count} band(s) ({shown}) but the model expects {len(model)} "
            f"({', '.join(model)}); {fix}"
        )
    return tuple(range(1, count + 1))


def _match(names: Sequence[str], wanted: Sequence[str | None]) -> list[int | None]:
    return [names.index(_key(w)) + 1 if w and _key(w) in names else None for w in wanted]


def _explicit_bands(
    bands: Sequence[str | int],
    names: Sequence[str],
    model: Sequence[str],
    count: int,
    shown: str,
    path: PathLike,
) -> tuple[int, ...]:
    if len(bands) != len(model):
        raise BandMismatchError(
            f"--bands gives {len(bands)} band(s) but the model expects {len(model)} "
            f"({', '.join(model)}); give one scene band per model band, in that order"
        )
    out: list[int] = []
    for b in bands:
        if isinstance(b, int) or str(b).strip().isdigit():
            idx: int | None = int(b)
        else:
            idx = names.index(_key(str(b))) + 1 if _key(str(b)) in names else None
        if idx is None or not 1 <= idx <= count:
            raise BandMismatchError(
                f"--bands {b!r} is not a band of {path} (bands 1..{count}: {shown}); "
                "use a band name or index"
            )
        out.append(idx)
    repeated = sorted({i for i in out if out.count(i) > 1})
    if repeated:
        raise BandMismatchError(
            f"--bands {','.join(str(b) for b in bands)} uses scene band(s) "
            f"{', '.join(map(str, repeated))} more than once; give each model band "
            f"({', '.join(model)}) its own scene band"
        )
    return tuple(out)


def fits_bands(contract: ModelContract, descriptions: Sequence[str | None]) -> bool:
    """Whether a scene with these band descriptions can feed ``contract`` without ``--bands``."""
    try:
        resolve_bands(
            descriptions=descriptions,
            model_bands=contract.bands,
            common_names=contract.common_names,
        )
    except BandMismatchError:
        return False
    return True


# ---- reflectance ------------------------------------------------------------------------------
def resolve_scaling(
    dataset: Any,
    indexes: Sequence[int],
    contract: ModelContract,
    *,
    scale: float | Sequence[float] | None = None,
    offset: float | Sequence[float] | None = None,
    reflectance: str | None = None,
    path: PathLike = "scene",
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The per-band DN -> reflectance ``(scale, offset)`` to feed ``contract``, or ``None``.

    For a model that takes reflectance, in this order: ``reflectance`` (a preset name of
    :data:`REFLECTANCE_PRESETS`) or ``scale``/``offset`` as given; the scene's GDAL band
    scales/offsets when any is set; the Sentinel-2 preset of the scene's
    ``PROCESSING_BASELINE`` tag (:func:`sentinel2_baseline`); nothing for floating-point bands
    (taken to hold reflectance already). Integer bands without any of these are refused: a guess between
    DN/10000 and (DN-1000)/10000 is what makes cloud masks wrong. A model that takes raw
    values refuses a scaling.

    Raises:
        BandMismatchError: unknown preset, a scaling for a raw-value model, or integer
            bands with no known scaling for a reflectance model.
    """
    n = len(indexes)
    given = _given_scaling(n, scale=scale, offset=offset, reflectance=reflectance)
    if contract.input != "reflectance":
        if given is not None:
            raise BandMismatchError(
                f"{contract.path or contract.name} takes the raw band values it was trained on, "
                "not reflectance; "
                "drop --reflectance/--scale/--offset"
            )
        return None
    if given is not None:
        return given
    scales = tuple(float(dataset.scales[i - 1]) for i in indexes)
    offsets = tuple(float(dataset.offsets[i - 1]) for i in indexes)
    if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
        return scales, offsets
    baseline = sentinel2_baseline(dataset)
    if baseline is not None:
        preset = REFLECTANCE_PRESETS["s2" if baseline >= 4.0 else "s2-pre04"]
        return (preset[0],) * n, (preset[1],) * n
    dtypes = {np.dtype(dataset.dtypes[i - 1]) for i in indexes}
    if all(d.kind == "f" for d in dtypes):
        return None
    raise BandMismatchError(
        f"{path}: bands are {', '.join(sorted(map(str, dtypes)))} without a scale/offset to "
        f"reflectance, but {contract.name} takes reflectance 0..1; pass --reflectance s2 "
        "(Sentinel-2 baseline 04.00+: (DN-1000)/10000), s2-pre04 (DN/10000), landsat-c2-l2 or "
        "landsat-c2-l1, or --scale/--offset (docs/models.md)"
    )


def sentinel2_baseline(dataset: Any) -> float | None:
    """The Sentinel-2 processing baseline in the scene's metadata (``PROCESSING_BASELINE``), if any.

    GDAL's SENTINEL2 driver reports it for SAFE products; for a GeoTIFF stack, set it with
    ``gdal_edit.py -mo PROCESSING_BASELINE=04.00 stack.tif``.
    """
    try:
        tags = dataset.tags()
    except Exception:  # a dataset without metadata domains (e.g. a WarpedVRT in some GDALs)
        return None
    value = tags.get("PROCESSING_BASELINE")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _given_scaling(
    n: int,
    *,
    scale: float | Sequence[float] | None,
    offset: float | Sequence[float] | None,
    reflectance: str | None,
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if reflectance is not None:
        if scale is not None or offset is not None:
            raise BandMismatchError("give --reflectance or --scale/--offset, not both")
        preset = REFLECTANCE_PRESETS.get(reflectance.strip().lower())
        if preset is None:
            raise BandMismatchError(
                f"--reflectance {reflectance!r} is unknown; use one of "
                f"{', '.join(REFLECTANCE_PRESETS)} or --scale/--offset"
            )
        return (preset[0],) * n, (preset[1],) * n
    if scale is None and offset is None:
        return None
    return _per_band(scale, 1.0, n, "--scale"), _per_band(offset, 0.0, n, "--offset")


def _per_band(
    value: float | Sequence[float] | None, default: float, n: int, what: str
) -> tuple[float, ...]:
    if value is None:
        return (default,) * n
    if isinstance(value, int | float):
        return (float(value),) * n
    vals = tuple(float(v) for v in value)
    if len(vals) == 1:
        return vals * n
    if len(vals) != n:
        raise BandMismatchError(
            f"{what} gives {len(vals)} values for {n} model band(s); give one, or one per band"
        )
    return vals


# ---- the scene check --------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneFit:
    """A scene checked against a contract: the band indexes and the bound contract."""

    indexes: tuple[int, ...]
    contract: ModelContract
    resample_to: tuple[float, float] | None = None


def check_scene(
    dataset: Any,
    contract: ModelContract,
    *,
    bands: Sequence[str | int] | None = None,
    resample: bool = False,
    scale: float | Sequence[float] | None = None,
    offset: float | Sequence[float] | None = None,
    reflectance: str | None = None,
    path: PathLike = "scene",
) -> SceneFit:
    """Check a scene against ``contract`` before any work and bind its reflectance scaling.

    Checks the grid, the band count and order (:func:`resolve_bands`), the data type of the
    selected bands, the pixel size (unless ``resample``: then ``resample_to`` is the model's
    pixel size where it differs) and the DN -> reflectance scaling (:func:`resolve_scaling`).
    """
    from geoseg.io.raster import check_grid

    grid = Grid.from_dataset(dataset)
    check_grid(grid, path)
    problems: list[str] = []
    indexes: tuple[int, ...] = ()
    try:
        indexes = resolve_bands(
            descriptions=list(dataset.descriptions),
            model_bands=contract.bands,
            bands=bands,
            path=path,
            common_names=contract.common_names,
        )
    except BandMismatchError as exc:
        problems.append(str(exc))
    dtype_problem = _dtype_problem(dataset, indexes or range(1, dataset.count + 1), contract, path)
    problems += [f"{path}: {dtype_problem}"] if dtype_problem else []
    resample_to = None
    if contract.resolution:
        want = (float(contract.resolution[0]), float(contract.resolution[1]))
        same = all(
            math.isclose(a, b, rel_tol=RESOLUTION_RTOL)
            for a, b in zip(grid.resolution, want, strict=True)
        )
        if not same and not resample:
            problems.append(_pixel_size_message(grid, want, path))
        resample_to = None if same else want
    if len(problems) == 1:
        raise BandMismatchError(problems[0])
    if problems:
        listed = "; ".join(
            f"({i}) {m.removeprefix(f'{path}: ')}" for i, m in enumerate(problems, 1)
        )
        raise BandMismatchError(f"{path}: {len(problems)} problems for this model: {listed}")
    scaling = resolve_scaling(
        dataset,
        indexes,
        contract,
        scale=scale,
        offset=offset,
        reflectance=reflectance,
        path=path,
    )
    bound = contract
    if scaling is not None:
        bound = contract.replace(reflectance_scale=scaling[0], reflectance_offset=scaling[1])
    return SceneFit(indexes, bound, resample_to)


def _pixel_size_message(grid: Grid, want: tuple[float, float], path: PathLike) -> str:
    """The refusal of a scene whose pixel size is not the model's, with the fix that works."""
    shown = f"{want[0]:g} x {want[1]:g}"
    if grid.crs is not None and grid.crs.is_geographic:
        from geoseg.io.scene import describe_crs, utm_crs

        utm = utm_crs(grid)
        if utm is None:
            return (
                f"{path}: is geographic (degrees) and polar but the model expects {shown} m "
                f"pixels; warp it first: gdalwarp -t_srs {'EPSG:3413' if grid.bounds[3] > 0 else 'EPSG:3031'} "
                f"-tr {want[0]:g} {want[1]:g} "
                f"-r bilinear {path} {Path(str(path)).stem}_polar.tif"
            )
        return (
            f"{path}: is geographic ({grid.crs.to_string()}, degrees) but the model expects "
            f"{shown} m pixels; pass --resample to warp it on the fly to {describe_crs(utm)} "
            f"at {want[0]:g} m"
        )
    return (
        f"{path}: pixel size is {grid.resolution[0]:g} x {grid.resolution[1]:g} but the "
        f"model expects {shown}; pass --resample to warp on the fly"
    )


#: numpy dtype names -> GDAL data type names (``gdal_translate -ot``)
GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def _dtype_problem(
    dataset: Any, indexes: Sequence[int], contract: ModelContract, path: PathLike
) -> str | None:
    """What is wrong with the data type of the bands, with a conversion that keeps the values."""
    dtypes = sorted({dataset.dtypes[i - 1] for i in indexes})
    want = contract.dtype
    if not want or all(d == want for d in dtypes):
        return None
    gdal_type = GDAL_TYPES.get(want, want)
    src = Path(path)
    dst = f"{src.stem}_{want}{src.suffix or '.tif'}"
    if all(np.can_cast(d, want, "safe") for d in dtypes):
        command = f"`gdal_translate -ot {gdal_type} {src} {dst}`"
    else:  # narrower: values must be stretched, a plain cast would clip or wrap them
        info = np.iinfo(want) if np.dtype(want).kind in "iu" else None
        lo, hi = (info.min, info.max) if info is not None else (0, 1)
        command = (
            f"`gdal_translate -ot {gdal_type} -scale LOW HIGH {lo} {hi} {src} {dst}` with LOW "
            "HIGH the value range the model's training data was stretched from"
        )
    return (
        f"bands are {', '.join(dtypes)} but the model was trained on {want}; convert the "
        f"scene as its training data was made, e.g. {command}, or use a model trained on "
        f"{'/'.join(dtypes)}"
    )


def check_contract(
    dataset: Any,
    model: ModelContract | Any,
    *,
    bands: Sequence[str | int] | None = None,
    resample: bool = False,
    path: PathLike = "scene",
) -> tuple[int, ...]:
    """:func:`check_scene` for a contract or a :class:`~geoseg.bundle.ModelBundle`; the band indexes."""
    if not isinstance(model, ModelContract):
        from geoseg.runtime.sources import contract_from_bundle

        model = contract_from_bundle(model, name="model")
    return check_scene(dataset, model, bands=bands, resample=resample, path=path).indexes

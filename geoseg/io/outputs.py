"""The outputs of a run, checked all together before any work starts.

Every command that writes files lists them here first, each with its sidecars (a class
raster's ``.qml`` and ``.aux.xml``, a non-GeoPackage vector's ``.qml``), and
:func:`check_outputs` refuses, before anything is read or written:

* an output that exists (any of its files) without ``overwrite``, or an unwritable place;
* an output that is one of the run's inputs (same path after resolving links, or the same
  file): ``--overwrite`` never replaces an input;
* two outputs that would write the same file. QGIS loads the style ``NAME.qml`` beside
  ``NAME.tif`` and ``NAME.geojson`` alike, so ``--out X.tif --vector X.geojson`` would give
  both one style file: refused, with the fix (another name, or a ``.gpkg`` vector, which keeps
  its style inside). Each output keeps the one style name QGIS opens it with.

:class:`PredictOutputs` is the set of ``geoseg predict`` (class COG, probabilities,
confidence, vector, cloud mask).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import GeosegError, OutputWriteError

__all__ = [
    "PredictOutputs",
    "check_outputs",
    "check_predict_outputs",
    "class_raster_files",
    "vector_files",
]

PathLike = str | os.PathLike[str]


def class_raster_files(path: PathLike) -> list[Path]:
    """The files of a class COG written by :class:`geoseg.io.cog.CogWriter`: tif, qml, aux."""
    from geoseg.io.cog import sidecar_paths

    sides = sidecar_paths(path)
    return [Path(path), sides["qml"], sides["aux"]]


def vector_files(path: PathLike, fmt: str | None = None) -> list[Path]:
    """The files of :func:`geoseg.io.vector.write_vector`: the layer (+ ``.qml`` unless gpkg).

    Raises:
        ConfigError: no known vector format.
    """
    from geoseg.io.vector import vector_format, vector_outputs

    return vector_outputs(path, vector_format(path, fmt))


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_outputs(
    outputs: Mapping[str, Sequence[Path]],
    *,
    inputs: Mapping[str, PathLike | None],
    overwrite: bool,
) -> None:
    """Refuse the outputs of a run before any work; nothing is created.

    Args:
        outputs: per output, named as the user gave it (e.g. ``"--vector out/x.geojson"``),
            every file it writes (main file first, then its sidecars).
        inputs: the run's input files by role (``"scene"``, ``"model"``, ``"AOI"``...); ``None``
            for inputs not given (and model names that are no file).
        overwrite: existing outputs may be replaced (never an input).

    Raises:
        OutputWriteError: an output is an input, two outputs share a file, or the folder is
            not writable; OutputExistsError: an output exists without ``overwrite``.
    """
    from geoseg.io.atomic import check_output

    owner: dict[Path, str] = {}
    for name, files in outputs.items():
        for f in files:
            for role, given in inputs.items():
                if given is not None and _same(f, Path(given)):
                    raise OutputWriteError(
                        f"{f}: is the {role} of this run; an output never replaces an input, "
                        f"even with --overwrite; choose another name for {name.split()[0]}"
                    )
            key = Path(os.path.abspath(f))
            if key in owner and owner[key] != name:
                raise OutputWriteError(
                    f"{f}: would be written by both {owner[key]} and {name}; give them "
                    "different names (a .gpkg vector keeps its style inside)"
                )
            owner[key] = name
    for files in outputs.values():
        for f in files:
            check_output(f, overwrite=overwrite)


@dataclass(frozen=True)
class PredictOutputs:
    """The files ``geoseg predict`` writes (checked by :func:`check_predict_outputs`)."""

    out: Path
    probabilities: Path | None
    confidence: Path | None
    vector: PathLike | None

    @property
    def rasters(self) -> list[str]:
        """The rasters written (class COG, probabilities, confidence)."""
        return [str(self.out)] + [str(p) for p in {self.probabilities, self.confidence} if p]


def model_file(model: object) -> PathLike | None:
    """``model`` when it is a file (an input no output may be), else ``None``.

    A bundle object or a registry name is no file an output could overwrite.
    """
    return model if isinstance(model, str | os.PathLike) and Path(model).is_file() else None


def check_predict_outputs(
    out: PathLike,
    *,
    probabilities: PathLike | None,
    confidence: bool,
    vector: PathLike | None,
    cloud_mask_out: PathLike | None = None,
    inputs: Mapping[str, PathLike | None],
    overwrite: bool,
) -> PredictOutputs:
    """Every output of a prediction, refused together (:func:`check_outputs`) before any work.

    Raises:
        OutputExistsError, OutputWriteError, ConfigError: see :func:`check_outputs`.
        GeosegError: ``vector`` without :mod:`geoseg.vectorize` installed.
    """
    out_p = Path(out)
    proba_p = Path(probabilities) if probabilities else None
    conf_p: Path | None = None
    if confidence:
        conf_p = proba_p or out_p.with_name(out_p.stem + "_confidence.tif")
    planned: dict[str, list[Path]] = {f"--out {out_p}": class_raster_files(out_p)}
    if proba_p is not None:
        planned[f"--probabilities {proba_p}"] = [proba_p]
    if conf_p is not None and conf_p != proba_p:
        planned[f"--confidence {conf_p}"] = [conf_p]
    if cloud_mask_out is not None:
        planned[f"--cloud-mask-out {cloud_mask_out}"] = class_raster_files(cloud_mask_out)
    if vector is not None:
        planned[f"--vector {vector}"] = vector_files(vector)
        if importlib.util.find_spec("geoseg.vectorize") is None:
            raise GeosegError("--vector needs geoseg.vectorize, which this install lacks")
    check_outputs(planned, inputs=inputs, overwrite=overwrite)
    return PredictOutputs(out_p, proba_p, conf_p, vector)

"""Model sources: a file or a registered name -> one :class:`ModelContract` + an engine.

=================  =================================================  ==============
source             what                                               engine
=================  =================================================  ==============
``bundle``         a ``.pt`` bundle from ``geoseg train``              TorchEngine
``geoseg-onnx``    ``.onnx`` from ``geoseg export`` (``geoseg`` prop)  OrtEngine
``deepness-onnx``  ``.onnx`` with Deepness metadata (``class_names``)  OrtEngine
``csmask``         a ukis-csmask cloud/shadow U-Net (registered name)  OrtEngine
=================  =================================================  ==============

Registered names (:func:`registry`, ``geoseg models``): ``default`` (the model shipped in the
package) and, when the ``clouds`` extra (``pip install geoseg[clouds]``) is installed,
``csmask-{4b,6b}-{l1c,l2a}``. Every model available offline; nothing is downloaded.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.bundle import Normalization
from geoseg.classes import ClassInfo, ClassMap
from geoseg.errors import ClassMapError, InputFileNotFoundError, ModelBundleError
from geoseg.runtime.contract import ModelContract, fits_bands

if TYPE_CHECKING:
    from geoseg.bundle import ModelBundle
    from geoseg.runtime.engines import Engine, Precision

__all__ = [
    "CSMASK_CLASSES",
    "CSMASK_MODELS",
    "DEFAULT_MODEL",
    "LoadedModel",
    "contract_from_bundle",
    "contract_of",
    "csmask_available",
    "default_model_path",
    "list_models",
    "load",
    "make_engine",
    "models_fitting",
    "open_model",
    "registry",
]

PathLike = str | os.PathLike[str]
DEFAULT_MODEL = "default"
CLOUDS_EXTRA = "pip install geoseg[clouds]"
#: Registered ukis-csmask models: name -> (file stem, description).
CSMASK_MODELS: dict[str, tuple[str, str]] = {
    "csmask-4b-l1c": ("model_4b_l1c", "clouds/shadows, Sentinel-2 & Landsat L1C (TOA), 4 bands"),
    "csmask-4b-l2a": ("model_4b_l2a", "clouds/shadows, Sentinel-2 & Landsat L2A (BOA), 4 bands"),
    "csmask-6b-l1c": ("model_6b_l1c", "clouds/shadows, Sentinel-2 & Landsat L1C (TOA), 6 bands"),
    "csmask-6b-l2a": ("model_6b_l2a", "clouds/shadows, Sentinel-2 & Landsat L2A (BOA), 6 bands"),
}
#: ukis-csmask's output classes (its ``_csm``: 0 background, 1 clouds, 2 cloud shadows).
CSMASK_CLASSES = ClassMap(
    (
        ClassInfo(0, "clear", (118, 168, 96)),
        ClassInfo(1, "cloud", (240, 240, 240)),
        ClassInfo(2, "shadow", (70, 70, 90)),
    )
)
#: Pixel size of the csmask models (they were trained on ~30 m bands).
CSMASK_RESOLUTION = (30.0, 30.0)
CSMASK_OVERLAP = 64
#: Deepness model properties geoseg reads (and ``geoseg export`` writes).
DEEPNESS_KEYS = ("model_type", "class_names", "names", "resolution", "tiles_size", "tile_size")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: its contract, its engine and, for bundles, the bundle."""

    contract: ModelContract
    engine: Engine
    bundle: ModelBundle | None = None


# ---- registry -----------------------------------------------------------------------------------
def default_model_path() -> Path:
    """Path of the default model shipped inside the package (``geoseg/assets/default_model.pt``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "default_model.pt"


def csmask_dir() -> Path | None:
    """The installed ukis-csmask package folder (model files), or ``None`` without the extra."""
    spec = importlib.util.find_spec("ukis_csmask")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def csmask_available() -> bool:
    """Whether the ``clouds`` extra (ukis-csmask) is installed."""
    return csmask_dir() is not None


def registry() -> dict[str, str]:
    """Registered model names available offline -> one-line description."""
    names = {DEFAULT_MODEL: "the model shipped with geoseg (see docs/model-card.md)"}
    if csmask_available():
        names.update({k: v[1] for k, v in CSMASK_MODELS.items()})
    return names


# ---- bundle -------------------------------------------------------------------------------------
def contract_from_bundle(
    bundle: ModelBundle, *, name: str, path: PathLike | None = None
) -> ModelContract:
    """The contract of a geoseg bundle (raw band values, its dtype, resolution, classes)."""
    return ModelContract(
        name=name,
        source="bundle",
        bands=tuple(bundle.bands),
        classes=bundle.classes,
        normalization=bundle.normalization,
        dtype=bundle.dtype or None,
        resolution=tuple(bundle.resolution) if bundle.resolution else None,  # type: ignore[arg-type]
        chip_size=int(bundle.chip_size),
        overlap=int(bundle.overlap),
        multiple=32,
        output="logits",
        description=bundle.description,
        path=str(path) if path is not None else None,
        extra={"arch": bundle.arch, "encoder": bundle.encoder},
    )


#: Bundles read by this process, most recent last: ``(path, size, mtime) -> bundle``.
_BUNDLES: OrderedDict[tuple[str, int, int], ModelBundle] = OrderedDict()
#: Bundles kept per process (a Dask worker predicting scene after scene reads its model once).
BUNDLE_CACHE_SIZE = 2
_BUNDLE_LOCK = threading.Lock()
_BUNDLE_READS = [0]
#: Torch engines of the cached bundles: ``(bundle key, device, threads) -> engine`` (building
#: the network costs 0.2-0.4 s, a tenth of a small scene).
_ENGINES: dict[tuple[Any, str, int | None, str], Engine] = {}


def bundle_reads() -> int:
    """How many bundle files this process has read (the rest came from the cache)."""
    return _BUNDLE_READS[0]


def _load_bundle(path: Path | None, name: str) -> ModelBundle:
    """The bundle at ``path`` (``None``: the default model), read once per process.

    Kept in a small LRU keyed by path, size and mtime, so a rewritten file is read again.
    """
    from geoseg.bundle import ModelBundle

    if path is None:  # the default model
        path = default_model_path()
        if not path.exists():
            raise ModelBundleError(
                f"no default model installed ({path} is missing); pass --model MODEL.pt"
            )
    try:
        st = path.stat()
    except OSError:
        return ModelBundle.load(path)  # let the loader say what is wrong
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _BUNDLE_LOCK:
        if key in _BUNDLES:
            _BUNDLES.move_to_end(key)
            return _BUNDLES[key]
        bundle = ModelBundle.load(path)
        _BUNDLE_READS[0] += 1
        _BUNDLES[key] = bundle
        while len(_BUNDLES) > BUNDLE_CACHE_SIZE:
            _BUNDLES.popitem(last=False)
        return bundle


# ---- ONNX ---------------------------------------------------------------------------------------
def _onnx_header(path: Path) -> tuple[dict[str, str], list[int | str], int | None]:
    """ONNX metadata properties, the input shape and the output channel count (no weights run)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelBundleError(
            f"{path}: not an ONNX model (cannot be parsed: {exc.__class__.__name__}); give an "
            "ONNX file, a bundle from `geoseg train`, or a name from `geoseg models`"
        ) from exc
    if not proto.graph.node:
        raise ModelBundleError(f"{path}: not an ONNX model (no graph); give a real .onnx file")
    props = {p.key: p.value for p in proto.metadata_props}
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelBundleError(
            f"{path}: the ONNX model has {len(inputs)} inputs; geoseg runs models with one "
            "image input (N, bands, H, W)"
        )
    shape: list[int | str] = [
        d.dim_value or d.dim_param for d in inputs[0].type.tensor_type.shape.dim
    ]
    out_dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    out_channels = out_dims[1] if len(out_dims) == 4 and out_dims[1] else None
    if len(shape) != 4:
        raise ModelBundleError(
            f"{path}: the ONNX input has shape {shape}; geoseg runs (N, bands, H, W) image models"
        )
    return props, shape, out_channels


def _geoseg_onnx_contract(path: Path, props: dict[str, str], name: str) -> ModelContract:
    try:
        meta = json.loads(props["geoseg"])
        norm = meta.get("normalization") or json.loads(props.get("normalization", "null"))
        if not norm:
            raise ModelBundleError(
                f"{path}: the geoseg metadata has no normalisation statistics; re-export the "
                "bundle with `geoseg export MODEL.pt --onnx OUT.onnx`"
            )
        res = meta.get("resolution")
        return ModelContract(
            name=name,
            source="geoseg-onnx",
            bands=tuple(meta["bands"]),
            classes=ClassMap.from_records(meta["classes"], source=str(path)),
            normalization=Normalization.from_dict(norm),
            dtype=meta.get("dtype") or None,
            resolution=(float(res[0]), float(res[1])) if res else None,
            chip_size=int(meta.get("chip_size", 256)),
            overlap=int(meta.get("overlap", 64)),
            multiple=32,
            output="probabilities" if props.get("output") == "probabilities" else "logits",
            description=str(meta.get("description", "")),
            path=str(path),
            extra={
                "arch": meta.get("arch"),
                "encoder": meta.get("encoder"),
                "quantization": props.get("quantization"),
            },
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelBundleError | ClassMapError):
            raise
        raise ModelBundleError(
            f"{path}: the geoseg metadata is incomplete ({exc.__class__.__name__}: {exc}); "
            "re-export with `geoseg export`"
        ) from exc


def _json_or_literal(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text)  # Deepness accepts Python dict literals (int keys)


def _deepness_classes(props: dict[str, str], n_out: int | None, path: Path) -> ClassMap:
    raw = props.get("class_names", props.get("names"))
    if raw is None:
        if not n_out:
            raise ModelBundleError(
                f"{path}: the Deepness metadata has no class_names and the output channel count "
                "is not fixed; add class_names (docs/models.md)"
            )
        names = {i: f"class_{i}" for i in range(max(2, n_out))}
    else:
        value = _json_or_literal(raw)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            value = value[0]  # one dict per output; geoseg reads the first output
        if not isinstance(value, dict):
            raise ModelBundleError(
                f"{path}: Deepness class_names must be a dict {{id: name}}, got {raw[:60]!r}"
            )
        names = {int(k): str(v) for k, v in value.items()}
    if sorted(names) != list(range(len(names))):
        raise ModelBundleError(
            f"{path}: Deepness class_names ids must be 0..n-1 without gaps, got {sorted(names)}"
        )
    return ClassMap.from_records([{"id": k, "name": names[k]} for k in sorted(names)])


def _deepness_contract(
    path: Path, props: dict[str, str], shape: list[int | str], n_out: int | None, name: str
) -> ModelContract:
    try:
        kind = str(_json_or_literal(props.get("model_type", '"Segmentor"'))).capitalize()
        if kind != "Segmentor":
            raise ModelBundleError(
                f"{path}: Deepness model_type is {kind}; geoseg runs segmentation models only"
            )
        bands_n = shape[1]
        if not isinstance(bands_n, int) or bands_n <= 0:
            raise ModelBundleError(
                f"{path}: the ONNX input has no fixed band count ({shape}); export it with a fixed "
                "channel dimension"
            )
        fixed = shape[2] if isinstance(shape[2], int) and shape[2] == shape[3] else None
        size_prop = props.get("tiles_size", props.get("tile_size"))
        size = int(_json_or_literal(size_prop)) if size_prop else (fixed or 256)
        overlap_pct = float(_json_or_literal(props.get("tiles_overlap", "15")))
        res_cm = props.get("resolution")
        res_m = float(_json_or_literal(res_cm)) / 100.0 if res_cm else None
        mean = [float(v) for v in _json_or_literal(props.get("standardization_mean", "[]"))]
        std = [float(v) for v in _json_or_literal(props.get("standardization_std", "[]"))]
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ModelBundleError(
            f"{path}: Deepness metadata cannot be read ({exc.__class__.__name__}: {exc}); fix the "
            "model properties (docs/models.md)"
        ) from exc
    if not mean or not std:  # Deepness' default: values / 255, no standardisation
        mean, std = [0.0] * bands_n, [1.0] * bands_n
    if len(mean) != bands_n or len(std) != bands_n:
        mean, std = _broadcast_stats(mean, std, bands_n, path)
    # Deepness feeds (x / 255 - mean) / std, i.e. (x - 255 mean) / (255 std) on raw values.
    norm = Normalization("meanstd", tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std))
    return ModelContract(
        name=name,
        source="deepness-onnx",
        bands=tuple(f"band{i + 1}" for i in range(bands_n)),
        classes=_deepness_classes(props, n_out, path),
        normalization=norm,
        dtype=None,
        resolution=(res_m, res_m) if res_m else None,
        chip_size=size,
        overlap=round(size * overlap_pct / 100.0),
        multiple=32,
        input_size=fixed,
        output="probabilities",
        description=f"Deepness model {path.name}",
        path=str(path),
    )


def _check_io(c: ModelContract, shape: list[int | str], n_out: int | None) -> ModelContract:
    """The metadata must describe the graph: input bands and output classes where fixed."""
    if isinstance(shape[1], int) and shape[1] != c.in_channels:
        raise ModelBundleError(
            f"{c.path}: the metadata names {c.in_channels} band(s) but the graph takes "
            f"{shape[1]}; fix the metadata or re-export the model"
        )
    if n_out is not None and n_out != c.num_classes and not (n_out == 1 and c.num_classes == 2):
        raise ModelBundleError(
            f"{c.path}: the metadata names {c.num_classes} class(es) but the graph outputs "
            f"{n_out} channel(s); fix class_names or re-export the model"
        )
    return c


def _broadcast_stats(
    mean: list[float], std: list[float], n: int, path: Path
) -> tuple[list[float], list[float]]:
    if len(mean) == 1 and len(std) == 1:
        return mean * n, std * n
    raise ModelBundleError(
        f"{path}: standardization_mean/std give {len(mean)}/{len(std)} values for {n} input "
        "bands; give one per band"
    )


def _onnx_contract(path: Path, name: str) -> ModelContract:
    props, shape, n_out = _onnx_header(path)
    if "geoseg" in props:
        return _check_io(_geoseg_onnx_contract(path, props, name), shape, n_out)
    if any(k in props for k in DEEPNESS_KEYS):
        return _check_io(_deepness_contract(path, props, shape, n_out, name), shape, n_out)
    raise ModelBundleError(
        f"{path}: the ONNX model has no geoseg or Deepness metadata (bands, classes, "
        "normalisation); export it with `geoseg export`, or add Deepness properties "
        "(class_names, standardization_mean/std, resolution: docs/models.md)"
    )


# ---- csmask -------------------------------------------------------------------------------------
def _csmask_files(name: str) -> tuple[Path, Path]:
    folder = csmask_dir()
    if folder is None:
        raise ModelBundleError(
            f"{name}: the cloud/shadow models need the ukis-csmask package; {CLOUDS_EXTRA}"
        )
    stem = CSMASK_MODELS[name][0]
    return folder / f"{stem}.onnx", folder / f"{stem}.json"


def _csmask_contract(name: str) -> ModelContract:
    onnx_path, json_path = _csmask_files(name)
    try:
        data = json.loads(json_path.read_text())["data"]
        stats = data["dataset_statistics"]
        mean, std = stats["img"][0], stats["img"][1]
        band_names = tuple(str(b).lower() for b in stats["band_names"])
        size = int(data["target_size"][0])
    except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelBundleError(
            f"{json_path}: the csmask statistics cannot be read ({exc.__class__.__name__}: {exc}); "
            "reinstall ukis-csmask (pip install --force-reinstall ukis-csmask)"
        ) from exc
    if len(mean) != len(band_names) or len(std) != len(band_names):
        raise ModelBundleError(
            f"{json_path}: {len(mean)} means / {len(std)} stds for {len(band_names)} bands; "
            "reinstall ukis-csmask"
        )
    return ModelContract(
        name=name,
        source="csmask",
        bands=band_names,
        common_names=band_names,
        classes=CSMASK_CLASSES,
        normalization=Normalization("meanstd", tuple(map(float, mean)), tuple(map(float, std))),
        dtype=None,
        resolution=CSMASK_RESOLUTION,
        input="reflectance",
        chip_size=size,
        overlap=CSMASK_OVERLAP,
        multiple=32,
        input_size=size,
        output="logits",
        description=CSMASK_MODELS[name][1] + ", reflectance 0..1 at ~30 m (ukis-csmask)",
        path=str(onnx_path),
    )


# ---- entry points -------------------------------------------------------------------------------
def _resolve_path(model: PathLike) -> Path:
    p = Path(model)
    if not p.exists():
        raise InputFileNotFoundError(
            f"{model}: no such model file or name; give a .pt bundle, an .onnx file or a name "
            f"listed by `geoseg models` ({', '.join(registry())})"
        )
    if p.is_dir():
        raise ModelBundleError(f"{model}: is a folder; give a .pt bundle or an .onnx file")
    return p


def _is_onnx(path: Path) -> bool:
    if path.suffix.lower() in (".onnx", ".pt", ".pth"):
        return path.suffix.lower() == ".onnx"
    with path.open("rb") as f:
        head = f.read(4)
    return not head.startswith(b"PK") and not head.startswith(b"\x80")  # zip / pickle = torch


def open_model(model: PathLike | ModelBundle | None) -> tuple[ModelContract, ModelBundle | None]:
    """The contract of ``model`` and, for a bundle, the bundle (read once); no engine yet.

    ``predict`` checks the scene against the contract before it builds the engine
    (:func:`make_engine`), so a scene that does not fit costs no network build.
    """
    from geoseg.bundle import ModelBundle

    if isinstance(model, ModelBundle):
        return contract_from_bundle(model, name=f"{model.arch}/{model.encoder}"), model
    if model is None or str(model) == DEFAULT_MODEL:
        bundle = _load_bundle(None, DEFAULT_MODEL)
        return contract_from_bundle(bundle, name=DEFAULT_MODEL, path=default_model_path()), bundle
    if str(model) in CSMASK_MODELS:
        return _csmask_contract(str(model)), None
    path = _resolve_path(model)
    if _is_onnx(path):
        return _onnx_contract(path, path.name), None
    bundle = _load_bundle(path, path.name)
    return contract_from_bundle(bundle, name=path.name, path=path), bundle


def contract_of(model: PathLike | ModelBundle | None) -> ModelContract:
    """The contract of a model without building its engine (for listings and checks)."""
    return open_model(model)[0]


def load(
    model: PathLike | ModelBundle | None,
    *,
    device: str | Any | None = None,
    threads: int | None = None,
) -> LoadedModel:
    """A model ready to run, its source chosen from what ``model`` is.

    Args:
        model: a :class:`~geoseg.bundle.ModelBundle`; ``None`` or ``"default"`` (the shipped
            model); a registered name (:func:`registry`); a ``.pt`` bundle or an ``.onnx``
            file (geoseg or Deepness metadata).
        device: ``cuda``/``cpu`` (default: CUDA when present, else CPU).
        threads: CPU threads for inference (default: the engine's choice).

    Raises:
        ModelBundleError: not a model, ONNX without usable metadata, missing statistics, or
            the ``clouds`` extra missing for a csmask name.
        InputFileNotFoundError: no such file and no such name.
    """
    contract, bundle = open_model(model)
    return LoadedModel(
        contract, make_engine(contract, bundle, device=device, threads=threads), bundle
    )


def make_engine(
    contract: ModelContract,
    bundle: ModelBundle | None = None,
    *,
    device: str | Any | None = None,
    threads: int | None = None,
    precision: Precision = "auto",
) -> Engine:
    """The engine of a model opened by :func:`open_model`: torch for a bundle, else ONNX Runtime.

    ``precision`` is the torch engine's autocast (ONNX models run as exported).
    """
    from geoseg.runtime.engines import OrtEngine, TorchEngine

    if bundle is not None:
        with _BUNDLE_LOCK:
            key = next((k for k, b in _BUNDLES.items() if b is bundle), None)
            ekey = (key, str(device), threads, precision)
            if key is not None and ekey in _ENGINES:
                return _ENGINES[ekey]
        engine = TorchEngine.from_bundle(
            bundle, device=device, threads=threads, precision=precision
        )
        if key is not None:  # a bundle of the process cache: keep its network too
            with _BUNDLE_LOCK:
                for k in [k for k in _ENGINES if k[0] not in _BUNDLES]:
                    del _ENGINES[k]
                _ENGINES[ekey] = engine
        return engine
    return OrtEngine(
        contract.path or "",
        output=contract.output,
        threads=threads,
        device=None if device is None else str(device),
    )


def list_models(paths: Sequence[PathLike] = ()) -> list[ModelContract]:
    """The contracts of every registered model and of ``paths`` (for ``geoseg models``).

    A registered model that cannot be read (e.g. the default model file removed) is left
    out; a path that cannot be read is an error.
    """
    out = []
    for name in registry():
        try:
            out.append(contract_of(name))
        except ModelBundleError:
            continue
    return out + [contract_of(p) for p in paths]


def models_fitting(descriptions: Sequence[str | None], *, exclude: str | None = None) -> list[str]:
    """Registered models whose bands a scene with these band descriptions can feed."""
    out = []
    for name in registry():
        if name == exclude:
            continue
        try:
            contract = contract_of(name)
        except ModelBundleError:
            continue
        if fits_bands(contract, descriptions):
            out.append(name)
    return out

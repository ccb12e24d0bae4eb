"""Model bundles: one file with everything ``geoseg predict`` needs.

A bundle holds the weights and the contract of a model: architecture and encoder, the bands
it expects (names, order, dtype, resolution), per-band normalisation, the classes (ids, names,
colours), the ignore value, the chip size and overlap to predict with, the training config,
final metrics and the geoseg version that wrote it. It is saved with ``torch.save`` as plain
tensors and JSON-like values, and loaded with ``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.errors import InputFileNotFoundError, ModelBundleError, first_line

if TYPE_CHECKING:  # torch is imported where weights are used, so contracts load without it
    import torch
    from torch import nn

__all__ = ["BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "ModelBundle", "Normalization"]

BUNDLE_FORMAT = "geoseg-model-bundle"
BUNDLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Normalization:
    """Per-band normalisation ``(x - offset) / scale`` applied to raw band values.

    ``method`` is ``"meanstd"`` (offset = mean, scale = std) or ``"percentile"`` (offset = low
    percentile, scale = high - low). Nodata pixels are set to 0 after normalisation.
    """

    method: str
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise a ``(bands, h, w)`` or ``(n, bands, h, w)`` array to float32."""
        off = np.asarray(self.offset, dtype=np.float32)
        sc = np.asarray(self.scale, dtype=np.float32)
        shape = (-1, 1, 1) if x.ndim == 3 else (1, -1, 1, 1)
        sc = np.where(sc > 0, sc, 1.0).astype(np.float32)
        return (x.astype(np.float32) - off.reshape(shape)) / sc.reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary."""
        return {"method": self.method, "offset": list(self.offset), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        return cls(
            method=str(d["method"]),
            offset=tuple(map(float, d["offset"])),
            scale=tuple(map(float, d["scale"])),
        )


@dataclass(frozen=True)
class ModelBundle:
    """A trained model and its contract. ``state_dict`` holds the weights (CPU tensors)."""

    arch: str
    encoder: str
    bands: tuple[str, ...]
    classes: ClassMap
    normalization: Normalization
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    dtype: str = "float32"
    resolution: tuple[float, float] | None = None
    ignore_index: int = IGNORE_INDEX
    chip_size: int = 256
    overlap: int = 64
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    description: str = ""
    pixel_head: bool = False

    @property
    def in_channels(self) -> int:
        """Number of input bands."""
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model with its weights loaded, in eval mode on ``device``.

        The network is built on the meta device and given copies of the bundle's tensors, so
        no time goes into a random initialisation that the weights overwrite (0.1-0.5 s).
        """
        import torch

        from geoseg.models import build_model

        with torch.device("meta"):
            model = build_model(
                self.arch,
                self.encoder,
                in_channels=self.in_channels,
                num_classes=self.num_classes,
                pixel_head=self.pixel_head,
            )
        want = model.state_dict()
        weights = {
            k: v.to(device=device, dtype=want[k].dtype if k in want else v.dtype, copy=True)
            for k, v in self.state_dict.items()
        }
        try:
            model.load_state_dict(weights, assign=True)
        except RuntimeError as exc:
            raise ModelBundleError(
                f"bundle weights do not fit {self.arch}/{self.encoder}: {first_line(exc)}"
            ) from exc
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise ModelBundleError(
                f"bundle weights do not fit {self.arch}/{self.encoder}: no values for "
                f"{', '.join(left[:3])}"
            )
        return model.eval()  # every tensor was copied to ``device`` above

    def metadata(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-friendly values."""
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "arch": self.arch,
            "encoder": self.encoder,
            "bands": list(self.bands),
            "classes": self.classes.to_records(),
            "normalization": self.normalization.to_dict(),
            "dtype": self.dtype,
            "resolution": list(self.resolution) if self.resolution else None,
            "ignore_index": self.ignore_index,
            "chip_size": self.chip_size,
            "overlap": self.overlap,
            "config": self.config,
            "metrics": self.metrics,
            "version": self.version,
            "description": self.description,
            "pixel_head": self.pixel_head,
        }

    def replace(self, **changes: Any) -> ModelBundle:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the bundle atomically to ``path``."""
        import torch

        from geoseg import __version__
        from geoseg.io.atomic import atomic_outputs

        meta = self.metadata()
        meta["version"] = self.version or __version__
        payload = {
            "metadata": meta,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
        }
        with atomic_outputs([path], overwrite=overwrite) as (tmp,):
            torch.save(payload, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelBundle:
        """Read a bundle; a file that is not one, or is from a newer geoseg, is a clear error."""
        import torch

        p = Path(path)
        if not p.exists():
            raise InputFileNotFoundError(
                f"{p}: no such model file; check the path or train one with `geoseg train`"
            )
        try:
            payload = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelBundleError(
                f"{p}: not a geoseg model bundle (cannot be read: {exc.__class__.__name__}); "
                "give a file written by `geoseg train`"
            ) from exc
        meta = payload.get("metadata") if isinstance(payload, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
            raise ModelBundleError(
                f"{p}: not a geoseg model bundle; give a file written by `geoseg train`"
            )
        fv = int(meta.get("format_version", 0))
        if fv > BUNDLE_FORMAT_VERSION:
            raise ModelBundleError(
                f"{p}: bundle format {fv} was written by a newer geoseg ({meta.get('version')}); "
                f"this geoseg reads format <= {BUNDLE_FORMAT_VERSION}: upgrade geoseg"
            )
        try:
            return cls(
                arch=meta["arch"],
                encoder=meta["encoder"],
                bands=tuple(meta["bands"]),
                classes=ClassMap.from_records(meta["classes"], source=str(p)),
                normalization=Normalization.from_dict(meta["normalization"]),
                state_dict=payload["state_dict"],
                dtype=meta.get("dtype", "float32"),
                resolution=tuple(meta["resolution"]) if meta.get("resolution") else None,
                ignore_index=int(meta.get("ignore_index", IGNORE_INDEX)),
                chip_size=int(meta.get("chip_size", 256)),
                overlap=int(meta.get("overlap", 64)),
                config=dict(meta.get("config") or {}),
                metrics=dict(meta.get("metrics") or {}),
                version=str(meta.get("version", "")),
                description=str(meta.get("description", "")),
                pixel_head=bool(meta.get("pixel_head", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelBundleError(
                f"{p}: bundle metadata is incomplete ({exc}); re-export it with `geoseg train`"
            ) from exc

    @classmethod
    def random_init(
        cls,
        *,
        arch: str = "unet",
        encoder: str = "resnet18",
        bands: tuple[str, ...],
        classes: ClassMap,
        normalization: Normalization | None = None,
        seed: int = 0,
        **kw: Any,
    ) -> ModelBundle:
        """An untrained bundle (for tests and benchmarks): deterministic for a seed."""
        import torch

        from geoseg.models import build_model

        torch.manual_seed(seed)
        model = build_model(
            arch,
            encoder,
            in_channels=len(bands),
            num_classes=len(classes),
            pixel_head=bool(kw.get("pixel_head", False)),
        )
        norm = normalization or Normalization("meanstd", (0.0,) * len(bands), (1.0,) * len(bands))
        return cls(
            arch=arch,
            encoder=encoder,
            bands=tuple(bands),
            classes=classes,
            normalization=norm,
            state_dict=model.state_dict(),
            **kw,
        )

"""Inference engines: a normalised, padded batch in, class probabilities out.

An :class:`Engine` is called with float32 ``(n, bands, h, w)`` (normalised as the contract
says, nodata 0, already padded to the contract's input size) and returns float32 class
*probabilities* ``(n, classes, h, w)``. :class:`TorchEngine` runs a torch module (geoseg
bundles); :class:`OrtEngine` runs an ONNX file with ONNX Runtime (``geoseg export`` output,
Deepness models, ukis-csmask). Padding and cropping are the caller's
(:func:`geoseg.predict.infer_batch`); engines only run the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from geoseg.errors import ConfigError, first_line

if TYPE_CHECKING:
    import torch

    from geoseg.bundle import ModelBundle

__all__ = ["Engine", "OrtEngine", "TorchEngine", "inference_model", "pick_device", "softmax"]

Output = Literal["logits", "probabilities"]


class Engine(Protocol):
    """A model runner: ``engine(x)`` -> class probabilities; ``device`` names where it runs."""

    device: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes, h, w)`` float32 of a normalised batch ``(n, bands, h, w)``."""
        ...


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax of float32 ``x`` along ``axis``."""
    z = x - x.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def _as_probabilities(y: np.ndarray, output: Output) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.shape[1] == 1:  # one-channel binary model: foreground probability or logit
        p = 1.0 / (1.0 + np.exp(-y)) if output == "logits" else np.clip(y, 0.0, 1.0)
        return np.concatenate([1.0 - p, p], axis=1).astype(np.float32)
    return softmax(y) if output == "logits" else y


def pick_device(device: str | Any | None) -> torch.device:
    """``device`` or, when ``None``, CUDA when present else CPU (a :class:`torch.device`)."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {device!r}: {first_line(exc)}; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: no CUDA GPU is usable here (torch.cuda.is_available() is "
            "False); use --device cpu, or leave --device out to pick the GPU when there is one"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {device}: there are {torch.cuda.device_count()} CUDA device(s); "
            f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def inference_model(bundle: ModelBundle, device: torch.device) -> torch.nn.Module:
    """The bundle's network for inference: eval mode, channels-last (NHWC) memory layout.

    Channels-last convolutions are about 25 % faster on CPU (oneDNN; measured on the U-Net /
    ResNet-18 with 512 px chips) and are the layout GPU tensor cores want.
    """
    import torch

    return bundle.build(device).to(memory_format=torch.channels_last)


class TorchEngine:
    """Runs a torch module returning logits: channels-last, inference mode, CUDA float16 autocast.

    Args:
        net: the network (eval mode).
        device: where it runs.
        output: what ``net`` returns.
        threads: torch CPU threads while a batch runs (default: torch's).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        device: torch.device,
        *,
        output: Output = "logits",
        threads: int | None = None,
    ) -> None:
        self.net = net
        self._device = device
        self.device = str(device)
        self.output = output
        self.threads = threads

    @classmethod
    def from_bundle(
        cls, bundle: ModelBundle, *, device: str | Any | None = None, threads: int | None = None
    ) -> TorchEngine:
        """The engine of a bundle's network on ``device`` (default: CUDA when present)."""
        dev = pick_device(device)
        return cls(inference_model(bundle, dev), dev, threads=threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of a normalised, padded batch."""
        import torch

        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            with torch.inference_mode():
                t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._device)
                t = t.contiguous(memory_format=torch.channels_last)  # see inference_model
                if self._device.type == "cuda":
                    with torch.autocast("cuda", dtype=torch.float16):
                        y = self.net(t)
                else:
                    y = self.net(t)
                y = y.float()
                if self.output == "logits" and y.shape[1] > 1:
                    return torch.softmax(y, dim=1).contiguous().cpu().numpy()
                return _as_probabilities(y.cpu().numpy(), self.output)
        finally:
            if self.threads:
                torch.set_num_threads(old)


def ort_providers(device: str | None) -> list[str]:
    """ONNX Runtime providers for ``device``: CUDA when asked for (or, by default, available)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    want_cuda = device is None or str(device).startswith("cuda")
    if want_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtEngine:
    """Runs an ONNX file with ONNX Runtime (one input, first output).

    Args:
        path: the ``.onnx`` file.
        output: what the graph returns (``logits`` get a softmax).
        threads: intra-op CPU threads (default: ONNX Runtime's choice).
        device: ``cuda``/``cpu``; default CUDA when ONNX Runtime has it, else CPU.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        output: Output = "logits",
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or 0)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(path), sess_options=so, providers=ort_providers(device)
        )
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        #: a fixed batch size of the graph (many exported models have 1), else ``None``
        self.batch = first.shape[0] if isinstance(first.shape[0], int) else None
        self.output = output
        used = self.session.get_providers()[0]
        self.device = "cuda" if used == "CUDAExecutionProvider" else "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of a normalised, padded batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.batch or len(x)
        parts = []
        for i in range(0, len(x), step):
            part = x[i : i + step]
            if len(part) < step:  # a fixed batch size: fill the last batch, drop the fill
                fill = np.zeros((step - len(part), *part.shape[1:]), dtype=np.float32)
                y = self.session.run(None, {self.input_name: np.concatenate([part, fill])})[0]
                parts.append(y[: len(part)])
            else:
                parts.append(self.session.run(None, {self.input_name: part})[0])
        y = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return _as_probabilities(y, self.output)

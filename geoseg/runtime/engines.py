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

__all__ = [
    "PRECISIONS",
    "Engine",
    "OrtEngine",
    "Precision",
    "TorchEngine",
    "autocast_dtype",
    "default_threads",
    "inference_model",
    "pick_device",
    "softmax",
]

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


#: Autocast of :class:`TorchEngine`: ``auto`` is float16 on CUDA and float32 on CPU.
Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


def autocast_dtype(precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device_type`` (``None``: plain float32)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use {' | '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device_type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def default_threads(threads: int | None) -> int:
    """CPU threads for an engine: ``threads``, else the CPUs this process may use.

    That is :func:`geoseg.pipeline.cpu_count` (affinity and cgroup quota), at most torch's own
    setting (so ``torch.set_num_threads`` still limits it).
    """
    if threads:
        return int(threads)
    import torch

    from geoseg.pipeline import cpu_count

    return max(1, min(torch.get_num_threads(), cpu_count()))


class TorchEngine:
    """Runs a torch module returning logits: channels-last, inference mode, optional autocast.

    On CUDA the batch goes through a reused pinned (page-locked) host buffer and a
    non-blocking copy, and the network runs under float16 autocast by default.

    Args:
        net: the network (eval mode).
        device: where it runs.
        output: what ``net`` returns.
        threads: torch CPU threads while a batch runs (default :func:`default_threads`).
        precision: autocast (:data:`Precision`; :func:`autocast_dtype`).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        device: torch.device,
        *,
        output: Output = "logits",
        threads: int | None = None,
        precision: Precision = "auto",
    ) -> None:
        self.net = net
        self._device = device
        self.device = str(device)
        self.output = output
        self.threads = default_threads(threads) if device.type == "cpu" else threads
        self.precision = precision
        self.autocast = autocast_dtype(precision, device.type)
        self._pinned: torch.Tensor | None = None

    @classmethod
    def from_bundle(
        cls,
        bundle: ModelBundle,
        *,
        device: str | Any | None = None,
        threads: int | None = None,
        precision: Precision = "auto",
    ) -> TorchEngine:
        """The engine of a bundle's network on ``device`` (default: CUDA when present)."""
        dev = pick_device(device)
        return cls(inference_model(bundle, dev), dev, threads=threads, precision=precision)

    @property
    def uses_pinned_memory(self) -> bool:
        """Whether batches are staged in pinned host memory (CUDA only)."""
        return self._device.type == "cuda"

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        import torch

        src = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not self.uses_pinned_memory:
            return src
        if self._pinned is None or self._pinned.shape != src.shape:
            self._pinned = torch.empty(src.shape, dtype=torch.float32, pin_memory=True)
        # The previous call synchronised on its result, so its copy out of the buffer is done.
        self._pinned.copy_(src)
        return self._pinned.to(self._device, non_blocking=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of a normalised, padded batch."""
        import torch

        old = torch.get_num_threads()
        if self.threads and self.threads != old:
            torch.set_num_threads(int(self.threads))
        try:
            with torch.inference_mode():
                t = self._to_device(x).contiguous(memory_format=torch.channels_last)
                if self.autocast is not None:
                    with torch.autocast(self._device.type, dtype=self.autocast):
                        y = self.net(t)
                else:
                    y = self.net(t)
                y = y.float()
                if self.output == "logits" and y.shape[1] > 1:
                    return torch.softmax(y, dim=1).contiguous().cpu().numpy()
                return _as_probabilities(y.cpu().numpy(), self.output)
        finally:
            if self.threads and self.threads != old:
                torch.set_num_threads(old)

    def suggest_batch_size(self, chip: tuple[int, int, int]) -> int:
        """Chips per batch for ``chip`` ``(bands, h, w)``.

        On CUDA, measured to fill half the free memory
        (:func:`geoseg.pipeline.default_batch_size`); on CPU, :func:`~geoseg.pipeline.default_batch_size`.
        """
        from geoseg.pipeline import default_batch_size

        if self._device.type != "cuda":
            return default_batch_size(chip[1] * chip[2])
        return default_batch_size(  # pragma: no cover - needs CUDA
            chip[1] * chip[2], per_chip_bytes=self._bytes_per_chip(chip)
        )

    def _bytes_per_chip(self, chip: tuple[int, int, int]) -> int:  # pragma: no cover - CUDA
        """Peak device memory of one chip's forward pass (two chips minus one)."""
        import torch

        peaks = []
        for n in (1, 2):
            torch.cuda.synchronize(self._device)
            torch.cuda.reset_peak_memory_stats(self._device)
            base = torch.cuda.memory_allocated(self._device)
            self(np.zeros((n, *chip), dtype=np.float32))
            torch.cuda.synchronize(self._device)
            peaks.append(torch.cuda.max_memory_allocated(self._device) - base)
        return max(1, peaks[1] - peaks[0], peaks[0] // 2)


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
        threads: intra-op CPU threads (default: the CPUs this process may use,
            :func:`geoseg.pipeline.cpu_count`).
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
        from geoseg.pipeline import cpu_count

        so.intra_op_num_threads = int(threads or cpu_count())
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

    def suggest_batch_size(self, chip: tuple[int, int, int]) -> int:
        """Chips per batch: a multiple of the graph's fixed batch, else :func:`~geoseg.pipeline.default_batch_size`."""
        from geoseg.pipeline import default_batch_size

        n = default_batch_size(chip[1] * chip[2])
        return self.batch * max(1, n // self.batch) if self.batch else n

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

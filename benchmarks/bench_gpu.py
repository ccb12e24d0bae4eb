"""GPU path of ``geoseg predict``: how busy the card is, and predict / model-only time.

.venv/bin/python benchmarks/bench_gpu.py [--n 8192] [--size 512 --overlap 64] [--precision auto fp32]

Needs CUDA; without it, prints ``{"skipped": ...}`` and exits 0 (never run in CI). Scene:
aber-s2 B2 B3 B4 B8 mirrored to N x N (tiled DEFLATE GeoTIFF); model: U-Net/ResNet-18
(random init; ``--model`` for a trained bundle). For each ``--precision``, in one run:

* ``predict_s``: ``geoseg.predict.predict`` on CUDA with its automatic batch size (half the
  free device memory, measured) and pinned, non-blocking host->device copies;
* ``model_only_s``: the same engine over the same number of chips of the same shape, data
  already prepared in host memory (what the card needs if the reader, blend and writer were
  free): ``predict_s / model_only_s`` is what the pipeline costs around the model;
* ``gpu_busy_pct``: mean GPU utilisation sampled every 50 ms during predict (NVML through
  ``pynvml`` or ``torch.cuda.utilization``; ``null`` when neither is available).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_predict as bp


def _utilization() -> object | None:
    """A zero-argument function returning GPU busy %, or ``None`` without NVML."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
    except Exception:
        try:
            torch.cuda.utilization()
            return torch.cuda.utilization
        except Exception:
            return None


class Sampler(threading.Thread):
    """Samples GPU busy % every ``period`` seconds until stopped."""

    def __init__(self, read: object, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.read, self.period, self.values = read, period, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.values.append(float(self.read()))  # type: ignore[operator]
            time.sleep(self.period)


def model_only(engine: object, n_chips: int, batch: int, chip: tuple[int, int, int]) -> float:
    x = np.random.default_rng(0).normal(size=(batch, *chip)).astype(np.float32)
    engine(x)  # type: ignore[operator]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for k in range(0, n_chips, batch):
        engine(x[: min(batch, n_chips - k)])  # type: ignore[operator]
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--precision", nargs="+", default=["auto", "fp32"])
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device: the GPU benchmark needs one"}))
        return
    bp._need_data()
    from geoseg.predict import predict
    from geoseg.runtime.engines import TorchEngine

    read = _utilization()
    out: dict = {"device": torch.cuda.get_device_name(), "n": args.n, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as t:
        scene = bp.mirror_scene(args.n, Path(t) / "scene.tif")
        with rasterio.open(scene) as ds:
            b = bp._bundle(args.model, tuple(ds.descriptions))
        for precision in args.precision:
            predict(scene, out=f"{t}/warm.tif", model=b, size=args.size, overwrite=True,
                    overlap=args.overlap, device="cuda", precision=precision)  # fmt: skip
            sampler = Sampler(read) if read is not None else None
            if sampler:
                sampler.start()
            r = predict(scene, out=f"{t}/o.tif", model=b, size=args.size, overwrite=True,
                        overlap=args.overlap, device="cuda", precision=precision)  # fmt: skip
            if sampler:
                sampler.stop.set()
                sampler.join()
            engine = TorchEngine.from_bundle(b, device="cuda", precision=precision)  # type: ignore[arg-type]
            chips = r.windows - r.windows_skipped
            mo = model_only(engine, chips, r.batch_size, (b.in_channels, args.size, args.size))
            out["runs"][precision] = {
                "batch_size": r.batch_size,
                "chips": chips,
                "predict_s": round(r.seconds["total"], 3),
                "model_only_s": round(mo, 3),
                "predict_over_model_only": round(r.seconds["total"] / mo, 3),
                "gpu_busy_pct": round(float(np.mean(sampler.values)), 1)
                if sampler and sampler.values
                else None,
                "stages": r.to_dict()["seconds"],
                "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            }
            print(json.dumps({precision: out["runs"][precision]}), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Engines: torch and ONNX Runtime give the same class probabilities for the same network."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from geoseg.runtime.engines import OrtEngine, TorchEngine, softmax

torch.set_num_threads(1)


def _net(out_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, out_channels, 1)
    ).eval()


def _onnx(net: nn.Module, path: Path, *, batch: int | None = None) -> Path:
    axes = None if batch else {"x": {0: "n", 2: "s", 3: "s"}, "y": {0: "n", 2: "s", 3: "s"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(batch or 1, 4, 32, 32),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return path


def test_torch_and_ort_agree_and_sum_to_one(tmp_path: Path) -> None:
    net = _net()
    x = np.random.default_rng(0).normal(size=(3, 4, 32, 64)).astype(np.float32)
    pt = TorchEngine(net, torch.device("cpu"), threads=1)(x)
    ox = OrtEngine(_onnx(net, tmp_path / "n.onnx"), output="logits", threads=1)(x)
    assert pt.shape == ox.shape == (3, 3, 32, 64) and pt.dtype == ox.dtype == np.float32
    np.testing.assert_allclose(pt, ox, atol=1e-5)
    np.testing.assert_allclose(pt.sum(axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(pt, ref, atol=1e-6)


def test_fixed_batch_graph_runs_any_batch(tmp_path: Path) -> None:
    net = _net()
    eng = OrtEngine(_onnx(net, tmp_path / "b1.onnx", batch=1), output="logits")
    assert eng.batch == 1
    x = np.random.default_rng(1).normal(size=(3, 4, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(eng(x), ref, atol=1e-5)


def test_one_channel_output_is_a_binary_model(tmp_path: Path) -> None:
    net = _net(out_channels=1)
    x = np.random.default_rng(2).normal(size=(2, 4, 32, 32)).astype(np.float32)
    p = OrtEngine(_onnx(net, tmp_path / "one.onnx"), output="logits")(x)
    with torch.no_grad():
        fg = torch.sigmoid(net(torch.from_numpy(x))).numpy()[:, 0]
    assert p.shape == (2, 2, 32, 32)
    np.testing.assert_allclose(p[:, 1], fg, atol=1e-5)
    np.testing.assert_allclose(p[:, 0], 1 - fg, atol=1e-5)


def test_softmax_is_stable() -> None:
    x = np.array([[[[1000.0]], [[1001.0]]]], dtype=np.float32)
    np.testing.assert_allclose(softmax(x)[0, :, 0, 0], [0.26894142, 0.73105858], rtol=1e-5)


# ---- precision, threads, the CUDA path ----------------------------------------------------------
def test_autocast_choice() -> None:
    from geoseg.runtime.engines import autocast_dtype

    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("auto", "cuda") is torch.float16
    assert autocast_dtype("fp32", "cuda") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="precision 'int4'"):
        autocast_dtype("int4", "cpu")


def test_bf16_autocast_on_cpu_is_close_to_fp32() -> None:
    x = np.random.default_rng(0).normal(size=(2, 4, 32, 32)).astype(np.float32)
    fp32 = TorchEngine(_net(), torch.device("cpu"))
    bf16 = TorchEngine(_net(), torch.device("cpu"), precision="bf16")
    p32, p16 = fp32(x), bf16(x)
    assert p16.dtype == np.float32 and p16.shape == p32.shape
    assert not fp32.uses_pinned_memory
    assert 0 < np.abs(p16 - p32).max() < 0.05  # really ran in bfloat16, and still agrees


def test_threads_default_follows_the_machine_and_torch() -> None:
    from geoseg.pipeline import cpu_count

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        e = TorchEngine(_net(), torch.device("cpu"))
        assert e.threads == min(torch.get_num_threads(), cpu_count()) == 1
        torch.set_num_threads(64)
        assert TorchEngine(_net(), torch.device("cpu")).threads == min(64, cpu_count())
    finally:
        torch.set_num_threads(old)
    assert TorchEngine(_net(), torch.device("cpu"), threads=3).threads == 3
    assert e.suggest_batch_size((4, 512, 512)) == 4


def test_ort_fixed_batch_suggests_a_multiple(tmp_path: Path) -> None:
    eng = OrtEngine(_onnx(_net(), tmp_path / "fixed.onnx", batch=3), threads=1)
    assert eng.batch == 3
    assert eng.suggest_batch_size((4, 256, 256)) == 6  # 8 chips of 256 px -> 2 x 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_pinned_path_matches_cpu() -> None:  # pragma: no cover - needs CUDA
    x = np.random.default_rng(0).normal(size=(2, 4, 32, 32)).astype(np.float32)
    cpu = TorchEngine(_net(), torch.device("cpu"))(x)
    gpu = TorchEngine(_net().cuda(), torch.device("cuda"), precision="fp32")
    assert gpu.uses_pinned_memory
    np.testing.assert_allclose(gpu(x), cpu, atol=1e-4)
    np.testing.assert_allclose(gpu(x), cpu, atol=1e-4)  # the reused pinned buffer
    assert 1 <= gpu.suggest_batch_size((4, 512, 512)) <= 64

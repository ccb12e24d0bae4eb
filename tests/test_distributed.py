"""DDP on CPU (gloo, 2 processes): the same loss curve as 1 process with the same global batch.

Why the curves can match: every process draws the same global sequence of chips and keeps
its half of each global batch (:func:`geoseg.data.shard`); each chip is augmented with a seed
of its own (its global index); batch norm is synchronised
(:class:`geoseg.distributed.CpuSyncBatchNorm`, as SyncBatchNorm on GPUs), so the batch
statistics are those of the whole global batch; and each process's mean loss is weighted by
its share of the labelled pixels, so the averaged gradients are those of the global mean
``ce`` loss. What is left is float32 summation order: the first step's gradients agree to
~1e-4 of each tensor's largest value (batch norm over the few stride-32 pixels of small
chips amplifies rounding), and Adam, dividing each gradient by its own RMS, turns rounding
in near-zero gradients into full-size steps. Measured with this config (U-Net/ResNet-18,
global batch 4 of 64 px, lr 1e-4): per-step losses within 2.2e-4 relative over 4 steps. The
tolerance, 1e-3 relative, has 5x margin over that and is 7-14x below the effect of *not*
syncing batch norm (per-process statistics over 2 instead of 4 chips: 0.7-1.4 % per step).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from geoseg.data import shard
from geoseg.distributed import CpuSyncBatchNorm, DistInfo, convert_sync_batchnorm
from geoseg.errors import ConfigError
from geoseg.train import TrainConfig, train
from tests.test_train import tiny

torch.set_num_threads(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, config: dict[str, Any], sync_bn: bool) -> None:
    import os

    import geoseg.train as tr

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        GEOSEG_PROGRESS="0",
    )
    if not sync_bn:
        tr.convert_sync_batchnorm = lambda net, cuda: net  # type: ignore[assignment]
    train(config=TrainConfig.model_validate(config))


def run_ddp(config: TrainConfig, world: int, *, sync_bn: bool = True) -> list[dict[str, Any]]:
    """Train in ``world`` spawned processes; rank 0's per-epoch history."""
    import torch.multiprocessing as mp

    mp.spawn(
        _worker,
        args=(world, _free_port(), config.model_dump(mode="json"), sync_bn),
        nprocs=world,
        join=True,
    )
    hist = json.loads(config.out.with_name(config.out.stem + "_metrics.json").read_text())
    return list(hist["history"])


def test_two_processes_same_loss_curve_as_one(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "loss": "ce"}
    kw |= {"chip_size": 64, "lr": 1e-4}
    one = train(config=tiny(tmp_path, "one.pt", **kw))
    two = run_ddp(tiny(tmp_path, "two.pt", **kw), 2)
    a = [r["train_loss"] for r in one.history]
    b = [r["train_loss"] for r in two]
    assert len(a) == len(b) == 2
    assert a[0] != a[1]  # the curve moves
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-3, atol=0)
    # Rank 0 scored (almost) the same weights: rounding-level differences flip a few pixels.
    got, want = [r["val_miou"] for r in two], [r["val_miou"] for r in one.history]
    assert got == pytest.approx(want, rel=1e-2)
    # It alone wrote the bundle and removed the checkpoint.
    assert (tmp_path / "two.pt").exists() and not (tmp_path / "two.ckpt").exists()


def test_shard_splits_each_global_batch() -> None:
    parts = [shard(range(10), batch_size=4, rank=r, world_size=2) for r in range(2)]
    assert parts[0] == [[0, 2], [4, 6], [8]] and parts[1] == [[1, 3], [5, 7], [9]]
    with pytest.raises(ConfigError, match="multiple of the process count"):
        shard(range(10), batch_size=3, rank=0, world_size=2)


def test_cpu_sync_batchnorm_is_batchnorm_in_one_process() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ref.load_state_dict(net.state_dict())
    conv = convert_sync_batchnorm(net, cuda=False)
    assert isinstance(conv[1], CpuSyncBatchNorm)
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(conv(x), ref(x))  # no process group: plain batch norm
    assert DistInfo().is_main and not DistInfo().distributed

"""Multi-process (multi-GPU, multi-node) training helpers around ``torch.distributed``.

``torchrun --nproc-per-node N -m geoseg train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` set; :func:`init_distributed`
reads them and joins the process group (NCCL on CUDA, gloo on CPU). Without them training
runs in one process, unchanged.

Batch normalisation across processes: on CUDA :class:`torch.nn.SyncBatchNorm`; on CPU (which
it refuses) :class:`CpuSyncBatchNorm`, the same computation with gloo all-reduces, so that N
CPU processes compute exactly the batch statistics of one process with the whole batch
(used by the CI test of DDP; also fine for small CPU clusters).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "CpuSyncBatchNorm",
    "DistInfo",
    "all_sum",
    "broadcast_object",
    "convert_sync_batchnorm",
    "init_distributed",
    "shutdown_distributed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owned: bool = False  # whether init_distributed created the process group

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, bundles, metrics and logs progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (or one already set up)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, owned=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    name = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if name == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(name, rank=rank, world_size=world)
    log.info("process %d of %d (%s)", rank, world, name)
    return DistInfo(rank, world, local, owned=True)


def shutdown_distributed(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    import torch.distributed as dist

    if info.owned and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``value`` over all processes (``value`` itself in one process)."""
    if not info.distributed:
        return value
    import torch.distributed as dist

    out = value.clone()
    dist.all_reduce(out)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every process (gloo, CPU).

    Mean and (biased) variance are all-reduced in two passes with the differentiable
    ``torch.distributed.nn.all_reduce``, so the backward pass also sums over processes, as
    :class:`torch.nn.SyncBatchNorm` does on GPUs. Running statistics use the unbiased
    variance of the global batch. In eval mode it is plain batch norm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with the global batch statistics (training) or the running ones."""
        if not self.training or not torch.distributed.is_initialized():
            return super().forward(x)
        with warnings.catch_warnings():  # deprecated for a private successor; still right
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn import all_reduce

            count = all_reduce(torch.tensor(float(x.numel() // x.shape[1])))
            mean = all_reduce(x.sum(dim=(0, 2, 3))) / count
            var = all_reduce(((x - mean.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3))) / count
        if self.track_running_stats and self.running_mean is not None:
            m = self.momentum if self.momentum is not None else 0.1
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())  # type: ignore[union-attr]
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
        y = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def convert_sync_batchnorm(module: nn.Module, *, cuda: bool) -> nn.Module:
    """``module`` with every plain ``nn.BatchNorm2d`` made synchronous across processes.

    CUDA: :class:`torch.nn.SyncBatchNorm`; CPU: :class:`CpuSyncBatchNorm`. Subclasses of
    BatchNorm2d that fuse more (timm's ``BatchNormAct2d``) are left as they are.
    """
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            new: nn.Module
            if cuda:
                new = nn.SyncBatchNorm(
                    child.num_features, child.eps, child.momentum, child.affine,
                    child.track_running_stats,
                )  # fmt: skip
            else:
                new = CpuSyncBatchNorm(
                    child.num_features, child.eps, child.momentum, child.affine,
                    child.track_running_stats,
                )  # fmt: skip
            new.load_state_dict(child.state_dict())
            new.to(child.weight.device if child.affine else "cpu")
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, cuda=cuda)
    return module

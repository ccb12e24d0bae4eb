"""Training: a typed config in, a model bundle and per-epoch metrics out.

:func:`train` reads scenes + labels (through torchgeo) or the chips of ``geoseg tile``, computes
per-band normalisation and class frequencies from the training split, trains one of the
architectures of :mod:`geoseg.models` with a poly learning-rate schedule, scores the
validation split after every epoch (pixel accuracy, per-class IoU, mIoU, FW-IoU, confusion
matrix), keeps the best epoch, stops early when asked, and writes:

* ``MODEL`` — the :class:`~geoseg.bundle.ModelBundle` (all ``geoseg predict`` needs);
* ``MODEL.stem + "_metrics.csv"`` / ``"_metrics.json"`` / ``"_metrics.png"`` beside it;
* ``MODEL.stem + ".ckpt"`` during training (removed at the end) for ``resume``.

With a fixed ``seed`` two runs on CPU give identical weights; on CUDA mixed precision is used.

Under ``torchrun`` (see :mod:`geoseg.distributed`) every process trains a
:class:`~torch.nn.parallel.DistributedDataParallel` replica on its share of each global batch
(``batch_size`` is global), batch norm is synchronised, and rank 0 scores, checkpoints and
writes. The steps: :func:`_setup` (data, normalisation, loss, model, optimiser),
:func:`_train_epoch` (one epoch of steps), :func:`_end_epoch` (score, keep the best,
:class:`Checkpoint`), :func:`_finish` (test scores, :func:`_make_bundle`, metrics files).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from geoseg.augment import Augment, Mix, MixedBatch, mixed_loss
from geoseg.bundle import ModelBundle, Normalization
from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.config import StrictModel
from geoseg.data import (
    Batch,
    ChipData,
    SceneData,
    SplitRule,
    compute_normalization,
    normalize_batch,
)
from geoseg.distributed import (
    DistInfo,
    all_sum,
    broadcast_object,
    convert_sync_batchnorm,
    init_distributed,
    shutdown_distributed,
)
from geoseg.errors import ConfigError, InputFileNotFoundError
from geoseg.losses import build_loss, inverse_frequency_weights
from geoseg.metrics import ConfusionMatrix
from geoseg.models import Architecture, Encoder, build_model, load_encoder_weights

__all__ = [
    "AugmentConfig",
    "Checkpoint",
    "SceneConfig",
    "SplitConfig",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "metrics_paths",
    "train",
]

log = logging.getLogger(__name__)


def _resolve(v: Path | None, info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base_dir") if info.context else None
    if v is not None and base is not None and not Path(v).is_absolute():
        return Path(base) / v
    return v


class SceneConfig(StrictModel):
    """One scene and its labels (rasters or vector files)."""

    image: Path
    labels: list[Path] = Field(min_length=1)

    @field_validator("image", mode="after")
    @classmethod
    def _image(cls, v: Path, info: ValidationInfo) -> Path:
        out = _resolve(v, info)
        return out if out is not None else v

    @field_validator("labels", mode="after")
    @classmethod
    def _labels(cls, v: list[Path], info: ValidationInfo) -> list[Path]:
        return [p2 for p in v if (p2 := _resolve(p, info)) is not None]


class SplitConfig(StrictModel):
    """Spatial split of scenes into strips (train, val, test) along ``axis``, with a buffer."""

    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    test_fraction: float = Field(default=0.0, ge=0, lt=1)
    axis: Literal["x", "y"] = "x"
    buffer: int = Field(default=0, ge=0, description="unused pixels between strips")

    def rule(self) -> SplitRule:
        """The runtime split rule."""
        return SplitRule(
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            axis=self.axis,
            buffer=self.buffer,
        )


class AugmentConfig(StrictModel):
    """Joint image + mask augmentation, and CutMix / MixUp of chip pairs (per batch)."""

    flip: bool = True
    rotate: bool = True
    scale: tuple[float, float] | None = (0.75, 1.33)
    jitter: float = Field(default=0.1, ge=0)
    cutmix: float = Field(default=0.0, ge=0, le=1, description="probability per batch")
    mixup: float = Field(default=0.0, ge=0, le=1, description="probability per batch")
    mix_alpha: float = Field(default=1.0, gt=0, description="lam ~ Beta(alpha, alpha)")

    @model_validator(mode="after")
    def _mix_probabilities(self) -> AugmentConfig:
        if self.cutmix + self.mixup > 1:
            raise ValueError(
                f"cutmix ({self.cutmix}) + mixup ({self.mixup}) are probabilities per batch, "
                "summing to <= 1"
            )
        return self

    def build(self) -> Augment:
        """The runtime augmentation."""
        return Augment(flip=self.flip, rotate=self.rotate, scale=self.scale, jitter=self.jitter)

    def build_mix(self) -> Mix:
        """The runtime CutMix / MixUp."""
        return Mix(cutmix=self.cutmix, mixup=self.mixup, alpha=self.mix_alpha)


class TrainConfig(StrictModel):
    """Everything a training run needs; loadable with ``load_yaml(path, TrainConfig)``.

    Give either ``chips`` (a folder written by ``geoseg tile``) or ``scenes`` (images with
    labels, sampled straight from the scenes with torchgeo).
    """

    out: Path
    chips: Path | None = None
    scenes: list[SceneConfig] = Field(default_factory=list)
    class_column: str | None = None
    classes: Path | None = Field(
        default=None, description="classes.yaml fixing class ids and names"
    )
    model: Architecture = "unet"
    encoder: Encoder = "resnet18"
    pixel_head: bool = Field(
        default=True, description="add a per-pixel spectral head to the context network"
    )
    weights: Path | None = Field(default=None, description="local weights file (model or encoder)")
    encoder_weights: Path | None = Field(
        default=None,
        description="local encoder state dict (timm / torchvision / smp layout; all must match)",
    )
    epochs: int = Field(default=20, ge=1)
    steps_per_epoch: int = Field(default=50, ge=1)
    batch_size: int = Field(default=8, ge=1)
    chip_size: int = Field(default=256, ge=32, description="training chip size in pixels")
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    poly_power: float = Field(default=0.9, ge=0)
    loss: str = "ce"
    focal_gamma: float = Field(default=2.0, ge=0)
    normalization: Literal["meanstd", "percentile"] = "meanstd"
    augment: AugmentConfig = AugmentConfig()
    split: SplitConfig = SplitConfig()
    patience: int | None = Field(
        default=None, ge=1, description="early stopping: epochs without gain"
    )
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    eval_batch_size: int = Field(default=4, ge=1)
    predict_chip_size: int | None = Field(default=None, ge=32)
    predict_overlap: int = Field(default=64, ge=0)
    resume: bool = False
    overwrite: bool = False

    @field_validator("out", "chips", "classes", "weights", "encoder_weights", mode="after")
    @classmethod
    def _paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    bundle_path: Path
    metrics_csv: Path
    metrics_json: Path
    metrics_png: Path | None
    best_epoch: int
    epochs_run: int
    val: dict[str, Any]
    test: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def metrics_paths(out: Path) -> tuple[Path, Path, Path]:
    """The CSV, JSON and PNG written beside a bundle ``out``."""
    stem = out.with_suffix("")
    return (
        stem.with_name(stem.name + "_metrics.csv"),
        stem.with_name(stem.name + "_metrics.json"),
        stem.with_name(stem.name + "_metrics.png"),
    )


def _checkpoint_path(out: Path) -> Path:
    return out.with_suffix(".ckpt")


def _device(name: str, dist: DistInfo | None = None) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no CUDA device is available; use cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", dist.local_rank if dist is not None else 0)
    return torch.device(name)


def _open_data(config: TrainConfig) -> SceneData | ChipData:
    if (config.chips is None) == (not config.scenes):
        raise ConfigError(
            "give either chips (a folder from `geoseg tile`) or scenes (images with labels)"
        )
    rule = config.split.rule()
    if config.chips is not None:
        return ChipData(config.chips, split=rule)
    classes = ClassMap.read(config.classes) if config.classes is not None else None
    return SceneData(
        scenes=[s.image for s in config.scenes],
        labels=[s.labels for s in config.scenes],
        classes=classes,
        class_column=config.class_column,
        split=rule,
    )


def _nodata(data: SceneData | ChipData) -> float | None:
    return data.nodata[0] if isinstance(data, SceneData) else data.nodata


def evaluate(
    model: torch.nn.Module,
    data: SceneData | ChipData,
    split: Literal["train", "val", "test"],
    *,
    norm: Normalization,
    names: list[str],
    chip_size: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """Scores of ``model`` on every labelled pixel of ``split`` (each pixel counted once)."""
    cm = ConfusionMatrix(len(names))
    nodata = _nodata(data)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for b in data.eval_batches(split, size=chip_size, batch_size=batch_size):
            x = normalize_batch(b.image, norm, nodata=nodata).to(device)
            pred = model(x).argmax(1).cpu().numpy()
            m = b.mask.numpy()
            ok = m != IGNORE_INDEX
            cm.update(m[ok], pred[ok])
    model.train(was_training)
    return cm.scores(names)


def _summary(scores: dict[str, Any]) -> dict[str, Any]:
    return {
        "pixel_accuracy": scores["pixel_accuracy"],
        "miou": scores["miou"],
        "fwiou": scores["fwiou"],
        "kappa": scores["kappa"],
        "iou": {k: v["iou"] for k, v in scores["per_class"].items()},
        "confusion_matrix": scores["confusion_matrix"],
        "pixels": scores["pixels"],
    }


@dataclass
class Checkpoint:
    """The state after an epoch: what ``MODEL.ckpt`` holds (with the weights) for ``resume``."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_miou: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_scores: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path, *, model: torch.nn.Module, opt: Any, sched: Any) -> None:
        """Write the checkpoint atomically (with model, optimiser and schedule states)."""
        from geoseg.io.atomic import atomic_outputs

        with atomic_outputs([path], overwrite=True) as (tmp,):
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "history": self.history,
                    "epoch": self.epoch,
                    "best_miou": self.best_miou,
                    "best_epoch": self.best_epoch,
                    "best_state": self.best_state,
                    "best_scores": self.best_scores,
                },
                tmp,
            )

    @classmethod
    def load(cls, path: Path, *, model: torch.nn.Module, opt: Any, sched: Any) -> Checkpoint:
        """Read a checkpoint, restoring ``model``, ``opt`` and ``sched`` in place."""
        ck = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        log.info("resuming %s after epoch %d", path, ck["epoch"])
        return cls(
            epoch=ck["epoch"],
            history=ck["history"],
            best_miou=ck["best_miou"],
            best_epoch=ck["best_epoch"],
            best_state=ck["best_state"],
            best_scores=ck["best_scores"],
        )


@dataclass
class _Session:
    """Everything a run sets up once (:func:`_setup`)."""

    config: TrainConfig
    dist: DistInfo
    device: torch.device
    use_amp: bool
    data: SceneData | ChipData
    classes: ClassMap
    norm: Normalization
    loss_fn: torch.nn.Module
    net: torch.nn.Module  # the bare network: weights, scoring, the bundle
    model: torch.nn.Module  # what trains: ``net``, or DistributedDataParallel(net)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    augment: Augment
    mix: Mix
    val_split: Literal["train", "val", "test"]

    @property
    def names(self) -> list[str]:
        """Class names."""
        return self.classes.names


def train(*, config: TrainConfig) -> TrainResult:
    """Train a model as ``config`` says; write the bundle and metrics files.

    In a ``torchrun`` job every process calls this; rank 0 writes the files.

    Args:
        config: the training configuration.

    Returns:
        The bundle path, the metrics files, the best epoch and its validation (and, with a
        test split, test) scores.

    Raises:
        ConfigError: inconsistent configuration.
        LabelError: labels that do not fit the scenes.
        OutputExistsError: ``out`` exists and neither ``overwrite`` nor ``resume`` was given.
        InputFileNotFoundError: ``resume`` without a checkpoint of an interrupted run.
    """
    from geoseg._malloc import tune_malloc
    from geoseg.io.atomic import check_output

    t0 = time.perf_counter()
    tune_malloc()
    out = Path(config.out)
    ckpt_path = _checkpoint_path(out)
    if config.resume and not ckpt_path.exists():
        raise InputFileNotFoundError(
            f"{ckpt_path}: no checkpoint to resume from (--resume continues an interrupted run "
            f"of {out}); drop --resume to start a new run"
        )
    resuming = config.resume
    check_output(out, overwrite=config.overwrite or config.resume)
    dist = init_distributed()
    try:
        torch.manual_seed(config.seed)
        device = _device(config.device, dist)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        data = _open_data(config)
        try:
            s = _setup(config, data, dist, device)
            if resuming:
                state = Checkpoint.load(ckpt_path, model=s.net, opt=s.opt, sched=s.sched)
            else:
                state = Checkpoint(best_state=copy.deepcopy(s.net.state_dict()))
            for epoch in range(state.epoch, config.epochs):
                loss, train_cm = _train_epoch(s, epoch)
                if _end_epoch(s, state, epoch=epoch, loss=loss, train_cm=train_cm):
                    log.info("early stop after epoch %d (best %d)", epoch + 1, state.best_epoch)
                    break
            return _finish(s, state, seconds=time.perf_counter() - t0)
        finally:
            data.close()
    finally:
        shutdown_distributed(dist)


def _setup(
    config: TrainConfig, data: SceneData | ChipData, dist: DistInfo, device: torch.device
) -> _Session:
    """Normalisation and class weights from the training split, loss, model, optimiser."""
    classes = data.classes
    if classes is None:  # pragma: no cover - data sources always set it
        raise ConfigError("no classes found in the training data")
    if config.batch_size % dist.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is not divisible by the {dist.world_size} "
            "processes; the batch size is global: use a multiple of the process count"
        )
    n_cls = len(classes)
    pixels, labels = data.pixel_sample(seed=config.seed)
    norm = compute_normalization(pixels, method=config.normalization, nodata=_nodata(data))
    counts = np.bincount(labels, minlength=n_cls)[:n_cls]
    if not counts.any():
        raise ConfigError("the training split has no labelled pixel; change the split")
    loss_fn = build_loss(
        config.loss,
        num_classes=n_cls,
        class_weights=inverse_frequency_weights(counts),
        focal_gamma=config.focal_gamma,
    )
    net, model = _build_model(config, len(data.bands), n_cls, dist, device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * config.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: max(0.0, 1 - step / total) ** config.poly_power
    )
    use_amp = config.amp and device.type == "cuda"
    val_split: Literal["train", "val", "test"] = "val" if data.has_split("val") else "train"
    if val_split == "train":
        log.warning("no validation split: scoring on the training split")
    return _Session(
        config=config,
        dist=dist,
        device=device,
        use_amp=use_amp,
        data=data,
        classes=classes,
        norm=norm,
        loss_fn=loss_fn,
        net=net,
        model=model,
        opt=opt,
        sched=sched,
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        augment=config.augment.build(),
        mix=config.augment.build_mix(),
        val_split=val_split,
    )


def _build_model(
    config: TrainConfig, bands: int, n_cls: int, dist: DistInfo, device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The network (with local weights if given) and, distributed, its DDP wrapper."""
    torch.manual_seed(config.seed)
    net = build_model(
        config.model,
        config.encoder,
        in_channels=bands,
        num_classes=n_cls,
        pixel_head=config.pixel_head,
    )
    if config.encoder_weights is not None:
        from geoseg.pretrained import load_encoder_state

        rep = load_encoder_state(
            net, config.encoder_weights, encoder_name=config.encoder, in_channels=bands
        )
        log.info("encoder weights: %d tensors from %s", rep.matched, rep.path)
    if config.weights is not None:
        missing = load_encoder_weights(net, config.weights)
        log.info("loaded %s (%d tensors left at random)", config.weights, len(missing))
    if not dist.distributed:
        return net.to(device), net
    from torch.nn.parallel import DistributedDataParallel

    net = convert_sync_batchnorm(net, cuda=device.type == "cuda").to(device)
    ids = [device.index] if device.type == "cuda" else None
    return net, DistributedDataParallel(net, device_ids=ids)


def _train_epoch(s: _Session, epoch: int) -> tuple[float, ConfusionMatrix]:
    """One epoch of steps; the mean loss (over the global batches) and the training matrix."""
    from geoseg.log import progress

    cfg = s.config
    # Per-epoch seeds: a resumed run draws exactly what the uninterrupted one would, and
    # every process draws the same global sequence of chips (each keeps its share).
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    torch.manual_seed(cfg.seed * 100_003 + epoch)
    s.model.train()
    run_loss, n_b = 0.0, 0
    cm = ConfusionMatrix(len(s.names))
    batches = s.data.train_batches(
        size=cfg.chip_size,
        batch_size=cfg.batch_size,
        length=cfg.steps_per_epoch * cfg.batch_size,
        generator=gen,
        rank=s.dist.rank,
        world_size=s.dist.world_size,
    )
    bar = (
        progress(
            batches, total=cfg.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch"
        )
        if s.dist.is_main
        else batches
    )
    for step, b in enumerate(bar):
        mb = _augment_batch(s, b, epoch=epoch, step=step)
        loss, logits = _step(s, mb)
        run_loss += loss
        n_b += 1
        with torch.no_grad():
            y = mb.dominant_mask.to(s.device)
            ok = y != IGNORE_INDEX
            cm.update(y[ok].cpu().numpy(), logits.argmax(1)[ok].cpu().numpy())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{run_loss / n_b:.3f}", miou=f"{cm.scores()['miou']:.3f}")
    cm.matrix = all_sum(torch.from_numpy(cm.matrix), s.dist).numpy()
    return run_loss / max(n_b, 1), cm


def _augment_batch(s: _Session, b: Batch, *, epoch: int, step: int) -> MixedBatch:
    """Normalise, augment each chip with its own seed (from its global index), then mix."""
    cfg = s.config
    x = normalize_batch(b.image, s.norm, nodata=_nodata(s.data))
    base = (cfg.seed * 100_003 + epoch) * 1_000_003
    index = b.index.tolist() if len(b.index) == len(x) else list(range(len(x)))
    parts = [
        s.augment(
            x[k : k + 1], b.mask[k : k + 1], generator=torch.Generator().manual_seed(base + i)
        )
        for k, i in enumerate(index)
    ]
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    if not s.mix.active:
        return MixedBatch(x, y)
    # Mixing pairs chips of this process's batch (the same pairs only in one process).
    g = torch.Generator().manual_seed(base + 7919 * (step + 1) + s.dist.rank)
    return s.mix(x, y, generator=g)


def _step(s: _Session, mb: MixedBatch) -> tuple[float, torch.Tensor]:
    """One optimiser step; the loss of the global batch and this process's logits.

    Distributed, each process's loss (a mean over its labelled pixels) is weighted by its
    share of the global batch's labelled pixels, so that the gradients DDP averages are those
    of the loss over the whole global batch (exact for ``ce`` and ``focal``, whose terms are
    means over labelled pixels).
    """
    x = mb.image.to(s.device)
    s.opt.zero_grad(set_to_none=True)
    with torch.autocast(s.device.type, enabled=s.use_amp):
        logits = s.model(x)
    loss = mixed_loss(s.loss_fn, logits.float(), mb)
    if s.dist.distributed:
        n = torch.tensor(float((mb.mask != IGNORE_INDEX).sum()))
        total = all_sum(n, s.dist)
        share = n * s.dist.world_size / total.clamp_min(1.0)
        loss = loss * share.to(loss.device)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.opt)
    s.scaler.update()
    s.sched.step()
    value = all_sum(loss.detach().cpu(), s.dist) / s.dist.world_size
    return float(value), logits


def _end_epoch(
    s: _Session, state: Checkpoint, *, epoch: int, loss: float, train_cm: ConfusionMatrix
) -> bool:
    """Score the validation split, keep the best weights, checkpoint; True to stop early."""
    cfg = s.config
    scores = _score(s, s.val_split)
    vs = s.val_split
    row = {
        "epoch": epoch + 1,
        "lr": s.opt.param_groups[0]["lr"],
        "train_loss": loss,
        "train_miou": train_cm.scores(s.names)["miou"],
        f"{vs}_pixel_accuracy": scores["pixel_accuracy"],
        f"{vs}_miou": scores["miou"],
        f"{vs}_fwiou": scores["fwiou"],
        f"{vs}_kappa": scores["kappa"],
        **{f"{vs}_iou_{k}": v["iou"] for k, v in scores["per_class"].items()},
        "confusion_matrix": scores["confusion_matrix"],
    }
    state.history.append(row)
    state.epoch = epoch + 1
    log.info("epoch %d: loss %.4f, %s mIoU %.4f", epoch + 1, loss, vs, scores["miou"])
    miou = scores["miou"] if not math.isnan(scores["miou"]) else 0.0
    if miou > state.best_miou:
        state.best_miou, state.best_epoch = miou, epoch + 1
        state.best_state = copy.deepcopy(s.net.state_dict())
        state.best_scores = _summary(scores)
    if s.dist.is_main:
        state.save(_checkpoint_path(cfg.out), model=s.net, opt=s.opt, sched=s.sched)
    return cfg.patience is not None and epoch + 1 - state.best_epoch >= cfg.patience


def _score(s: _Session, split: Literal["train", "val", "test"]) -> dict[str, Any]:
    """Scores of the network on ``split``: computed by rank 0, the same on every process."""
    scores = None
    if s.dist.is_main:
        scores = evaluate(
            s.net,
            s.data,
            split,
            norm=s.norm,
            names=s.names,
            chip_size=max(s.config.chip_size, 256),
            batch_size=s.config.eval_batch_size,
            device=s.device,
        )
    return dict(broadcast_object(scores, s.dist))


def _finish(s: _Session, state: Checkpoint, *, seconds: float) -> TrainResult:
    """Test scores of the best weights; bundle and metrics files (rank 0)."""
    out = Path(s.config.out)
    csv_p, json_p, png_p = metrics_paths(out)
    s.net.load_state_dict(state.best_state)
    test_scores = _summary(_score(s, "test")) if s.data.has_split("test") else None
    metrics: dict[str, Any] = {"best_epoch": state.best_epoch, s.val_split: state.best_scores}
    if test_scores is not None:
        metrics["test"] = test_scores
    png: Path | None = png_p
    if s.dist.is_main:
        _make_bundle(s, state, metrics).save(out, overwrite=True)
        png = _write_metrics(state.history, metrics, csv_p, json_p, png_p)
        _checkpoint_path(out).unlink(missing_ok=True)
    return TrainResult(
        bundle_path=out,
        metrics_csv=csv_p,
        metrics_json=json_p,
        metrics_png=png,
        best_epoch=state.best_epoch,
        epochs_run=len(state.history),
        val=state.best_scores,
        test=test_scores,
        history=state.history,
        seconds=seconds,
    )


def _make_bundle(s: _Session, state: Checkpoint, metrics: dict[str, Any]) -> ModelBundle:
    """The bundle of the best weights, with the data contract and the run's config."""
    cfg, data = s.config, s.data
    return ModelBundle(
        arch=cfg.model,
        encoder=cfg.encoder,
        bands=tuple(data.bands),
        classes=s.classes,
        normalization=s.norm,
        state_dict={k: v.detach().cpu() for k, v in state.best_state.items()},
        dtype=str(data.dtype),
        resolution=tuple(abs(r) for r in data.resolution),  # type: ignore[arg-type]
        ignore_index=IGNORE_INDEX,
        chip_size=cfg.predict_chip_size or max(cfg.chip_size, 256),
        overlap=cfg.predict_overlap,
        config=cfg.model_dump(mode="json"),
        metrics=metrics,
        description=f"{cfg.model}/{cfg.encoder} trained {len(state.history)} epoch(s)",
        pixel_head=cfg.pixel_head,
    )


def _write_metrics(
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    csv_p: Path,
    json_p: Path,
    png_p: Path,
) -> Path:
    from geoseg.io.atomic import atomic_outputs

    cols = [k for k in history[0] if k != "confusion_matrix"] if history else []
    with atomic_outputs([csv_p, json_p], overwrite=True) as (tc, tj):
        with tc.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(history)
        tj.write_text(json.dumps({"history": history, **metrics}, indent=1, default=float))
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    ep = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    a1.plot(ep, [r["train_loss"] for r in history], marker="o")
    a1.set(xlabel="epoch", ylabel="training loss", title="loss")
    for k in cols:
        if k.endswith("_miou") or k.endswith("_fwiou") or k.endswith("_pixel_accuracy"):
            a2.plot(ep, [r[k] for r in history], marker="o", label=k)
    a2.set(xlabel="epoch", ylabel="score", title="metrics", ylim=(0, 1))
    a2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_outputs([png_p], overwrite=True) as (tp,):
        fig.savefig(tp, dpi=100, format="png")
    return png_p

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
from pydantic import Field, ValidationInfo, field_validator

from geoseg.augment import Augment
from geoseg.bundle import ModelBundle, Normalization
from geoseg.classes import IGNORE_INDEX, ClassMap
from geoseg.config import StrictModel
from geoseg.data import ChipData, SceneData, SplitRule, compute_normalization, normalize_batch
from geoseg.errors import ConfigError
from geoseg.losses import build_loss, inverse_frequency_weights
from geoseg.metrics import ConfusionMatrix
from geoseg.models import Architecture, Encoder, build_model, load_encoder_weights

__all__ = [
    "AugmentConfig",
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
    """Joint image + mask augmentation."""

    flip: bool = True
    rotate: bool = True
    scale: tuple[float, float] | None = (0.75, 1.33)
    jitter: float = Field(default=0.1, ge=0)

    def build(self) -> Augment:
        """The runtime augmentation."""
        return Augment(flip=self.flip, rotate=self.rotate, scale=self.scale, jitter=self.jitter)


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


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no CUDA device is available; use cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


def train(*, config: TrainConfig) -> TrainResult:
    """Train a model as ``config`` says; write the bundle and metrics files.

    Args:
        config: the training configuration.

    Returns:
        The bundle path, the metrics files, the best epoch and its validation (and, with a
        test split, test) scores.

    Raises:
        ConfigError: inconsistent configuration.
        LabelError: labels that do not fit the scenes.
        OutputExistsError: ``out`` exists and neither ``overwrite`` nor ``resume`` was given.
    """
    from geoseg._malloc import tune_malloc
    from geoseg.io.atomic import atomic_outputs, check_output
    from geoseg.log import progress

    t0 = time.perf_counter()
    tune_malloc()
    out = Path(config.out)
    ckpt_path = _checkpoint_path(out)
    resuming = config.resume and ckpt_path.exists()
    check_output(out, overwrite=config.overwrite or config.resume)
    csv_p, json_p, png_p = metrics_paths(out)

    torch.manual_seed(config.seed)
    device = _device(config.device)
    use_amp = config.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    data = _open_data(config)
    try:
        classes = data.classes
        if classes is None:  # pragma: no cover - data sources always set it
            raise ConfigError("no classes found in the training data")
        names = classes.names
        n_cls = len(classes)
        pixels, labels = data.pixel_sample(seed=config.seed)
        norm = compute_normalization(pixels, method=config.normalization, nodata=_nodata(data))
        counts = np.bincount(labels, minlength=n_cls)[:n_cls]
        if not counts.any():
            raise ConfigError("the training split has no labelled pixel; change the split")
        class_weights = inverse_frequency_weights(counts)
        loss_fn = build_loss(
            config.loss,
            num_classes=n_cls,
            class_weights=class_weights,
            focal_gamma=config.focal_gamma,
        )

        torch.manual_seed(config.seed)
        model = build_model(
            config.model,
            config.encoder,
            in_channels=len(data.bands),
            num_classes=n_cls,
            pixel_head=config.pixel_head,
        )
        if config.encoder_weights is not None:
            from geoseg.pretrained import load_encoder_state

            rep = load_encoder_state(
                model,
                config.encoder_weights,
                encoder_name=config.encoder,
                in_channels=len(data.bands),
            )
            log.info("encoder weights: %d tensors from %s", rep.matched, rep.path)
        if config.weights is not None:
            missing = load_encoder_weights(model, config.weights)
            log.info("loaded %s (%d tensors left at random)", config.weights, len(missing))
        model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        total = config.epochs * config.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: max(0.0, 1 - s / total) ** config.poly_power
        )
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        augment = config.augment.build()
        val_split: Literal["train", "val", "test"] = "val" if data.has_split("val") else "train"
        if val_split == "train":
            log.warning("no validation split: scoring on the training split")

        history: list[dict[str, Any]] = []
        best_miou, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
        best_scores: dict[str, Any] = {}
        start = 0
        if resuming:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            history, start = ck["history"], ck["epoch"]
            best_miou, best_epoch, best_state = ck["best_miou"], ck["best_epoch"], ck["best_state"]
            best_scores = ck["best_scores"]
            log.info("resuming %s after epoch %d", ckpt_path, start)

        stopped = False
        for epoch in range(start, config.epochs):
            # Per-epoch seeds: a resumed run draws exactly what the uninterrupted one would.
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            torch.manual_seed(config.seed * 100_003 + epoch)
            model.train()
            run_loss, n_b = 0.0, 0
            cm = ConfusionMatrix(n_cls)
            bar = progress(
                data.train_batches(
                    size=config.chip_size,
                    batch_size=config.batch_size,
                    length=config.steps_per_epoch * config.batch_size,
                    generator=gen,
                ),
                total=config.steps_per_epoch,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="batch",
            )
            for b in bar:
                x = normalize_batch(b.image, norm, nodata=_nodata(data))
                x, y = augment(x, b.mask, generator=gen)
                x, y = x.to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, enabled=use_amp):
                    logits = model(x)
                loss = loss_fn(logits.float(), y)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                run_loss += float(loss.detach())
                n_b += 1
                with torch.no_grad():
                    ok = y != IGNORE_INDEX
                    cm.update(y[ok].cpu().numpy(), logits.argmax(1)[ok].cpu().numpy())
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{run_loss / n_b:.3f}", miou=f"{cm.scores()['miou']:.3f}")
            scores = evaluate(
                model,
                data,
                val_split,
                norm=norm,
                names=names,
                chip_size=max(config.chip_size, 256),
                batch_size=config.eval_batch_size,
                device=device,
            )
            row = {
                "epoch": epoch + 1,
                "lr": opt.param_groups[0]["lr"],
                "train_loss": run_loss / max(n_b, 1),
                "train_miou": cm.scores(names)["miou"],
                f"{val_split}_pixel_accuracy": scores["pixel_accuracy"],
                f"{val_split}_miou": scores["miou"],
                f"{val_split}_fwiou": scores["fwiou"],
                f"{val_split}_kappa": scores["kappa"],
                **{f"{val_split}_iou_{k}": v["iou"] for k, v in scores["per_class"].items()},
                "confusion_matrix": scores["confusion_matrix"],
            }
            history.append(row)
            log.info(
                "epoch %d: loss %.4f, %s mIoU %.4f",
                epoch + 1,
                row["train_loss"],
                val_split,
                scores["miou"],
            )
            miou = scores["miou"] if not math.isnan(scores["miou"]) else 0.0
            if miou > best_miou:
                best_miou, best_epoch = miou, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
                best_scores = _summary(scores)
            if config.patience is not None and epoch + 1 - best_epoch >= config.patience:
                stopped = True
            with atomic_outputs([ckpt_path], overwrite=True) as (tmp,):
                torch.save(
                    {
                        "model": model.state_dict(),
                        "opt": opt.state_dict(),
                        "sched": sched.state_dict(),
                        "history": history,
                        "epoch": epoch + 1,
                        "best_miou": best_miou,
                        "best_epoch": best_epoch,
                        "best_state": best_state,
                        "best_scores": best_scores,
                    },
                    tmp,
                )
            if stopped:
                log.info("early stop after epoch %d (best %d)", epoch + 1, best_epoch)
                break

        model.load_state_dict(best_state)
        test_scores = None
        if data.has_split("test"):
            test_scores = _summary(
                evaluate(
                    model,
                    data,
                    "test",
                    norm=norm,
                    names=names,
                    chip_size=max(config.chip_size, 256),
                    batch_size=config.eval_batch_size,
                    device=device,
                )
            )
        metrics: dict[str, Any] = {"best_epoch": best_epoch, val_split: best_scores}
        if test_scores is not None:
            metrics["test"] = test_scores
        bundle = ModelBundle(
            arch=config.model,
            encoder=config.encoder,
            bands=tuple(data.bands),
            classes=classes,
            normalization=norm,
            state_dict={k: v.detach().cpu() for k, v in best_state.items()},
            dtype=str(data.dtype),
            resolution=tuple(abs(r) for r in data.resolution),  # type: ignore[arg-type]
            ignore_index=IGNORE_INDEX,
            chip_size=config.predict_chip_size or max(config.chip_size, 256),
            overlap=config.predict_overlap,
            config=config.model_dump(mode="json"),
            metrics=metrics,
            description=f"{config.model}/{config.encoder} trained {len(history)} epoch(s)",
            pixel_head=config.pixel_head,
        )
        bundle.save(out, overwrite=True)
        png = _write_metrics(history, metrics, csv_p, json_p, png_p)
        ckpt_path.unlink(missing_ok=True)
    finally:
        data.close()
    return TrainResult(
        bundle_path=out,
        metrics_csv=csv_p,
        metrics_json=json_p,
        metrics_png=png,
        best_epoch=best_epoch,
        epochs_run=len(history),
        val=best_scores,
        test=test_scores,
        history=history,
        seconds=time.perf_counter() - t0,
    )


def _write_metrics(
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    csv_p: Path,
    json_p: Path,
    png_p: Path,
) -> Path | None:
    from geoseg.io.atomic import atomic_outputs

    cols = [k for k in history[0] if k != "confusion_matrix"] if history else []
    with atomic_outputs([csv_p, json_p], overwrite=True) as (tc, tj):
        with tc.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(history)
        tj.write_text(json.dumps({"history": history, **metrics}, indent=1, default=float))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], marker="o")
    a1.set(xlabel="epoch", ylabel="training loss", title="loss")
    for k in cols:
        if k.endswith("_miou") or k.endswith("_fwiou") or k.endswith("_pixel_accuracy"):
            a2.plot(ep, [r[k] for r in history], marker="o", label=k)
    a2.set(xlabel="epoch", ylabel="score", title="metrics", ylim=(0, 1))
    a2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_outputs([png_p], overwrite=True) as (tp,):
        fig.savefig(tp, dpi=100)
    plt.close(fig)
    return png_p

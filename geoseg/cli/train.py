"""``geoseg train``: train a segmentation model into a bundle (thin wrapper over :func:`geoseg.train.train`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from geoseg.cli.options import class_column_opt, overwrite_opt
from geoseg.cli.options import result as print_result
from geoseg.model_names import ARCHITECTURES, ENCODERS


@click.command("train")
@click.option(
    "--chips",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder written by `geoseg tile` (images/, masks/, classes.yaml, index.gpkg).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Training YAML (keys of TrainConfig); options given here override it.",
)
@click.option(
    "--scene",
    type=click.Path(),
    default=None,
    help="Image to train on straight from the scene (with --labels): a raster, a folder of "
    "band files or a STAC item JSON.",
)
@click.option(
    "--labels",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Label raster or vector files for --scene (repeatable).",
)
@class_column_opt
@click.option(
    "--model", type=click.Choice(ARCHITECTURES), default=None, help="Architecture [unet]."
)
@click.option("--encoder", type=click.Choice(ENCODERS), default=None, help="Encoder [resnet18].")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="Local weights file to start from.",
)
@click.option(
    "--encoder-weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="Local encoder state dict (timm, torchvision or smp keys; first conv adapted to the bands).",
)
@click.option("--epochs", type=int, default=None, help="Number of epochs [20].")
@click.option("--steps", "steps_per_epoch", type=int, default=None, help="Batches per epoch [50].")
@click.option("--batch-size", type=int, default=None, help="Chips per batch [8].")
@click.option(
    "--size", "chip_size", type=int, default=None, help="Training chip size in pixels [256]."
)
@click.option("--lr", type=float, default=None, help="Initial learning rate [0.001].")
@click.option("--loss", default=None, help="ce, wce, focal, dice or a sum such as ce+dice [ce].")
@click.option(
    "--patience", type=int, default=None, help="Stop after N epochs without a better val mIoU."
)
@click.option(
    "--cutmix",
    type=click.FloatRange(0, 1),
    default=None,
    help="Probability per batch of CutMix (a box of another chip pasted, image and mask) [0].",
)
@click.option(
    "--mixup",
    type=click.FloatRange(0, 1),
    default=None,
    help="Probability per batch of MixUp (images blended, the loss mixed by lam) [0].",
)
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Device [auto]."
)
@click.option(
    "--resume",
    is_flag=True,
    default=False,
    help="Continue an interrupted run from MODEL's checkpoint.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Model bundle to write (e.g. model.pt).",
)
@overwrite_opt
def train(config_path: str | None, **opts: Any) -> None:
    """Train a model on chips or on scenes with labels; write the bundle and metrics.

    Metrics per epoch go beside the bundle: OUT_metrics.csv, OUT_metrics.json and OUT_metrics.png.

    
    Examples:
      geoseg train --chips chips/ --model unet --encoder resnet18 --epochs 20 --out model.pt
      geoseg train --scene s2.tif --labels forest.gpkg --labels water.gpkg --out model.pt
      geoseg train --config train.yaml --out model.pt
      torchrun --nproc-per-node 4 -m geoseg train --config train.yaml --out model.pt
    """
    from geoseg.config import merge_mapping, read_yaml_mapping, validate_mapping
    from geoseg.train import TrainConfig
    from geoseg.train import train as run_train

    scene, labels = opts.pop("scene"), opts.pop("labels")
    mix = {k: v for k in ("cutmix", "mixup") if (v := opts.pop(k)) is not None}
    # Options not given are None (flags False); 0 is a value (`v not in (None, False)` drops it).
    given: dict[str, Any] = {k: v for k, v in opts.items() if v is not None and v is not False}
    if scene is not None:
        if not labels:
            raise click.UsageError("--scene needs --labels")
        given["scenes"] = [{"image": scene, "labels": list(labels)}]
    if config_path is not None:
        # Merge the raw YAML with the options first, then validate once: a key the options
        # give (e.g. --out) need not be in the file. Paths in the file resolve against its
        # folder; paths given here are made absolute so that they stay relative to the cwd.
        cfg = Path(config_path)
        raw = read_yaml_mapping(cfg)
        if mix:  # merged into the file's augment section, not replacing it
            given["augment"] = {**dict(raw.get("augment") or {}), **mix}
        data = merge_mapping(raw, _absolute_paths(given))
        config = validate_mapping(data, TrainConfig, source=str(cfg), base_dir=cfg.parent.resolve())
    else:
        if mix:
            given["augment"] = mix
        config = validate_mapping(given, TrainConfig, source="command line")
    result = run_train(config=config)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return
    msg = f"wrote {result.bundle_path} (best epoch {result.best_epoch}/{result.epochs_run}"
    for name, s in (("val", result.val), ("test", result.test)):
        if s:
            msg += f", {name} mIoU {s['miou']:.3f} FW-IoU {s['fwiou']:.3f}"
    print_result(
        msg + f"); metrics: {Path(result.metrics_csv).name}, {Path(result.metrics_json).name}"
    )


def _absolute_paths(given: dict[str, Any]) -> dict[str, Any]:
    """Path options of the command line made absolute (they are relative to the cwd)."""

    def absolute(p: str) -> str:
        return str(Path(p).absolute())

    out = dict(given)
    for key in ("chips", "weights", "encoder_weights", "out"):
        if key in out:
            out[key] = absolute(out[key])
    if "scenes" in out:
        out["scenes"] = [
            {"image": absolute(s["image"]), "labels": [absolute(p) for p in s["labels"]]}
            for s in out["scenes"]
        ]
    return out

"""``geoseg tile``: cut scenes and labels into image/mask chips with a spatial split."""

from __future__ import annotations

import glob
from pathlib import Path

import click

from geoseg.cli.options import class_column_opt, given, overlap_opt, overwrite_opt, result, size_opt


def _floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated fractions, got {value!r}") from exc


def _bands(value: str | None) -> list[int | str] | None:
    if not value:
        return None
    return [int(v) if v.strip().isdigit() else v.strip() for v in value.split(",") if v.strip()]


def _expand(patterns: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for p in patterns:
        hits = sorted(glob.glob(p)) if any(c in p for c in "*?[") else []
        out.extend(hits or [p])
    return out


@click.command("tile")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--labels",
    "labels",
    multiple=True,
    required=True,
    help="Label file(s): vectors (repeat the option or quote a glob) or one class raster.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder."
)
@class_column_opt
@click.option(
    "--classes",
    "classes_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="classes.yaml fixing class ids and colours.",
)
@size_opt
@overlap_opt
@click.option(
    "--split",
    default=None,
    help="train,val,test fractions of the spatial split (1,0,0: all train) "
    "[library: 0.7,0.15,0.15].",
)
@click.option(
    "--no-split",
    is_flag=True,
    default=False,
    help="Every chip in train, no blocks, no buffer (for scenes held out whole).",
)
@click.option(
    "--bands", default=None, help="Bands by 1-based index or name, e.g. 4,3,2 or B04,B08."
)
@click.option("--resolution", type=float, default=None, help="Target pixel size (CRS units).")
@click.option("--min-valid", type=float, default=None, help="Min data fraction [library: 0.5].")
@click.option(
    "--min-labelled", type=float, default=None, help="Min labelled fraction [library: 0.01]."
)
@click.option(
    "--block-size",
    type=int,
    default=None,
    help="Split block side in pixels [chosen from the scenes and chip size].",
)
@click.option("--buffer", type=int, default=None, help="Gap between splits in pixels [overlap].")
@click.option("--seed", type=int, default=None, help="Seed of the block split [library: 0].")
@overwrite_opt
def tile(
    scenes: tuple[str, ...],
    labels: tuple[str, ...],
    out_dir: str,
    class_column: str | None,
    classes_path: str | None,
    size: int | None,
    overlap: int | None,
    split: str | None,
    no_split: bool,
    bands: str | None,
    resolution: float | None,
    min_valid: float | None,
    min_labelled: float | None,
    block_size: int | None,
    buffer: int | None,
    seed: int | None,
    overwrite: bool,
) -> None:
    """Cut SCENE(s) and their labels into chips: DIR/images, DIR/masks, classes.yaml, index.gpkg.

    A SCENE is a raster file or a folder of single-band files (stacked in name order,
    resampled to one grid). Image chips keep the scene's values, dtype and nodata; pixels
    without a label or without data are 255 in the masks. Chips are split into train/val/test
    by map blocks with a buffer between splits; a split that cannot be made is an error and
    nothing is written. --size defaults to 256 px, --overlap to 32 px (at most a quarter of
    --size).
    """
    from geoseg.classes import ClassMap
    from geoseg.tiling import tile_scenes

    report = tile_scenes(
        scenes,
        labels=_expand(labels),
        out_dir=Path(out_dir),
        class_column=class_column,
        classes=ClassMap.read(classes_path) if classes_path else None,
        no_split=no_split,
        bands=_bands(bands),
        resolution=resolution,
        block_size=block_size,
        buffer=buffer,
        overwrite=overwrite,
        **given(
            size=size,
            overlap=overlap,
            split=_floats(split) if split else None,
            min_valid=min_valid,
            min_labelled=min_labelled,
            seed=seed,
        ),
    )
    result(report.summary())

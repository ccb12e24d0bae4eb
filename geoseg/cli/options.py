"""Options shared by several commands, defined once (in the manner of ``rasterio.rio.options``)."""

from __future__ import annotations

from typing import Any

import click

overwrite_opt = click.option(
    "--overwrite",
    is_flag=True,
    default=False,
    help="Replace existing outputs (otherwise an existing output is an error).",
)
json_opt = click.option(
    "--json", "as_json", is_flag=True, default=False, help="Print JSON instead of text."
)
size_opt = click.option("--size", type=int, default=None, help="Chip (window) size in pixels.")
overlap_opt = click.option(
    "--overlap", type=int, default=None, help="Overlap between neighbouring chips in pixels."
)


min_area_opt = click.option(
    "--min-area",
    default=None,
    help="Drop patches smaller than this into their largest neighbour: pixels (20 or 20px), "
    "m2 (500m2) or hectares (0.5ha).",
)
class_column_opt = click.option(
    "--class-column", default=None, help="Vector attribute holding the class (names or ids)."
)


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None): the others take the library's defaults."""
    return {k: v for k, v in options.items() if v is not None}


def existing_path(**kwargs: Any) -> click.Path:
    """A click path argument type; existence is checked by the library (for one-line errors)."""
    return click.Path(dir_okay=False, **kwargs)


def result(text: str, *, always: bool = False) -> None:
    """Print a command's result lines, except under ``-q`` (errors only) unless ``always``.

    ``always`` is for output asked for explicitly (``--json``).
    """
    ctx = click.get_current_context(silent=True)
    quiet = ctx is not None and (ctx.find_root().obj or {}).get("verbosity", 0) < 0
    if always or not quiet:
        click.echo(text)

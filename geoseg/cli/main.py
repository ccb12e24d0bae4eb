"""The ``geoseg`` command group: global options, error handling, subcommand registration."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import click

from geoseg import __version__
from geoseg.errors import GeosegError, first_line
from geoseg.log import configure


class GeosegGroup(click.Group):
    """A click group that turns geoseg errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; report errors in one line without a traceback.

        Python warnings (rasterio's, torch's, geoseg's) are collected, once each, and shown
        as one ``Warning:`` line each after a run that worked (not under ``-q``); a refused
        run prints only its ``Error:`` line (and the warnings before it only with ``-v``).
        """
        with _collected_warnings() as caught:
            try:
                result = super().invoke(ctx)
            except GeosegError as exc:
                _show(caught, ctx, failed=True)
                click.echo(f"Error: {exc}", err=True)
                ctx.exit(1)
            except KeyboardInterrupt:
                click.echo("Interrupted; no output was written.", err=True)
                ctx.exit(130)
            except MemoryError:
                click.echo("Error: out of memory; use a smaller --size or --batch-size", err=True)
                ctx.exit(1)
        _show(caught, ctx, failed=False)
        return result


@contextlib.contextmanager
def _collected_warnings() -> Iterator[dict[tuple[str, str], str]]:
    """Warnings raised while the block runs, once per (category, message), in order."""
    caught: dict[tuple[str, str], str] = {}

    def collect(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = first_line(message) if isinstance(message, Warning) else str(message)
        caught.setdefault((category.__name__, text), text)

    with warnings.catch_warnings():
        warnings.showwarning = collect
        yield caught


def _show(caught: dict[tuple[str, str], str], ctx: click.Context, *, failed: bool) -> None:
    verbosity = (ctx.obj or {}).get("verbosity", 0)
    if verbosity < 0 or (failed and verbosity < 1):
        return
    for (category, _), text in caught.items():
        click.echo(f"Warning: {text} ({category})", err=True)


@click.group(cls=GeosegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geoseg")
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, default=False, help="Errors only; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Semantic segmentation of satellite scenes: tile, train, predict, vectorize, map change.

    Run `geoseg COMMAND --help` for each command's options.
    """
    verbosity = -1 if quiet else verbose
    configure(verbosity)
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbosity


def _register() -> None:
    from geoseg.cli import info

    cli.add_command(info.info)
    # One module a command (geoseg/cli/*.py); a module that fails to import fails loudly.
    import importlib

    for name in (
        "tile",
        "train",
        "export",
        "models",
        "predict",
        "vectorize",
        "evaluate",
        "change",
        "run",
    ):
        mod = importlib.import_module(f"geoseg.cli.{name}")
        cli.add_command(getattr(mod, name if name != "run" else "run_workflow"))


_register()


def main() -> None:  # pragma: no cover - console entry point
    """Entry point for ``python -m geoseg``."""
    cli(prog_name="geoseg")


if __name__ == "__main__":  # pragma: no cover
    main()

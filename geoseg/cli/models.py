"""``geoseg models``: list the models available offline with their contracts (thin wrapper)."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import json_opt


@click.command("models")
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False))
@json_opt
def models(paths: tuple[str, ...], as_json: bool) -> None:
    """List the models available offline, each with its contract.

    The models: `default`, the csmask cloud/shadow models (with `pip install geoseg[clouds]`)
    and any PATHS (.pt bundles, .onnx files). The names work as `geoseg predict --model NAME`.

    
    Example:
      geoseg models
      geoseg models model.onnx --json
    """
    from geoseg.runtime.sources import list_models

    listing = list_models(paths)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in listing], indent=2))
        return
    click.echo("\n\n".join(c.summary() for c in listing))

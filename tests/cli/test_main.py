"""The command group: every command registered; a command module that cannot import fails loudly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from geoseg.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "info",
    "tile",
    "train",
    "export",
    "models",
    "predict",
    "vectorize",
    "evaluate",
    "change",
    "run",
}


def test_every_command_is_registered() -> None:
    with click.Context(cli) as ctx:
        assert set(cli.list_commands(ctx)) >= COMMANDS


def test_a_missing_command_module_is_not_skipped() -> None:
    # Before, a command module that raised ModuleNotFoundError was silently left out.
    code = (
        "import sys; sys.modules['geoseg.cli.tile'] = None\n"
        "from geoseg.cli.main import cli\n"
        "cli(['tile', '--help'], prog_name='geoseg')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "geoseg.cli.tile" in out.stderr

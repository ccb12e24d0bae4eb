"""Every ``--option`` a message or help text of geoseg names exists on the commands it is for.

Hints are scanned from the string literals of ``geoseg/`` (messages, f-string parts, help
texts); each module is mapped to the commands whose runs can show its messages, and every
``--name`` must be an option of one of them. A hint naming an option that does not exist
(``--classes`` for evaluate) sends a user in circles.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from geoseg.cli.main import cli

ROOT = Path(__file__).resolve().parents[2] / "geoseg"
_RX = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*[a-z0-9])(?![\w])")
#: options of other programs named in hints (pip, rio, torchrun)
FOREIGN = {"--no-deps", "--force-reinstall", "--disable-pip-version-check", "--crs", "--cache"}
FOREIGN |= {"--nproc-per-node"}
#: module -> the commands that show its messages: a hint must exist on each of them (other
#: modules serve many commands: a hint must exist on one)
COMMANDS = {
    "evaluate.py": {"evaluate"},
    "change.py": {"change"},
    "tiling.py": {"tile"},
    "blocks.py": {"tile"},
    "train.py": {"train"},
    "labels.py": {"tile", "evaluate"},  # label files of tile and evaluate
    "export.py": {"export"},
    "runtime/quantize.py": {"export"},
    "workflow.py": {"run"},
    "batch": {"run"},
    "demo.py": set(),  # `make demo` (scripts): checked against its own argparse below
}


def _options() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, cmd in cli.commands.items():
        out[name] = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        out[name] |= {"--help", "--verbose", "--quiet", "--version"}
    return out


def _commands(rel: str, every: set[str]) -> set[str] | None:
    if rel.startswith("cli/"):
        name = Path(rel).stem
        return {"run" if name == "run" else name} if name in every else None
    for key, cmds in COMMANDS.items():
        if rel == key or rel.startswith(key + "/"):
            return cmds
    return None


def _names_its_command(text: str, m: re.Match[str], options: dict[str, set[str]]) -> bool:
    """``geoseg predict --cloud-mask`` in change's help: an option of the command it names."""
    before = text[max(0, m.start() - 40) : m.start()]
    return any(re.search(rf"\b{c}\b", before) and m.group(0) in o for c, o in options.items())


def test_every_hinted_option_exists() -> None:
    options = _options()
    every = set(options)
    wrong: list[str] = []
    for f in sorted(ROOT.rglob("*.py")):
        rel = str(f.relative_to(ROOT))
        cmds = _commands(rel, every)
        if cmds is not None and not cmds:
            continue
        if cmds:
            known = set.intersection(*(options[c] for c in cmds))
        else:
            known = set().union(*options.values())
        for node in ast.walk(ast.parse(f.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            for m in _RX.finditer(node.value):
                opt = "--" + m.group(1)
                if opt in known or opt in FOREIGN or _names_its_command(node.value, m, options):
                    continue
                if True:
                    wrong.append(f"geoseg/{rel}:{node.lineno}: {opt} (for {sorted(cmds or every)})")
    assert not wrong, "hints name options that do not exist:\n" + "\n".join(wrong)

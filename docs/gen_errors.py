"""Regenerate docs/errors.md from the bad-input table: ``python docs/gen_errors.py > docs/errors.md``.

Each case of ``tests/test_bad_inputs.py`` is built in a fresh temporary folder and run through
the real command line; the page records the exit code and the one line each case prints, so
the documented messages are the ones geoseg gives today. Cases marked as known bugs are run
too and flagged.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_bad_inputs import CASES, Case, Outcome, check_case, run_case  # noqa: E402

HEADER = """\
# Errors: what geoseg says about bad input

Every command answers bad input with **one line** on stderr, `Error: ` followed by the
offending file or value, what is wrong and how to fix it, and exits with status 1 (2 for
option values that click rejects before geoseg runs). There is no traceback and no partial
output: results are written under a temporary name (`.NAME.geoseg-tmp-PID-HEX.ext`) in the
target folder and renamed only when complete, an existing output is never replaced without
`--overwrite`, and temporaries left by a killed run are removed by the next one. Ctrl-C exits
with status 130 and writes nothing.

The table below is generated from the test table in `tests/test_bad_inputs.py` by
`python docs/gen_errors.py > docs/errors.md`: each case is run through the real command line
and the message shown is the one it printed (paths are relative to the case folder: inputs
in `in/`, outputs in `out/`). Cases marked *must work* are inputs that look odd but are
valid. Cases marked *known bug* do not meet the contract yet; the note says why.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _row(case: Case, o: Outcome, root: Path) -> str:
    argv = " ".join(["geoseg", *o.argv])
    try:
        check_case(case, o)
        status = "must work" if case.ok else "ok"
    except AssertionError:
        status = "**known bug**" if case.xfail else "**FAILS**"
    if case.ok and o.exit_code == 0:
        message = "(works: " + ", ".join(f"`{p}`" for p in case.outputs) + " written)"
    elif o.exit_code == 0:
        message = "(exit 0: no error reported)"
    else:
        # absolute paths (resolved from a config file) -> relative to the case folder
        text = o.message.replace(f"{root.resolve()}/", "").replace(f"{root}/", "")
        message = f"`` {_cell(text)} ``" if text else "(no message)"
    if case.xfail:
        message += f"<br>*known bug:* {_cell(case.xfail)}"
    desc = _cell(case.description)
    return f"| `{case.id}` | {desc}<br>`{_cell(argv)}` | {o.exit_code} | {status} | {message} |"


def main() -> None:
    """Run every case and print the page."""
    out = [HEADER]
    commands: list[str] = []
    for c in CASES:
        if c.command not in commands:
            commands.append(c.command)
    with tempfile.TemporaryDirectory(prefix="geoseg-errors-") as tmp:
        for cmd in commands:
            out.append(f"\n## geoseg {cmd}\n")
            out.append("| case | input and command | exit | result | message |")
            out.append("|---|---|---|---|---|")
            for case in (c for c in CASES if c.command == cmd):
                root = Path(tmp) / case.id
                o = run_case(case, root)
                out.append(_row(case, o, root))
                print(f"{case.id}: {o.exit_code}", file=sys.stderr)
    n_bug = sum(1 for c in CASES if c.xfail)
    out.append(
        f"\n{len(CASES)} cases, {sum(1 for c in CASES if c.ok)} must work, {n_bug} known bug(s).\n"
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()

"""Tests for geoseg._malloc: glibc thresholds applied once, and never against the user's say."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str, **env: str) -> str:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    full.pop("GEOSEG_MALLOC_TUNING", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=full | env
    )
    return out.stdout.strip()


CODE = "from geoseg._malloc import tune_malloc; print(tune_malloc(), tune_malloc())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applied_once_on_linux() -> None:
    assert _run(CODE) == "True True"


@pytest.mark.parametrize(
    "env",
    [{"GEOSEG_MALLOC_TUNING": "0"}, {"MALLOC_TRIM_THRESHOLD_": "65536"}],
)
def test_opt_out_and_user_settings_win(env: dict[str, str]) -> None:
    assert _run(CODE, **env) == "False False"

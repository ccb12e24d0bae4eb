"""``geoseg run``: thin command over geoseg.batch.run_workflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from geoseg.batch import BatchReport
from geoseg.cli.main import cli


def test_help_lists_the_options() -> None:
    res = CliRunner().invoke(cli, ["run", "--help"])
    assert res.exit_code == 0
    for opt in ("--scheduler", "--workers", "--resume / --no-resume", "--threads"):
        assert opt in res.output


def test_bad_workflow_is_one_line_exit_1(tmp_path: Path) -> None:
    p = tmp_path / "wf.yaml"
    p.write_text("output: o\nscenes: [a.tif]\nstages: [predict]\nwokers: 2\n")
    res = CliRunner().invoke(cli, ["run", str(p)])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"Error: {p}:4: wokers: unknown key; allowed keys here: aoi, aoi_name_column, change, "
        "cloud_mask, model, name, output, pairs, predict, scenes, stages, vectorize"
    ]


def test_options_pass_through_and_failures_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake(workflow: str, **kw: Any) -> BatchReport:
        seen.update(kw, workflow=workflow)
        kw["echo"]("Dask dashboard: http://127.0.0.1:8787/status")
        return BatchReport(
            workflow="wf",
            output=tmp_path,
            done=["a"],
            skipped=["b"],
            failed={"c": "c.tif: no such file; check the path"},
            summary={"index": tmp_path / "summary/index.gpkg"},
        )

    monkeypatch.setattr("geoseg.batch.run_workflow", fake)
    res = CliRunner().invoke(
        cli, ["run", "wf.yaml", "--scheduler", "tcp://h:8786", "--workers", "3", "--no-resume"]
    )
    assert res.exit_code == 1
    assert seen["scheduler"] == "tcp://h:8786" and seen["workers"] == 3
    assert seen["resume"] is False and seen["threads_per_worker"] is None  # cores / workers
    assert "Dask dashboard: http://127.0.0.1:8787/status" in res.output
    assert "wf: 1 done, 1 skipped, 1 failed" in res.output
    assert "FAILED c: c.tif: no such file; check the path" in res.output


def test_workers_must_be_positive() -> None:
    res = CliRunner().invoke(cli, ["run", "wf.yaml", "--workers", "0"])
    assert res.exit_code == 2

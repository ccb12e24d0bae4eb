"""``geoseg run``: run a batch workflow (YAML) on Dask distributed."""

from __future__ import annotations

import click

from geoseg.cli.options import result


@click.command(name="run")
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Address of an existing Dask scheduler (tcp://HOST:8786); default: a local cluster.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Local worker processes (default: one per GPU, else one per CPU core).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Torch threads per worker (default: the CPU cores shared out among the workers).",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Skip scenes already done (checksums verified), or recompute them all.",
)
@click.pass_context
def run_workflow(
    ctx: click.Context,
    workflow: str,
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    resume: bool,
) -> None:
    """Run a batch WORKFLOW: predict, vectorize and class areas per scene, or change per date pair.

    Outputs, manifest.json and a summary (class areas CSV, index GeoPackage, overview PNG) go
    to the workflow's output folder. A rerun skips finished scenes. The exit code is 1 when a
    scene failed (one line per failure).

    Example: geoseg run workflows/deforestation.yaml --workers 2
    """
    from geoseg.batch import run_workflow as run

    quiet = (ctx.find_root().obj or {}).get("verbosity", 0) < 0

    def say(msg: str) -> None:
        if not quiet:  # progress lines; -q: errors only
            click.echo(msg, err=True)

    report = run(
        workflow,
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads,
        resume=resume,
        echo=say,
    )
    result(
        f"{report.workflow}: {len(report.done)} done, {len(report.skipped)} skipped, "
        f"{len(report.failed)} failed in {report.seconds:.1f} s -> {report.output}"
    )
    for kind, path in report.summary.items():
        result(f"  {kind}: {path}")
    for uid, reason in report.failed.items():
        click.echo(f"FAILED {uid}: {reason}", err=True)
    if report.failed:
        ctx.exit(1)

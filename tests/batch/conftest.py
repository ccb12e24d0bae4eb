"""Fixtures of the batch tests: a real LocalCluster and a tiny model bundle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.batch.helpers import BANDS, CLASSES


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A real LocalCluster with 2 single-threaded worker processes, shared by tests here."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geoseg.bundle import ModelBundle

    p = tmp_path_factory.mktemp("model") / "tiny.pt"
    ModelBundle.random_init(
        arch="fcn",
        encoder="mobilenet_v2",
        bands=BANDS,
        classes=CLASSES,
        seed=0,
        chip_size=64,
        overlap=16,
        dtype="uint16",
    ).save(p)
    return p

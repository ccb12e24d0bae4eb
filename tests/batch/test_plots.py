"""geoseg.batch.plots: the overview is a plain Figure; the caller's matplotlib backend stays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

from geoseg.batch import overview_figure, write_overview
from geoseg.classes import ClassMap
from geoseg.workflow import Workflow
from tests.batch.helpers import ROOT
from tests.data.rasters import write_raster


def _records(tmp_path: Path) -> list[tuple[str, dict[str, object]]]:
    raster = write_raster(tmp_path / "c.tif", np.arange(64, dtype="uint8").reshape(8, 8) % 3 + 1)
    with rasterio.open(raster) as ds:
        b = list(ds.bounds)
    fp = {"crs": "EPSG:32633", "bounds": b, "lonlat": b}
    classes = ClassMap.from_names(["forest", "grass", "water"]).to_records()
    return [
        ("a", {"status": "done", "footprint": fp, "raster": str(raster), "classes": classes}),
        ("b", {"status": "failed", "footprint": fp}),
    ]


def test_overview_is_a_figure_with_the_classes(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    wf = Workflow.model_validate(
        {"output": str(tmp_path), "scenes": ["x.tif"], "stages": ["areas"]}
    )
    fig = overview_figure(_records(tmp_path), wf)
    assert isinstance(fig, Figure)
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert labels == ["forest", "grass", "water", "failed"]
    assert fig._suptitle is not None and "1 done, 1 failed" in fig._suptitle.get_text()
    out = write_overview(tmp_path / "o.png", _records(tmp_path), wf)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_library_leaves_the_backend_alone(tmp_path: Path) -> None:
    code = (
        "import matplotlib; matplotlib.use('svg'); import sys\n"
        "from pathlib import Path\n"
        "from tests.batch.test_plots import _records\n"
        "from geoseg.batch import write_overview\n"
        "from geoseg.workflow import Workflow\n"
        f"t = Path({str(tmp_path)!r})\n"
        "wf = Workflow.model_validate({'output': str(t), 'scenes': ['x.tif'], 'stages': ['areas']})\n"
        "write_overview(t / 'o.png', _records(t), wf)\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["svg", "False"]

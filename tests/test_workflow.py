"""Workflow files: validation with key/line errors, path resolution, globs, shipped workflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.errors import ConfigError
from geoseg.workflow import DEFAULT_MODEL, Workflow, load_workflow

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_relative_paths_and_globs_resolve_against_the_yaml_folder(tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    for n in ("b.tif", "a.tif"):
        (tmp_path / "scenes" / n).write_bytes(b"")
    p = write(
        tmp_path,
        "output: out\nmodel: models/m.pt\nscenes: ['scenes/*.tif', scenes/a.tif, missing.tif]\n"
        "stages: [predict, areas]\n",
    )
    wf = load_workflow(p)
    assert wf.output == tmp_path / "out"
    assert wf.model_path == tmp_path / "models" / "m.pt"
    # sorted glob, duplicates dropped, a missing literal path kept (reported per scene later)
    assert wf.scenes == (
        tmp_path / "scenes" / "a.tif",
        tmp_path / "scenes" / "b.tif",
        tmp_path / "missing.tif",
    )
    assert wf.stages == ("predict", "areas")


def test_default_model() -> None:
    wf = Workflow.model_validate({"output": "o", "scenes": ["a.tif"], "stages": ["predict"]})
    assert wf.model == "default" and wf.model_path == DEFAULT_MODEL


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "output: o\nscenes: [a.tif]\nstages: [predict]\nworkers: 3\n",
            r"wf.yaml:4: workers: unknown key",
        ),
        (
            "output: o\nscenes: [a.tif]\nstages: [predict]\npredict:\n  batch: 3\n",
            r"wf.yaml:5: predict.batch: unknown key; allowed keys here: bands, batch_size",
        ),
        (
            "output: o\nscenes: ['nothing/*.tif']\nstages: [predict]\n",
            r"wf.yaml:2: scenes: .*matches no file",
        ),
        (
            "output: o\nscenes: [a.tif]\nstages: [predict, cluster]\n",
            r"wf.yaml:3: stages.1: Input should be",
        ),
        (
            "output: o\nscenes: [a.tif]\nstages: [change]\nchange: {from_classes: [1]}\n",
            r"wf.yaml:3: stages: .*needs 'pairs'",
        ),
        ("output: o\nstages: [predict]\n", r"wf.yaml:2: stages: .*need 'scenes'"),
        (
            "output: o\npairs: [{before: a.tif, after: b.tif}]\nstages: [change]\n",
            r"wf.yaml: change: .*from_classes",
        ),
        ("scenes: [a.tif]\nstages: [predict]\n", r"wf.yaml: output: Field required"),
        (
            "output: o\nscenes: [a.tif]\nstages: [predict]\npredict: {batch_size: 0}\n",
            r"wf.yaml:4: predict.batch_size",
        ),
        (
            "output: o\nscenes: [a.tif]\nstages: [predict]\npredict: {row_bands: 0}\n",
            r"wf.yaml:4: predict.row_bands",
        ),
        (
            "output: o\nscenes: [a.tif]\nstages: [predict]\npredict: {row_bands: 4}\n"
            "cloud_mask: auto\n",
            r"wf.yaml:5: cloud_mask: .*not available with predict.row_bands",
        ),
    ],
)
def test_errors_name_the_key_and_the_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_workflow(write(tmp_path, text))


def test_pairs(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "output: o\npairs:\n  - {name: t1-t2, before: a.tif, after: b.tif}\n"
        "aoi: aoi.geojson\nstages: [change]\nchange: {from_classes: [1]}\n",
    )
    wf = load_workflow(p)
    assert wf.pairs[0].before == tmp_path / "a.tif"
    assert wf.aoi == tmp_path / "aoi.geojson"
    assert wf.change is not None and wf.change.from_classes == (1,)


@pytest.mark.parametrize(
    ("name", "data"), [("landcover.yaml", "cache"), ("deforestation.yaml", "shared")]
)
def test_shipped_workflows_validate(name: str, data: str, request: pytest.FixtureRequest) -> None:
    # landcover: the default model's sample scene (data-cache/, as `make demo` prepares it);
    # deforestation: ../shared/data
    root = request.getfixturevalue("sample_cache" if data == "cache" else "shared_data")
    wf = load_workflow(ROOT / "workflows" / name)
    inputs = list(wf.scenes) + [p for pair in wf.pairs for p in (pair.before, pair.after)]
    assert inputs and all(p.exists() for p in inputs)
    assert all(p.resolve().is_relative_to(root.resolve()) for p in inputs)
    if wf.aoi:
        assert wf.aoi.exists()


@pytest.mark.parametrize(
    ("value", "model", "write_mask"),
    [("auto", "auto", True), (True, "auto", True), ("csmask-4b-l2a", "csmask-4b-l2a", True)],
)
def test_cloud_mask_short_forms(value: object, model: str, write_mask: bool) -> None:
    wf = Workflow.model_validate(
        {"output": "o", "scenes": ["a.tif"], "stages": ["predict"], "cloud_mask": value}
    )
    assert wf.cloud_mask is not None
    assert (wf.cloud_mask.model, wf.cloud_mask.write_mask) == (model, write_mask)
    off = Workflow.model_validate(
        {"output": "o", "scenes": ["a.tif"], "stages": ["predict"], "cloud_mask": False}
    )
    assert off.cloud_mask is None


def test_cloud_mask_needs_predict_and_pairs_take_masks(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "output: o\nstages: [change]\nchange: {from_classes: [1], mask_values: [1, 2]}\n"
        "pairs:\n  - {before: a.tif, after: b.tif, after_mask: m/b_clouds.tif}\n",
    )
    wf = load_workflow(p)
    assert wf.pairs[0].after_mask == tmp_path / "m" / "b_clouds.tif"
    assert wf.pairs[0].before_mask is None
    assert wf.change is not None and wf.change.mask_values == (1, 2)
    p = write(
        tmp_path,
        "output: o\nstages: [change]\nchange: {from_classes: [1]}\ncloud_mask: auto\n"
        "pairs: [{before: a.tif, after: b.tif}]\n",
    )
    with pytest.raises(ConfigError, match=r"wf.yaml:4: cloud_mask: .*before_mask/after_mask"):
        load_workflow(p)
    p = write(tmp_path, "output: o\nscenes: [a.tif]\nstages: [predict]\ncloud_mask: {mask: 1}\n")
    with pytest.raises(ConfigError, match=r"cloud_mask.mask: unknown key"):
        load_workflow(p)

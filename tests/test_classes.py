from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.classes import ClassMap
from geoseg.errors import ClassMapError


def test_roundtrip_yaml(tmp_path: Path) -> None:
    cm = ClassMap.from_names(["forest", "grass", "urban", "water"])
    cm.write(tmp_path / "classes.yaml")
    back = ClassMap.read(tmp_path / "classes.yaml")
    assert back == cm and back.ids == [1, 2, 3, 4]
    assert back.by_name("Water").color == (30, 100, 220)


def test_merged_keeps_existing_ids() -> None:
    cm = ClassMap.from_names(["forest", "water"])
    merged = cm.merged_with(["water", "urban"])
    assert merged.ids == [1, 2, 3] and merged.by_name("urban").id == 3
    assert merged.by_id(1) == cm.by_id(1)


@pytest.mark.parametrize(
    "records",
    [
        [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}],
        [{"id": 255, "name": "a"}],
        [{"name": "a"}],
        [{"id": 1, "name": "a", "color": "red"}],
    ],
)
def test_invalid_maps(records: list[dict[str, object]]) -> None:
    with pytest.raises(ClassMapError):
        ClassMap.from_records(records)

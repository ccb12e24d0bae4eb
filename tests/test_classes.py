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


def test_from_tags() -> None:
    got = ClassMap.from_tags(
        {"CLASS_IDS": "1,3", "CLASS_NAMES": "forest,water"}, {3: (1, 2, 3, 255)}
    )
    assert got is not None and got.ids == [1, 3] and got.names == ["forest", "water"]
    assert got.by_id(3).color == (1, 2, 3)
    assert ClassMap.from_tags({"CLASS_IDS": "1,2", "CLASS_NAMES": "a"}) is None
    assert ClassMap.from_tags({"CLASS_IDS": "x", "CLASS_NAMES": "a"}) is None
    assert ClassMap.from_tags({}) is None

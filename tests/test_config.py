from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.config import StrictModel, load_yaml
from geoseg.errors import ConfigError


class Inner(StrictModel):
    size: int = 256
    name: str = "x"


class Outer(StrictModel):
    model: str
    inner: Inner = Inner()


def test_valid(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: unet\ninner:\n  size: 128\n")
    cfg = load_yaml(p, Outer)
    assert cfg.model == "unet" and cfg.inner.size == 128


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: unet\ninner:\n  size: 128\n  colour: red\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml:4: inner.colour: unknown key; allowed keys here: name, size"
    ):
        load_yaml(p, Outer)


def test_wrong_type_names_key_and_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: unet\ninner:\n  size: big\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: inner.size: "):
        load_yaml(p, Outer)


def test_bad_yaml(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: [unet\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(p, Outer)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in {"model", "inner"}),
        st.integers(),
        min_size=1,
        max_size=3,
    )
)
@settings(max_examples=50, deadline=None)
def test_any_unknown_top_level_key_is_refused(extra: dict[str, int]) -> None:
    from geoseg.config import validate_mapping

    with pytest.raises(ConfigError, match="unknown key"):
        validate_mapping({"model": "unet", **extra}, Outer, source="cfg")

"""Typed YAML configuration: one way in, errors that name the key and the line.

Every YAML file (workflows, training configs) is validated by a pydantic model declared with
``extra='forbid'``; :func:`load_yaml` turns validation errors into one :class:`ConfigError`
line naming the file, the key path, its line number and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from geoseg.errors import ConfigError, InputFileNotFoundError

__all__ = ["StrictModel", "load_yaml", "merge_mapping", "read_yaml_mapping", "validate_mapping"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of geoseg's config models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that records the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        lines[key] = key_node.start_mark.line + 1
    return _LinedDict(mapping, lines)


class _LinedDict(dict[Any, Any]):
    def __init__(self, data: dict[Any, Any], lines: dict[Any, int]) -> None:
        super().__init__(data)
        self.lines = lines


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    line = None
    node = data
    for part in loc:
        if isinstance(node, _LinedDict) and part in node.lines:
            line = node.lines[part]
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


def validate_mapping(data: Any, model: type[M], *, source: str, base_dir: Path | None = None) -> M:
    """Validate parsed YAML/JSON ``data`` against ``model``; one clear error on failure."""
    context = {"base_dir": base_dir} if base_dir is not None else None
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(data, loc)
        where = f"{source}:{line}" if line else source
        msg = err.get("msg", "invalid value")
        if err.get("type") == "extra_forbidden":
            allowed = ", ".join(sorted(_fields_at(model, loc[:-1])))
            msg = f"unknown key; allowed keys here: {allowed}"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{where}: {key}: {msg}{more}") from None


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = [
            a
            for a in getattr(ann, "__args__", ())
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        current = inner[0] if inner else ann
    return list(getattr(current, "model_fields", {}))


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping, without validating it.

    The mapping records the line of every key, so :func:`validate_mapping` can name the line
    of a bad value; merge options into it with :func:`merge_mapping` to keep those lines.

    Raises:
        InputFileNotFoundError: the file does not exist.
        ConfigError: the file is not valid YAML or its top level is not a mapping.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileNotFoundError(f"{p}: no such config file; check the path")
    try:
        data = yaml.load(p.read_text(), Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(
            f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level")
    return data


def merge_mapping(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the top-level keys of ``overrides`` replaced or added (not validated).

    The line numbers recorded by :func:`read_yaml_mapping` are kept for the keys that were not
    overridden (an overridden value no longer comes from the file).
    """
    lines = {k: v for k, v in getattr(data, "lines", {}).items() if k not in overrides}
    return _LinedDict({**data, **overrides}, lines)


def load_yaml(path: str | os.PathLike[str], model: type[M]) -> M:
    """Read and validate a YAML file; relative paths in it resolve against its folder."""
    p = Path(path)
    data = read_yaml_mapping(p)
    return validate_mapping(data, model, source=str(p), base_dir=p.parent.resolve())

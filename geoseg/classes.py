"""Class maps: the ids, names and colours of land-cover classes, kept consistent across runs.

A :class:`ClassMap` is written as ``classes.yaml`` by the tiler, stored in model bundles, and
used to style every output (GeoTIFF colour table, QGIS ``.qml``, GeoPackage layer style).
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import ClassMapError, InputFileNotFoundError

__all__ = ["IGNORE_INDEX", "ClassInfo", "ClassMap", "default_color"]

#: The mask value of pixels that carry no label (unlabelled or scene nodata); never a class.
IGNORE_INDEX = 255

_NAMED_COLORS: dict[str, tuple[int, int, int]] = {
    "forest": (34, 139, 34),
    "tree": (34, 139, 34),
    "trees": (34, 139, 34),
    "woodland": (46, 125, 50),
    "grass": (154, 205, 50),
    "grassland": (154, 205, 50),
    "meadow": (173, 216, 90),
    "pasture": (189, 219, 112),
    "farm": (230, 200, 110),
    "farmland": (230, 200, 110),
    "crop": (240, 210, 80),
    "cropland": (240, 210, 80),
    "urban": (200, 40, 40),
    "built": (200, 40, 40),
    "building": (200, 40, 40),
    "residential": (210, 80, 80),
    "industrial": (160, 70, 110),
    "water": (30, 100, 220),
    "wetland": (80, 170, 190),
    "scrub": (120, 150, 60),
    "bare": (190, 170, 140),
    "snow": (240, 240, 255),
    "cloud": (220, 220, 220),
    "background": (0, 0, 0),
    "non-forest": (230, 210, 160),
    "nonforest": (230, 210, 160),
}


def default_color(name: str, index: int) -> tuple[int, int, int]:
    """A colour for a class: a conventional one for common land-cover names, else a distinct hue."""
    key = name.strip().lower()
    if key in _NAMED_COLORS:
        return _NAMED_COLORS[key]
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
    return (round(r * 255), round(g * 255), round(b * 255))


@dataclass(frozen=True, slots=True)
class ClassInfo:
    """One class: integer id (the raster value), name and RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary for YAML/JSON."""
        return {"id": self.id, "name": self.name, "color": list(self.color)}


@dataclass(frozen=True, slots=True)
class ClassMap:
    """An ordered, immutable set of classes with unique ids and names.

    Model outputs are class *indices* ``0..n-1`` in this order; rasters store class *ids*.
    """

    classes: tuple[ClassInfo, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        names = [c.name for c in self.classes]
        if not self.classes:
            raise ClassMapError("class map is empty; give at least one class")
        if len(set(ids)) != len(ids):
            raise ClassMapError(f"class ids must be unique, got {ids}")
        if len(set(names)) != len(names):
            raise ClassMapError(f"class names must be unique, got {names}")
        for c in self.classes:
            if not 0 <= c.id <= 254:
                raise ClassMapError(
                    f"class id {c.id} ({c.name!r}) is outside 0..254; 255 is reserved for ignore/nodata"
                )
            if len(c.color) != 3 or not all(0 <= v <= 255 for v in c.color):
                raise ClassMapError(
                    f"class {c.name!r}: colour must be three values 0..255, got {c.color}"
                )

    # ---- constructors -----------------------------------------------------------------
    @classmethod
    def from_names(cls, names: Iterable[str], *, start: int = 1) -> ClassMap:
        """Classes named ``names`` with ids ``start, start+1, ...`` and default colours."""
        return cls(
            tuple(
                ClassInfo(id=start + i, name=str(n), color=default_color(str(n), i))
                for i, n in enumerate(names)
            )
        )

    @classmethod
    def from_ids(cls, ids: Iterable[int], names: Mapping[int, str] | None = None) -> ClassMap:
        """Classes for the integer ``ids`` (sorted), named from ``names`` or ``class_<id>``."""
        names = names or {}
        out = []
        for i, cid in enumerate(sorted({int(v) for v in ids})):
            name = names.get(cid, f"class_{cid}")
            out.append(ClassInfo(id=cid, name=name, color=default_color(name, i)))
        return cls(tuple(out))

    @classmethod
    def from_tags(
        cls,
        tags: Mapping[str, str],
        colormap: Mapping[int, Sequence[int]] | None = None,
    ) -> ClassMap | None:
        """The classes a geoseg raster stores, or None where it stores none (or bad ones).

        Args:
            tags: the band's tags: ``CLASS_IDS`` and ``CLASS_NAMES``, comma-separated, as
                :class:`~geoseg.io.cog.CogWriter` writes them.
            colormap: the band's colour table ``{id: (r, g, b[, a])}``; classes without an
                entry get their default colour.
        """
        names, ids = tags.get("CLASS_NAMES"), tags.get("CLASS_IDS")
        if not names or not ids:
            return None
        try:
            id_list = [int(v) for v in ids.split(",")]
        except ValueError:
            return None
        name_list = names.split(",")
        if len(name_list) != len(id_list):
            return None
        cmap = colormap or {}
        try:
            return cls(
                tuple(
                    ClassInfo(
                        id=i,
                        name=n,
                        color=_rgb(cmap[i]) if i in cmap else default_color(n, k),
                    )
                    for k, (i, n) in enumerate(zip(id_list, name_list, strict=True))
                )
            )
        except ClassMapError:
            return None

    def recoloured(self, colormap: Mapping[int, Sequence[int]]) -> ClassMap:
        """These classes with the colours of a colour table where it has them."""
        return ClassMap(
            tuple(
                ClassInfo(c.id, c.name, _rgb(colormap[c.id]) if c.id in colormap else c.color)
                for c in self.classes
            )
        )

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], *, source: str = "class map"
    ) -> ClassMap:
        """From dictionaries with ``id``, ``name`` and optional ``color`` ([r, g, b] or '#rrggbb')."""
        out = []
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping) or "id" not in rec or "name" not in rec:
                raise ClassMapError(f"{source}: entry {i} needs 'id' and 'name', got {rec!r}")
            color = rec.get("color")
            rgb = (
                _parse_color(color, source)
                if color is not None
                else default_color(str(rec["name"]), i)
            )
            try:
                cid = int(rec["id"])
            except (TypeError, ValueError) as exc:
                raise ClassMapError(
                    f"{source}: entry {i} has a non-integer id {rec['id']!r}"
                ) from exc
            out.append(ClassInfo(id=cid, name=str(rec["name"]), color=rgb))
        return cls(tuple(out))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ClassMap:
        """Read a ``classes.yaml`` (a list of {id, name, color}, or {classes: [...]})."""
        p = Path(path)
        if not p.exists():
            raise InputFileNotFoundError(f"{p}: no such class map file; check the path")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ClassMapError(f"{p}: not valid YAML ({exc}); fix the file") from exc
        if isinstance(data, Mapping):
            data = data.get("classes")
        if not isinstance(data, list):
            raise ClassMapError(f"{p}: expected a list of classes with id, name and color")
        return cls.from_records(data, source=str(p))

    # ---- queries ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[ClassInfo]:
        return iter(self.classes)

    @property
    def ids(self) -> list[int]:
        """Class ids in order."""
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        """Class names in order."""
        return [c.name for c in self.classes]

    def by_id(self, cid: int) -> ClassInfo:
        """The class with id ``cid``."""
        for c in self.classes:
            if c.id == cid:
                return c
        raise ClassMapError(f"class id {cid} is not in the class map (ids: {self.ids})")

    def by_name(self, name: str) -> ClassInfo:
        """The class named ``name`` (case-insensitive)."""
        for c in self.classes:
            if c.name.lower() == str(name).lower():
                return c
        raise ClassMapError(f"class {name!r} is not in the class map (names: {self.names})")

    def index_to_id(self) -> list[int]:
        """Lookup from model output index to class id."""
        return self.ids

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A rasterio colour map {id: (r, g, b, 255)}."""
        return {c.id: (*c.color, 255) for c in self.classes}

    def merged_with(self, names: Iterable[str]) -> ClassMap:
        """This map plus any ``names`` it lacks, appended with new ids (existing ids never move)."""
        out = list(self.classes)
        known = {c.name.lower() for c in out}
        next_id = max(self.ids) + 1
        for n in names:
            if str(n).lower() not in known:
                out.append(
                    ClassInfo(id=next_id, name=str(n), color=default_color(str(n), len(out)))
                )
                known.add(str(n).lower())
                next_id += 1
        return ClassMap(tuple(out))

    def to_records(self) -> list[dict[str, Any]]:
        """List of plain dictionaries."""
        return [c.to_dict() for c in self.classes]

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write as ``classes.yaml`` (atomically)."""
        from geoseg.io.atomic import atomic_outputs

        with atomic_outputs([path], overwrite=True) as (tmp,):
            tmp.write_text(yaml.safe_dump({"classes": self.to_records()}, sort_keys=False))


def _rgb(entry: Sequence[int]) -> tuple[int, int, int]:
    return (int(entry[0]), int(entry[1]), int(entry[2]))


def _parse_color(value: Any, source: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        s = value.lstrip("#")
        if len(s) == 6:
            try:
                return (int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16))
            except ValueError:
                pass
    elif isinstance(value, list | tuple) and len(value) in (3, 4):
        try:
            return (int(value[0]), int(value[1]), int(value[2]))
        except (TypeError, ValueError):
            pass
    raise ClassMapError(f"{source}: colour {value!r} is not [r, g, b] or '#rrggbb'")

"""Data files shipped inside the package: search spaces and strategy presets, found through importlib.resources
so that they work from a wheel, never through a path relative to a checkout."""
from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable

KINDS = {"search_spaces": "nni_shiftadd.search_spaces", "strategies": "nni_shiftadd.strategies"}


def _package(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown value {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind]


def list_resources(kind: str) -> list[str]:
    """Names of the YAML files of ``kind`` (``"search_spaces"`` or ``"strategies"``) that ship with the package."""
    return sorted(p.name for p in resources.files(_package(kind)).iterdir() if p.name.endswith((".yaml", ".yml")))


def resource(kind: str, name: str) -> Traversable:
    """The shipped file ``name`` of ``kind``; a ``FileNotFoundError`` lists what exists."""
    path = resources.files(_package(kind)).joinpath(name)
    if not path.is_file():
        raise FileNotFoundError(f"{kind}: no file {name!r} ships with nni_shiftadd; available: {list_resources(kind)}")
    return path

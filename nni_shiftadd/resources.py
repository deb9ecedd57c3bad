"""Data files shipped inside the package: search spaces and strategy presets, found through importlib.resources
so that they work from a wheel, never through a path relative to a checkout."""
from __future__ import annotations

import importlib.util
import sys
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

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


def _register_checkout_data() -> None:
    """From a source checkout (``PYTHONPATH=.``) the YAML folders at the top of the repository are not inside the
    package; map them the way ``setup.py``'s ``package_dir`` does on install, so ``importlib.resources`` finds
    them either way. Does nothing for an installed package."""
    import nni_shiftadd

    root = Path(__file__).resolve().parents[1]
    for kind, package in KINDS.items():
        if package in sys.modules or importlib.util.find_spec(package) is not None:
            continue
        init = root / kind / "__init__.py"
        if not init.is_file():
            continue
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(init.parent)])
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
        setattr(nni_shiftadd, package.rsplit(".", 1)[1], module)


_register_checkout_data()

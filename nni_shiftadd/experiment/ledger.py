"""The JSON ledger of a cached study (the ranking study, the paper's tables): reading a cached result, and naming
what changed between the recipe a cached result was made with and the one asked for now, so that a study never
mixes results of two recipes."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["plain", "read_json", "recipe_changes"]


def read_json(path: Path) -> Any:
    """The JSON document at ``path``, or ``None`` when there is none (not yet computed)."""
    return json.loads(path.read_text()) if path.is_file() else None


def recipe_changes(saved: Mapping[str, Any], wanted: Mapping[str, Any], keys: set[str]) -> str:
    """``"key: saved -> wanted, ..."`` over the ``keys`` whose values differ (sorted); empty when none do."""
    return ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(keys)
                     if saved.get(k) != wanted.get(k))


def plain(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples as lists), so that it compares equal to a saved copy."""
    return json.loads(json.dumps(data))

"""Files written whole or not at all: the text goes to a temporary file beside its destination, which then replaces
it in one rename, so a kill mid-write keeps the previous version (caches, ledgers, results, recipes of a run); and
such a JSON document read back."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "read_json"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (creating its folder); return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, indent: int = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; return the path."""
    return atomic_write_text(path, json.dumps(data, indent=indent))


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document at ``path``, or ``None`` when there is none (not yet computed)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None

"""The one place nni-shiftadd keeps built kernels and prepared data."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """``$NNI_SHIFTADD_CACHE``, else ``$XDG_CACHE_HOME/nni_shiftadd``, else ``~/.cache/nni_shiftadd``."""
    root = os.environ.get("NNI_SHIFTADD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nni_shiftadd")
    return Path(root)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks: what keys prepared data to its source, and what a saved
    predictor's sidecar checks its weights against."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

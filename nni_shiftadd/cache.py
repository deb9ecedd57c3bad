"""The one place nni-shiftadd keeps built kernels and prepared data."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$NNI_SHIFTADD_CACHE``, else ``$XDG_CACHE_HOME/nni_shiftadd``, else ``~/.cache/nni_shiftadd``."""
    root = os.environ.get("NNI_SHIFTADD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nni_shiftadd")
    return Path(root)

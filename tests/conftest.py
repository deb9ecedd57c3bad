"""Shared test set-up."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _quiet_nni_at_exit() -> Iterator[None]:
    """NNI stops its experiments again at interpreter exit and logs that through handlers bound to pytest's
    (by then closed) capture streams; point them at the real stderr and keep only errors, so nothing routine is printed
    after pytest's summary line."""
    yield
    for name in ("nni", ""):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__module__.startswith("_pytest"):
                continue
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.stream = sys.__stderr__  # not setStream(): it flushes the closed stream first
                handler.setLevel(logging.ERROR)


def isolate_nni(env: pytest.MonkeyPatch, home: Path) -> None:
    """Give NNI a ``HOME`` of its own (it keeps experiments under ``~/nni-experiments``) and its own
    ``NNI_CONFIG_DIR`` (tuner registrations), keeping the built kernels, prepared data and matplotlib's font cache;
    NNI's tuner and trial processes import this same copy of nni_shiftadd (a checkout or not)."""
    import matplotlib

    import nni_shiftadd
    from nni_shiftadd.cache import cache_root

    env.setenv("NNI_SHIFTADD_CACHE", str(cache_root()))
    env.setenv("MPLCONFIGDIR", os.environ.get("MPLCONFIGDIR") or matplotlib.get_cachedir())
    env.setenv("HOME", str(home / "home"))
    env.setenv("NNI_CONFIG_DIR", str(home / "nni"))
    source = str(Path(nni_shiftadd.__file__).resolve().parents[1])
    env.setenv("PYTHONPATH", os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p))

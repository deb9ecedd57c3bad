"""Shared test set-up."""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

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

"""Which subnet a translation run uses, without importing fairseq: the per-update sample of supernet training, the
named subnets of validation, and architectures given as JSON on a command line."""
from __future__ import annotations

import random
from typing import Any

from ...config import arch_argument
from ...space.nlp_spec import TranslationSpaceSpec, baseline_arch, random_arch
from ...vocabulary import ATTENTION


class OptionError(SystemExit):
    """A bad option of the fairseq plugin (``--space``, ``--mode``, ``--subnet``, ``--valid-subnet``, ...): one
    ``fairseq-train: error:`` line and exit status 2, as argparse gives for fairseq's own options, before any
    training, instead of a traceback."""

    def __init__(self, message: str) -> None:
        import sys

        print(f"fairseq-train: error: {message}", file=sys.stderr, flush=True)
        super().__init__(2)
        self.message = message


def parse_arch(text: str, flag: str = "--subnet") -> dict[str, Any] | None:
    """An architecture given as inline JSON or as a JSON file (:func:`nni_shiftadd.config.arch_argument`); ``None``
    for an empty string."""
    return arch_argument(text, flag) if text else None


def update_rng(seed: int, update_num: int) -> random.Random:
    """The generator of update ``update_num``'s subnets: a function of the seed and the update only (the same on
    every rank, for every micro-batch of the update, and after a resume)."""
    return random.Random(f"{seed}:{update_num}")


def sampled_arch(spec: TranslationSpaceSpec, seed: int, update_num: int) -> dict[str, Any]:
    """The subnet trained at update ``update_num`` with uniform sampling (:func:`update_rng`)."""
    return random_arch(spec, update_rng(seed, update_num))


def named_arch(spec: TranslationSpaceSpec, name: str, flag: str = "--valid-subnet") -> dict[str, Any]:
    """``largest``/``smallest`` (all-Attn at the largest or smallest dimensions, the deepest decoder), or an
    architecture as :func:`parse_arch` reads it."""
    if name in ("largest", "smallest"):
        return baseline_arch(spec, ATTENTION, size=name)
    arch = parse_arch(name, flag)
    if arch is None:
        raise ValueError(f"{flag}: empty; expected largest, smallest or an architecture")
    return arch

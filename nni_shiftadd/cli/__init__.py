"""The ``nni-shiftadd`` command line, one module per command group: :mod:`.training` (``train``,
``train-supernet``, ``train-supertransformer``, ``retrain``, ``fairseq-user-dir``), :mod:`.data` (``data``,
``kernels``), :mod:`.cost` (``profile``, ``latency-predictor``), :mod:`.search` (``demo``, ``register``, ``create``,
``trial``, ``search-space``), :mod:`.studies` (``ranking``, ``translation-ranking``, ``reproduce``) and :mod:`.plot` (``plot``). Each command is a
:class:`~._command.Command`: its name, its recipe schema (whose fields become its flags), its other arguments and
what runs it.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from ._command import Command, recipe, recipe_overrides

__all__ = ["COMMANDS", "Command", "build_parser", "main", "recipe", "recipe_overrides"]

#: Every command and the module of its group, in the order ``--help`` lists them. A command's parser is built (and
#: its recipe schema imported) only when it runs: a trial starts in seconds instead of importing Lightning.
COMMANDS: dict[str, str] = {
    "train": "training", "train-supernet": "training", "train-supertransformer": "training",
    "fairseq-user-dir": "training", "retrain": "training", "data": "data", "kernels": "data", "profile": "cost",
    "plot": "plot", "demo": "search", "register": "search", "search-space": "search", "trial": "search",
    "create": "search", "ranking": "studies", "reproduce": "studies", "translation-ranking": "studies", "latency-predictor": "cost",
}


def _command(name: str) -> Command:
    group = importlib.import_module(f".{COMMANDS[name]}", __name__)
    return next(c for c in group.COMMANDS if c.name == name)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command's, or with ``command`` only that one's."""
    parser = argparse.ArgumentParser(prog="nni-shiftadd", description="ShiftAddNAS for NNI: hybrid Shift/Add/Conv/"
                                     "Attn networks and their search.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        if command is None or name == command:
            _command(name).add_to(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; a bad input or a failed run ends in one ``error:`` line and exit status 2 (1 for an
    NNI experiment that failed), never a traceback (set ``NNI_SHIFTADD_DEBUG=1`` to see one); SIGTERM and SIGINT
    stop it with one line saying what was kept and status 143 / 130 (:mod:`nni_shiftadd.stopping`)."""
    from .. import stopping
    from ..lock import OutputLockedError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    args.argv = argv  # a command that hands itself to another process (a trial to its warm host) passes them on
    try:
        with stopping.handling():
            return args.func(args)
    except (stopping.Stopped, SystemExit):
        # a signal (Lightning ends a stopped fit with a SystemExit whose status is 0): say so, exit 128 + signal
        signum = stopping.received()
        if signum is None:
            raise
        print(f"nni-shiftadd {args.command}: {stopping.stop_message(signum)}", file=sys.stderr, flush=True)
        return 128 + signum
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FloatingPointError,
            OutputLockedError) as err:
        # ValueError covers ConfigError, CheckpointError, OutputPathError and the checks of every recipe
        if os.environ.get("NNI_SHIFTADD_DEBUG"):
            raise
        print(f"nni-shiftadd {args.command}: error: {err}", file=sys.stderr)
        return 2

"""What every command of the CLI is made of: a :class:`Command` declares its name, help, the recipe schema whose
fields become its flags, its other arguments and the function that runs it (and prints its report); the flag
helpers turn a recipe schema into flags and the flags back into a recipe."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import typing
from collections.abc import Callable
from typing import Any

from ..config import ConfigError, coerce, from_dict, load_yaml, load_yaml_text

__all__ = ["Command", "add_config_flags", "recipe", "recipe_overrides", "yaml_flag"]


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``nni-shiftadd`` command.

    ``schema`` names the recipe dataclass (``"module:Class"``, imported only when this command's parser is built)
    whose fields become ``--field`` flags; ``config`` is the help of its ``--config`` flag (``None``: the command
    takes no recipe file); ``arguments`` adds any other arguments; ``run`` runs the command and prints its report,
    returning the exit status."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    schema: str | None = None
    config: str | None = None
    arguments: Callable[[argparse.ArgumentParser], None] | None = None

    def add_to(self, subparsers: Any) -> None:
        """Add this command's parser to ``subparsers``."""
        parser = subparsers.add_parser(self.name, help=self.help, description=self.description)
        if self.arguments is not None:
            self.arguments(parser)
        if self.config is not None:
            parser.add_argument("--config", default=None, help=self.config)
        if self.schema is not None:
            add_config_flags(parser, load_schema(self.schema))
        parser.set_defaults(func=self.run)


def load_schema(path: str) -> type:
    """The class ``"module:Class"`` names (module relative to ``nni_shiftadd``)."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module, "nni_shiftadd"), name)


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field`` flag per dataclass field, parsed as YAML so lists and mappings can be given too."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, metavar="VALUE",
                            help=f"(default from the recipe, else {_default(f)!r}; type {hints[f.name]})")


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def yaml_flag(raw: str, flag: str) -> Any:
    """A flag's value parsed as YAML (so ``1e-3``, ``[1, 2]`` and ``{max: 0.3}`` work); a syntax error names the flag."""
    import yaml

    try:
        return load_yaml_text(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{flag}: {raw!r} is not valid YAML ({problem}); quote a mapping like "
                          "'{key: value}' and a list like '[a, b]'") from None


def recipe_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The recipe fields of ``cls`` given as flags, coerced to their types (errors name the flag)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        raw = getattr(args, f.name)
        if raw is None:
            continue
        flag = f"--{f.name.replace('_', '-')}"
        value = yaml_flag(raw, flag) if hints[f.name] is not str else raw
        out[f.name] = coerce(value, hints[f.name], flag)
    return out


def recipe(args: argparse.Namespace, cls: type) -> Any:
    """The ``cls`` recipe of ``--config`` (YAML) with the command line's flags on top, or of the flags alone."""
    overrides = recipe_overrides(args, cls)
    if args.config:
        return load_yaml(cls, args.config, overrides, overrides_from="command line")
    return from_dict(cls, overrides, "command line")

"""Configuration as data: YAML files validated against dataclass schemas, with errors that name the file,
the field, the bad value and what is allowed.

Fields may be nested dataclasses or lists/tuples of them; errors then name the full field path, e.g.
``spaces.yaml: field 'stages[2].depths[0]': got 'two'; expected int``.
"""
from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, Union

import yaml

T = TypeVar("T")


class YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core-schema scalars, as a user writes numbers and booleans.

    PyYAML implements YAML 1.1, where ``1e-3`` and ``5E-4`` are strings (a float needs a dot and a signed
    exponent), ``010`` is octal, ``1:30`` is sexagesimal, and ``yes``/``no``/``on``/``off`` are booleans. Here
    ``1e-3`` is a float, ``010`` is ten, and only ``true``/``false`` (any of the three spellings of each) are
    booleans; every other word stays a string, which a ``bool`` field then rejects by name.
    """


YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float", "tag:yaml.org,2002:int")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                 list("-+0123456789"))
YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)  # "010" is ten, not YAML 1.1's octal eight


YAMLLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml_text(text: str) -> Any:
    """Parse YAML ``text`` with :class:`YAMLLoader` (``yaml.YAMLError`` on a syntax error)."""
    return yaml.load(text, Loader=YAMLLoader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A configuration file or value that does not fit its schema."""


class _Where(NamedTuple):
    """Where a value sits: the file (or other source) and the field path inside it."""

    source: str
    path: str = ""
    quoted: bool = True  # "src: field 'a.b[0]'" rather than the raw "src" + path

    def __str__(self) -> str:
        if not self.path:
            return self.source
        return f"{self.source}: field {self.path!r}" if self.quoted else self.source + self.path

    def item(self, index: Any) -> _Where:
        return self._replace(path=f"{self.path}[{index}]")

    def field(self, name: str) -> _Where:
        return self._replace(path=f"{self.path}.{name}" if self.path else name)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is dict:
        return "a mapping"
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if _is_dataclass_type(tp):
        return f"a mapping of {tp.__name__} fields"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type hint ``tp`` (int, float, str, bool, Literal, Optional, list, tuple, dict,
    or a dataclass given as a mapping of its fields)."""
    return _coerce(value, tp, _Where(where, "", quoted=False))


def _coerce(value: Any, tp: Any, where: _Where) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (Union, types.UnionType):
        deep: ConfigError | None = None
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                # a mapping that was meant for a dataclass: its own, more precise error is the one to report
                if deep is None and _is_dataclass_type(arg) and isinstance(value, dict):
                    deep = err
        if deep is not None:
            raise deep
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            items = [_coerce(v, args[0], where.item(i)) if args else v for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, dict):
            kt, vt = typing.get_args(tp) or (Any, Any)
            key_where = _Where(f"{where} key", "", quoted=False)
            return {_coerce(k, kt, key_where): _coerce(v, vt, where.item(repr(k))) for k, v in value.items()}
    elif _is_dataclass_type(tp):
        if isinstance(value, dict):
            return _build(tp, value, where)
        if isinstance(value, tp):  # already built (a flag's value, coerced once)
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: got {value!r}; expected {_type_name(tp)}")


def _build(cls: type[T], data: dict[str, Any], where: _Where) -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        name = where.field(str(unknown[0])).path
        raise ConfigError(f"{where.source}: unknown field {name!r}; allowed fields are {sorted(fields)}")
    required = [n for n, f in fields.items() if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        name = where.field(missing[0]).path
        raise ConfigError(f"{where.source}: missing field {name!r} ({_type_name(hints[missing[0]])}); "
                          f"required fields are {sorted(required)}")
    values = {k: _coerce(v, hints[k], where.field(k)) for k, v in data.items()}
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as err:
            inside = f"in {where.path!r}: " if where.path else ""
            raise ConfigError(f"{where.source}: {inside}{err}") from None
    return obj


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<config>") -> T:
    """Build the dataclass ``cls`` from ``data``, rejecting unknown fields and values of the wrong type.

    Nested dataclass fields (and lists of them) are built from nested mappings; a ``validate()`` method, where a
    dataclass has one, runs after it is built and its ``ValueError`` becomes a ``ConfigError`` naming ``source``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    return _build(cls, data, _Where(source))


def parse_yaml(cls: type[T], text: str, source: str, overrides: dict[str, Any] | None = None,
               overrides_from: str | None = None) -> T:
    """Parse the YAML ``text`` (read from ``source``, named in errors) into the dataclass ``cls``, with
    ``overrides`` on top; when a value of ``overrides`` fails validation and ``overrides_from`` says where they came
    from (e.g. ``"command line"``), the error names that flag instead of the file."""
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if data is None:  # an empty file is a mistake (a truncated copy, the wrong file), never "all defaults"
        raise ConfigError(f"{source}: the file is empty; expected a mapping of fields, allowed fields are "
                          f"{sorted(f.name for f in dataclasses.fields(cls))}")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return from_dict(cls, {**data, **(overrides or {})}, source)
    except ConfigError as err:
        text, prefix = str(err), f"{source}: "
        named = re.match(r"(?:in '[^']*': )?fields? '(\w+)'", text[len(prefix):]) if text.startswith(prefix) else None
        if overrides_from is None or named is None or named.group(1) not in (overrides or {}):
            raise
        raise ConfigError(f"--{named.group(1).replace('_', '-')} ({overrides_from}): {text[len(prefix):]}") from None


def load_yaml(cls: type[T], path: str | Path, overrides: dict[str, Any] | None = None,
              overrides_from: str | None = None) -> T:
    """Read ``path`` as YAML into the dataclass ``cls``, applying ``overrides`` on top (validated too; see
    :func:`parse_yaml` for ``overrides_from``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    return parse_yaml(cls, path.read_text(), str(path), overrides, overrides_from)


def check_reserved(overrides: Any, reserved: Any, field: str) -> None:
    """``ValueError`` naming ``field`` when ``overrides`` (a mapping of recipe fields) sets any of ``reserved``, the
    fields a study sets per network."""
    clash = sorted(set(overrides) & set(reserved))
    if clash:
        raise ValueError(f"field {field!r}: {clash} are set by the study per network; remove them")


def check_learning_rate(value: float, field: str = "lr") -> None:
    """``ValueError`` naming ``field`` unless ``value`` is a learning rate an optimiser stepping in float32 can take:
    above 0 and below float32's largest number (a larger one overflows inside the step, whatever the gradients)."""
    if not value > 0:
        raise ValueError(f"field {field!r}: must be > 0, got {value}")
    if not value < 3.4e38:
        raise ValueError(f"field {field!r}: must be below 3.4e38 (float32's range, which the optimiser steps in), "
                         f"got {value}")


def json_argument(raw: str, flag: str) -> Any:
    """``raw`` as inline JSON (starting with ``{`` or ``[``) or as the path of a JSON file; ``ValueError`` naming
    ``flag`` and the value otherwise."""
    if raw.lstrip().startswith(("{", "[")):
        text = raw
    elif Path(raw).is_file():
        text = Path(raw).read_text(encoding="utf-8")
    else:
        raise ValueError(f"{flag}: no such file {raw!r}; give inline JSON ({{...}}) or the path of a JSON file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} {raw[:60]!r}: not valid JSON ({err})") from None


def arch_argument(raw: str, flag: str = "--arch") -> dict[str, Any]:
    """An architecture given as inline JSON or a JSON file: a bare ``{label: value}`` mapping, or an evaluated
    record holding one under ``arch`` (a line of a search's results)."""
    arch = json_argument(raw, flag)
    if isinstance(arch, dict) and isinstance(arch.get("arch"), dict):
        arch = arch["arch"]
    if not isinstance(arch, dict):
        raise ValueError(f"{flag}: expected a JSON object of labels to values, got {type(arch).__name__}")
    return arch


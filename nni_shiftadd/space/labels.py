"""An architecture's labels against a space's ``{label: choices}``: the checks every search space shares, with
messages that name the label, the value and what is allowed."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def _plain_match(value: Any, choice: Any) -> bool:
    return not isinstance(value, bool) and value == choice


def check_labels(space: Mapping[str, Sequence[Any]], arch: Any, space_name: str,
                 matches: Callable[[Any, Any], bool] = _plain_match) -> None:
    """``TypeError`` unless ``arch`` is a mapping; ``ValueError`` for a missing label, an unknown label, or a value
    that ``matches`` none of its label's choices."""
    if not isinstance(arch, Mapping):
        raise TypeError(f"arch: expected a mapping of labels to values, got {type(arch).__name__}")
    for key, choices in space.items():
        if key not in arch:
            raise ValueError(f"arch: missing key {key!r}; expected a value out of {list(choices)}")
    for key, value in arch.items():
        if key not in space:
            raise ValueError(f"arch: unknown key {key!r} (value {value!r}); space {space_name!r} has the keys "
                             f"{list(space)}")
    for key, choices in space.items():
        if not any(matches(arch[key], c) for c in choices):
            raise ValueError(f"arch[{key!r}]: got {arch[key]!r}; expected one of {list(choices)}")

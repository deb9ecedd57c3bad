"""The kinds of search space and what every kind's spec does: one protocol (:class:`SearchSpaceSpec`) that the image
spec (:class:`~nni_shiftadd.space.spec.SpaceSpec`) and the translation spec
(:class:`~nni_shiftadd.space.nlp_spec.TranslationSpaceSpec`) implement, and the registry of kinds a search-space
YAML's ``kind:`` field names, so that ``load_space`` reads the right schema and the rest of the package asks a spec
for its architectures instead of asking what it is. A third kind registers itself with :func:`register_space_kind`
from its own module.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ..config import ConfigError

__all__ = ["DEFAULT_KIND", "SPACE_KINDS", "SearchSpaceSpec", "bad_field", "register_space_kind", "space_class"]

#: The kind of a search-space YAML without a ``kind:`` field.
DEFAULT_KIND = "image_classification"


@runtime_checkable
class SearchSpaceSpec(Protocol):
    """What every kind of search-space spec provides. An architecture is a flat mapping of the space's labels to
    values (an NNI sample); every method validates what it is given, with errors that name the label."""

    name: str
    kind: str

    def arch_space(self) -> dict[str, list[Any]]:
        """Every label and its choices, in network order (one ``nni.choice`` per label)."""

    def arch_gates(self) -> dict[str, tuple[str, int]]:
        """``{label: (depth label, layer index)}``: the labels of layers that exist only at some depths."""

    def validate_arch(self, arch: Mapping[str, Any]) -> None:
        """``ValueError`` naming the label unless ``arch`` is an architecture of this space."""

    def canonical_arch(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """``arch`` with its inactive labels at canonical values (equal networks, equal mappings)."""

    def structurally_valid(self, arch: Mapping[str, Any]) -> bool:
        """Whether labels within their choices combine into a network (e.g. depths adding up)."""

    def random_arch(self, rng: Any = None) -> dict[str, Any]:
        """A uniformly random architecture (``rng``: a ``random.Random``, a seed, or ``None``)."""

    def baseline_arch(self, op: str, **options: Any) -> dict[str, Any]:
        """The homogeneous network of block type ``op``."""

    def named_baselines(self, ops: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{"all_<op>": baseline}`` for each of ``ops``."""

    def restrict_blocks(self, blocks: Sequence[str]) -> SearchSpaceSpec:
        """The same space with its block types limited to ``blocks``."""

    def count_subnets(self) -> int:
        """How many distinct networks the space holds."""


#: Every kind of search space, by the name a YAML's ``kind:`` gives it.
SPACE_KINDS: dict[str, type] = {}


def register_space_kind(kind: str, cls: type) -> type:
    """Let ``load_space`` read ``kind: <kind>`` YAML files with the dataclass schema ``cls`` (which implements
    :class:`SearchSpaceSpec`)."""
    known = SPACE_KINDS.get(kind)
    if known is not None and known is not cls:
        raise ValueError(f"space kind {kind!r} is registered already, for {known.__name__}")
    SPACE_KINDS[kind] = cls
    return cls


def space_class(kind: str, source: str) -> type:
    """The schema of space kind ``kind`` (a ``ConfigError`` naming ``source`` and the kinds otherwise)."""
    if kind not in SPACE_KINDS:
        raise ConfigError(f"{source}: field 'kind': got {kind!r}; expected one of {list(SPACE_KINDS)}")
    return SPACE_KINDS[kind]


def bad_field(path: str, value: Any, expected: str) -> ValueError:
    """The error of a spec field: the field's path, the value, what is allowed."""
    return ValueError(f"field {path!r}: got {value!r}; expected {expected}")

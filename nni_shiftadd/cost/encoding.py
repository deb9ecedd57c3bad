"""Architecture encodings for latency predictors (HAT): an NNI flat sample ``{label: value}`` of a search space
``{label: choices}`` as a fixed-length vector.

:class:`ArchEncoder` one-hot encodes categorical labels, scales numeric labels to ``[0, 1]`` by their choice range,
then appends derived features (layer counts, mean dims, ...): JSON-serialisable :class:`Aggregate` rules or any
user callables. :func:`cv_encoder` and :func:`translation_encoder` are the encoders of our two kinds of space.
"""
from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["Aggregate", "ArchEncoder", "count_features", "cv_encoder", "translation_encoder", "translation_features"]

#: The version of the saved format (an encoder's description and a predictor's sidecar).
FORMAT_VERSION = 1

Choice = str | int | float
Arch = Mapping[str, Any]

def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plain(value: Any) -> Choice:
    """A choice as a plain JSON-able Python scalar (numpy scalars, str subclasses -> int/float/str)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if _is_number(value):
        return float(value)
    raise TypeError(f"choice {value!r} has type {type(value).__name__}; only str, int and float are supported")


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return isinstance(a, str) and isinstance(b, str) and a == b


@dataclass(frozen=True)
class Aggregate:
    """A derived feature that reduces a list of labels (e.g. one per layer); JSON-serialisable.

    ``op="count"`` counts labels whose value equals ``value`` (HAT's layer counts per block type);
    ``"sum"``/``"mean"``/``"max"``/``"min"`` reduce numeric labels (HAT's mean per-layer dims). With ``depth``,
    only the first ``arch[depth]`` of ``labels`` (in the given order) are active, as for layers beyond the
    sampled depth. An empty active set gives 0.
    """

    op: Literal["count", "sum", "mean", "max", "min"]
    labels: tuple[str, ...]
    value: Choice | None = None
    depth: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.op not in ("count", "sum", "mean", "max", "min"):
            raise ValueError(f"Aggregate op must be count/sum/mean/max/min, got {self.op!r}")
        if not self.labels:
            raise ValueError("Aggregate needs at least one label")
        if (self.op == "count") != (self.value is not None):
            raise ValueError("Aggregate: 'value' is required for op='count' and not allowed otherwise")

    def active(self, arch: Arch) -> tuple[str, ...]:
        """The labels that count for ``arch`` (the first ``arch[depth]`` ones when ``depth`` is set)."""
        if self.depth is None:
            return self.labels
        return self.labels[:max(0, int(arch[self.depth]))]

    def __call__(self, arch: Arch) -> float:
        labels = self.active(arch)
        if self.op == "count":
            return float(sum(_same(arch[label], self.value) for label in labels))
        values = [float(arch[label]) for label in labels]
        if not values:
            return 0.0
        return {"sum": sum, "max": max, "min": min, "mean": statistics.fmean}[self.op](values)

    def check(self, space: Mapping[str, Sequence[Choice]], name: str) -> None:
        """Raise ValueError if the rule refers to labels or values the space does not have."""
        for label in self.labels + ((self.depth,) if self.depth else ()):
            if label not in space:
                raise ValueError(f"derived feature {name!r} refers to label {label!r}, which is not in the space")
        if self.depth is not None and not all(_is_number(c) for c in space[self.depth]):
            raise ValueError(f"derived feature {name!r}: depth label {self.depth!r} must have numeric choices")
        if self.op == "count":
            if not any(_same(c, self.value) for label in self.labels for c in space[label]):
                raise ValueError(f"derived feature {name!r} counts value {self.value!r}, which no label allows")
        else:
            for label in self.labels:
                if not all(_is_number(c) for c in space[label]):
                    raise ValueError(f"derived feature {name!r}: op {self.op!r} needs numeric label, "
                                     f"{label!r} has {list(space[label])!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "aggregate", "op": self.op, "labels": list(self.labels),
                "value": None if self.value is None else _plain(self.value), "depth": self.depth}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Aggregate:
        return cls(op=data["op"], labels=tuple(data["labels"]), value=data.get("value"), depth=data.get("depth"))


def count_features(labels: Sequence[str], values: Sequence[Choice], *, depth: str | None = None,
                   prefix: str = "n_") -> dict[str, Aggregate]:
    """``{prefix + value: Aggregate("count", labels, value, depth)}``: HAT's per-block-type layer counts."""
    return {f"{prefix}{v}": Aggregate("count", tuple(labels), v, depth) for v in values}


def translation_features(spec: Any) -> dict[str, Aggregate]:
    """HAT's latency features of a translation space (SPEC: embedding dims, layer counts, mean FFN dims and heads,
    mean number of encoder layers attended), with the layer count of each block type per stack (ShiftAddNAS's
    blocks differ in cost where HAT's do not). Decoder features count the first ``decoder.depth`` layers only."""
    from ..space.nlp_spec import SIDES, stack_labels

    features: dict[str, Aggregate] = {}
    for side in SIDES:
        stack = getattr(spec, side)
        depth = "decoder.depth" if side == "decoder" else None
        features.update(count_features(stack_labels(spec, side, "op"), stack.blocks, depth=depth,
                                       prefix=f"{side}.n_"))
        for what in ("heads", "ffn_dim") + (("attend",) if side == "decoder" else ()):
            features[f"{side}.mean_{what}"] = Aggregate("mean", tuple(stack_labels(spec, side, what)), depth=depth)
    return features


def cv_encoder(spec: Any) -> ArchEncoder:
    """The :class:`ArchEncoder` of an image space: every label (layers beyond their stage's depth zeroed) and, per
    stage, the number of active layers of each block type."""
    from ..space.spec import arch_gates, arch_space, depth_label, op_label

    features: dict[str, Aggregate] = {}
    for i, stage in enumerate(spec.stages):
        labels = [op_label(i, j) for j in range(stage.max_depth)]
        features.update(count_features(labels, stage.blocks, depth=depth_label(i), prefix=f"stage{i}.n_"))
    return ArchEncoder(arch_space(spec), features, gates=arch_gates(spec))


def translation_encoder(spec: Any) -> ArchEncoder:
    """The :class:`ArchEncoder` of a translation space: every label (inactive decoder layers zeroed) and
    :func:`translation_features`."""
    from ..space.nlp_spec import arch_gates, arch_space

    return ArchEncoder(arch_space(spec), translation_features(spec), gates=arch_gates(spec))


class ArchEncoder:
    """Fixed-length encoding of architectures sampled from ``space``.

    Features, in order: for each label in sorted order, a one-hot over its choices (categorical, i.e. any
    non-numeric choice) or one value scaled to ``[0, 1]`` by the choice range (numeric); then the derived
    ``extra_features`` in sorted-name order, unscaled (the predictor standardises its inputs).

    ``gates`` maps a per-layer label to ``(depth_label, index)``: when ``arch[depth_label] <= index`` the layer
    is inactive and its features are all zero, so that the value an unused layer happened to get in the sample
    (NNI samples every label) is not noise the predictor has to learn to ignore.
    """

    def __init__(self, space: Mapping[str, Sequence[Choice]],
                 extra_features: Mapping[str, Callable[[dict], float]] | None = None, *,
                 gates: Mapping[str, tuple[str, int]] | None = None) -> None:
        if not space:
            raise ValueError("the search space is empty")
        self.space: dict[str, tuple[Choice, ...]] = {}
        self.kinds: dict[str, Literal["categorical", "numeric"]] = {}
        for label in sorted(space):
            if not isinstance(label, str):
                raise TypeError(f"labels must be str, got {label!r}")
            choices = space[label]
            if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or len(choices) == 0:
                raise ValueError(f"label {label!r}: choices must be a non-empty list, got {choices!r}")
            plain = tuple(_plain(c) for c in choices)
            if len(set(plain)) != len(plain):
                raise ValueError(f"label {label!r}: duplicate choices in {list(plain)!r}")
            self.space[label] = plain
            self.kinds[label] = "numeric" if all(_is_number(c) for c in plain) else "categorical"
        self.gates: dict[str, tuple[str, int]] = {}
        for label in sorted(gates or {}):
            depth_label, index = gates[label]  # type: ignore[index]
            for name in (label, depth_label):
                if name not in self.space:
                    raise ValueError(f"gate of {label!r} refers to label {name!r}, which is not in the space")
            if self.kinds[depth_label] != "numeric":
                raise ValueError(f"gate of {label!r}: depth label {depth_label!r} must have numeric choices")
            self.gates[label] = (str(depth_label), int(index))
        self.extra_features: dict[str, Callable[[dict], float]] = {}
        for name in sorted(extra_features or {}):
            fn = extra_features[name]  # type: ignore[index]
            if name in self.space:
                raise ValueError(f"derived feature name {name!r} clashes with a label of the space")
            if not callable(fn):
                raise TypeError(f"derived feature {name!r} is not callable")
            if isinstance(fn, Aggregate):
                fn.check(self.space, name)
            self.extra_features[name] = fn
        self.feature_names: list[str] = []
        for label, choices in self.space.items():
            if self.kinds[label] == "numeric":
                self.feature_names.append(label)
            else:
                self.feature_names.extend(f"{label}={c}" for c in choices)
        self.feature_names.extend(self.extra_features)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def validate(self, arch: Arch) -> None:
        """Raise ValueError naming the offending label/value if ``arch`` is not a sample of the space."""
        if not isinstance(arch, Mapping):
            raise TypeError(f"an architecture must be a dict {{label: value}}, got {type(arch).__name__}")
        unknown = [label for label in arch if label not in self.space]
        if unknown:
            raise ValueError(f"unknown label {unknown[0]!r} (value {arch[unknown[0]]!r}); "
                             f"the space has labels {list(self.space)!r}")
        for label, choices in self.space.items():
            if label not in arch:
                raise ValueError(f"missing label {label!r}; allowed values: {list(choices)!r}")
            value = arch[label]
            if not any(_same(value, c) for c in choices):
                raise ValueError(f"label {label!r}: value {value!r} is not one of the allowed values "
                                 f"{list(choices)!r}")

    def _row(self, arch: Arch) -> list[float]:
        self.validate(arch)
        row: list[float] = []
        for label, choices in self.space.items():
            value = arch[label]
            gate = self.gates.get(label)
            if gate is not None and float(arch[gate[0]]) <= gate[1]:
                row.extend([0.0] * (1 if self.kinds[label] == "numeric" else len(choices)))
            elif self.kinds[label] == "numeric":
                lo, hi = min(choices), max(choices)  # type: ignore[type-var]
                row.append(0.0 if hi == lo else (float(value) - lo) / (hi - lo))  # type: ignore[operator]
            else:
                row.extend(1.0 if _same(value, c) else 0.0 for c in choices)
        for name, fn in self.extra_features.items():
            v = float(fn(dict(arch)))
            if not math.isfinite(v):
                raise ValueError(f"derived feature {name!r} returned {v} for {dict(arch)!r}")
            row.append(v)
        return row

    def encode(self, arch: Arch) -> Tensor:
        """One architecture -> float32 vector of length ``n_features``."""
        return torch.tensor(self._row(arch), dtype=torch.float32)

    def encode_batch(self, archs: Sequence[Arch]) -> Tensor:
        """Architectures -> float32 matrix ``(len(archs), n_features)``."""
        if len(archs) == 0:
            return torch.zeros(0, self.n_features)
        return torch.tensor([self._row(a) for a in archs], dtype=torch.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description. User callables are recorded by name only and must be re-supplied on load."""
        extras = []
        for name, fn in self.extra_features.items():
            entry = fn.to_dict() if isinstance(fn, Aggregate) else {"kind": "callable"}
            extras.append({"name": name, **entry})
        return {"version": FORMAT_VERSION, "space": {k: list(v) for k, v in self.space.items()},
                "gates": {k: list(v) for k, v in self.gates.items()}, "extra_features": extras,
                "feature_names": list(self.feature_names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  extra_features: Mapping[str, Callable[[dict], float]] | None = None) -> ArchEncoder:
        """Inverse of :meth:`to_dict`; ``extra_features`` supplies the user callables (by name)."""
        given = dict(extra_features or {})
        extras: dict[str, Callable[[dict], float]] = {}
        for entry in data.get("extra_features", []):
            name = entry["name"]
            if entry.get("kind") == "aggregate":
                extras[name] = given.pop(name, None) or Aggregate.from_dict(entry)
            elif name in given:
                extras[name] = given.pop(name)
            else:
                raise ValueError(f"derived feature {name!r} is a user callable that cannot be stored; "
                                 f"pass it again with extra_features={{{name!r}: fn}}")
        if given:
            raise ValueError(f"extra_features {sorted(given)!r} are not part of the saved encoder")
        gates = {k: (v[0], v[1]) for k, v in data.get("gates", {}).items()}
        enc = cls(data["space"], extras, gates=gates)
        saved_names = data.get("feature_names")
        if saved_names is not None and list(saved_names) != enc.feature_names:
            raise ValueError("the encoder's feature list does not match the saved feature_names")
        return enc

    def __repr__(self) -> str:
        return f"ArchEncoder({len(self.space)} labels, {len(self.extra_features)} derived, {self.n_features} features)"

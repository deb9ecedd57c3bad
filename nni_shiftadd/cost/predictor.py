"""HAT-style latency predictor: an MLP over an encoding of a sampled architecture.

Measuring every candidate during evolutionary search is too slow, so (as in HAT) we measure ~2000 random
architectures once, fit a small MLP (3 hidden layers of 400 units) on an architecture encoding, and let the
search query the MLP instead.

An architecture is NNI's flat sample ``{label: value}``; a search space is ``{label: choices}``.

- :class:`ArchEncoder` turns a sample into a fixed-length vector: one-hot for categorical labels, numeric
  labels scaled to ``[0, 1]`` by their choice range, then derived features (layer counts, mean dims, ...),
  either JSON-serialisable :class:`Aggregate` rules or arbitrary user callables.
- :class:`LatencyPredictor` is the MLP; it standardises its inputs and predicts in a standardised (by default
  log) target space, keeping the statistics as buffers so that a saved predictor is self-contained.
- :func:`fit_predictor` trains it deterministically with model selection on a validation split.
- :func:`collect_samples` / :func:`measure_latency` produce the training data.
- :func:`save_predictor` / :func:`load_predictor` store weights as safetensors plus a JSON sidecar; no pickle.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..cache import file_sha256

__all__ = ["Aggregate", "ArchEncoder", "LatencyPredictor", "collect_samples", "count_features", "cv_encoder",
           "fit_predictor", "load_predictor", "measure_latency", "measure_latency_ratio", "save_predictor",
           "translation_encoder", "translation_features"]

Choice = str | int | float
Arch = Mapping[str, Any]

FORMAT = "nni_shiftadd.latency_predictor"
FORMAT_VERSION = 1


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


# ---------------------------------------------------------------------------------------------------------------
# Derived features
# ---------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------
# Predictor
# ---------------------------------------------------------------------------------------------------------------

class LatencyPredictor(nn.Module):
    """MLP ``in -> hidden x layers -> 1`` (ReLU) with input standardisation and a standardised target.

    ``forward`` takes encoded features and returns latency in the samples' unit. With ``log_target`` the MLP
    regresses standardised ``log(latency)``, so its squared error approximates squared *relative* error.
    """

    def __init__(self, in_features: int, hidden: int = 400, layers: int = 3, *, log_target: bool = True,
                 encoder: ArchEncoder | None = None) -> None:
        super().__init__()
        if in_features < 1 or hidden < 1 or layers < 1:
            raise ValueError("in_features, hidden and layers must be positive")
        if encoder is not None and encoder.n_features != in_features:
            raise ValueError(f"encoder has {encoder.n_features} features, predictor expects {in_features}")
        self.in_features, self.hidden, self.layers, self.log_target = in_features, hidden, layers, log_target
        self.encoder = encoder
        mods: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        mods.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*mods)
        self.register_buffer("x_mean", torch.zeros(in_features))
        self.register_buffer("x_std", torch.ones(in_features))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def hparams(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "hidden": self.hidden, "layers": self.layers,
                "log_target": self.log_target}

    def normalized(self, x: Tensor) -> Tensor:
        """The MLP's output in the standardised target space, shape ``(N,)``."""
        return self.mlp((x - self.x_mean) / self.x_std).squeeze(-1)

    def to_target_space(self, y: Tensor) -> Tensor:
        """Latency -> the standardised space the MLP regresses."""
        t = torch.log(y) if self.log_target else y
        return (t - self.y_mean) / self.y_std

    def forward(self, x: Tensor) -> Tensor:
        t = self.normalized(x) * self.y_std + self.y_mean
        return torch.exp(t) if self.log_target else t

    @torch.no_grad()
    def predict(self, archs: Sequence[Arch] | Arch) -> list[float]:
        """Predicted latency of each architecture (a single dict is treated as a list of one)."""
        if self.encoder is None:
            raise RuntimeError("this predictor has no encoder; build it with encoder=... or use forward()")
        if isinstance(archs, Mapping):
            archs = [archs]
        x = self.encoder.encode_batch(list(archs)).to(self.x_mean.device)
        was_training = self.training
        self.eval()
        try:
            return [float(v) for v in self(x).cpu()]
        finally:
            self.train(was_training)


def _metrics(pred: Tensor, y: Tensor) -> dict[str, float | int] | None:
    if y.numel() == 0:
        return None
    pred, y = pred.double(), y.double()
    rel = (pred - y).abs() / y.abs().clamp_min(1e-12)
    return {"n": int(y.numel()), "mean_rel_err": float(rel.mean()), "max_rel_err": float(rel.max()),
            "rmse": float(((pred - y) ** 2).mean().sqrt())}


def _split_sizes(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    if len(split) != 3 or any(s < 0 for s in split) or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {tuple(split)!r}")
    if split[0] <= 0 or split[1] <= 0:
        raise ValueError("split needs a training and a validation part (the validation split selects the model)")
    n_val = max(1, round(n * split[1]))
    n_test = round(n * split[2]) if split[2] > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} samples are too few for split {tuple(split)!r}")
    return n_train, n_val, n_test


def fit_predictor(encoder: ArchEncoder, archs: Sequence[Arch], targets: Sequence[float], *, hidden: int = 400,
                  layers: int = 3, epochs: int = 150, lr: float = 1e-3, batch_size: int = 128,
                  weight_decay: float = 3e-3, patience: int | None = None, log_target: bool | None = None,
                  seed: int = 0, split: Sequence[float] = (0.8, 0.1, 0.1), progress: bool = False,
                  num_threads: int | None = 1) -> tuple[LatencyPredictor, dict[str, Any]]:
    """Fit a :class:`LatencyPredictor` on measured ``(archs, targets)``; returns it and a report.

    The samples are shuffled with ``seed`` and split train/val/test. Adam with a linear warm-up and cosine
    decay trains on MSE in the standardised target space. The L2 ``weight_decay`` matters: with a one-hot per
    layer and ~1600 training samples an unregularised MLP memorises the per-layer bits (about 4.5% held-out
    error on the synthetic benchmark of the tests, against about 1.2% with the default). After each epoch the
    validation mean relative error selects the best weights (and stops training after ``patience`` epochs
    without improvement; default ``epochs // 3``). The test split is only evaluated once, for the report.
    ``log_target`` defaults to True when all targets are positive. Deterministic for a given seed, data and
    thread count.

    The report holds, for ``train``/``val``/``test``: ``n``, ``mean_rel_err``, ``max_rel_err``, ``rmse`` (in
    the targets' unit; ``test`` is None for an empty test split), plus sample counts, ``best_epoch``,
    ``epochs_run``, ``fit_seconds`` and the hyper-parameters.

    ``num_threads`` (default 1) sets torch's intra-op threads while fitting (restored afterwards): for these
    small matrices one thread is about as fast, is immune to the slow-down of spinning threads on a busy
    machine, and makes the result independent of the machine's core count.
    """
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with torch.enable_grad():  # callers may profile under no_grad
            model, report = _fit(encoder, archs, targets, hidden=hidden, layers=layers, epochs=epochs, lr=lr,
                                 batch_size=batch_size, weight_decay=weight_decay, patience=patience,
                                 log_target=log_target, seed=seed, split=split, progress=progress)
        report["hparams"]["num_threads"] = num_threads
        return model, report
    finally:
        torch.set_num_threads(previous)


def _fit(encoder: ArchEncoder, archs: Sequence[Arch], targets: Sequence[float], *, hidden: int, layers: int,
         epochs: int, lr: float, batch_size: int, weight_decay: float, patience: int | None,
         log_target: bool | None, seed: int, split: Sequence[float],
         progress: bool) -> tuple[LatencyPredictor, dict[str, Any]]:
    """The body of :func:`fit_predictor` (at the thread count it chose)."""
    if len(archs) != len(targets):
        raise ValueError(f"{len(archs)} architectures but {len(targets)} targets")
    y_all = torch.tensor([float(t) for t in targets], dtype=torch.float64)
    if not torch.isfinite(y_all).all():
        raise ValueError("targets must be finite")
    if log_target is None:
        log_target = bool((y_all > 0).all())
    elif log_target and not (y_all > 0).all():
        raise ValueError("log_target=True needs positive targets")
    n = len(archs)
    n_train, n_val, n_test = _split_sizes(n, split)
    start = time.perf_counter()
    x_all = encoder.encode_batch(list(archs))

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    idx_train, idx_val, idx_test = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    x_train, y_train = x_all[idx_train], y_all[idx_train]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LatencyPredictor(encoder.n_features, hidden, layers, log_target=log_target, encoder=encoder)
    std = x_train.std(0, unbiased=False)
    model.x_mean.copy_(x_train.mean(0))
    model.x_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
    t_train = torch.log(y_train) if log_target else y_train
    model.y_mean.fill_(float(t_train.mean()))
    model.y_std.fill_(max(float(t_train.std(unbiased=False)), 1e-12))
    z_train = model.to_target_space(y_train).float()

    steps_per_epoch = math.ceil(n_train / batch_size)
    total = max(1, epochs * steps_per_epoch)
    warm = max(1, total // 20)

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    patience = max(1, epochs // 3) if patience is None else patience
    x_val, y_val = x_all[idx_val], y_all[idx_val]
    best_err, best_epoch, best_state = math.inf, -1, copy.deepcopy(model.state_dict())

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, desc="fit latency predictor", unit="epoch")
    epoch = -1
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n_train, generator=gen)
        for i in range(0, n_train, batch_size):
            b = order[i:i + batch_size]
            loss = nn.functional.mse_loss(model.normalized(x_train[b]), z_train[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            err = _metrics(model(x_val), y_val)["mean_rel_err"]  # type: ignore[index]
        if err < best_err:
            best_err, best_epoch = err, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if bar is not None:
            bar.set_postfix(val_mre=f"{err:.4f}", best=f"{best_err:.4f}")
            bar.update()
        if epoch - best_epoch >= patience:
            break
    if bar is not None:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        report: dict[str, Any] = {
            "n_samples": n, "n_train": n_train, "n_val": n_val, "n_test": n_test,
            "train": _metrics(model(x_train), y_train),
            "val": _metrics(model(x_val), y_val),
            "test": _metrics(model(x_all[idx_test]), y_all[idx_test]),
        }
    report.update({"best_epoch": best_epoch, "epochs_run": epoch + 1,
                   "fit_seconds": time.perf_counter() - start,
                   "hparams": {**model.hparams(), "epochs": epochs, "lr": lr, "batch_size": batch_size,
                               "weight_decay": weight_decay, "patience": patience, "seed": seed,
                               "split": list(split)}})
    return model, report


# ---------------------------------------------------------------------------------------------------------------
# Sampling and measuring
# ---------------------------------------------------------------------------------------------------------------

def collect_samples(space: Mapping[str, Sequence[Choice]], profile_fn: Callable[[dict], float], n: int, seed: int,
                    *, progress: bool = True) -> tuple[list[dict], list[float]]:
    """``n`` distinct uniformly random architectures of ``space`` and ``profile_fn`` of each (e.g. latency)."""
    labels = sorted(space)
    size = math.prod(len(space[label]) for label in labels)
    if n > size:
        raise ValueError(f"asked for {n} distinct architectures but the space has only {size}")
    from tqdm.auto import tqdm
    rng = random.Random(seed)
    choices = [list(space[label]) for label in labels]

    def candidates():
        if 2 * n > size:  # most of a small space: draw without replacement instead of rejecting duplicates
            for idx in rng.sample(range(size), n):
                key = []
                for options in reversed(choices):
                    idx, i = divmod(idx, len(options))
                    key.append(options[i])
                yield tuple(reversed(key))
        else:
            while True:
                yield tuple(rng.choice(options) for options in choices)

    seen: set[tuple] = set()
    archs: list[dict] = []
    values: list[float] = []
    with tqdm(total=n, desc="profiling architectures", unit="arch", disable=not progress) as bar:
        for key in candidates():
            if len(archs) == n:
                break
            if key in seen:
                continue
            seen.add(key)
            arch = dict(zip(labels, key))
            value = float(profile_fn(dict(arch)))
            if not math.isfinite(value):
                raise ValueError(f"profile_fn returned {value} for {arch!r}")
            archs.append(arch)
            values.append(value)
            bar.update()
    return archs, values


def _infer_device(model: nn.Module, inputs: Sequence[Any]) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    for x in inputs:
        if isinstance(x, Tensor):
            return x.device
    return torch.device("cpu")


def _timed_runs(models: Sequence[nn.Module], inputs: Sequence[Any], warmup: int, repeats: int,
                device: str | torch.device | None) -> list[list[float]]:
    """Wall-clock times (ms) of ``repeats`` forward passes of each model, the models run one after another within
    each round (after ``warmup`` untimed rounds), in eval mode under ``torch.no_grad()``."""
    if repeats < 1 or warmup < 0:
        raise ValueError("need repeats >= 1 and warmup >= 0")
    dev = torch.device(device) if device is not None else _infer_device(models[0], inputs)
    for model in models:
        model.to(dev)
    inputs = tuple(x.to(dev) if isinstance(x, Tensor) else x for x in inputs)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    was_training = [model.training for model in models]
    times: list[list[float]] = [[] for _ in models]
    try:
        for model in models:
            model.eval()
        with torch.no_grad():
            for i in range(warmup + repeats):
                for model, runs in zip(models, times):
                    sync()
                    t0 = time.perf_counter()
                    model(*inputs)
                    sync()
                    if i >= warmup:
                        runs.append((time.perf_counter() - t0) * 1e3)
    finally:
        for model, training in zip(models, was_training):
            model.train(training)
    return times


def _check_trim(trim: float | None) -> None:
    if trim is not None and not 0 <= trim < 0.5:
        raise ValueError(f"trim: a fraction in [0, 0.5) dropped from each end, got {trim}")


def _summary(values: list[float], trim: float | None) -> float:
    """The median of ``values``, or with ``trim`` the mean of those left after dropping that fraction at each end."""
    if trim is None:
        return float(statistics.median(values))
    cut = int(len(values) * trim)
    return float(statistics.fmean(sorted(values)[cut:len(values) - cut]))


def measure_latency(model: nn.Module, *inputs: Any, warmup: int = 3, repeats: int = 10,
                    device: str | torch.device | None = None, trim: float | None = None) -> float:
    """Median wall-clock time (ms) of ``model(*inputs)`` under ``torch.no_grad()`` in eval mode; with ``trim``, the
    mean of the runs left after dropping that fraction of the fastest and of the slowest (outliers: a page fault,
    another process taking the core).

    ``device`` defaults to the model's (or the inputs') device; with an explicit device the model is moved
    there (in place) and tensor inputs are copied there. On CUDA each run is bracketed by synchronisations so
    that asynchronous kernel launches are timed to completion. The model's train/eval mode is restored.
    """
    _check_trim(trim)
    return _summary(_timed_runs([model], inputs, warmup, repeats, device)[0], trim)


def measure_latency_ratio(model: nn.Module, reference: nn.Module, *inputs: Any, warmup: int = 3,
                          repeats: int = 10, device: str | torch.device | None = None,
                          trim: float | None = None) -> tuple[float, float]:
    """``(ratio, reference_ms)``: the latency of ``model`` relative to ``reference``, each run of the one timed
    right after a run of the other, summarised like :func:`measure_latency` over the per-round ratios; and the
    reference's own latency (ms) over the same rounds.

    On a shared machine the speed of a core drifts by tens of percent within seconds (another tenant on the same
    physical core); both models of a round see the same drift, so their ratio repeats where absolute times do not
    (measured on the 2-core VM of ``benchmarks/cost.py`` (f): two passes over the same subnets differ by 16-22% on
    average in absolute time, 3-5% in ratio)."""
    _check_trim(trim)
    runs, ref_runs = _timed_runs([model, reference], inputs, warmup, repeats, device)
    return _summary([a / b for a, b in zip(runs, ref_runs)], trim), _summary(ref_runs, trim)


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading (safetensors + JSON, no pickle)
# ---------------------------------------------------------------------------------------------------------------

def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.parent / (p.name + ".safetensors"), p.parent / (p.name + ".json")


def _jsonable(obj: Any) -> Any:
    """Report values as strict JSON: tuples -> lists, non-finite floats -> None, tensors -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj) if math.isfinite(obj) else None
    raise TypeError(f"report value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def save_predictor(path: str | Path, predictor: LatencyPredictor, encoder: ArchEncoder,
                   report: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` (weights and buffers) and ``<path>.json`` (encoder, report, hyper-parameters).

    A trailing ``.safetensors``/``.json`` on ``path`` is ignored. The JSON records the weights file's SHA-256, so
    that a mismatched pair is detected on load. Returns the two paths.
    """
    from safetensors.torch import save_file
    if encoder.n_features != predictor.in_features:
        raise ValueError(f"encoder has {encoder.n_features} features, predictor expects {predictor.in_features}")
    weights, sidecar = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()}
    save_file(state, str(weights), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "weights_file": weights.name,
            "weights_sha256": file_sha256(weights), "hparams": predictor.hparams(), "encoder": encoder.to_dict(),
            "report": _jsonable(report or {})}
    sidecar.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
    return weights, sidecar


def load_predictor(path: str | Path, *, extra_features: Mapping[str, Callable[[dict], float]] | None = None,
                   map_location: str | torch.device = "cpu") -> tuple[LatencyPredictor, ArchEncoder, dict]:
    """Load what :func:`save_predictor` wrote; returns ``(predictor, encoder, report)``.

    Only the two files are read (safetensors and JSON, never pickle). Missing, corrupted or mismatched files
    raise ValueError/FileNotFoundError naming the file. User-callable derived features must be passed again in
    ``extra_features``.
    """
    from safetensors import safe_open
    weights, sidecar = _paths(path)
    for f in (sidecar, weights):
        if not f.is_file():
            raise FileNotFoundError(f"latency predictor file {f} does not exist")
    try:
        meta = json.loads(sidecar.read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"'format' is not {FORMAT!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported version {meta.get('version')!r} (expected {FORMAT_VERSION})")
        hp = meta["hparams"]
        encoder = ArchEncoder.from_dict(meta["encoder"], extra_features)
        if encoder.n_features != hp["in_features"]:
            raise ValueError(f"encoder has {encoder.n_features} features, hparams say {hp['in_features']}")
        predictor = LatencyPredictor(int(hp["in_features"]), int(hp["hidden"]), int(hp["layers"]),
                                     log_target=bool(hp["log_target"]), encoder=encoder)
        expected_sha = meta["weights_sha256"]
    except (ValueError, KeyError, TypeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{sidecar} is not a valid latency predictor sidecar: {detail}") from e
    if file_sha256(weights) != expected_sha:
        raise ValueError(f"{weights} does not match the SHA-256 recorded in {sidecar} "
                         "(corrupted, or weights and sidecar from different saves)")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            if (f.metadata() or {}).get("format") != FORMAT:
                raise ValueError(f"safetensors metadata 'format' is not {FORMAT!r}")
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type for malformed files
        raise ValueError(f"{weights} is not a valid latency predictor weights file: {e}") from e
    expected = predictor.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise ValueError(f"{weights}: tensors do not match the architecture in {sidecar} "
                         f"(expected {sorted((k, tuple(v.shape)) for k, v in expected.items())})")
    predictor.load_state_dict(state)
    predictor.to(map_location).eval()
    return predictor, encoder, meta.get("report", {})

"""HAT-style latency predictor: an MLP over an encoding of a sampled architecture (:mod:`.encoding`).

Measuring every candidate during evolutionary search is too slow, so (as in HAT) we measure ~2000 random
architectures once (:mod:`.timing`), fit a small MLP (3 hidden layers of 400 units) on an architecture encoding,
and let the search query the MLP instead.

- :class:`LatencyPredictor` is the MLP; it standardises its inputs and predicts in a standardised (by default
  log) target space, keeping the statistics as buffers so that a saved predictor is self-contained.
- :func:`fit_predictor` trains it deterministically with model selection on a validation split.
- :func:`save_predictor` / :func:`load_predictor` store weights as safetensors plus a JSON sidecar; no pickle.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cache import file_sha256
from .encoding import FORMAT_VERSION, Arch, ArchEncoder

__all__ = ["LatencyPredictor", "fit_predictor", "load_predictor", "save_predictor"]

FORMAT = "nni_shiftadd.latency_predictor"

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

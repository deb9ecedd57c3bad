"""One-shot training of the hybrid SuperTransformer with fairseq (``nni-shiftadd train-supertransformer``), then the
homogeneous and random subnets scored with inherited weights (validation loss, test BLEU); with ``subnet``, one
subnet trained from scratch with the same recipe and scored the same way; with ``quant_bits`` too, trained
quantisation-aware at that many bits (:func:`nni_shiftadd.quant.fake_quantize`), from scratch or from the float
weights of ``init_from`` (fairseq's ``--finetune-from-model``), scored on the quantised model and costed at the word
width that holds its values.

The recipe (:class:`SuperTransformerConfig`, YAML) becomes a ``fairseq-train`` command line with the plugin of
:mod:`nni_shiftadd.tasks.translation` (``--user-dir``, task ``shiftadd_translation``, model
``shiftadd_supertransformer``): the paper's recipe is Adam (0.9, 0.98), a cosine schedule after a linear warm-up from
1e-7 to 1e-3, label-smoothed cross-entropy (0.1), one subnet sampled uniformly per update. fairseq shows progress,
writes ``checkpoint_last.pt`` and every ``save_interval_updates`` a ``checkpoint_<epoch>_<update>.pt``, and resumes
from ``checkpoint_last.pt`` when the same command runs again (the data position, the update count and with it the
subnet sequence and the per-update seeds come back, so a killed run ends as an uninterrupted one). fairseq copies
``checkpoint_last.pt`` non-atomically; a truncated one is replaced by the newest good update checkpoint before
resuming (and said so). The output folder is locked while the run lasts. ``fairseq_args`` passes anything else to
fairseq.

A resumed run must be the same run: ``run.json`` beside the checkpoints records what defines it (the fields of
:data:`RESUME_FIXED` and the identity of the data: its dictionaries and training split), and another value is
refused before anything is written, naming the field, both values and the ways out; the optimisation fields
(:data:`RESUME_REOPTIMISE`, e.g. a lower ``lr`` after a divergence) may change. ``resume: never`` on an output that
holds checkpoints needs ``overwrite: true``, which deletes them. A diverged run (non-finite loss, gradient or
validation loss; the task's guard) stops with one message naming the update and what to resume from, and never
leaves a non-finite checkpoint; a checkpoint that is non-finite or unreadable is passed over for the newest good one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..atomic import atomic_write_json, read_json
from ..checkpoint import CheckpointError, DivergenceError, describe_non_finite, load_checkpoint, non_finite_tensors
from ..config import ConfigError, check_learning_rate
from ..data.translation import TranslationDataConfig
from ..hws import MODES, HWSConfig, Mode
from ..lock import check_output_dir, output_lock
from ..quant import check_bits, cost_bits
from ..vocabulary import ADDER, ATTENTION, ENCODER_BLOCKS, multi_branch

LAST = "checkpoint_last.pt"
#: Recipe fields a resumed run must share with its checkpoints: they fix the data order, the sampled subnets, the
#: dropout seeds and the shapes of the saved state.
RESUME_FIXED: tuple[str, ...] = ("subnet", "space", "mode", "kl_weight", "hws", "max_tokens", "update_freq", "seed",
                                 "subnet_seed", "sampling", "sandwich_random", "quant_bits", "init_from",
                                 "fairseq_args")
#: Optimisation fields that may change on resume (from the resumed update on).
RESUME_REOPTIMISE: tuple[str, ...] = ("lr", "warmup_updates", "warmup_init_lr", "min_lr", "max_updates",
                                      "weight_decay", "clip_norm", "label_smoothing", "adam_betas")
RUN_FILE = "run.json"
#: Beside ``run.json`` of a run started from ``init_from``: that checkpoint's training time when the run started,
#: which fairseq carries into every checkpoint of the run and ``train_seconds`` leaves out.
INIT_TIME_FILE = "init_from_time.json"


@dataclasses.dataclass
class SuperTransformerConfig:
    """Schema of a SuperTransformer training recipe (YAML)."""

    space: str = "nlp_small"
    mode: Mode = "hws"
    kl_weight: float = 1.0
    hws: HWSConfig = dataclasses.field(default_factory=HWSConfig)  # estimator, T's segments/binning, Laplace scale
    data: TranslationDataConfig = dataclasses.field(default_factory=TranslationDataConfig)
    max_updates: int = 40000
    max_tokens: int = 4096
    update_freq: int = 1
    lr: float = 1e-3
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-7
    adam_betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    clip_norm: float = 0.0
    label_smoothing: float = 0.1
    seed: int = 1
    subnet_seed: int = 0
    # the paths an update trains (nni_shiftadd.space.sampling): uniform (one), fair (FairNAS), sandwich (BigNAS)
    sampling: str = "uniform"
    sandwich_random: int = 2
    valid_subnet: str = "largest"
    subnet: str = ""  # train this one subnet from scratch (an architecture: inline JSON or a JSON file)
    quant_bits: int | None = None  # with subnet: quantisation-aware training at this many bits (null: float)
    init_from: str | None = None  # with subnet: start from this checkpoint's weights (fairseq --finetune-from-model)
    save_interval_updates: int = 500
    keep_interval_updates: int = 2
    log_interval: int = 50
    baselines: list[str] = dataclasses.field(default_factory=lambda: [ATTENTION, multi_branch(ADDER), ADDER])
    eval_archs: int = 2
    beam: int = 4
    lenpen: float = 0.6
    eval_test_sentences: int | None = None
    threads: int | None = None
    fairseq_args: list[str] = dataclasses.field(default_factory=list)
    output: str = "runs/supertransformer"
    resume: Literal["auto", "never"] = "auto"
    overwrite: bool = False  # with resume: never, delete the output's checkpoints (else that is refused)

    def validate(self) -> None:
        """Check every value (the space, the data settings, the numbers) before anything runs."""
        from ..space.spec import load_space

        if self.mode not in MODES:
            raise ValueError(f"field 'mode': got {self.mode!r}; expected one of {list(MODES)}")
        try:
            spec = load_space(self.space)
        except (ConfigError, OSError) as err:
            raise ValueError(f"field 'space': {err}") from None
        if spec.kind != "translation":
            raise ValueError(f"field 'space': {self.space!r} is not a translation space (kind: translation); "
                             "e.g. nlp_small or nlp_wmt14")
        for name in ("max_updates", "max_tokens", "update_freq", "save_interval_updates", "log_interval", "beam"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        from ..space.sampling import SAMPLINGS

        if self.sampling not in SAMPLINGS:
            raise ValueError(f"field 'sampling': got {self.sampling!r}; expected one of {list(SAMPLINGS)}")
        for name in ("warmup_updates", "eval_archs", "seed", "subnet_seed", "sandwich_random"):
            if getattr(self, name) < 0:
                raise ValueError(f"field {name!r}: must be >= 0, got {getattr(self, name)}")
        if self.keep_interval_updates < 1:
            raise ValueError(f"field 'keep_interval_updates': must be >= 1 (a previous good checkpoint to fall back "
                             f"on), got {self.keep_interval_updates}")
        if self.warmup_updates >= self.max_updates:
            raise ValueError(f"fields 'warmup_updates', 'max_updates': the warm-up ({self.warmup_updates} updates) "
                             f"must end before the run does ({self.max_updates}); the cosine schedule anneals over "
                             "the updates between them")
        check_learning_rate(self.lr)
        if not 0 < self.warmup_init_lr <= self.lr:
            raise ValueError(f"fields 'warmup_init_lr', 'lr': need 0 < warmup_init_lr <= lr, got "
                             f"{self.warmup_init_lr}, {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"field 'min_lr': must be in [0, lr], got {self.min_lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"field 'label_smoothing': must be in [0, 1), got {self.label_smoothing}")
        if not all(0 < b < 1 for b in self.adam_betas):
            raise ValueError(f"field 'adam_betas': each must be in (0, 1), got {list(self.adam_betas)}")
        for op in self.baselines:
            if op not in spec.encoder.blocks:
                raise ValueError(f"field 'baselines': {op!r} is not an encoder block of {spec.name!r}; allowed "
                                 f"{list(spec.encoder.blocks)} (of {list(ENCODER_BLOCKS)})")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"field 'threads': must be null or >= 1, got {self.threads}")
        if self.eval_test_sentences is not None and self.eval_test_sentences < 1:
            raise ValueError(f"field 'eval_test_sentences': must be null or >= 1, got {self.eval_test_sentences}")
        from ..space.nlp_spec import validate_arch
        from .translation.archs import named_arch, parse_arch

        for name in ("valid_subnet", "subnet"):
            value = getattr(self, name)
            if name == "subnet" and not value:
                continue
            flag = f"field {name!r}"
            arch = named_arch(spec, value, flag) if name == "valid_subnet" else parse_arch(value, flag)
            try:
                validate_arch(spec, arch)
            except ValueError as err:
                raise ValueError(f"{flag}: {err}") from None
        if self.quant_bits is not None:
            if not self.subnet:
                raise ValueError(f"field 'quant_bits': {self.quant_bits} needs a 'subnet' (quantisation-aware "
                                 "training is for one subnet, not the supernet); or null for floating point")
            try:
                check_bits(self.quant_bits)
            except ValueError as err:
                raise ValueError(f"field 'quant_bits': {err}; or null for floating point") from None
        if self.init_from is not None:
            if not self.subnet:
                raise ValueError(f"field 'init_from': {self.init_from!r} needs a 'subnet' (it starts one subnet "
                                 "from a trained checkpoint of it)")
            self._check_init_from(spec)
        binarized = Path(self.data.binarized) if self.data.binarized else None
        if spec.share_embeddings and binarized is not None:
            dicts = [binarized / f"dict.{lang}.txt" for lang in (self.data.source_lang, self.data.target_lang)]
            if all(d.is_file() for d in dicts) and dicts[0].read_bytes() != dicts[1].read_bytes():
                raise ValueError(f"fields 'data.binarized', 'space': space {spec.name!r} shares one embedding table "
                                 f"between the languages, but {dicts[0].name} and {dicts[1].name} of {binarized} "
                                 "differ; binarise with fairseq-preprocess --joined-dictionary")
        check_output_dir(self.output, "field 'output'")
        if self.resume not in ("auto", "never"):
            raise ValueError(f"field 'resume': got {self.resume!r}; expected 'auto' or 'never'")
        if self.overwrite and self.resume != "never":
            raise ValueError("field 'overwrite': only with resume: never (it deletes the output's checkpoints to "
                             "start afresh); resume: auto goes on from them")


    def _check_init_from(self, spec: Any) -> None:
        """``init_from`` must be a checkpoint of this subnet of this space (float, or quantised for a quantised
        run): fairseq would otherwise fail deep in loading, after the data is prepared."""
        from ..space.spec import load_space
        from .translation.archs import parse_arch

        if not Path(self.init_from).is_file():
            raise ValueError(f"field 'init_from': no such checkpoint {self.init_from!r}")
        try:
            theirs = recipe_of(self.init_from)
        except (CheckpointError, ConfigError) as err:
            raise ValueError(f"field 'init_from': {err}") from None
        if load_space(theirs.space) != spec or parse_arch(theirs.subnet) != parse_arch(self.subnet):
            raise ValueError(f"field 'init_from': {self.init_from} holds "
                             + (f"subnet {theirs.subnet}" if theirs.subnet else "a supernet")
                             + f" of space {theirs.space!r}; the run trains subnet {self.subnet} of {self.space!r}")
        if theirs.quant_bits is not None and self.quant_bits is None:
            raise ValueError(f"field 'init_from': {self.init_from} holds a network quantised to {theirs.quant_bits} "
                             "bits; a float run cannot start from it (set quant_bits)")


def fairseq_train_args(cfg: SuperTransformerConfig, data_bin: Path, save_dir: Path) -> list[str]:
    """The ``fairseq-train`` arguments of ``cfg`` (the paper's recipe; see the module docstring)."""
    from .translation import USER_DIR

    args = [str(data_bin), "--user-dir", str(USER_DIR), "--task", "shiftadd_translation",
            "--arch", "shiftadd_supertransformer", "--space", cfg.space, "--mode", cfg.mode,
            "--kl-weight", str(cfg.kl_weight), "--hws-estimator", cfg.hws.estimator, "--hws-segments",
            str(cfg.hws.segments), "--hws-binning", cfg.hws.binning, "--hws-laplace-scale", str(cfg.hws.laplace_scale),
            "--hws-max-samples", str(cfg.hws.max_samples), "--hws-add-adaptive-lr", cfg.hws.add_adaptive_lr,
            "--subnet", cfg.subnet, "--source-lang", cfg.data.source_lang,
            "--target-lang", cfg.data.target_lang,
            "--subnet-seed", str(cfg.subnet_seed), "--valid-subnet", cfg.valid_subnet, "--supernet-sampling", cfg.sampling,
            "--sandwich-random", str(cfg.sandwich_random),
            "--optimizer", "adam", "--adam-betas", str(tuple(cfg.adam_betas)), "--weight-decay", str(cfg.weight_decay),
            "--clip-norm", str(cfg.clip_norm), "--lr", str(cfg.lr), "--lr-scheduler", "cosine",
            "--warmup-updates", str(cfg.warmup_updates), "--warmup-init-lr", str(cfg.warmup_init_lr),
            "--min-lr", str(cfg.min_lr), "--max-update", str(cfg.max_updates), "--max-tokens", str(cfg.max_tokens),
            "--update-freq", str(cfg.update_freq), "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", str(cfg.label_smoothing), "--seed", str(cfg.seed), "--save-dir", str(save_dir),
            "--save-interval-updates", str(cfg.save_interval_updates),
            "--keep-interval-updates", str(cfg.keep_interval_updates), "--validate-interval-updates",
            str(cfg.save_interval_updates), "--no-epoch-checkpoints", "--log-interval", str(cfg.log_interval),
            "--num-workers", "0", "--quant-bits", str(cfg.quant_bits or 0),
            # no prefetching thread: one left inside torch at interpreter exit (a run stopped or ended mid-epoch)
            # aborts the process; with --num-workers 0 batches cost the same made in the main thread
            "--data-buffer-size", "0"]
    if cfg.init_from:
        args += ["--finetune-from-model", str(cfg.init_from)]
    import torch

    if not torch.cuda.is_available():
        args.append("--cpu")
    return args + list(cfg.fairseq_args)


def _checkpoint_problem(path: Path) -> str | None:
    """Why the fairseq checkpoint ``path`` is none to resume from (unreadable; non-finite weights or optimiser
    state; a non-finite validation loss), or ``None`` when it is good."""
    if not path.is_file():
        return f"{path}: no such file"
    try:
        state = load_checkpoint(path, mmap=True)
    except CheckpointError as err:
        return str(err)
    bad = [n for key in ("model", "last_optimizer_state") if key in state for n in non_finite_tensors(state[key], key)]
    if bad:
        return f"{path}: {describe_non_finite(bad)}"
    val_loss = (state.get("extra_state") or {}).get("val_loss")
    if isinstance(val_loss, float) and not math.isfinite(val_loss):
        return f"{path}: its validation loss is {val_loss}"
    return None


def _copy_last(source: Path, save_dir: Path) -> Path:
    """Copy ``source`` to ``save_dir/checkpoint_last.pt`` through a temporary file (never a half-written last)."""
    save_dir.mkdir(parents=True, exist_ok=True)
    tmp = save_dir / f".{LAST}.tmp{os.getpid()}"
    shutil.copyfile(source, tmp)
    os.replace(tmp, save_dir / LAST)
    return save_dir / LAST


def _check_last(save_dir: Path) -> str | None:
    """Make ``checkpoint_last.pt`` one that loads and is finite: otherwise it is replaced by the newest good
    ``checkpoint_<epoch>_<update>.pt``. Returns what was done, for the log."""
    last = save_dir / LAST
    if not last.is_file():
        return None
    problem = _checkpoint_problem(last)
    if problem is None:
        return None
    candidates = sorted(save_dir.glob("checkpoint_*_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]),
                        reverse=True)
    for path in candidates:
        if _checkpoint_problem(path) is not None:
            continue
        _copy_last(path, save_dir)
        return f"{problem}; resuming from {path} ({checkpoint_updates(path)} updates) instead"
    raise ConfigError(f"field 'resume': {problem}, and no update checkpoint beside it is usable; start afresh with "
                      "--resume never --overwrite true")


# --- what a run is -------------------------------------------------------------------------------------------------

def run_identity(cfg: SuperTransformerConfig, data_bin: Path) -> dict[str, Any]:
    """What defines a run for resuming: the :data:`RESUME_FIXED` fields (the subnet as an architecture), the
    :data:`RESUME_REOPTIMISE` ones (allowed to change) and the data's identity (digests of its dictionaries and
    training index)."""
    from ..data.translation import data_identity
    from .translation.archs import parse_arch

    recipe = json.loads(json.dumps(dataclasses.asdict(cfg)))
    fixed = {k: recipe[k] for k in RESUME_FIXED}
    fixed["subnet"] = parse_arch(cfg.subnet, "field 'subnet'") if cfg.subnet else None
    return {"fixed": fixed, "optimisation": {k: recipe[k] for k in RESUME_REOPTIMISE},
            "data": data_identity(data_bin, cfg.data.source_lang, cfg.data.target_lang)}


def _saved_identity(out: Path) -> dict[str, Any] | None:
    """The identity of the run whose checkpoints are in ``out``: its ``run.json``, else (a run of an earlier
    version) what its ``checkpoint_last.pt`` records, else ``None``."""
    path = out / RUN_FILE
    if path.is_file():
        return json.loads(path.read_text())
    last = out / "checkpoints" / LAST
    try:
        recipe = recipe_of(last)
    except (CheckpointError, ConfigError, KeyError, TypeError):
        return None
    identity = run_identity(recipe, Path(recipe.data.binarized or "."))
    identity["fixed"].pop("fairseq_args")
    return {"fixed": identity["fixed"], "optimisation": identity["optimisation"], "data": {}}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def check_same_run(cfg: SuperTransformerConfig, identity: dict[str, Any], names: dict[str, str] | None = None
                   ) -> dict[str, tuple[Any, Any]]:
    """Refuse, before anything is written, to resume checkpoints of another run in ``cfg.output`` (a
    :data:`RESUME_FIXED` field or the data differ) or to delete them without ``overwrite``; ``ConfigError`` naming
    the field (as ``names`` maps it for the command at hand), both values and the ways out. Returns the
    optimisation fields that changed (old, new)."""
    names = names or {}
    out = Path(cfg.output)
    save_dir = out / "checkpoints"
    existing = sorted(save_dir.glob("checkpoint*.pt")) if save_dir.is_dir() else []
    if not existing:
        return {}
    if cfg.resume == "never":
        if not cfg.overwrite:
            last = save_dir / LAST
            held = f" (the last at {checkpoint_updates(last)} updates)" if _checkpoint_problem(last) is None else ""
            raise ConfigError(f"field 'resume': never would delete the {len(existing)} checkpoint(s) in {save_dir}{held}; "
                              "add --overwrite true to delete them and start afresh, or choose another --output")
        return {}
    saved = _saved_identity(out)
    if saved is None:
        return {}
    ways_out = (f"use another --output, or --resume never --overwrite true to delete the {len(existing)} "
                f"checkpoint(s) in {save_dir} and start afresh")
    for key in RESUME_FIXED:  # the subnet first: a supernet's folder is no subnet's, whatever else differs
        if key in saved["fixed"] and saved["fixed"][key] != identity["fixed"][key]:
            mine, theirs = (value if value is not None or key != "subnet" else "the whole supernet"
                            for value in (identity["fixed"][key], saved["fixed"][key]))
            raise ConfigError(f"field {names.get(key, key)!r}: {_shown(mine)} differs from {_shown(theirs)} of the "
                              f"run in {out}, whose checkpoints would be resumed as this one's; {ways_out}")
    changed = sorted(k for k in saved["data"] if saved["data"][k] != identity["data"].get(k))
    if changed:
        raise ConfigError(f"field 'data': {', '.join(changed)} of the data differ from what the checkpoints in "
                          f"{save_dir} were trained on (the data was prepared again or replaced); {ways_out}")
    return {k: (saved["optimisation"][k], v) for k, v in identity["optimisation"].items()
            if k in saved["optimisation"] and saved["optimisation"][k] != v}


def evaluation_archs(spec: Any, cfg: SuperTransformerConfig) -> dict[str, dict[str, Any]]:
    """The subnets scored after training: the homogeneous ``baselines`` (all-``op`` encoder, attention decoder, the
    largest dimensions) and ``eval_archs`` random subnets (seeded)."""
    from ..space.nlp_spec import canonical_arch, named_baselines, random_arch

    archs = named_baselines(spec, cfg.baselines)
    rng = random.Random(cfg.seed + 1)
    for i in range(cfg.eval_archs):
        archs[f"random{i}"] = canonical_arch(spec, random_arch(spec, rng))
    return archs


def subnet_cost(totals: dict[str, float]) -> dict[str, float]:
    """The cost columns of a scored subnet (a 30-token sentence on the Eyeriss model, SPEC; embeddings and the
    vocabulary projection not counted), to 6 significant digits: energy, latency, params, MACs and the
    #Mult/#Add/#Shift split."""
    columns = {"energy_mJ": totals["energy_mJ"], "latency_ms": totals["latency_ms"], "params_M": totals["params"] / 1e6,
               "macs_G": totals["macs"] / 1e9, "mult_G": totals["mult"] / 1e9, "add_G": totals["add"] / 1e9,
               "shift_G": totals["shift"] / 1e9}
    return {k: float(f"{v:.6g}") for k, v in columns.items()}


def adopt_finished_run(cfg: SuperTransformerConfig, identity: dict[str, Any], donors: Sequence[Path]) -> str | None:
    """Start ``cfg.output`` (holding no checkpoint yet) from the last checkpoint of a finished run among the run folders
    in ``donors`` whose ``run.json`` is ``identity`` and was never resumed with other optimisation fields: the same
    training to the update (every :data:`RESUME_FIXED` and :data:`RESUME_REOPTIMISE` field, the data), so it is
    scored rather than trained a second time. Its ``metrics.json`` comes along, so the run keeps the training time it
    took. What was adopted, for the log, or ``None``."""
    wanted = json.loads(json.dumps(identity))
    missing = [str(folder) for folder in donors if not Path(folder).is_dir()]
    if missing:
        raise ConfigError(f"reuse: no such folder {missing[0]!r} (folders of finished training runs)")
    save_dir = Path(cfg.output) / "checkpoints"
    for run in sorted(p for folder in donors for p in Path(folder).iterdir() if p.is_dir()):
        last = run / "checkpoints" / LAST
        if read_json(run / RUN_FILE) != wanted or not last.is_file():
            continue
        try:
            if checkpoint_updates(last) != cfg.max_updates:
                continue
        except CheckpointError:  # unreadable, e.g. being written
            continue
        copy = _copy_last(last, save_dir)  # checked as copied: the donor may be written meanwhile
        if _checkpoint_problem(copy) is not None or checkpoint_updates(copy) != cfg.max_updates:
            copy.unlink()
            continue
        metrics = read_json(run / "metrics.json")
        if metrics is not None and metrics.get("updates") == cfg.max_updates:
            atomic_write_json(Path(cfg.output) / "metrics.json", metrics)
        started = read_json(run / INIT_TIME_FILE)
        if started is not None:
            atomic_write_json(Path(cfg.output) / INIT_TIME_FILE, started)
        return f"adopted {last} ({cfg.max_updates} updates), a finished run of this same recipe"
    return None


def train_supertransformer(cfg: SuperTransformerConfig, reuse: Sequence[Path] = ()) -> dict[str, Any]:
    """Prepare the data, train (or resume), score the subnets of :func:`evaluation_archs`; write and return
    ``metrics.json``. A run with no checkpoint yet first looks in ``reuse`` (folders of run folders) for a finished
    run of the same recipe to adopt (:func:`adopt_finished_run`)."""
    with output_lock(cfg.output, "output", "train-supertransformer"):
        return _train(cfg, reuse=reuse)


def _train(cfg: SuperTransformerConfig, names: dict[str, str] | None = None, reuse: Sequence[Path] = ()
           ) -> dict[str, Any]:
    import torch

    from ..data.translation import prepare_translation

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output)
    save_dir = out / "checkpoints"
    manifest = prepare_translation(cfg.data, progress=lambda line: print(line, flush=True))
    data_bin = Path(manifest["data_bin"])
    if cfg.max_tokens < manifest["longest"]:
        raise ConfigError(f"field 'max_tokens': {cfg.max_tokens} is below the longest sentence of {data_bin} "
                          f"({manifest['longest']} tokens), which fairseq could not put in any batch; at least "
                          f"{manifest['longest']}")
    identity = run_identity(cfg, data_bin)
    changes = check_same_run(cfg, identity, names)
    if reuse and cfg.resume != "never" and not (save_dir / LAST).exists():
        note = adopt_finished_run(cfg, identity, reuse)
        if note:
            print(f"nni-shiftadd: {note}", file=sys.stderr, flush=True)
    if cfg.resume == "never" and save_dir.exists():
        shutil.rmtree(save_dir)
        print(f"nni-shiftadd: --resume never --overwrite true: deleted {save_dir}", file=sys.stderr, flush=True)
    note = _check_last(save_dir)
    if note:
        print(f"nni-shiftadd: {note}", file=sys.stderr, flush=True)
    resumed = (save_dir / LAST).is_file()
    if resumed:
        text = f"resuming from {save_dir / LAST} ({checkpoint_updates(save_dir / LAST)} updates)"
        if changes:
            text += "; recipe changes applied from there on: " + ", ".join(
                f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        print(f"nni-shiftadd: {text}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.init_from and not resumed:
        atomic_write_json(out / INIT_TIME_FILE, {"init_from": str(cfg.init_from),
                                                 "train_seconds": checkpoint_training_seconds(Path(cfg.init_from))})
    history = (read_json(out / RUN_FILE) or {}).get("reoptimised", []) if resumed else []
    if changes:  # what this resume changed, from which update: such a run is no other recipe's to adopt
        history = [*history, {"updates": checkpoint_updates(save_dir / LAST),
                              "changes": {k: list(v) for k, v in changes.items()}}]
    atomic_write_json(out / RUN_FILE, {**identity, **({"reoptimised": history} if history else {})})
    args = fairseq_train_args(cfg, data_bin, save_dir)
    atomic_write_json(out / "fairseq_args.json", args)
    start = time.perf_counter()
    if resumed and checkpoint_updates(save_dir / LAST) >= cfg.max_updates:
        # fairseq-train would run one more update before it checks --max-update
        print(f"nni-shiftadd train-supertransformer: {save_dir / LAST} has all {cfg.max_updates} updates; scoring "
              "only", flush=True)
        scored_before = read_json(out / "metrics.json") or {}  # a finished run scored again keeps its training time
        fit_s = scored_before.get("fit_seconds", 0.0) if scored_before.get("updates") == cfg.max_updates else 0.0
    else:
        try:
            _run_fairseq_train(args)
        except (DivergenceError, FloatingPointError) as err:
            raise FloatingPointError(f"training diverged: {err}; {_last_good(save_dir)}") from None
        fit_s = time.perf_counter() - start

    from ..data.translation import references_dir
    from .translation.archs import parse_arch
    from .translation.evaluate import evaluate_subnet, load_trained

    model, task = load_trained(save_dir / LAST, data_bin)
    updates = checkpoint_updates(save_dir / LAST)
    references = Path(manifest["raw"]) if manifest.get("raw") else references_dir(data_bin)
    from ..cost.layerwise import space_profiler

    bits = cost_bits(cfg.quant_bits)  # the structure costed at the word width that holds the quantised values
    profiler = space_profiler(model.spec, bits=bits)
    scored = {}
    archs = {"subnet": None} if cfg.subnet else evaluation_archs(model.spec, cfg)
    for name, arch in archs.items():
        print(f"nni-shiftadd train-supertransformer: scoring {name} with inherited weights", flush=True)
        scores = evaluate_subnet(model, task, arch, references, beam=cfg.beam, lenpen=cfg.lenpen,
                                 max_tokens=cfg.max_tokens, test_limit=cfg.eval_test_sentences)
        arch = arch or parse_arch(cfg.subnet)
        scored[name] = {"arch": arch, **scores, **subnet_cost(profiler.report(arch).totals)}
    result = {"space": model.spec.name, "mode": cfg.mode, "quant_bits": cfg.quant_bits, "bits": bits,
              "data": str(data_bin), "sizes": manifest.get("sizes"),
              "updates": updates, "resumed": resumed, "fit_seconds": round(fit_s, 1),
              "train_seconds": round(run_training_seconds(cfg, out), 1),
              "unigram_loss_nats": unigram_loss(data_bin, cfg.data), "subnets": scored,
              "checkpoint": str(save_dir / LAST)}
    atomic_write_json(out / "metrics.json", result)
    return result


def _last_good(save_dir: Path) -> str:
    """What a diverged run leaves to go on from, for its error message."""
    if _checkpoint_problem(save_dir / LAST) is None:
        return (f"nothing non-finite was saved; the last good checkpoint is {save_dir / LAST} "
                f"({checkpoint_updates(save_dir / LAST)} updates): the same command with a lower --lr goes on from it")
    return "no checkpoint was written before it diverged: run it again with a lower --lr"


def recipe_of(checkpoint: str | os.PathLike[str], **changes: Any) -> SuperTransformerConfig:
    """The recipe a SuperTransformer checkpoint was trained with, read from the configuration fairseq saves in it
    (space, sharing mode, data directory, optimiser, schedule, batch size, updates, label smoothing, seed), with
    ``changes`` on top; ``CheckpointError`` naming the path for a checkpoint of anything else."""
    import ast

    from ..config import from_dict
    from .translation.evaluate import supertransformer_data

    if supertransformer_data(checkpoint) is None:
        raise CheckpointError(f"{checkpoint}: not a checkpoint of the fairseq model shiftadd_supertransformer")
    cfg = load_checkpoint(checkpoint, mmap=True)["cfg"]
    model, task, opt = cfg["model"], cfg["task"], cfg["optimization"]
    sched, optimizer = cfg["lr_scheduler"], cfg["optimizer"]
    hws = {k: model[f"hws_{k}"] for k in ("estimator", "segments", "binning", "laplace_scale", "max_samples",
                                          "add_adaptive_lr")
           if f"hws_{k}" in model}  # absent in checkpoints older than the fields: the defaults
    fields = {"space": model["space"], "mode": model["mode"], "kl_weight": model["kl_weight"], "hws": hws,
              "data": {"binarized": task["data"], "source_lang": task["source_lang"],
                       "target_lang": task["target_lang"]},
              "max_updates": opt["max_update"], "max_tokens": cfg["dataset"]["max_tokens"],
              "update_freq": opt["update_freq"][0], "lr": opt["lr"][0], "warmup_updates": sched["warmup_updates"],
              "warmup_init_lr": sched["warmup_init_lr"], "min_lr": sched["min_lr"],
              "adam_betas": list(ast.literal_eval(optimizer["adam_betas"])), "weight_decay": optimizer["weight_decay"],
              "clip_norm": opt["clip_norm"], "label_smoothing": cfg["criterion"]["label_smoothing"],
              "seed": cfg["common"]["seed"], "subnet": model.get("subnet", ""),
              "quant_bits": model.get("quant_bits") or None, "subnet_seed": task.get("subnet_seed", 0),
              "sampling": task.get("supernet_sampling", "uniform"),
              "sandwich_random": task.get("sandwich_random", 2)}
    return from_dict(SuperTransformerConfig, {**fields, **changes}, f"the recipe of {checkpoint}")


def retrain_subnet(supernet: str | os.PathLike[str], arch: dict[str, Any], output: str, *,
                   test_sentences: int | None = None, **changes: Any) -> dict[str, Any]:
    """Train ``arch`` from scratch with the recipe of the SuperTransformer checkpoint ``supernet`` (``changes`` on
    top, e.g. ``max_updates``), score it, and score the same subnet with the weights it inherits from ``supernet``:
    validation loss and test BLEU of both, side by side in ``<output>/metrics.json`` (``scratch``, ``inherited``)."""
    from ..data.translation import references_dir
    from .translation.evaluate import evaluate_subnet, load_trained, supertransformer_data

    recipe = recipe_of(supernet, subnet=json.dumps(arch), output=output, baselines=[], eval_archs=0,
                       eval_test_sentences=test_sentences, **changes)
    with output_lock(output, "output", "retrain"):
        result = _train(recipe, names={"subnet": "arch"})
        data_bin = supertransformer_data(supernet)
        model, task = load_trained(supernet, data_bin)
        inherited = evaluate_subnet(model, task, arch, references_dir(data_bin), beam=recipe.beam,
                                    lenpen=recipe.lenpen, max_tokens=recipe.max_tokens, test_limit=test_sentences)
        scratch = result.pop("subnets")["subnet"]
        result.update({"supernet": str(supernet), "arch": arch, "scratch": scratch,
                       "inherited": {"valid": inherited["valid"], "test": inherited["test"],
                                     "supernet_updates": checkpoint_updates(Path(supernet))},
                       "recipe": {k: v for k, v in dataclasses.asdict(recipe).items() if k not in ("subnet", "data")}})
        atomic_write_json(Path(output) / "metrics.json", result)
    return result


def checkpoint_updates(checkpoint: Path) -> int:
    """The number of updates a fairseq checkpoint holds."""
    return int(load_checkpoint(checkpoint, mmap=True)["optimizer_history"][-1]["num_updates"])


def checkpoint_training_seconds(checkpoint: Path) -> float:
    """The wall time fairseq's training took to reach a checkpoint, summed over every run that resumed it (its
    ``previous_training_time``), where ``fit_seconds`` counts only the last run's; a run fine-tuned from another
    checkpoint (``--finetune-from-model``) carries that one's time too."""
    return float(load_checkpoint(checkpoint, mmap=True)["extra_state"]["previous_training_time"])


def run_training_seconds(cfg: SuperTransformerConfig, out: Path) -> float:
    """The training time of the run in ``out`` to its last checkpoint, over every resume, without the time of the
    ``init_from`` checkpoint it started from (:data:`INIT_TIME_FILE`)."""
    seconds = checkpoint_training_seconds(out / "checkpoints" / LAST)
    started = read_json(out / INIT_TIME_FILE) if cfg.init_from else None
    if started is not None and started.get("init_from") == str(cfg.init_from):
        seconds -= float(started["train_seconds"])
    return seconds


class _TextOnly(logging.Filter):
    """Drops the two records fairseq-train logs as objects, its whole configuration and the model's repr (hundreds
    of lines for a SuperTransformer, every candidate of every layer); ``fairseq_args.json`` holds the first, and
    the parameter counts fairseq logs next stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return isinstance(record.msg, str)


def _run_fairseq_train(args: list[str]) -> None:
    """``fairseq-train args`` in this process (fairseq's own argument parsing, training loop and checkpoints)."""
    from ..data.translation import import_fairseq

    import_fairseq()
    from fairseq import distributed_utils, options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import train

    parser = options.get_training_parser()
    namespace = options.parse_args_and_arch(parser, input_args=args)
    logger, quiet = logging.getLogger("fairseq_cli.train"), _TextOnly()
    logger.addFilter(quiet)
    try:
        distributed_utils.call_main(convert_namespace_to_omegaconf(namespace), train.main)
    finally:
        logger.removeFilter(quiet)


def unigram_loss(data_bin: Path, data: TranslationDataConfig) -> float:
    """Cross-entropy (nats per token) of the validation targets under the training targets' unigram distribution
    (add-one smoothed), with end-of-sentence tokens counted: the bar a translation model must clear."""
    import math

    from ..data.translation import import_fairseq

    import_fairseq()
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(data_bin / f"dict.{data.target_lang}.txt"))
    counts = [0] * len(dictionary)

    def tokens(split: str) -> Any:
        prefix = data_bin / f"{split}.{data.source_lang}-{data.target_lang}.{data.target_lang}"
        return data_utils.load_indexed_dataset(str(prefix), dictionary)

    for sentence in tokens("train"):
        for t in sentence.tolist():
            counts[t] += 1
    total = sum(counts) + len(counts)
    loss, n = 0.0, 0
    for sentence in tokens("valid"):
        for t in sentence.tolist():
            loss -= math.log((counts[t] + 1) / total)
            n += 1
    return loss / max(n, 1)

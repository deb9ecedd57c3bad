"""The main job, ``nni-shiftadd demo``: train a supernet, search it with the evolution tuner through ``nnictl create``
on loopback, wait for the trials, print the best architecture next to the baselines.

The recipe's supernet decides the half. An image recipe (``examples/fashion_mnist/demo.yaml``, the default) trains
the cv_small supernet and prints accuracy, energy and latency of the best subnet beside the all-Conv/Shift/Add/Attn
networks. A translation recipe (``examples/translation/demo.yaml``) trains a SuperTransformer with fairseq on the
trans-de-en pairs, runs the hybrid search and, as ``extra_searches``, the same search restricted to Attn blocks
(HAT's space), and prints the paper's Table 3 for the data: params, FLOPs, test BLEU, latency and energy of the
best hybrid subnet, the best Attn-only subnet and the homogeneous baselines (:mod:`.translation_report`).

Everything lands in ``output`` (``runs/demo``): the supernet (``supernet/``), each search's experiment config and
search space (``experiment/``, ``experiment_<name>/``), its state, results and Pareto plots (``search/``,
``search_<name>/``), and for translation the table and BLEU Pareto plots (``table.json``, ``plots/``). Run it again
after a kill and it goes on: the supernet resumes from its last checkpoint (or is reused when finished), and each
search resumes from its ``state.json`` without evaluating any finished architecture again. If the experiment of a
killed demo is still running (NNI's manager and tuner outlive the demo's process), the demo follows that experiment
instead of starting a second search on the same folder. The whole recipe, the host and the port are checked before
any training starts, and ``output`` is locked while the demo runs.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..atomic import read_json
from ..config import ConfigError, load_yaml, load_yaml_text
from ..lock import check_output_dir, output_lock, read_holder
from ..space.kinds import DEFAULT_KIND
from ..tasks.kinds import TASK_KINDS
from ..trial_host import client_command, running_host
from .nnictl import ExperimentError, Rest, check_address, create, free_port, listening_addresses, register, wait


@dataclasses.dataclass
class DemoConfig:
    """Schema of a demo recipe (``examples/fashion_mnist/demo.yaml``, ``examples/translation/demo.yaml``)."""

    supernet_recipe: str = "examples/fashion_mnist/supernet_cv_small.yaml"
    supernet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    preset: str = "cv_small"
    preset_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra_searches: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    eval_batches: int = 8
    calibration_batches: int = 3
    trial_batch_size: int = 256
    bleu_sentences: int | None = 200
    trial_beam: int = 1
    beam: int = 4
    lenpen: float = 0.6
    test_sentences: int | None = None
    trial_threads: int = 1
    concurrency: int = 2
    trial_host: bool = True  # fork each trial from a warm process that has imported torch & co (trial_host.py)
    max_trials: int = 200
    timeout_minutes: float = 60.0
    port: int = 8080
    host: str = "127.0.0.1"
    output: str = "runs/demo"

    def validate(self) -> None:
        for name in ("eval_batches", "calibration_batches", "trial_batch_size", "trial_threads", "concurrency",
                     "max_trials", "trial_beam", "beam"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        for name in ("bleu_sentences", "test_sentences"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "bleu_sentences" else 1):
                raise ValueError(f"field {name!r}: must be null (all sentences) or >= "
                                 f"{0 if name == 'bleu_sentences' else 1}, got {value}")
        if not self.timeout_minutes > 0:
            raise ValueError(f"field 'timeout_minutes': must be > 0, got {self.timeout_minutes}")
        for name in self.extra_searches:
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(f"field 'extra_searches': name {name!r} must be lower-case letters, digits and _ "
                                 "(it names the search's folder)")
        check_address(self.host, self.port, "field 'host'", "field 'port'")
        check_output_dir(self.output, "field 'output'")
        if not Path(self.supernet_recipe).is_file():
            raise ValueError(f"field 'supernet_recipe': no such file {self.supernet_recipe!r}")


@dataclasses.dataclass(frozen=True)
class Search:
    """One search of the demo: its name, folders and preset overrides."""

    name: str  # "" for the main search
    overrides: dict[str, Any]
    search_dir: Path
    exp_dir: Path

    @property
    def title(self) -> str:
        return "search" if not self.name else f"search {self.name}"


def experiment_config(*, space: str, preset: str, preset_overrides: dict[str, Any], search_dir: Path,
                      search_space_file: Path, supernet: Path, concurrency: int, max_trials: int, name: str,
                      trial_host: str | None = None, **trial_flags: Any) -> dict[str, Any]:
    """An ``nnictl create`` config (as a dict) for the evolution tuner and the supernet trial; ``trial_flags`` are
    the trial's flags (``eval_batches=8`` is ``--eval-batches 8``), in the order given. With ``trial_host`` (a
    socket of :func:`~nni_shiftadd.trial_host.running_host`) each trial runs as a fork of that warm host. The
    tuner's ``optimize_mode`` follows the preset's goal, so that NNI's web UI ranks the trials the way the search
    does."""
    from ..strategy.evolution import load_preset
    from ..strategy.tuner import OPTIMIZE_MODES

    loaded = load_preset(preset, preset_overrides)
    goal = loaded.objective_goal
    # the trials report costs on the model the tuner constrains them with
    trial_flags = {**trial_flags, "bits": loaded.bits, "eyeriss": loaded.eyeriss}
    flags = "".join(f" --{key.replace('_', '-')} {'null' if value is None else value}"
                    for key, value in trial_flags.items())
    python = shlex.join(client_command(trial_host, "nni_shiftadd.cli") if trial_host
                        else [sys.executable, "-m", "nni_shiftadd.cli"])
    trial = f"{python} trial --supernet {supernet} --space {space}{flags}"
    return {
        "experimentName": name,
        "searchSpaceFile": str(search_space_file),
        "trialCommand": trial,
        "trialCodeDirectory": str(search_dir),
        "trialConcurrency": concurrency,
        "maxTrialNumber": max_trials,
        "tuner": {"name": "ShiftAddEvolution",
                  "classArgs": {"space": space, "preset": preset, "output": str(search_dir),
                                **({"overrides": preset_overrides} if preset_overrides else {}),
                                "optimize_mode": OPTIMIZE_MODES[goal]}},
        "trainingService": {"platform": "local"},
    }


def recipe_kind(path: str | Path) -> str:
    """The kind of space a supernet recipe trains (its ``space`` field), which picks the demo's :class:`DemoKind`;
    the default kind when the recipe does not name a loadable space (its own validation then names the problem)."""
    from ..space.spec import load_space

    data = load_yaml_text(Path(path).read_text(encoding="utf-8"))
    space = data.get("space") if isinstance(data, dict) else None
    if not isinstance(space, str):
        return DEFAULT_KIND
    try:
        return load_space(space).kind
    except (ConfigError, OSError):
        return DEFAULT_KIND


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """The whole job (see the module docstring); returns the main search's ``results.json`` plus where things are
    (and, for translation, the table)."""
    out = Path(cfg.output).resolve()
    with output_lock(out, "output", "demo"):
        return _run_demo(cfg, out)


def _running_experiment(exp_dir: Path, search_dir: Path) -> dict[str, Any] | None:
    """The experiment of an earlier demo whose tuner still holds ``search_dir`` (``experiment.json``: id, host,
    port), if its manager still answers there; ``ExperimentError`` if another job holds the folder."""
    holder = read_holder(search_dir)
    if holder is None:
        return None
    record_file = exp_dir / "experiment.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if record.get("id") and record.get("id") == holder.get("experiment"):
        try:
            if Rest(record["port"], record["host"]).get("experiment")["id"] == record["id"]:
                return record
        except (OSError, ValueError, KeyError):
            pass
    raise ExperimentError(f"the search folder {search_dir} is in use by pid {holder.get('pid')} "
                          f"({holder.get('what') or holder.get('command')}"
                          + (f", NNI experiment {holder['experiment']}; stop it with: nnictl stop {holder['experiment']}"
                             if holder.get("experiment") else "") + ")")


def _searches(cfg: DemoConfig, out: Path) -> list[Search]:
    """The main search and the ``extra_searches``, each with its preset checked now (not inside an experiment)."""
    from ..strategy.evolution import load_preset

    searches = [Search("", dict(cfg.preset_overrides), out / "search", out / "experiment")]
    for name, extra in cfg.extra_searches.items():
        searches.append(Search(name, {**cfg.preset_overrides, **extra}, out / f"search_{name}",
                               out / f"experiment_{name}"))
    for search in searches:
        try:
            load_preset(cfg.preset, search.overrides)
        except ValueError as err:
            where = "preset_overrides" if not search.name else f"extra_searches.{search.name}"
            raise ConfigError(f"demo recipe: field {where!r}: {err}") from None
    return searches


class DemoKind(abc.ABC):
    """What the demo does for one kind of space: train its supernet, tell its trials what to measure, and what it
    adds once the searches are done (a table) and prints at the end."""

    per_trial: str = ""
    final_steps: int = 0  # steps after the searches

    @abc.abstractmethod
    def supernet_job(self, cfg: DemoConfig, out: Path) -> tuple[str, Path, str, Callable[[], Any]]:
        """The supernet: its space, its checkpoint, a line for the log, and the job that trains (or resumes) it, with
        the recipe already checked."""

    @abc.abstractmethod
    def trial_flags(self, cfg: DemoConfig) -> dict[str, Any]:
        """The flags of ``nni-shiftadd trial`` for this kind's measurements."""

    def finish(self, cfg: DemoConfig, checkpoint: Path, results: dict[str, Any], out: Path, step: str) -> None:
        """Work after the searches (into ``results``); nothing by default."""

    @abc.abstractmethod
    def table_lines(self, results: Mapping[str, Any]) -> list[str]:
        """The table the summary starts with."""


class ImageDemo(DemoKind):
    """An image space: the supernet with Lightning; trials score accuracy after BN recalibration; the summary
    prints the best (or the front) beside the homogeneous baselines."""

    per_trial = "inherited weights, BN recalibration, validation, Eyeriss profile"

    def supernet_job(self, cfg: DemoConfig, out: Path) -> tuple[str, Path, str, Callable[[], Any]]:
        from ..tasks.supernet import SupernetConfig, train_supernet

        recipe = load_yaml(SupernetConfig, cfg.supernet_recipe,
                           {**cfg.supernet_overrides, "output": str(out / "supernet")})
        what = f"{recipe.space} ({recipe.mode}) on {recipe.dataset}, {recipe.epochs} epoch(s)"
        return recipe.space, out / "supernet" / "checkpoints" / "last.ckpt", what, lambda: train_supernet(recipe)

    def trial_flags(self, cfg: DemoConfig) -> dict[str, Any]:
        return {"eval_batches": cfg.eval_batches, "calibration_batches": cfg.calibration_batches,
                "batch_size": cfg.trial_batch_size}

    def table_lines(self, results: Mapping[str, Any]) -> list[str]:
        cols = ("accuracy", "energy_mJ", "latency_ms", "mult_G", "add_G", "shift_G", "params_M")

        def row(name: str, r: Mapping[str, Any]) -> str:
            return f"{name:14s}" + "".join(f"{r[c]:12.4f}" if isinstance(r.get(c), (int, float)) else f"{'-':>12s}"
                                           for c in cols)
        lines = ["", f"{'':14s}" + "".join(f"{c:>12s}" for c in cols)]
        if results.get("best"):
            lines.append(row("best (search)", results["best"]))
        for k, r in enumerate(results.get("front") or []):  # a Pareto search: its whole front
            lines.append(row(f"front {k + 1}", r))
        for name, r in sorted(results.get("baselines", {}).items()):
            lines.append(row(name.replace("_", "-"), r))
        lines += ["", "accuracy        inherited from a supernet trained briefly: it ranks architectures coarsely "
                  "(at the default 2 epochs of naive sharing, Kendall tau 0.48 against networks trained alone in the "
                  "ranking study, docs/results.md#ranking-fidelity-against-supernet-budget); retrain the pick to "
                  "measure it: "
                  "nni-shiftadd retrain --config examples/fashion_mnist/retrain_cv_small.yaml "
                  f"--arch {results['search_dir']}/best.json"]
        return [*lines, ""]


class TranslationDemo(DemoKind):
    """A translation space: the SuperTransformer with fairseq; trials score validation loss and BLEU; after the
    searches, the paper's Table 3 (test BLEU of the picks and the baselines, :mod:`.translation_report`)."""

    per_trial = "inherited weights, validation loss, BLEU, Eyeriss profile"
    final_steps = 1

    def supernet_job(self, cfg: DemoConfig, out: Path) -> tuple[str, Path, str, Callable[[], Any]]:
        from ..tasks.supertransformer import LAST, SuperTransformerConfig, train_supertransformer

        recipe = load_yaml(SuperTransformerConfig, cfg.supernet_recipe,
                           {**cfg.supernet_overrides, "output": str(out / "supernet")})
        what = f"{recipe.space} SuperTransformer ({recipe.mode}), {recipe.max_updates} updates with fairseq"
        return recipe.space, out / "supernet" / "checkpoints" / LAST, what, lambda: train_supertransformer(recipe)

    def trial_flags(self, cfg: DemoConfig) -> dict[str, Any]:
        return {"bleu_sentences": cfg.bleu_sentences, "beam": cfg.trial_beam, "lenpen": cfg.lenpen}

    def finish(self, cfg: DemoConfig, checkpoint: Path, results: dict[str, Any], out: Path, step: str) -> None:
        from .translation_report import translation_table

        print(f"{step} table: test BLEU (beam {cfg.beam}) of the chosen subnets and the baselines", flush=True)
        results["table"] = translation_table(checkpoint, results, out, beam=cfg.beam, lenpen=cfg.lenpen,
                                             test_sentences=cfg.test_sentences)
        results["supernet_updates"] = (read_json(out / "supernet" / "metrics.json") or {}).get("updates")

    def table_lines(self, results: Mapping[str, Any]) -> list[str]:
        from .translation_report import format_table

        updates = results.get("supernet_updates")
        trained = f"{updates} updates" if updates else "briefly"
        return [format_table(results["table"]), "",
                f"val loss, BLEU  inherited from a SuperTransformer trained {trained}, which ranks subnets coarsely: "
                "the searches chose by the differences in inherited loss above (how they grow with training: "
                "docs/results.md#translation-ranking-on-nlp_tiny-in-progress); retrain a pick to measure it: "
                f"nni-shiftadd retrain --supernet {results['supernet_checkpoint']} "
                f"--arch {results['search_dir']}/best.json --output runs/retrain_translation_best", ""]


#: What the demo does for each kind of space (:func:`recipe_kind` of its supernet recipe).
DEMO_KINDS: dict[str, DemoKind] = {DEFAULT_KIND: ImageDemo(), "translation": TranslationDemo()}


def demo_kind(kind: str) -> DemoKind:
    """The :class:`DemoKind` of space kind ``kind``; ``ConfigError`` naming the kinds the demo knows otherwise."""
    if kind not in DEMO_KINDS:
        raise ConfigError(f"demo recipe: field 'supernet_recipe': the demo has no job for spaces of kind {kind!r}; "
                          f"it knows {list(DEMO_KINDS)}")
    return DEMO_KINDS[kind]


def _run_demo(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    kind = recipe_kind(cfg.supernet_recipe)
    job = demo_kind(kind)
    searches = _searches(cfg, out)
    space, checkpoint, what, train = job.supernet_job(cfg, out)
    # before training: a foreign holder of a search folder fails now
    running = {s.name: _running_experiment(s.exp_dir, s.search_dir) for s in searches}
    steps = 1 + len(searches) + job.final_steps
    print(f"[1/{steps}] supernet: {what}", flush=True)
    if (out / "supernet" / "metrics.json").is_file() and checkpoint.is_file():
        print(f"      reusing the trained supernet {checkpoint}", flush=True)
    else:
        train()
    supernet_s = time.perf_counter() - started

    trial_flags = {**job.trial_flags(cfg), "threads": cfg.trial_threads}
    host = (running_host(TASK_KINDS[kind].trial_preload, out / "trial_host.log") if cfg.trial_host
            else contextlib.nullcontext(None))
    with host as trial_host:
        done = _run_searches(cfg, searches, running, space, checkpoint, steps, job, trial_host, trial_flags)

    results = done[""]
    results.update({"kind": kind, "supernet_checkpoint": str(checkpoint), "supernet_seconds": round(supernet_s, 1),
                    "extra_searches": {name: r for name, r in done.items() if name}})
    job.finish(cfg, checkpoint, results, out, f"[{steps}/{steps}]")
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    return results


def _run_searches(cfg: DemoConfig, searches: list[Search], running: Mapping[str, dict[str, Any] | None], space: str,
                  checkpoint: Path, steps: int, job: DemoKind, trial_host: str | None,
                  trial_flags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each search's NNI experiment, created (or followed, when still running from a killed demo) and waited for;
    its ``results.json`` by name."""
    from ..strategy.tuner import search_space_json

    done: dict[str, dict[str, Any]] = {}
    for k, search in enumerate(searches, start=2):
        step = f"[{k}/{steps}]"
        restricted = f" (blocks {search.overrides['blocks']})" if search.overrides.get("blocks") else ""
        record = running[search.name]
        if record is not None:
            experiment_id, host, port = record["id"], record["host"], int(record["port"])
            print(f"{step} {search.title}{restricted}: following experiment {experiment_id}, still running from an "
                  "earlier demo", flush=True)
        else:
            print(f"{step} {search.title}{restricted}: registering the ShiftAddEvolution tuner and creating the NNI "
                  "experiment", flush=True)
            register()
            search.exp_dir.mkdir(parents=True, exist_ok=True)
            search.search_dir.mkdir(parents=True, exist_ok=True)
            space_file = search.exp_dir / "search_space.json"
            space_file.write_text(json.dumps(search_space_json(space), indent=1))
            config = experiment_config(space=space, preset=cfg.preset, preset_overrides=search.overrides,
                                       search_dir=search.search_dir, search_space_file=space_file, supernet=checkpoint,
                                       concurrency=cfg.concurrency, max_trials=cfg.max_trials,
                                       name="nni-shiftadd demo" + (f" ({search.name})" if search.name else ""),
                                       trial_host=trial_host, **trial_flags)
            config_file = search.exp_dir / "config.yml"
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
            host, port = cfg.host, free_port(cfg.port, cfg.host)
            experiment_id = create(config_file, port, host)
            (search.exp_dir / "experiment.json").write_text(json.dumps({"id": experiment_id, "host": host,
                                                                         "port": port}))
        url = f"http://{host}:{port}"
        print(f"      experiment {experiment_id}, web UI {url} (listening on {sorted(listening_addresses(port))})",
              flush=True)
        results_file = search.search_dir / "results.json"
        print(f"      trials (each: {job.per_trial})", flush=True)
        wait(Rest(port, host), _finished(results_file), timeout=cfg.timeout_minutes * 60,
             progress=_progress_bar(results_file))
        results = json.loads(results_file.read_text())
        results.update({"experiment_id": experiment_id, "web_ui": url, "search_dir": str(search.search_dir),
                        "stop_command": f"nnictl stop {experiment_id}"})
        done[search.name] = results
    return done


def _finished(results_file: Path) -> Any:
    def finished() -> bool:
        if not results_file.is_file():
            return False
        state = json.loads(results_file.read_text())
        return bool(state["done"] or state["error"])
    return finished


def _progress_bar(results_file: Path) -> Any:
    """A tqdm bar over the experiment's trials (its total grows as the tuner proposes them), with the search's
    generation from ``results.json``."""
    from tqdm import tqdm

    bar = tqdm(desc="      trials", unit="trial", dynamic_ncols=True)

    def update(trials: list[dict[str, Any]]) -> None:
        done = sum(t.get("status") in ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED") for t in trials)
        running = sum(t.get("status") == "RUNNING" for t in trials)
        bar.total = len(trials)
        bar.n = done
        postfix: dict[str, Any] = {"running": running}
        try:
            state = json.loads(results_file.read_text())
            postfix["generation"] = f"{min(state['generation'] + 1, state['iterations'])}/{state['iterations']}"
        except (OSError, ValueError, KeyError):  # not written yet, or being replaced
            pass
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()
    return update


def _search_lines(results: Mapping[str, Any]) -> list[str]:
    """The lines every demo prints about one search: what it evaluated, its files, its web UI."""
    search = Path(results["search_dir"])
    plots = sorted(str(p) for p in search.glob("pareto*.png"))
    lines = []
    if results.get("error"):
        lines.append(f"search stopped early: {results['error']}")
    lines.append(f"evaluated       {results['evaluated']} architectures over {results['generation']} generation(s) "
                 f"({results['rejected_samples']} samples rejected by the constraints)")
    lines.append(f"results         {search / 'results.csv'}, {search / 'results.json'}")
    lines.append(f"pareto plots    {', '.join(plots) or '(none: no architecture was evaluated)'}")
    lines.append(f"web UI          {results['web_ui']} (still running; stop it with: {results['stop_command']})")
    return lines


def format_summary(results: dict[str, Any]) -> str:
    """What ``nni-shiftadd demo`` prints at the end: the table (the best arch beside the baselines; for translation
    the paper's Table 3), then per search its choice, its files and its web UI."""
    lines = demo_kind(results.get("kind", DEFAULT_KIND)).table_lines(results)
    lines.append(f"constraints     {results.get('constraints') or {}}")
    searches = [("", results), *results.get("extra_searches", {}).items()]
    for name, r in searches:
        if len(searches) > 1:
            lines.append(f"-- search {name}".rstrip())
        if r.get("best"):
            lines.append(f"best arch       {json.dumps(r['best']['arch'])}")
        lines += _search_lines(r)
    lines.append(f"wall time       {results['total_seconds']:.0f} s (supernet {results['supernet_seconds']:.0f} s)")
    return "\n".join(lines)


DEFAULT_RECIPE = "examples/fashion_mnist/demo.yaml"


def load_demo_config(path: str | None, overrides: dict[str, Any]) -> DemoConfig:
    """The demo recipe from ``path`` (YAML; default ``examples/fashion_mnist/demo.yaml`` of the checkout the
    command runs in), with ``overrides``."""
    if path is None:
        if not Path(DEFAULT_RECIPE).is_file():
            raise ConfigError(f"{DEFAULT_RECIPE}: not found from {Path.cwd()}; run the demo from the repository "
                              "root or pass --config")
        path = DEFAULT_RECIPE
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such demo config")
    return load_yaml(DemoConfig, path, overrides)

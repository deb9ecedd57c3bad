"""The main job, ``nni-shiftadd demo``: train a supernet, search it with the evolution tuner through
``nnictl create`` on loopback, wait for the trials, print the best architecture next to the baselines.

Everything lands in ``output`` (``runs/demo``): the supernet (``supernet/``), the experiment's config and search
space (``experiment/``), the search state, results and Pareto plots (``search/``). Run it again after a kill and
it goes on: the supernet resumes from its last checkpoint (or is reused when finished), and the search resumes
from ``search/state.json`` without evaluating any finished architecture again. If the experiment of a killed demo
is still running (NNI's manager and tuner outlive the demo's process), the demo follows that experiment instead of
starting a second search on the same folder. The whole recipe, the host and the port are checked before any
training starts, and ``output`` is locked while the demo runs.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, load_yaml
from ..lock import check_output_dir, output_lock, read_holder
from .nnictl import ExperimentError, Rest, check_address, create, free_port, listening_addresses, register, wait


@dataclasses.dataclass
class DemoConfig:
    """Schema of a demo recipe (``examples/fashion_mnist/demo.yaml``)."""

    supernet_recipe: str = "examples/fashion_mnist/supernet_cv_small.yaml"
    supernet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    preset: str = "cv_small"
    preset_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_batches: int = 8
    calibration_batches: int = 8
    trial_batch_size: int = 256
    trial_threads: int = 1
    concurrency: int = 2
    max_trials: int = 200
    timeout_minutes: float = 60.0
    port: int = 8080
    host: str = "127.0.0.1"
    output: str = "runs/demo"

    def validate(self) -> None:
        for name in ("eval_batches", "calibration_batches", "trial_batch_size", "trial_threads", "concurrency",
                     "max_trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if not self.timeout_minutes > 0:
            raise ValueError(f"field 'timeout_minutes': must be > 0, got {self.timeout_minutes}")
        check_address(self.host, self.port, "field 'host'", "field 'port'")
        check_output_dir(self.output, "field 'output'")
        if not Path(self.supernet_recipe).is_file():
            raise ValueError(f"field 'supernet_recipe': no such file {self.supernet_recipe!r}")


def experiment_config(*, space: str, preset: str, preset_overrides: dict[str, Any], search_dir: Path,
                      search_space_file: Path, supernet: Path, eval_batches: int, calibration_batches: int,
                      batch_size: int, threads: int, concurrency: int, max_trials: int, name: str) -> dict[str, Any]:
    """An ``nnictl create`` config (as a dict) for the evolution tuner and the supernet trial."""
    trial = (f"{sys.executable} -m nni_shiftadd.cli trial --supernet {supernet} --space {space} "
             f"--eval-batches {eval_batches} "
             f"--calibration-batches {calibration_batches} --batch-size {batch_size} --threads {threads}")
    return {
        "experimentName": name,
        "searchSpaceFile": str(search_space_file),
        "trialCommand": trial,
        "trialCodeDirectory": str(search_dir),
        "trialConcurrency": concurrency,
        "maxTrialNumber": max_trials,
        "tuner": {"name": "ShiftAddEvolution",
                  "classArgs": {"space": space, "preset": preset, "output": str(search_dir),
                                **({"overrides": preset_overrides} if preset_overrides else {})}},
        "trainingService": {"platform": "local"},
    }


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """The whole job (see the module docstring); returns the final ``results.json`` plus where things are."""
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


def _run_demo(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    from ..strategy.evolution import load_preset
    from ..strategy.tuner import search_space_json
    from ..tasks.supernet import SupernetConfig, train_supernet

    started = time.perf_counter()
    load_preset(cfg.preset, cfg.preset_overrides)  # a bad preset fails now, not inside the experiment
    recipe = load_yaml(SupernetConfig, cfg.supernet_recipe,
                       {**cfg.supernet_overrides, "output": str(out / "supernet")})
    exp_dir, search_dir = out / "experiment", out / "search"
    running = _running_experiment(exp_dir, search_dir)  # before training: a foreign holder fails now
    print(f"[1/3] supernet: {recipe.space} ({recipe.mode}) on {recipe.dataset}, {recipe.epochs} epoch(s)", flush=True)
    checkpoint = out / "supernet" / "checkpoints" / "last.ckpt"
    done_marker = out / "supernet" / "metrics.json"
    if done_marker.is_file() and checkpoint.is_file():
        print(f"      reusing the trained supernet {checkpoint}", flush=True)
    else:
        train_supernet(recipe)
    supernet_s = time.perf_counter() - started

    if running is not None:
        experiment_id, host, port = running["id"], running["host"], int(running["port"])
        print(f"[2/3] search: following experiment {experiment_id}, still running from an earlier demo", flush=True)
    else:
        print("[2/3] search: registering the ShiftAddEvolution tuner and creating the NNI experiment", flush=True)
        register()
        exp_dir.mkdir(parents=True, exist_ok=True)
        search_dir.mkdir(parents=True, exist_ok=True)
        space_file = exp_dir / "search_space.json"
        space_file.write_text(json.dumps(search_space_json(recipe.space), indent=1))
        config = experiment_config(space=recipe.space, preset=cfg.preset, preset_overrides=cfg.preset_overrides,
                                   search_dir=search_dir, search_space_file=space_file, supernet=checkpoint,
                                   eval_batches=cfg.eval_batches, calibration_batches=cfg.calibration_batches,
                                   batch_size=cfg.trial_batch_size, threads=cfg.trial_threads,
                                   concurrency=cfg.concurrency, max_trials=cfg.max_trials, name="nni-shiftadd demo")
        config_file = exp_dir / "config.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        host, port = cfg.host, free_port(cfg.port, cfg.host)
        experiment_id = create(config_file, port, host)
        (exp_dir / "experiment.json").write_text(json.dumps({"id": experiment_id, "host": host, "port": port}))
    url = f"http://{host}:{port}"
    print(f"      experiment {experiment_id}, web UI {url} (listening on {sorted(listening_addresses(port))})",
          flush=True)

    results_file = search_dir / "results.json"

    def finished() -> bool:
        if not results_file.is_file():
            return False
        state = json.loads(results_file.read_text())
        return bool(state["done"] or state["error"])

    print("[3/3] trials (each: inherited weights, BN recalibration, validation, Eyeriss profile)", flush=True)
    wait(Rest(port, host), finished, timeout=cfg.timeout_minutes * 60, progress=_progress_bar(results_file))
    results = json.loads(results_file.read_text())
    results.update({"experiment_id": experiment_id, "web_ui": url, "search_dir": str(search_dir),
                    "supernet_checkpoint": str(checkpoint), "supernet_seconds": round(supernet_s, 1),
                    "total_seconds": round(time.perf_counter() - started, 1),
                    "stop_command": f"nnictl stop {experiment_id}"})
    return results


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


def format_summary(results: dict[str, Any]) -> str:
    """What ``nni-shiftadd demo`` prints at the end: the best arch, the baselines, the files, the web UI."""
    lines = []
    if results.get("error"):
        lines.append(f"search stopped early: {results['error']}")
    cols = ("accuracy", "energy_mJ", "latency_ms", "mult_G", "add_G", "shift_G", "params_M")
    header = f"{'':14s}" + "".join(f"{c:>12s}" for c in cols)

    def row(name: str, r: dict[str, Any]) -> str:
        return f"{name:14s}" + "".join(f"{r[c]:12.4f}" if isinstance(r.get(c), (int, float)) else f"{'-':>12s}"
                                       for c in cols)
    lines += ["", header]
    best = results.get("best")
    if best:
        lines.append(row("best (search)", best))
    for name, r in sorted(results.get("baselines", {}).items()):
        lines.append(row(name.replace("_", "-"), r))
    constraints = results.get("constraints") or {}
    lines.append("")
    lines.append(f"constraints     {constraints}")
    if best:
        lines.append(f"best arch       {json.dumps(best['arch'])}")
    lines.append(f"evaluated       {results['evaluated']} architectures over {results['generation']} generation(s) "
                 f"({results['rejected_samples']} samples rejected by the constraints)")
    search = Path(results["search_dir"])
    lines.append(f"results         {search / 'results.csv'}, {search / 'results.json'}")
    plots = sorted(str(p) for p in search.glob("pareto*.png"))
    lines.append(f"pareto plots    {', '.join(plots) or '(none: no architecture was evaluated)'}")
    lines.append(f"web UI          {results['web_ui']} (still running; stop it with: {results['stop_command']})")
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

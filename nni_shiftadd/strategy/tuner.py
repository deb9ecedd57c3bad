"""The evolution search as an NNI tuner, for ``nnictl create`` (NNI 3.0 cannot launch NAS experiments from a
config file; a tuner proposing architecture dicts can, and the web UI shows them as readable parameters).

Register it once with ``nni-shiftadd register`` (``nnictl algo register --meta`` on the shipped
``strategies/meta.yml``), then name it in an experiment config::

    tuner:
      name: ShiftAddEvolution
      classArgs: {space: cv_small, preset: cv_small, output: runs/search}

Every trial receives one architecture (``nni.get_next_parameter()``: label -> choice, as in the generated search
space JSON) and reports ``{"default": accuracy, "energy_mJ": ..., ...}`` (see :mod:`nni_shiftadd.tasks.trial`).
The tuner keeps the evolution state, ``results.json``, ``results.csv`` and the Pareto plots in ``output`` and
rewrites them after every result, so a killed experiment loses nothing: a new experiment (or ``nnictl resume``)
with the same ``output`` goes on without evaluating any finished architecture again. The tuner holds the lock of
``output`` (:mod:`nni_shiftadd.lock`) for its lifetime, so a second experiment on the same folder fails at start
with the first one's pid and experiment id instead of evaluating the same architectures beside it.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nni
from nni.tuner import Tuner
from nni.utils import ClassArgsValidator

from ..lock import acquire
from ..space.spec import arch_space, canonical_arch, load_space
from ..cost.metrics import space_cost_fn
from .evolution import ConstraintError, Evolution, arch_key, load_preset, result_metrics
from .results import write_results

_logger = logging.getLogger(__name__)
ARGS = ("space", "preset", "output", "overrides", "optimize_mode")
#: NNI's ``optimize_mode`` (what its web UI reads to rank trials) of each preset goal.
OPTIMIZE_MODES = {"max": "maximize", "min": "minimize"}
RESULT_GRACE_S = 30.0


def search_space_json(space: str | os.PathLike[str] | Any) -> dict[str, Any]:
    """The NNI search space (``{label: {"_type": "choice", "_value": [...]}}``) of a search-space YAML or spec (image
    or translation)."""
    spec = load_space(space) if isinstance(space, (str, os.PathLike)) else space
    return {label: {"_type": "choice", "_value": list(choices)} for label, choices in arch_space(spec).items()}


def default_output() -> Path:
    """``<experiment dir>/shiftadd`` inside NNI's log directory when run by NNI, else ``runs/search``."""
    log_dir = os.environ.get("NNI_LOG_DIRECTORY")
    return Path(log_dir).parent / "shiftadd" if log_dir else Path("runs/search")


class ShiftAddEvolutionValidator(ClassArgsValidator):
    """Checks ``classArgs`` when ``nnictl create`` starts: unknown keys, a missing space or preset, a bad
    preset field all fail there, with the key and the allowed values named."""

    def validate_class_args(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(ARGS))
        if unknown:
            raise ValueError(f"tuner classArgs: unknown key {unknown[0]!r}; allowed keys are {list(ARGS)}")
        load_space(kwargs.get("space", "cv_small"))
        cfg = load_preset(kwargs.get("preset", "cv_small"), kwargs.get("overrides"))
        check_optimize_mode(kwargs.get("optimize_mode"), cfg.objective_goal)


def check_optimize_mode(optimize_mode: str | None, goal: str) -> None:
    """``ValueError`` unless ``optimize_mode`` (NNI's classArg, which its web UI reads to rank trials and draw the
    best so far) is absent or agrees with the preset's ``goal``."""
    if optimize_mode is None:
        return
    if optimize_mode not in OPTIMIZE_MODES.values():
        raise ValueError(f"tuner classArgs 'optimize_mode': got {optimize_mode!r}; expected 'maximize' or 'minimize'")
    if optimize_mode != OPTIMIZE_MODES[goal]:
        raise ValueError(f"tuner classArgs 'optimize_mode': {optimize_mode!r} contradicts the preset's goal {goal!r} "
                         f"(use {OPTIMIZE_MODES[goal]!r}, or change the goal)")


class ShiftAddEvolutionTuner(Tuner):
    """HAT-style evolution under hardware constraints (:class:`~nni_shiftadd.strategy.evolution.Evolution`).

    Args:
        space: search space name or YAML path.
        preset: strategy preset name (``strategies/*.yaml``) or YAML path.
        output: folder of the state, the results and the plots (default :func:`default_output`).
        overrides: preset fields to override, e.g. ``{"iterations": 5}``.
        optimize_mode: NNI's ``maximize``/``minimize``, for its web UI only; must agree with the preset's goal.
    """

    def __init__(self, space: str = "cv_small", preset: str = "cv_small", output: str | None = None,
                 overrides: dict[str, Any] | None = None, optimize_mode: str | None = None) -> None:
        self.spec = load_space(space)
        self.cfg = load_preset(preset, overrides)
        check_optimize_mode(optimize_mode, self.cfg.objective_goal)
        self.output = Path(output) if output else default_output()
        self._output_lock = acquire(self.output, "tuner classArgs 'output'", "ShiftAddEvolution tuner")
        self.state_path = self.output / "state.json"
        self.evolution = Evolution(self.spec, self.cfg, space_cost_fn(self.spec, self.cfg.bits, self.cfg.latency,
                                                                     self.cfg.predictor, self.cfg.eyeriss))
        if self.evolution.load(self.state_path):
            _logger.info("resumed the search from %s: generation %d, %d architectures already evaluated",
                         self.state_path, self.evolution.generation, len(self.evolution.results))
        self.running: dict[int, str] = {}  # parameter id -> arch key
        self.waiting: collections.deque[int] = collections.deque()  # requests answered with NoMoreTrialError
        self.send_trial_callback: Any = None
        self.error: str | None = None
        # NNI's dispatcher calls a tuner from two threads (results and trial ends come on different queues)
        self._lock = threading.RLock()
        self._begun = False

    def close(self) -> None:
        """Release the output folder (the process's end releases it too)."""
        self._output_lock.release()

    def _begin(self) -> None:
        """Draw the first generation (an impossible constraint shows at once) and write the state. Not in
        ``__init__``: NNI's manager gives the dispatcher 10 s to connect, and the cost model takes seconds to load
        on a busy machine, so this waits for the first message from NNI."""
        if self._begun:
            return
        self._begun = True
        try:
            self.evolution.ask()
        except ConstraintError as err:
            self._fail(err)
        self._save()

    # -- NNI tuner interface ---------------------------------------------------------------------------------------
    def update_search_space(self, search_space: dict[str, Any]) -> None:
        """Check that the experiment's search space is the one generated from the space YAML."""
        expected = search_space_json(self.spec)
        with self._lock:
            self._begin()
        if not search_space:
            return
        for label in expected:
            if label not in search_space:
                raise ValueError(f"search space: missing key {label!r} (space {self.spec.name!r}); regenerate it "
                                 f"with `nni-shiftadd search-space {self.spec.name}`")
        for label, entry in search_space.items():
            if label not in expected:
                raise ValueError(f"search space: unknown key {label!r}; space {self.spec.name!r} has "
                                 f"{list(expected)}")
            if entry != expected[label]:
                raise ValueError(f"search space[{label!r}]: got {entry}; space {self.spec.name!r} has "
                                 f"{expected[label]}")

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        with self._lock:
            self._begin()
            return self._generate_multiple(parameter_id_list, **kwargs)

    def _generate_multiple(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        if "st_callback" in kwargs:
            self.send_trial_callback = kwargs["st_callback"]
        out = []
        for pid in parameter_id_list:
            try:
                out.append(self.generate_parameters(pid))
            except nni.NoMoreTrialError:
                self.waiting.append(pid)
        return out

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            self._begin()
            arch = self._next()
            if arch is None:
                raise nni.NoMoreTrialError("the current generation is handed out; waiting for its results"
                                           if not self.evolution.done else "the evolution search is finished")
            self.running[parameter_id] = arch_key(arch)
            return arch

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Take a trial's result. The architecture is the one this tuner handed out for ``parameter_id``, not
        NNI's ``parameters``: NNI 3.0's dispatcher overwrites the stored parameters of the first id of a request
        with ``''`` when the tuner answers only part of it (``NoMoreTrialJobs`` is packed with that id)."""
        with self._lock:
            key = self.running.pop(parameter_id, None)
            if key is not None:
                arch = json.loads(key)
            elif isinstance(parameters, Mapping):
                arch = dict(parameters)
            else:
                _logger.error("result of parameter %d ignored: this tuner did not hand it out and NNI passed no "
                              "architecture (%r)", parameter_id, parameters)
                return
            self._tell(arch, self._metrics(value))

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A failed trial ranks last. A trial's end can reach the tuner before its result (another dispatcher
        thread), so a successful one without a result gets ``RESULT_GRACE_S`` for it to arrive."""
        if success:
            timer = threading.Timer(RESULT_GRACE_S, self._ended_without_result, (parameter_id, "succeeded"))
            timer.daemon = True
            timer.start()
        else:
            self._ended_without_result(parameter_id, "failed")

    def _ended_without_result(self, parameter_id: int, how: str) -> None:
        with self._lock:
            key = self.running.pop(parameter_id, None)
            if key is not None and key not in self.evolution.results:
                _logger.warning("trial of parameter %d %s without a result; it ranks last: %s", parameter_id, how,
                                key)
                self._tell(json.loads(key), None)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Results of earlier experiments (``nnictl resume`` replays them): taken unless already known."""
        with self._lock:
            self._begin()
            self._import(data)

    def _import(self, data: list[dict[str, Any]]) -> None:
        for entry in data:
            try:
                key = arch_key(canonical_arch(self.evolution.spec, entry["parameter"]))
            except (KeyError, TypeError, ValueError) as err:
                _logger.warning("import_data: skipped an entry that is not an architecture of %s: %s",
                                self.spec.name, err)
                continue
            if key not in self.evolution.results:
                self._tell(entry["parameter"], self._metrics(entry["value"]))

    # -- internals -------------------------------------------------------------------------------------------------
    def _metrics(self, value: Any) -> dict[str, Any] | None:
        """A trial's final result (a dict of metrics with ``default``, or a bare number) with the objective set."""
        return result_metrics(value, self.cfg.objective)

    def _next(self) -> dict[str, Any] | None:
        if self.error is not None:
            return None
        try:
            todo = self.evolution.ask()
        except ConstraintError as err:
            self._fail(err)
            return None
        busy = set(self.running.values())
        for arch in todo:
            if arch_key(arch) not in busy:
                return arch
        return None

    def _tell(self, arch: dict[str, Any], metrics: dict[str, Any] | None) -> None:
        try:
            self.evolution.tell(arch, metrics)
        except ConstraintError as err:
            self._fail(err)
        except Exception as err:  # noqa: BLE001  stop the search visibly rather than leave NNI's dispatcher dead
            _logger.exception("the search stopped: a result could not be recorded")
            self.error = f"the search stopped: the result for {arch!r} could not be recorded: {err!r}"
        self._save()
        while self.waiting and self.send_trial_callback is not None:
            arch = self._next()
            if arch is None:
                break
            pid = self.waiting.popleft()
            self.running[pid] = arch_key(arch)
            self.send_trial_callback(pid, arch)

    def _fail(self, err: ConstraintError) -> None:
        self.error = str(err)
        _logger.error("%s", err)

    def _save(self) -> None:
        self.evolution.save(self.state_path)
        write_results(self.evolution, self.output, error=self.error)


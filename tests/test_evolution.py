"""Evolution core (HAT style, ask/tell), presets, constraints, resume, and the NNI tuner front end (driven the way
NNI's dispatcher drives it, without starting an experiment)."""
from __future__ import annotations

import json
import os
import random

import nni
import pytest

from nni_shiftadd.config import ConfigError
from nni_shiftadd.cost.layerwise import space_profiler
from nni_shiftadd.cost.profilers import EyerissProfiler
from nni_shiftadd.space.spec import arch_space, baseline_arch, canonical_arch, load_space, random_arch
from nni_shiftadd.strategy import ConstraintError, Evolution, EvolutionConfig, arch_key, load_preset, space_cost_fn
from nni_shiftadd.strategy.tuner import ShiftAddEvolutionTuner, ShiftAddEvolutionValidator, search_space_json

SPEC = load_space("cv_small")
COST = space_cost_fn(SPEC)


def fake_accuracy(arch: dict) -> float:
    """A deterministic stand-in for supernet accuracy: more MACs and more Conv help, plus arch-seeded noise."""
    c = COST(arch)
    convs = sum(v == "conv" for k, v in canonical_arch(SPEC, arch).items() if k.endswith(".op"))
    return 0.5 + 0.01 * c["macs_M"] + 0.02 * convs + random.Random(arch_key(arch)).random() * 0.01


def run(cfg: EvolutionConfig, *, state: dict | None = None, stop_after: int | None = None,
        order_seed: int | None = None) -> tuple[Evolution, list[str]]:
    ev = Evolution(SPEC, cfg, COST)
    if state is not None:
        ev.load_state_dict(state)
    evaluated: list[str] = []
    while not ev.done:
        todo = ev.ask()
        if order_seed is not None:  # results arriving in another order must not change the search
            random.Random(order_seed + len(evaluated)).shuffle(todo)
        for arch in todo:
            ev.tell(arch, {"accuracy": fake_accuracy(arch), **COST(arch)})
            evaluated.append(arch_key(arch))
            if stop_after is not None and len(evaluated) == stop_after:
                return ev, evaluated
    return ev, evaluated


def small(**kw) -> EvolutionConfig:
    base = dict(iterations=4, population=10, parents=3, mutation=4, crossover=4, mutation_prob=0.3, seed=1,
                constraints={"energy_mJ": {"max": 0.3}})
    base.update(kw)
    return load_preset("cv_small", base)


def test_shipped_presets_hold_the_papers_settings() -> None:
    cv, nlp = load_preset("cv"), load_preset("nlp")
    assert (cv.iterations, cv.population, cv.parents, cv.mutation, cv.crossover, cv.mutation_prob) == \
        (20, 50, 10, 25, 25, 0.2)
    assert (nlp.iterations, nlp.population, nlp.parents, nlp.mutation, nlp.crossover, nlp.mutation_prob) == \
        (30, 125, 25, 50, 50, 0.3)
    assert set(nlp.constraints) == {"latency_ms", "macs_M"}
    assert (nlp.objective, nlp.goal) == ("valid_loss", "min")  # HAT's objective
    nlp_small = load_preset("nlp_small")
    assert (nlp_small.objective, nlp_small.goal, nlp_small.constraints["latency_ms"].max) == ("valid_loss", "min", 3.0)
    assert load_preset("cv_small").constraints["energy_mJ"].max == 0.3


def test_bad_presets_name_the_field_and_the_allowed_values(tmp_path) -> None:
    with pytest.raises(ConfigError, match="shipped presets are .*'cv'"):
        load_preset("no_such_preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 3\npopulaton: 10\n")
    with pytest.raises(ConfigError, match=r"unknown field 'populaton'.*allowed fields"):
        load_preset(bad)
    bad.write_text("constraints: {energy: {max: 1}}\n")
    with pytest.raises(ConfigError, match=r"unknown metric 'energy'.*energy_mJ"):
        load_preset(bad)
    bad.write_text("constraints: {energy_mJ: {min: 2, max: 1}}\n")
    with pytest.raises(ConfigError, match=r"constraints\['energy_mJ'\].*min 2.0 is larger than max 1.0"):
        load_preset(bad)
    bad.write_text("parents: 60\npopulation: 50\n")
    with pytest.raises(ConfigError, match="'parents'"):
        load_preset(bad)


def test_layerwise_costs_equal_a_full_trace_of_the_frozen_subnet() -> None:
    import torch

    from nni_shiftadd.space.cv import HybridCVSpace

    with torch.device("meta"):
        space = HybridCVSpace(SPEC, "hws")
    full = EyerissProfiler(space, torch.zeros(1, 1, 28, 28))
    fast = space_profiler(SPEC)
    for seed in range(6):
        arch = random_arch(SPEC, seed)
        a, b = full.report(arch).totals, fast.report(arch).totals
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-12), k


def test_evolution_meets_constraints_improves_and_is_deterministic() -> None:
    cfg = small()
    ev, evaluated = run(cfg)
    assert len(evaluated) == len(set(evaluated)), "an architecture was evaluated twice"
    history = [h["best"] for h in ev.history]
    assert len(history) == cfg.iterations
    assert history == sorted(history), "the parents are kept, so the best never gets worse"
    best = ev.best()
    assert best["energy_mJ"] <= 0.3
    members = [r for r in ev.records() if r["baseline"] is None]
    assert all(r["energy_mJ"] <= 0.3 for r in members), "a population member breaks the energy constraint"
    # the four homogeneous baselines are evaluated as references, feasible or not (all-Attn is 3.6 mJ)
    names = {r["baseline"] for r in ev.records() if r["baseline"]}
    assert names == {"all_conv", "all_shift", "all_add", "all_attn"}
    assert not next(r for r in ev.records() if r["baseline"] == "all_attn")["feasible"]
    # same seed -> same search, whatever order the results come back in
    again, evaluated2 = run(cfg, order_seed=7)
    assert sorted(evaluated2) == sorted(evaluated) and again.best() == ev.best()
    other, _ = run(small(seed=2))
    assert other.state_dict()["results"] != ev.state_dict()["results"]


def test_the_same_search_runs_on_a_translation_space() -> None:
    """One core for both halves: the evolution searches nlp_small under an Eyeriss latency constraint, with the
    homogeneous encoders as references (a stand-in objective; the real one is a supernet's validation loss)."""
    spec = load_space("nlp_small")
    cost = space_cost_fn(spec)
    cfg = small(iterations=2, population=6, parents=2, mutation=2, crossover=2,
                constraints={"latency_ms": {"max": 2.4}})
    ev = Evolution(spec, cfg, cost)
    while not ev.done:
        for arch in ev.ask():
            c = cost(arch)
            ev.tell(arch, {"accuracy": c["macs_M"] - 10 * c["mult_G"], **c})
    members = [r for r in ev.records() if r["baseline"] is None]
    assert len(members) >= cfg.population and all(r["latency_ms"] <= 2.4 for r in members)
    assert {r["baseline"] for r in ev.records() if r["baseline"]} == {"all_conv", "all_shift", "all_add", "all_attn"}
    history = [h["best"] for h in ev.history]
    assert history == sorted(history) and ev.best()["latency_ms"] <= 2.4
    assert all(canonical_arch(spec, r["arch"]) == r["arch"] for r in members)


def test_a_search_restricted_to_some_block_types() -> None:
    """``blocks`` restricts the same search to a subset of block types: HAT's Attn-only space inside the translation
    space, a multiplication-free search in the CV one; every architecture it proposes is one of the full space."""
    spec = load_space("nlp_tiny")
    cost = space_cost_fn(spec)
    cfg = small(iterations=2, population=6, parents=2, mutation=2, crossover=2, blocks=["attn"], baselines=["attn"],
                constraints={"latency_ms": {"max": 0.6}}, objective="valid_loss", goal="min")
    ev = Evolution(spec, cfg, cost)
    while not ev.done:
        for arch in ev.ask():
            assert canonical_arch(spec, arch) == arch  # an architecture of the full space as well
            c = cost(arch)
            ev.tell(arch, {"valid_loss": 5.0 - c["flops_G"], **c})
    ops = {v for r in ev.records() for k, v in r["arch"].items() if k.endswith(".op")}
    assert ops == {"attn"} and set(ev.baselines) == {"all_attn"}
    assert ev.spec.encoder.blocks == ("attn",) and arch_space(ev.spec)["encoder.layer0.op"] == ["attn"]
    assert all(r["flops_G"] == pytest.approx(2 * r["macs_M"] / 1e3) for r in ev.records())  # FLOPs = 2 MACs

    mult_free, _ = run(small(iterations=1, blocks=["shift", "add"], baselines=["shift", "add"]))
    assert {v for r in mult_free.records() for k, v in r["arch"].items() if k.endswith(".op")} <= {"shift", "add"}
    with pytest.raises(ConfigError, match=r"field 'blocks': unknown block type 'lstm'; allowed \['attn'"):
        small(blocks=["lstm"])
    with pytest.raises(ConfigError, match=r"field 'baselines': \['conv', 'shift', 'add'\] are not among the "
                                          r"searched blocks \['attn'\]"):
        small(blocks=["attn"])
    with pytest.raises(ValueError, match=r"field 'blocks': blocks \['attn\+add'\] leave stage 0 \(28x28\) of "
                                         r"'cv_small' no block type; it offers"):
        Evolution(SPEC, small(blocks=["attn+add"], baselines=[]), COST)


def test_a_minimised_objective_keeps_the_smallest() -> None:
    """``goal: min`` (HAT's objective is a validation loss): the same search on the negated objective."""
    loss_cfg = small(objective="loss", goal="min")
    ev = Evolution(SPEC, loss_cfg, COST)
    while not ev.done:
        for arch in ev.ask():
            ev.tell(arch, {"loss": -fake_accuracy(arch), **COST(arch)})
    reference, _ = run(small())
    assert [r["arch"] for r in ev.records()] == [r["arch"] for r in reference.records()]
    assert ev.best()["loss"] == -reference.best()["accuracy"]
    history = [h["best"] for h in ev.history]
    assert history == sorted(history, reverse=True)
    with pytest.raises(ConfigError, match="field 'goal'"):
        small(goal="up")


def test_mutation_and_crossover_follow_hat() -> None:
    ev = Evolution(SPEC, small(mutation_prob=0.0), COST)
    parent = random_arch(SPEC, 0)
    assert ev._mutate(parent) == parent
    ev = Evolution(SPEC, small(mutation_prob=1.0), COST)
    changed = [sum(ev._mutate(parent)[k] != parent[k] for k in parent) for _ in range(20)]
    assert max(changed) >= len(parent) // 2
    a, b = baseline_arch(SPEC, "conv"), baseline_arch(SPEC, "add")
    child = ev._crossover([a, b])
    assert all(child[k] in (a[k], b[k]) for k in child)
    assert set(child) == set(arch_space(SPEC))


def test_resume_after_a_kill_evaluates_nothing_twice(tmp_path) -> None:
    cfg = small()
    full, evaluated = run(cfg)
    partial, first = run(cfg, stop_after=13)
    path = tmp_path / "state.json"
    partial.save(path)
    resumed = Evolution(SPEC, cfg, COST)
    assert resumed.load(path)
    assert {arch_key(a) for a in resumed.ask()}.isdisjoint(first)
    _, rest = run(cfg, state=json.loads(path.read_text()))
    assert sorted(first + rest) == sorted(evaluated)
    assert json.loads(path.read_text())["generation"] == partial.generation
    # a state saved with other settings is refused, naming the settings
    with pytest.raises(ValueError, match=r"settings \['seed'\] differ"):
        Evolution(SPEC, small(seed=9), COST).load(path)


def test_an_impossible_constraint_names_the_closest_arch_and_keeps_results(tmp_path) -> None:
    cfg = small(constraints={"energy_mJ": {"max": 0.001}}, max_rejects=50)
    ev = Evolution(SPEC, cfg, COST)
    with pytest.raises(ConstraintError, match=r"no architecture met the constraints .*0\.001.* in 50 samples.*"
                                              r"closest was \{") as info:
        ev.ask()
    assert info.value.closest is not None and info.value.metrics["energy_mJ"] > 0.001


def tuner_in(tmp_path, **overrides) -> ShiftAddEvolutionTuner:
    cfg = dict(iterations=2, population=4, parents=2, mutation=2, crossover=2)
    cfg.update(overrides)
    return ShiftAddEvolutionTuner("cv_small", "cv_small", str(tmp_path / "search"), cfg)


def drive(tuner: ShiftAddEvolutionTuner, limit: int | None = None) -> list[dict]:
    """Drive the tuner like NNI's dispatcher with one trial slot: request, report, end."""
    sent: list[tuple[int, dict]] = []
    pid = 0
    reported = []

    def callback(i: int, params: dict) -> None:
        sent.append((i, params))
    while limit is None or len(reported) < limit:
        got = tuner.generate_multiple_parameters([pid], st_callback=callback)
        if got:
            sent.append((pid, got[0]))
        pid += 1
        if not sent:
            break
        i, arch = sent.pop(0)
        tuner.receive_trial_result(i, arch, {"default": fake_accuracy(arch), **COST(arch)})
        tuner.trial_end(i, True)
        reported.append(arch)
    return reported


def test_tuner_runs_the_search_and_writes_results(tmp_path) -> None:
    tuner = tuner_in(tmp_path)
    tuner.update_search_space(search_space_json("cv_small"))
    reported = drive(tuner)
    assert tuner.evolution.done
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(999)
    out = tmp_path / "search"
    results = json.loads((out / "results.json").read_text())
    assert results["done"] and results["evaluated"] == len(reported) == len({arch_key(a) for a in reported})
    assert results["best"]["accuracy"] == max(r["accuracy"] for r in results["records"] if r["feasible"])
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"accuracy", "energy_mJ", "latency_ms", "mult_G", "add_G", "shift_G", "params_M"} <= set(header)
    assert "stage2.layer2.op" in header
    for name in ("pareto_energy.png", "pareto_latency.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tuner_resumes_from_its_output_without_reevaluating(tmp_path) -> None:
    from nni_shiftadd.lock import OutputLockedError

    killed = tuner_in(tmp_path)
    first = drive(killed, limit=5)
    with pytest.raises(OutputLockedError, match=rf"in use by another running job \(pid {os.getpid()}"):
        tuner_in(tmp_path)  # a second tuner on a folder whose tuner still runs
    killed.close()  # as its process ending would
    resumed = tuner_in(tmp_path)
    second = drive(resumed)
    assert {arch_key(a) for a in first}.isdisjoint({arch_key(a) for a in second})
    resumed.close()
    assert tuner_in(tmp_path).evolution.done


def test_tuner_searches_a_translation_space_and_resumes(tmp_path) -> None:
    """The nlp_small preset behind the same tuner: trials report a validation loss (minimised), the results and
    the loss-vs-cost Pareto plots are written, and a restarted tuner evaluates nothing twice."""
    spec = load_space("nlp_small")
    cost = space_cost_fn(spec)
    overrides = dict(iterations=1, population=4, parents=2, mutation=1, crossover=1)

    def tuner() -> ShiftAddEvolutionTuner:
        return ShiftAddEvolutionTuner("nlp_small", "nlp_small", str(tmp_path / "search"), overrides)

    def drive_nlp(t: ShiftAddEvolutionTuner, limit: int | None = None) -> list[dict]:
        reported: list[dict] = []
        pid = 0
        while limit is None or len(reported) < limit:
            got = t.generate_multiple_parameters([pid])
            if not got:
                break
            c = cost(got[0])
            loss = 6.0 - c["macs_M"] / 100 + random.Random(arch_key(got[0])).random() * 0.01
            t.receive_trial_result(pid, got[0], {"default": loss, "valid_loss": loss, **c})
            t.trial_end(pid, True)
            reported.append(got[0])
            pid += 1
        return reported

    first = tuner()
    assert first.spec == spec and search_space_json(spec) == search_space_json("nlp_small")
    done_first = drive_nlp(first, limit=3)
    first.close()
    resumed = tuner()
    rest = drive_nlp(resumed)
    resumed.close()
    assert {arch_key(a) for a in done_first}.isdisjoint({arch_key(a) for a in rest})
    out = tmp_path / "search"
    results = json.loads((out / "results.json").read_text())
    assert results["done"] and results["evaluated"] == len(done_first) + len(rest)
    feasible = [r for r in results["records"] if r["feasible"]]
    assert results["best"]["valid_loss"] == min(r["valid_loss"] for r in feasible)
    assert all(r["latency_ms"] <= 3.0 for r in results["records"] if r["baseline"] is None)
    assert set(results["baselines"]) == {"all_conv", "all_shift", "all_add", "all_attn"}
    for name in ("pareto_energy.png", "pareto_latency.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tuner_failed_trials_rank_last_and_the_search_goes_on(tmp_path) -> None:
    tuner = tuner_in(tmp_path)
    archs = tuner.generate_multiple_parameters([0, 1])
    tuner.trial_end(0, False)  # crashed: no result
    tuner.receive_trial_result(1, archs[1], {"default": 0.7, **COST(archs[1])})
    tuner.trial_end(1, True)
    records = {arch_key(r["arch"]): r for r in tuner.evolution.records()}
    assert records[arch_key(archs[0])]["status"] == "failed"
    assert records[arch_key(archs[1])]["accuracy"] == 0.7
    assert drive(tuner) and tuner.evolution.done


def test_tuner_rejects_bad_class_args_and_a_foreign_search_space(tmp_path) -> None:
    validator = ShiftAddEvolutionValidator()
    validator.validate_class_args(space="cv_small", preset="cv_small")
    with pytest.raises(ValueError, match=r"unknown key 'presets'.*allowed keys"):
        validator.validate_class_args(space="cv_small", presets="cv")
    with pytest.raises(ConfigError, match="iterations"):
        validator.validate_class_args(preset="cv_small", overrides={"iterations": 0})
    tuner = tuner_in(tmp_path)
    wrong = search_space_json("cv_small")
    wrong["stage9.depth"] = {"_type": "choice", "_value": [1]}
    with pytest.raises(ValueError, match=r"unknown key 'stage9.depth'"):
        tuner.update_search_space(wrong)
    del wrong["stage9.depth"], wrong["stage0.depth"]
    with pytest.raises(ValueError, match=r"missing key 'stage0.depth'"):
        tuner.update_search_space(wrong)


def test_tuner_reports_an_impossible_constraint_in_its_results(tmp_path) -> None:
    tuner = tuner_in(tmp_path, constraints={"energy_mJ": {"max": 0.001}}, max_rejects=30)
    assert tuner.generate_multiple_parameters([0]) == []
    results = json.loads((tmp_path / "search" / "results.json").read_text())
    assert "no architecture met the constraints" in results["error"] and "closest" in results["error"]


def test_tuner_under_nnis_own_dispatcher_with_partial_answers(tmp_path) -> None:
    """NNI's real MsgDispatcher with two trial slots. When the tuner can answer only part of a request (the rest
    of a generation is out for evaluation), NNI packs its NoMoreTrialJobs reply with the request's first id and
    overwrites that id's stored parameters with '' (nni/runtime/msg_dispatcher.py); the result of that trial must
    still reach the search with its architecture."""
    from nni.common.serializer import dump
    from nni.runtime import msg_dispatcher
    from nni.runtime.msg_dispatcher import MsgDispatcher
    from nni.runtime.tuner_command_channel import CommandType

    tuner = tuner_in(tmp_path, iterations=3, population=5, parents=2, mutation=2, crossover=1)
    dispatcher = MsgDispatcher("ws://_unittest_nni_shiftadd", tuner)  # NNI's no-connect URL: we play its manager
    jobs: list[dict] = []
    dispatcher.send = lambda command, data: jobs.append(json.loads(data)) \
        if command is CommandType.NewTrialJob else None
    msg_dispatcher._trial_params.clear()
    msg_dispatcher._next_parameter_id = 0
    dispatcher.handle_initialize(search_space_json("cv_small"))
    slots, partial, reported = 2, 0, []

    def request(free: int) -> int:  # NNI's manager asks for one trial per free slot
        before = len(jobs)
        dispatcher.handle_request_trial_jobs(free)
        mine = [job["parameter_id"] for job in jobs[before:]]
        return sum(msg_dispatcher._trial_params[pid] == "" for pid in mine)

    partial += request(slots)
    while jobs:
        running, jobs[:] = list(jobs), []
        for job in running:  # both slots finish, then the manager refills them
            arch = job["parameters"]
            metrics = {"default": fake_accuracy(arch), **COST(arch)}
            dispatcher.handle_report_metric_data({"parameter_id": job["parameter_id"], "type": "FINAL",
                                                  "value": dump(metrics), "trial_job_id": str(len(reported))})
            reported.append(arch_key(canonical_arch(SPEC, arch)))
        if slots - len(jobs) > 0:  # trials the tuner sent by itself (st_callback) hold slots already
            partial += request(slots - len(jobs))
    assert partial > 0, "the test no longer reaches NNI's partial-answer path"
    assert tuner.error is None and tuner.evolution.done
    results = json.loads((tmp_path / "search" / "results.json").read_text())
    assert results["done"] and results["evaluated"] == len(reported) == len(set(reported))


def test_tuner_stops_visibly_on_a_result_it_cannot_record(tmp_path) -> None:
    tuner = tuner_in(tmp_path)
    archs = tuner.generate_multiple_parameters([0, 1])
    tuner.receive_trial_result(7, "", {"default": 0.5})  # not handed out, no arch: ignored
    assert tuner.error is None
    foreign = {**archs[1], "stage0.layer0.op": "winograd"}  # not handed out, and not of this space
    tuner.receive_trial_result(8, foreign, {"default": 0.5})
    results = json.loads((tmp_path / "search" / "results.json").read_text())
    assert "could not be recorded" in results["error"] and "winograd" in results["error"]
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(2)

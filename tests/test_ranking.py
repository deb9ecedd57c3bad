"""The ranking study (paper Table 5): architecture selection, rank statistics, recipe checks, and a tiny study that
runs every phase and resumes from its cache without training anything again."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nni_shiftadd.config import ConfigError, from_dict
from nni_shiftadd.experiment.rank_statistics import (architecture_effect, bootstrap_interval, paired_difference,
                                                     pooled_sign_test, rank_metrics)
from nni_shiftadd.experiment.arch_selection import arch_features, arch_id, select_archs
from nni_shiftadd.experiment.ranking import RankingConfig, Study, Variant, format_table, run_study
from nni_shiftadd.space import load_space
from nni_shiftadd.space.sampling import paths_per_step
from nni_shiftadd.space.spec import baseline_arch, canonical_arch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "fashion_mnist" / "ranking_cv_small.yaml"


def test_selection_is_seeded_distinct_and_spread() -> None:
    spec = load_space("cv_small")
    archs = select_archs(spec, 30, seed=0)
    assert archs == select_archs(spec, 30, seed=0) and archs != select_archs(spec, 30, seed=1)
    assert len({arch_id(a) for a in archs}) == 30
    assert all(a == canonical_arch(spec, a) for a in archs)
    feats = np.stack([arch_features(spec, a) for a in archs])
    # every block type dominates some architecture, and the depths cover the space's range
    assert (feats[:, :4].argmax(1)[:, None] == np.arange(4)).any(0).all()
    depth = feats[:, 4] * 7  # cv_small: at most 2 + 2 + 3 layers
    assert depth.min() <= 4 and depth.max() == 7
    # the homogeneous networks are among the extremes it picks
    picked = {arch_id(a) for a in archs}
    assert sum(arch_id(baseline_arch(spec, op, fallback="conv")) in picked for op in ("conv", "shift", "add",
                                                                                        "attn")) >= 3
    # a farthest-point prefix is spread too: the first 10 cover at least three dominant block types
    assert len(set(feats[:10, :4].argmax(1))) >= 3


def test_rank_metrics_match_hand_computed_values() -> None:
    inherited, standalone = [0.1, 0.2, 0.3, 0.4], [0.15, 0.35, 0.25, 0.45]
    m = rank_metrics(inherited, standalone, top_k=2)
    assert m["kendall_tau"] == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant
    assert m["spearman_rho"] == pytest.approx(0.8)
    assert m["top_k_precision"] == 0.5  # inherited top 2 = {3, 2}, stand-alone top 2 = {3, 1}
    assert rank_metrics(standalone, standalone, 2)["kendall_tau"] == pytest.approx(1.0)
    assert np.isnan(rank_metrics([0.5] * 4, standalone, 2)["kendall_tau"])  # a constant ranks nothing


def test_bootstrap_interval_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(30)
    noisy = [truth + rng.normal(0, 0.15, 30) for _ in range(3)]
    lo, hi = bootstrap_interval(noisy, truth, 5, samples=300)["kendall_tau"]
    point = np.mean([rank_metrics(n, truth, 5)["kendall_tau"] for n in noisy])
    assert lo < point < hi and 0 < lo and hi < 1 and hi - lo < 0.6


def test_paired_difference_tells_a_better_mode_from_seed_noise() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random(30)
    good = [truth + rng.normal(0, 0.05, 30) for _ in range(3)]
    bad = [truth + rng.normal(0, 0.6, 30) for _ in range(3)]
    diff = paired_difference(good, bad, truth, 5, samples=300)
    per_seed = [rank_metrics(g, truth, 5)["kendall_tau"] - rank_metrics(b, truth, 5)["kendall_tau"]
                for g, b in zip(good, bad)]
    assert diff["mean"] == pytest.approx(np.mean(per_seed)) and diff["per_seed"] == pytest.approx(per_seed)
    assert diff["interval"][0] > 0 and diff["beyond_noise"]
    same = paired_difference(good, good, truth, 5, samples=100)
    assert same["mean"] == 0 and same["interval"] == [0, 0] and not same["beyond_noise"]
    with pytest.raises(ValueError, match="same seeds and architectures"):
        paired_difference(good, bad[:2], truth, 5, samples=10)


def test_pooled_sign_test_counts_the_signs_and_drops_ties() -> None:
    pooled = pooled_sign_test([-0.2, -0.1, 0.1, -0.05, 0.0, float("nan")] + [-0.01] * 8)
    assert (pooled["pairs"], pooled["negative"], pooled["positive"]) == (13, 11, 1)
    assert pooled["mean"] == pytest.approx((-0.35 - 0.08 + 0.1) / 13)
    assert pooled["sign_test_p"] == pytest.approx(2 * 13 / 2 ** 12)  # P(at most 1 positive of 12), both tails
    assert pooled_sign_test([0.1, -0.1])["sign_test_p"] == 1.0
    assert np.isnan(pooled_sign_test([0.0])["sign_test_p"])


def test_architecture_effect_matches_a_hand_computed_anova_and_tells_signal_from_noise() -> None:
    # 3 architectures, 2 seeds with the same mean: architecture means 1.1, 2.0, 3.1; residuals -+0.1, 0, +-0.1
    scores = [[1.0, 2.0, 3.2], [1.2, 2.0, 3.0]]
    effect = architecture_effect(scores)
    between, noise = 2 * float(np.var([1.1, 2.0, 3.1], ddof=1)), 0.04 / 2
    assert effect["df"] == [2, 2] and effect["F"] == pytest.approx(between / noise)
    assert effect["p_value"] == pytest.approx(1 / (1 + between / noise))  # F(2, 2)'s tail in closed form
    assert effect["seed_noise_std"] == pytest.approx(noise ** 0.5)
    assert effect["arch_std"] == pytest.approx(((between - noise) / 2) ** 0.5)
    assert effect["icc"] == pytest.approx((between - noise) / (between + noise))
    assert effect["beyond_noise"] and effect["seed_shifts"] == pytest.approx([0.0, 0.0])
    # a supernet seed that scores every architecture higher reorders nothing: it is no noise
    shifted = architecture_effect([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5]])
    assert shifted["seed_noise_std"] == 0 and shifted["beyond_noise"] and shifted["seed_shifts"] == [-0.25, 0.25]
    assert not architecture_effect([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])["beyond_noise"]  # nothing tells them apart
    rng = np.random.default_rng(0)
    noise_only = rng.normal(0.0, 0.1, size=(2, 12)) + 5.0  # the same architecture twelve times
    assert architecture_effect(noise_only)["p_value"] > 0.05 and not architecture_effect(noise_only)["beyond_noise"]
    signal = noise_only + np.linspace(0.0, 1.0, 12)
    assert architecture_effect(signal)["beyond_noise"] and architecture_effect(signal)["icc"] > 0.8
    with pytest.raises(ValueError, match=r"two or more seeds .* shape \(1, 12\)"):
        architecture_effect(noise_only[:1])
    with pytest.raises(ValueError, match="score nan of architecture 2 with seed 1 is not finite"):
        architecture_effect([[1.0, 2.0, 3.0], [1.0, 2.0, float("nan")]])


@pytest.mark.parametrize("bad, message", [
    ({"modes": ["naive", "shared"]}, "field 'modes'"),
    ({"ceiling_archs": 1}, "field 'ceiling_archs'"),
    ({"standalone_seeds": [0, 0]}, "field 'standalone_seeds'"),
    ({"archs": 3}, "field 'archs'"),
    ({"retrain_overrides": {"seed": 3}}, r"field 'retrain_overrides': \['seed'\]"),
    ({"supernet_recipe": "nowhere.yaml"}, "field 'supernet_recipe': no such file"),
    ({"seeds_per_mode": {"none": 1}}, "field 'seeds_per_mode': 'none' is not one of the study's modes"),
    ({"seeds_per_mode": {"hws": 2}}, r"field 'seeds_per_mode': hws: 2 is not between 1 and 1"),
    ({"budgets": [2, 3]}, r"field 'budgets': \[2, 3\] must be distinct multiples of limit_train_batches \(2\); \[3\]"),
    ({"min_reference_tau": 2}, "field 'min_reference_tau'"),
    # every stage's recipe is checked before anything trains, naming the study's field
    ({"supernet_overrides": {"lr": -1}}, "field 'supernet_overrides': .*field 'lr'"),
    ({"reference_overrides": {"epochs": 0}}, "field 'reference_overrides': .*field 'epochs'"),
    ({"search_preset": "nowhere"}, "fields 'search_preset', 'search_overrides': .*no shipped preset"),
    ({"search_overrides": {"population": "many"}}, "fields 'search_preset', 'search_overrides': .*population"),
])
def test_recipe_errors_name_the_field(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(RankingConfig, {**_tiny(Path("unused")), **bad})


def _tiny(output: Path) -> dict:
    return {
        "space": "cv_small", "archs": 4, "ceiling_archs": 2, "min_ceiling": -1.0, "supernet_seeds": [0],
        "modes": ["naive", "hws"], "eval_batches": 1, "calibration_batches": 1, "eval_batch_size": 64, "top_k": 2,
        "bootstrap": 20,
        "retrain_recipe": str(ROOT / "examples" / "fashion_mnist" / "retrain_cv_small.yaml"),
        "retrain_overrides": {"quant_bits": None, "epochs": 1, "warmup_epochs": 0, "batch_size": 32,
                              "limit_train_batches": 2, "limit_eval_batches": 1},
        "supernet_recipe": str(ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml"),
        "supernet_overrides": {"epochs": 1, "warmup_epochs": 0, "batch_size": 32, "limit_train_batches": 2,
                               "eval_archs": 0, "limit_eval_batches": 1, "bn_calibration_batches": 1},
        "budgets": [2],
        "search_preset": "cv_small",
        "search_overrides": {"iterations": 1, "population": 2, "parents": 1, "mutation": 1, "crossover": 0},
        "output": str(output),
    }


def test_shipped_recipe_validates() -> None:
    from nni_shiftadd.experiment.ranking import load_config

    cfg = load_config(RECIPE)
    assert (cfg.archs, cfg.ceiling_archs, cfg.modes, len(cfg.supernet_seeds)) == (30, 10, ["none", "naive", "hws"],
                                                                                   3)
    budgets = [v for v in cfg.variants() if v.technique is None]
    assert [v.steps for v in budgets] == [400, 800, 2000, 4000] and max(cfg.budgets) >= 10 * 400
    assert [v.overrides["epochs"] for v in budgets] == [2, 4, 10, 20]
    # the techniques at the largest budget's time: four paths a step, a quarter of its steps
    techniques = {v.technique: v for v in cfg.variants() if v.technique is not None}
    spec = load_space(cfg.space)
    for name, variant in techniques.items():
        assert variant.steps * paths_per_step(spec, variant.overrides["sampling"]) == max(cfg.budgets), name
        assert variant.overrides["epochs"] * 200 == variant.steps and variant.modes == ("hws",)
    assert set(techniques) == {"fair", "sandwich"}
    assert cfg.seeds("none") == [0] and cfg.seeds("hws") == cfg.seeds("naive") == [0, 1, 2]
    quick = cfg.quick()
    quick.validate()
    assert quick.archs < cfg.archs and quick.output.endswith("_quick")
    assert [v.steps for v in quick.variants()] == [8, 16, 8, 8]  # the budgets, then the techniques


def test_a_tiny_study_runs_every_phase_and_resumes_from_its_cache(tmp_path: Path) -> None:
    cfg = from_dict(RankingConfig, {**_tiny(tmp_path / "study"), "budgets": [2, 4],
                                    "techniques": {"fair": {"overrides": {"sampling": "fair"}, "steps": 2,
                                                            "modes": ["hws"]}},
                                    "reference_overrides": {"limit_train_batches": 3}, "min_reference_tau": 0.5})
    lines: list[str] = []
    results = run_study(cfg, lines.append)
    assert results["complete"] and list(results["variants"]) == ["steps2", "steps4", "steps2-fair"]
    assert len(results["archs"]) == 4
    fair = results["variants"]["steps2-fair"]
    assert fair["technique"] == "fair" and list(fair["modes"]) == ["hws"] and "paired" not in fair
    assert fair["overrides"] == {"sampling": "fair", "epochs": 1}
    # its time in one-path steps, where tau_budget.png draws it: the paths a fair step trains, one for a budget's
    assert fair["paths_per_step"] == paths_per_step(load_space("cv_small"), "fair") > 1
    assert results["variants"]["steps2"]["paths_per_step"] == results["variants"]["steps4"]["paths_per_step"] == 1
    # the ground-truth check: the ceiling architectures under the longer recipe; the rule picks the truth
    check = results["reference_check"]
    assert len(check["reference"]) == 2 and check["min_reference_tau"] == 0.5
    truth = "standalone" if check["kendall_tau"] >= 0.5 else "reference"
    assert results["ground_truth"] == truth == results["ceiling"]["pool"]
    assert [a["standalone"] for a in results["archs"]] == [
        json.loads((tmp_path / "study" / truth / f"{a['id']}-s0" / "metrics.json").read_text())["test_acc"]
        for a in results["archs"]]
    assert sum(line.startswith("stand-alone (standalone)") for line in lines) >= 4 + 2  # every arch, the 2nd seed
    assert sum(line.startswith("stand-alone (reference)") for line in lines) >= 2
    # the budgets come before the check (it trains the longest networks), the techniques after it
    first_reference = min(i for i, line in enumerate(lines) if line.startswith("stand-alone (reference)"))
    assert max(i for i, line in enumerate(lines) if line.startswith("supernet steps4 ")) < first_reference
    assert min(i for i, line in enumerate(lines) if line.startswith("supernet steps2-fair")) > first_reference
    assert sum(line.startswith("supernet") for line in lines) == 5  # 2 budgets x 2 modes, and the technique's
    for name, steps in (("steps2", 2), ("steps4", 4)):  # the budgets
        variant = results["variants"][name]
        assert variant["steps"] == steps and variant["overrides"] == {"epochs": steps // 2}
        for mode, data in variant["modes"].items():
            assert set(data["summary"]) == {"kendall_tau", "pearson_r", "spearman_rho", "top_k_precision"}
            assert len(data["inherited"]["0"]) == 4 and data["fit_seconds"]["0"] > 0
            shape = data["add_weight_shape"]["0"]
            assert shape["pools"] == 23 and 0 <= shape["laplace_closer_share"] <= 1
        assert variant["modes"]["hws"]["params"] > variant["modes"]["naive"]["params"]  # T's alphas
        paired = variant["paired"]["hws - naive"]
        assert paired["seeds"] == [0] and len(paired["per_seed"]) == 1
        metrics = json.loads((tmp_path / "study" / "supernets" / name / "hws_seed0" / "metrics.json").read_text())
        assert metrics["global_step"] == steps
    pooled = results["paired_over_budgets"]["hws - naive"]  # both budgets' seed-0 pairs, not the technique's
    pairs = [results["variants"][name]["paired"]["hws - naive"]["per_seed"][0] for name in ("steps2", "steps4")]
    pairs = [d for d in pairs if not np.isnan(d)]  # a supernet this small may score every architecture alike
    assert pooled["pairs"] == len(pairs) and pooled["negative"] + pooled["positive"] <= len(pairs)
    if pairs:
        assert pooled["mean"] == pytest.approx(np.mean(pairs))
    for mode in ("naive", "hws"):
        assert results["search"][mode]["pick"] and 0 <= results["search"][mode]["standalone_accuracy"] <= 1
    assert results["search"]["variant"] == "steps4"
    for png in ("scatter_steps2.png", "scatter_steps4.png", "tau_budget.png"):
        assert (tmp_path / "study" / png).stat().st_size > 10_000
    table = format_table(results)
    assert "seed ceiling" in table and "ground-truth check" in table and "paired hws - naive" in table
    assert "paired hws - naive over every budget and seed" in table
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert saved["ceiling"]["kendall_tau"] == results["ceiling"]["kendall_tau"] and saved["complete"]

    # again: everything comes from the cache, nothing trains, the same numbers come out
    again: list[str] = []
    second = run_study(cfg, again.append)
    assert not [line for line in again if line.startswith(("stand-alone", "supernet", "inherited", "search ("))]
    assert second["variants"]["steps4"]["modes"]["hws"]["inherited"] == \
        results["variants"]["steps4"]["modes"]["hws"]["inherited"]

    # the JSON ledger alone carries a finished study to another machine: exported (no checkpoint in it) into a fresh
    # output folder, the study trains nothing again
    from nni_shiftadd.experiment.ranking import export_ledger

    written = export_ledger(tmp_path / "study", tmp_path / "carried")
    assert written and not [p for p in written if p.suffix in (".ckpt", ".pt")]
    assert sum(p.stat().st_size for p in written) < 2_000_000
    carried = from_dict(RankingConfig, {**dataclasses.asdict(cfg), "output": str(tmp_path / "carried")})
    ledger_only: list[str] = []
    third = run_study(carried, ledger_only.append)
    assert not [line for line in ledger_only if line.startswith(("stand-alone", "supernet", "inherited", "search ("))]
    assert json.dumps(third["variants"], sort_keys=True) == json.dumps(second["variants"], sort_keys=True)  # NaN too
    # every supernet's weight shape was cached with its scores; a ledger without one (made before they were)
    # reports it as unknown rather than training that supernet again for it
    (tmp_path / "carried" / "shapes" / "steps4" / "naive_seed0.json").unlink()
    unknown: list[str] = []
    fourth = run_study(carried, unknown.append)
    assert not [line for line in unknown if line.startswith(("stand-alone", "supernet", "inherited", "search ("))]
    assert fourth["variants"]["steps4"]["modes"]["naive"]["add_weight_shape"] == {"0": None}
    assert "paired hws - naive" in format_table(fourth)
    shutil.rmtree(tmp_path / "study" / "supernets")

    # a killed evaluation loses only what was not written: drop one cached inherited accuracy, it alone is redone
    path = tmp_path / "study" / "inherited" / "steps2" / "naive_seed0.json"
    ledger = json.loads(path.read_text())
    dropped = next(iter(ledger["scores"]))
    path.write_text(json.dumps({**ledger, "scores": {k: v for k, v in ledger["scores"].items() if k != dropped}}))
    fourth: list[str] = []
    study = Study(cfg, fourth.append)
    redone = study.inherited(Variant("steps2", 2, {"epochs": 1}), "naive", 0)
    assert redone[dropped]["accuracy"] == pytest.approx(ledger["scores"][dropped]["accuracy"], abs=1e-6)
    # (the supernet's checkpoint was removed above, so it is trained again: the same seed gives the same weights)
    assert [line.split(" (")[0] for line in fourth] == [
        "supernet steps2 naive seed 0: 2 steps", "inherited accuracies in the steps2 naive seed 0 supernet: 1 evaluated"]
    # scores made with another training of that supernet (a carried ledger whose supernet was trained again, not
    # bit-identically, elsewhere) are not mixed with this one's: they are all scored again
    ledger = json.loads(path.read_text())
    assert len(ledger["supernet"]) == 16
    path.write_text(json.dumps({**ledger, "supernet": "0" * 16,
                                "scores": {k: v for k, v in ledger["scores"].items() if k != dropped}}))
    fifth: list[str] = []
    Study(cfg, fifth.append).inherited(Variant("steps2", 2, {"epochs": 1}), "naive", 0)
    assert "3 scores made with another training of this supernet dropped" in fifth[0]
    assert fifth[1].startswith("inherited accuracies in the steps2 naive seed 0 supernet: 4 evaluated")
    assert json.loads(path.read_text())["supernet"] == ledger["supernet"]

    # a ledger of another supernet recipe is refused, naming what changed
    changed = from_dict(RankingConfig, {**_tiny(tmp_path / "study"), "budgets": [2, 4],
                                        "reference_overrides": {"limit_train_batches": 3}, "min_reference_tau": 0.5,
                                        "supernet_overrides": {**cfg.supernet_overrides, "lr": 0.5}})
    with pytest.raises(ValueError, match=r"another recipe \(lr: 0.0005 -> 0.5\)"):
        Study(changed).inherited(changed.variants()[0], "naive", 0)


def test_a_cache_of_another_standalone_recipe_is_refused(tmp_path: Path) -> None:
    cfg = from_dict(RankingConfig, _tiny(tmp_path / "study"))
    Study(cfg)  # records the stand-alone recipe beside its cache
    Study(cfg)  # the same recipe is accepted
    changed = from_dict(RankingConfig, {**_tiny(tmp_path / "study"),
                                        "retrain_overrides": {**cfg.retrain_overrides, "limit_train_batches": 3}})
    with pytest.raises(ValueError, match=r"another recipe \(limit_train_batches: 2 -> 3\)"):
        Study(changed)
    # how a network's run is checkpointed and resumed is not part of the pinned recipe
    checkpointed = from_dict(RankingConfig, {**_tiny(tmp_path / "study"), "retrain_overrides": {
        **cfg.retrain_overrides, "checkpoint_every": 7, "resume": "never", "overwrite": True}})
    Study(checkpointed)


def test_cli_refuses_a_bad_recipe_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nni_shiftadd.cli import main

    code = main(["ranking", "--config", str(RECIPE), "--modes", "[naive, shared]", "--output", str(tmp_path / "o")])
    assert code == 2 and "field 'modes'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_rank_metrics_of_many_rows_are_scipys() -> None:
    """The vectorised metrics equal scipy's kendalltau (tau-b, ties included), pearsonr and spearmanr row by row."""
    from scipy import stats

    from nni_shiftadd.experiment.rank_statistics import rank_metrics_rows

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(40, 12)), rng.integers(0, 4, (40, 12))])  # continuous, then many ties
    y = np.concatenate([rng.integers(0, 5, (40, 12)), rng.normal(size=(40, 12))])
    x[0] = 1.0  # a constant row: no correlation
    rows = rank_metrics_rows(x, y, top_k=3)
    assert np.isnan(rows["kendall_tau"][0]) and np.isnan(rows["spearman_rho"][0])
    for i in range(1, len(x)):
        assert rows["kendall_tau"][i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic, abs=1e-12)
        assert rows["pearson_r"][i] == pytest.approx(stats.pearsonr(x[i], y[i]).statistic, abs=1e-12)
        assert rows["spearman_rho"][i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic, abs=1e-12)
        assert rows["top_k_precision"][i] == rank_metrics(x[i], y[i], 3)["top_k_precision"]

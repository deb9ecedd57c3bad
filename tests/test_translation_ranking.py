"""The translation ranking study (issue 25): subnets spread over block mix, widths and decoder depth, recipe checks,
and a tiny study on the trans-de-en slice that runs every phase and resumes from its cache without training again."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nni_shiftadd.config import ConfigError, from_dict
from nni_shiftadd.experiment.arch_selection import arch_features, arch_id, select_archs
from nni_shiftadd.experiment.rank_statistics import rank_metrics
from nni_shiftadd.experiment.translation_ranking import (TranslationRanking, TranslationRankingConfig, format_table,
                                                         load_config, run_study)
from nni_shiftadd.space import load_space

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "translation" / "ranking_nlp_tiny.yaml"


def test_selection_spreads_over_block_mix_widths_and_depth() -> None:
    spec = load_space("nlp_tiny")
    archs = select_archs(spec, 12, 0)
    assert len({json.dumps(a, sort_keys=True) for a in archs}) == 12
    assert archs == select_archs(spec, 12, 0)  # seeded
    feats = np.stack([arch_features(spec, a) for a in archs])
    # attention share, Conv/Shift/Add shares, both widths, the FFN width and the decoder depth all vary
    assert (feats.max(0) - feats.min(0) > 0.2).all(), feats
    assert {a["decoder.depth"] for a in archs} == {1, 2}
    assert {a["encoder.embed_dim"] for a in archs} == set(spec.encoder.embed_dims)


@pytest.mark.parametrize("bad, message", [
    ({"archs": 3}, "field 'archs': a rank correlation needs at least 4"),
    ({"top_k": 20}, "field 'top_k'"),
    ({"supernet_seeds": [1, 1]}, "field 'supernet_seeds'"),
    ({"techniques": {}}, "field 'techniques': at least one"),
    ({"techniques": {"Fair!": {}}}, "field 'techniques': 'Fair!'"),
    ({"techniques": {"uniform": {"seed": 3}}}, r"field 'techniques.uniform': \['seed'\] are set by the study"),
    ({"techniques": {"uniform": {"sampling": "greedy"}}}, "field 'techniques.uniform': .*sampling"),
    ({"standalone_overrides": {"lr": -1}}, "field 'standalone_overrides': .*field 'lr'"),
    ({"supernet_overrides": {"subnet": "{}"}}, r"field 'supernet_overrides': \['subnet'\]"),
    ({"test_sentences": 0}, "field 'test_sentences'"),
])
def test_recipe_errors_name_the_field(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(TranslationRankingConfig, {"supernet_recipe": str(ROOT / "examples" / "translation" /
                                                                    "supernet_nlp_tiny.yaml"), **bad})


def test_shipped_recipe_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cfg = load_config(str(RECIPE))
    assert cfg.archs >= 12 and len(cfg.supernet_seeds) >= 2
    assert cfg.recipe(cfg.techniques["uniform"], {}, "t").max_updates == 40000  # the paper's supernet budget
    assert cfg.seeds("uniform") == [1, 2] and cfg.seeds("naive") == [1]
    assert cfg.recipe(cfg.techniques["uniform"], {}, "t").mode == "hws"
    assert cfg.recipe(cfg.techniques["naive"], {}, "t").mode == "naive"
    quick = cfg.quick()
    quick.validate()
    assert quick.output.endswith("_quick") and quick.recipe(quick.standalone_overrides, {}, "s").max_updates < 100


def test_a_tiny_translation_study_runs_every_phase_and_resumes(tiny_translation: dict, tmp_path: Path) -> None:
    recipe = tmp_path / "supernet.yaml"
    recipe.write_text(f"space: {tiny_translation['space']}\ndata: {{binarized: {tiny_translation['data_bin']}}}\n"
                      "max_updates: 4\nmax_tokens: 512\nwarmup_updates: 2\nsave_interval_updates: 4\nbeam: 1\n")
    fields = {"supernet_recipe": str(recipe), "techniques": {"uniform": {}, "sandwich": {"sampling": "sandwich"}},
              "supernet_seeds": [1, 2], "archs": 4, "top_k": 2, "bootstrap": 50, "test_sentences": 8,
              "output": str(tmp_path / "study")}
    cfg = from_dict(TranslationRankingConfig, fields)
    lines: list[str] = []
    partial: list[dict] = []

    progress: list[dict] = []

    def log(line: str) -> None:  # results.json when sandwich's supernet has trained, then when the first stand-alone has
        if line.startswith("supernet sandwich") or (line.startswith("stand-alone") and len(partial) == 1):
            partial.append(json.loads((tmp_path / "study" / "results.json").read_text()))
            assert (tmp_path / "study" / "seed_noise.png").is_file()  # uniform's two seeds drawn with its verdict
        if sum(line.startswith("stand-alone") for line in [*lines, line]) == 4:  # and after the third stand-alone
            progress.append(json.loads((tmp_path / "study" / "results.json").read_text()))
        lines.append(line)

    results = run_study(cfg, log)
    assert results["complete"] and len(results["archs"]) == 4
    # the supernets come first: their spread is in results.json and the log before any stand-alone network trains
    kinds = [line.split(" ")[0] for line in lines]
    assert kinds.index("stand-alone") > max(i for i, kind in enumerate(kinds) if kind in ("supernet", "inherited"))
    spread_lines = [line for line in lines if "beyond seed noise" in line]
    assert [line.split(":")[0] for line in spread_lines] == ["uniform", "sandwich"]
    assert kinds.index("stand-alone") > lines.index(spread_lines[-1])
    # each technique's verdict as soon as its own supernets are scored: uniform's before sandwich's supernet trains
    assert lines.index(spread_lines[0]) < next(i for i, line in enumerate(lines) if line.startswith("supernet sandwich"))
    assert lines.index(spread_lines[0]) > max(i for i, line in enumerate(lines) if "uniform seed" in line)
    assert partial[0]["complete"] is False and list(partial[0]["techniques"]) == ["uniform"]
    assert list(partial[1]["techniques"]) == ["uniform", "sandwich"]
    for snapshot in partial:
        assert snapshot["complete"] is False and [a["id"] for a in snapshot["archs"]] == [a["id"] for a in results["archs"]]
    for name, report in {**partial[0]["techniques"], **partial[1]["techniques"]}.items():
        assert "metrics" not in report and report["seeds"] == results["techniques"][name]["seeds"]
        assert json.dumps(report["spread"], sort_keys=True) == json.dumps(results["techniques"][name]["spread"],
                                                                          sort_keys=True)
    assert "beyond seed noise" in format_table(partial[1]) and "valid_loss" not in format_table(partial[1])
    # while the stand-alone networks train: the scores so far (too few to rank: see the test below)
    snapshot = progress[0]
    assert snapshot["complete"] is False and snapshot["standalone_trained"] == {"trained": 3, "planned": 4}
    assert [a.get("valid_loss") for a in snapshot["archs"]] == [a["valid_loss"] for a in results["archs"][:3]] + [None]
    for name, report in snapshot["techniques"].items():
        assert "metrics" not in report
        assert json.dumps(report["spread"], sort_keys=True) == json.dumps(results["techniques"][name]["spread"],
                                                                          sort_keys=True)
    assert not any("trained so far" in line for line in lines)
    assert format_table(snapshot).startswith("In progress: 3 of 4 stand-alone networks trained")
    for arch in results["archs"]:
        assert arch["valid_loss"] > 0 and 0 <= arch["bleu"] <= 100
    uniform, sandwich = results["techniques"]["uniform"], results["techniques"]["sandwich"]
    assert uniform["seeds"] == [1, 2] and sandwich["seeds"] == [1]
    assert uniform["spread"]["seed_noise_mean_abs"] is not None and sandwich["spread"]["seed_noise_mean_abs"] is None
    effect = uniform["spread"]["architecture_effect"]  # 4 architectures by 2 supernet seeds: (4 - 1) x (2 - 1) df
    assert effect["df"] == [3, 3] and uniform["spread"]["beyond_seed_noise"] == effect["beyond_noise"]
    assert sandwich["spread"]["architecture_effect"] is None and sandwich["spread"]["beyond_seed_noise"] is None
    for report in (uniform, sandwich):
        for metric in ("valid_loss", "bleu"):
            assert set(report["metrics"][metric]["per_seed"]) == {str(s) for s in report["seeds"]}
            tau = report["metrics"][metric]["per_seed"]["1"]["kendall_tau"]
            # after 4 updates every subnet may score BLEU 0: a rank correlation of constants is undefined, not 0
            assert -1 <= tau <= 1 or (metric == "bleu" and math.isnan(tau)), (metric, tau)
    out = tmp_path / "study"
    assert (out / "results.json").is_file() and (out / "scatter.png").is_file()
    assert results["plots"] == {"scatter": str(out / "scatter.png"), "seed_noise": str(out / "seed_noise.png")}
    assert list(uniform["spread"]["inherited_loss"]) == ["1", "2"] and len(uniform["spread"]["inherited_loss"]["2"]) == 4
    assert uniform["spread"]["inherited_loss"]["1"] == uniform["metrics"]["valid_loss"]["inherited"]["1"]
    assert "uniform" in format_table(results) and "beyond seed noise" in format_table(results)
    assert sum(line.startswith(("stand-alone", "supernet")) for line in lines) == 4 + 3
    # run again: nothing is trained or scored again
    again: list[str] = []
    rerun = run_study(cfg, again.append)["techniques"]
    assert json.dumps(rerun, sort_keys=True) == json.dumps(results["techniques"], sort_keys=True)  # NaN == NaN here
    assert again == []
    # a complete results.json of older code (spreads without their per-seed losses) is not made partial on the way
    saved = json.loads((out / "results.json").read_text())
    for report in saved["techniques"].values():
        del report["spread"]["inherited_loss"]
    (out / "results.json").write_text(json.dumps(saved))
    older: list[str] = []
    assert run_study(cfg, older.append)["complete"] and older == []
    assert "inherited_loss" in json.loads((out / "results.json").read_text())["techniques"]["uniform"]["spread"]
    # a cache trained with another recipe is refused, naming what changed
    changed = from_dict(TranslationRankingConfig, {**fields, "standalone_overrides": {"max_updates": 5}})
    with pytest.raises(ValueError, match=r"another recipe \(max_updates: 4 -> 5\)"):
        TranslationRanking(changed).run()


def test_seed_noise_plot_needs_two_seeds(tmp_path: Path) -> None:
    """No seed-noise figure for a study whose techniques have one supernet seed each (nothing to set apart)."""
    from nni_shiftadd.plots.ranking import plot_seed_noise

    one_seed = {"space": "nlp_tiny", "archs": [{"id": "a"}, {"id": "b"}],
                "techniques": {"uniform": {"spread": {"inherited_loss": {"1": [3.4, 3.6]}}}}}
    assert plot_seed_noise(one_seed, tmp_path / "seed_noise.png") is None and not (tmp_path / "seed_noise.png").exists()


def test_the_partial_results_rank_the_standalone_networks_once_there_are_four(tmp_path: Path) -> None:
    """While the stand-alone networks train: no rank metrics over fewer than 4 (or top_k) of them; from then on each
    technique's metrics over those trained, as the complete study computes them over all, with the scatter and a log
    line; a later spread-only write drops that scatter with the metrics."""
    cfg = from_dict(TranslationRankingConfig, {"supernet_recipe": str(ROOT / "examples" / "translation" /
                                                                      "supernet_nlp_tiny.yaml"),
                                               "archs": 6, "top_k": 2, "bootstrap": 50, "output": str(tmp_path)})
    lines: list[str] = []
    study = TranslationRanking(cfg, lines.append)
    ids = [arch_id(a) for a in study.archs]
    rng = np.random.default_rng(0)
    standalone = {i: {"valid_loss": float(3 + rng.random()), "bleu": float(10 * rng.random())} for i in ids}
    inherited = {"uniform": {seed: {i: {"valid_loss": s["valid_loss"] + float(rng.normal(0, 0.3)),
                                        "bleu": s["bleu"] + float(rng.normal(0, 3))} for i, s in standalone.items()}
                             for seed in (1, 2)}}
    study._write_progress(inherited, dict(list(standalone.items())[:3]))
    three = json.loads((tmp_path / "results.json").read_text())
    assert three["standalone_trained"] == {"trained": 3, "planned": 6} and "metrics" not in three["techniques"]["uniform"]
    assert lines == [] and not (tmp_path / "scatter.png").exists()
    four = dict(list(standalone.items())[:4])
    study._write_progress(inherited, four)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["complete"] is False and saved["standalone_trained"] == {"trained": 4, "planned": 6}
    report = saved["techniques"]["uniform"]
    assert report == json.loads(json.dumps({"seeds": [1, 2], **study.technique_report(inherited["uniform"], four)}))
    taus = [rank_metrics([-inherited["uniform"][seed][i]["valid_loss"] for i in four],
                         [-four[i]["valid_loss"] for i in four], 2)["kendall_tau"] for seed in (1, 2)]
    assert [r["kendall_tau"] for r in report["metrics"]["valid_loss"]["per_seed"].values()] == pytest.approx(taus)
    assert lines == [f"uniform: Kendall tau of inherited against stand-alone validation loss over the 4 of 6 "
                     f"stand-alone networks trained so far: {np.mean(taus):.2f} (per seed {taus[0]:.2f}, {taus[1]:.2f})"]
    assert (tmp_path / "scatter.png").stat().st_size > 10_000
    assert format_table(saved).startswith("In progress: 4 of 6 stand-alone networks trained")
    assert "valid_loss" in format_table(saved)
    study._write_spread({"uniform": study.spread(inherited["uniform"]), "naive": study.spread(inherited["uniform"])})
    assert "metrics" not in json.loads((tmp_path / "results.json").read_text())["techniques"]["uniform"]
    assert not (tmp_path / "scatter.png").exists()

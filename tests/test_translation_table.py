"""The translation table of the paper (Table 3 / Fig. 5, ``nni-shiftadd reproduce table3``): recipe checks and a
tiny table on the trans-de-en slice that runs every phase and resumes from its cache without training again."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nni_shiftadd.config import ConfigError, from_dict
from nni_shiftadd.experiment.paper_table import HYBRID, PaperTable, export_ledger, searches
from nni_shiftadd.experiment.translation_table import (TranslationKind, TranslationTableConfig, _network, _trained,
                                                       load_config, run_translation_table)
from nni_shiftadd.tasks.supertransformer import adopt_finished_run

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "translation" / "table3_nlp_tiny.yaml"
SUPERNET = str(ROOT / "examples" / "translation" / "supernet_nlp_tiny.yaml")


@pytest.mark.parametrize("bad, message", [
    ({"seeds": [1, 1]}, "field 'seeds'"),
    ({"picks": 0}, "field 'picks'"),
    ({"test_sentences": 0}, "field 'test_sentences'"),
    ({"baselines": {"LSTM": "lstm"}}, "field 'baselines': LSTM: "),
    ({"retrain_overrides": {"subnet": "{}"}}, r"field 'retrain_overrides': \['subnet'\] are set by the study"),
    ({"retrain_overrides": {"lr": -1}}, "field 'retrain_overrides': .*field 'lr'"),
    ({"supernet_overrides": {"max_updates": 0}}, "field 'supernet_overrides': .*max_updates"),
    ({"supernet": "nowhere.pt"}, "field 'supernet': no such checkpoint"),
    ({"search_preset": "nlp_tiny"}, "field 'search_preset': 'nlp_tiny' must search the validation-loss front"),
    ({"restricted_blocks": ["lstm"]}, "restricted_blocks.*unknown block type 'lstm'"),
    ({"space": "cv_small"}, "field 'supernet_overrides': .*space"),
    ({"quant_bits": 1}, "field 'quant_bits': bits: got 1"),
    ({"quant_bits": 8, "quantized": ["LSTM"]}, "field 'quantized': 'LSTM' is neither a search nor a baseline family"),
    ({"quant_bits": 8, "baselines": {"Transformer": "attn"}},  # the default names a family this recipe lacks
     r"field 'quantized': 'Lite Transformer' .*\(its default is .*quant_bits: null turns the quantised rows off"),
    ({"quant_overrides": {"init_from": "x.pt"}}, r"field 'quant_overrides': \['init_from'\] are set by the study"),
    ({"quant_bits": 8, "quant_overrides": {"max_updates": 0}}, "field 'quant_overrides': .*max_updates"),
    ({"reuse_runs": ["nowhere"]}, "field 'reuse_runs': no such folder 'nowhere'"),
])
def test_recipe_errors_name_the_field(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(TranslationTableConfig, {"supernet_recipe": SUPERNET, **bad})


def test_shipped_recipe_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cfg = load_config(str(RECIPE))
    assert cfg.picks >= 3 and len(cfg.seeds) >= 2
    assert set(cfg.baselines) == {"Transformer", "Lightweight Conv", "Lite Transformer"}
    assert searches(cfg)["restricted"]["blocks"] == ["attn"]  # HAT's space
    assert cfg.recipe(cfg.supernet_overrides, {}, "s").max_updates == 40000  # the paper's supernet budget
    quick = cfg.quick()
    quick.validate()
    assert quick.output.endswith("_quick") and quick.recipe(quick.retrain_overrides, {}, "r").max_updates < 100
    assert cfg.quant_bits == 8 and cfg.quantized == ["hybrid", "Lite Transformer"]  # Table 3's 8-bit rows
    assert quick.quant_recipe({}).max_updates < 100 and quick.quant_recipe({}).quant_bits == 8
    assert cfg.quant_recipe({}).lr == cfg.recipe(cfg.retrain_overrides, {}, "r").lr / 10  # fine-tuning
    assert TranslationTableConfig().quant_bits is None  # a recipe asks for quantised rows


def test_a_tiny_translation_table_runs_every_phase_and_resumes(tiny_translation: dict, tmp_path: Path,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "supernet.yaml"
    recipe.write_text(f"data: {{binarized: {tiny_translation['data_bin']}}}\nmax_updates: 4\nmax_tokens: 512\n"
                      "warmup_updates: 2\nsave_interval_updates: 4\nbeam: 1\n")
    fields = {"space": str(tiny_translation["space"]), "supernet_recipe": str(recipe), "picks": 1, "seeds": [1, 2],
              "search_overrides": {"iterations": 1, "population": 3, "parents": 1, "mutation": 1, "crossover": 0},
              "baselines": {"Transformer": "attn"}, "test_sentences": 8, "output": str(tmp_path / "table"),
              "quant_bits": 8, "quantized": ["hybrid", "Transformer"],
              "quant_overrides": {"max_updates": 2, "warmup_updates": 1, "save_interval_updates": 2}}
    cfg = from_dict(TranslationTableConfig, fields)
    lines: list[str] = []
    results = run_translation_table(cfg, lines.append)
    rows = {r["name"]: r for r in results["rows"]}
    assert set(rows) == {"hybrid-1", "restricted-1", "all_attn", "hybrid-1-8bit", "all_attn-8bit"}
    assert rows["hybrid-1"]["family"] == HYBRID and rows["all_attn"]["family"] == "Transformer"
    assert {v for k, v in rows["restricted-1"]["arch"].items() if k.endswith(".op")} == {"attn"}  # HAT's space
    for row in rows.values():
        assert set(row["score"]["per_seed"]) == {"1", "2"} and 0 <= row["score"]["min"] <= row["score"]["max"]
        assert row["params"] > 0 and row["energy_mJ"] > 0 and row["macs"] > 0
    for name in ("hybrid-1", "all_attn"):  # the 8-bit rows: the same networks, fine-tuned and costed at 8 bits
        float_row, quant_row = rows[name], rows[f"{name}-8bit"]
        assert (float_row["bits"], quant_row["bits"]) == (32, 8) and quant_row["arch"] == float_row["arch"]
        assert quant_row["family"] == f"{float_row['family']} (8-bit)" and quant_row["macs"] == float_row["macs"]
        assert quant_row["effective_macs"] == pytest.approx(float_row["macs"] / 16)  # x (8/32)^2
        assert quant_row["energy_mJ"] < float_row["energy_mJ"]
    for seed in (1, 2):
        quantized = json.loads((tmp_path / "table" / "train-q8" / f"{rows['hybrid-1']['arch_id']}-s{seed}" /
                                "metrics.json").read_text())
        assert quantized["updates"] == 2 and quantized["cost"]["bits"] == 8
    assert results["score"] == "bleu" and set(results["comparisons"]) == {"hybrid-1", "hybrid-1-8bit"}
    assert set(results["comparisons"]["hybrid-1"]["versus"]) == {"restricted-1", "all_attn"}  # of its word width
    assert set(results["comparisons"]["hybrid-1-8bit"]["versus"]) == {"all_attn-8bit"}
    out = tmp_path / "table"
    assert rows["hybrid-1-8bit"]["flops_G"] == pytest.approx(rows["hybrid-1"]["flops_G"] / 16)  # Fig. 5's axis
    assert rows["all_attn"]["flops_G"] == pytest.approx(2 * rows["all_attn"]["macs"] / 1e9)
    for name in ("results.json", "table.md", "score_energy.png", "score_flops.png"):
        assert (out / name).is_file(), name
    assert "| BLEU (mean, range over 2 seeds) | bits |" in (out / "table.md").read_text().splitlines()[0].replace(
        "| network | family ", "")
    # run again: nothing is trained or searched again, and the table is the same
    again: list[str] = []
    assert json.dumps(run_translation_table(cfg, again.append)["rows"]) == json.dumps(results["rows"])
    assert again == []
    # carried as a ledger (no checkpoints) with one quantised network still to train: its float network's weights
    # are trained again as its start, and nothing else is
    export_ledger(out, tmp_path / "carried")
    assert not list((tmp_path / "carried").rglob("*.pt"))
    arch_id = rows["hybrid-1"]["arch_id"]
    (tmp_path / "carried" / "train-q8" / f"{arch_id}-s2" / "metrics.json").unlink()
    carried: list[str] = []
    resumed = run_translation_table(from_dict(TranslationTableConfig, {**fields, "output": str(tmp_path / "carried")}),
                                    carried.append)
    assert [line.split(":")[0] for line in carried] == [f"trained {arch_id} seed 2 at 8 bits"]
    assert (tmp_path / "carried" / "train" / f"{arch_id}-s2" / "checkpoints" / "checkpoint_last.pt").is_file()
    assert [r["name"] for r in resumed["rows"]] == [r["name"] for r in results["rows"]]
    assert json.dumps(resumed["rows"][:3]) == json.dumps(results["rows"][:3])  # the float rows as carried
    settled: list[str] = []
    run_translation_table(from_dict(TranslationTableConfig, {**fields, "output": str(tmp_path / "carried")}),
                          settled.append)
    assert settled == []
    # carried again, with the first table's networks to reuse: the float network is adopted from the run of the same
    # recipe and seed (its checkpoint and its training time), not trained again; another recipe is not adopted
    export_ledger(out, tmp_path / "reused")
    (tmp_path / "reused" / "train-q8" / f"{arch_id}-s2" / "metrics.json").unlink()
    capfd.readouterr()
    reused: list[str] = []
    run_translation_table(from_dict(TranslationTableConfig, {**fields, "output": str(tmp_path / "reused"),
                                                             "reuse_runs": [str(out / "train")]}), reused.append)
    assert [line.split(":")[0] for line in reused] == [f"trained {arch_id} seed 2 at 8 bits"]
    donor = out / "train" / f"{arch_id}-s2"
    assert f"adopted {donor / 'checkpoints' / 'checkpoint_last.pt'} (4 updates)" in capfd.readouterr().err
    adopted = tmp_path / "reused" / "train" / f"{arch_id}-s2" / "checkpoints" / "checkpoint_last.pt"
    assert adopted.read_bytes() == (donor / "checkpoints" / "checkpoint_last.pt").read_bytes()
    # the scores of a network trained alone with the same recipe keep the donor's training time
    recipe = cfg.recipe(cfg.retrain_overrides, {**_network(rows["hybrid-1"]["arch"], 2, tmp_path / "alone")}, "r")
    alone = _trained(recipe, [out / "train"])
    assert alone["updates"] == 4 and alone["fit_seconds"] == json.loads((donor / "metrics.json").read_text())[
        "fit_seconds"] > 0
    identity = json.loads((donor / "run.json").read_text())
    for part, key, value in (("fixed", "seed", 3), ("optimisation", "lr", 1.0), ("data", next(iter(identity["data"])),
                                                                                     "another")):
        other = dataclasses.replace(recipe, output=str(tmp_path / f"other-{key}"))
        assert adopt_finished_run(other, {**identity, part: {**identity[part], key: value}}, [out / "train"]) is None
    other = dataclasses.replace(recipe, output=str(tmp_path / "other"))
    assert adopt_finished_run(dataclasses.replace(other, max_updates=5), identity, [out / "train"]) is None
    (donor / "run.json").write_text(json.dumps({**identity, "reoptimised": [{"updates": 2, "changes": {}}]}))
    assert adopt_finished_run(other, identity, [out / "train"]) is None  # resumed with other optimisation fields
    with pytest.raises(ConfigError, match="reuse: no such folder 'nowhere'"):
        adopt_finished_run(other, identity, [Path("nowhere")])
    changed = from_dict(TranslationTableConfig, {**fields, "retrain_overrides": {"max_updates": 5}})
    with pytest.raises(ValueError, match=r"another recipe \(max_updates: 4 -> 5\)"):
        PaperTable(changed, TranslationKind())


def test_the_shipped_table3_may_search_the_translation_rankings_first_supernet() -> None:
    """``results/studies.sh`` hands table3 the translation ranking's first supernet (first technique, first seed)
    instead of training the same recipe a second time: the two shipped studies must train it identically."""
    from nni_shiftadd.experiment import translation_ranking
    from nni_shiftadd.tasks.supertransformer import LAST

    root = Path(__file__).resolve().parents[1]
    ranking = translation_ranking.load_config(str(root / "examples/translation/ranking_nlp_tiny.yaml"))
    table = load_config(str(root / "examples/translation/table3_nlp_tiny.yaml"))
    technique, seed = next(iter(ranking.techniques)), ranking.supernet_seeds[0]
    shared = dataclasses.asdict(ranking.recipe(ranking.techniques[technique], {"seed": seed, "output": "o"}, "t"))
    own = dataclasses.asdict(table.recipe(table.supernet_overrides, {"output": "o"}, "supernet_overrides"))
    # only what the end of training scores differs, and it scores no subnet in either study
    assert {k for k in own if own[k] != shared[k]} <= {"eval_test_sentences"}
    assert own["eval_archs"] == shared["eval_archs"] == 0 and own["baselines"] == shared["baselines"] == []
    studies = (root / "results" / "studies.sh").read_text()
    assert f"runs/ranking_nlp_tiny/supernets/{technique}_seed{seed}/checkpoints/{LAST}" in studies


def test_the_shipped_table3_may_reuse_the_translation_rankings_standalone_baselines() -> None:
    """``results/studies.sh`` hands table3 the translation ranking's stand-alone networks (``--reuse-runs``): its
    Transformer and Lite Transformer are among the ranking's architectures, trained with the same recipe as table3's
    first seed, so those two are scored from the ranking's weights instead of being trained a second time."""
    from nni_shiftadd.experiment import translation_ranking
    from nni_shiftadd.experiment.arch_selection import select_archs
    from nni_shiftadd.space import load_space
    from nni_shiftadd.tasks.supertransformer import RESUME_FIXED, RESUME_REOPTIMISE

    ranking = translation_ranking.load_config(str(ROOT / "examples/translation/ranking_nlp_tiny.yaml"))
    table = load_config(str(ROOT / "examples/translation/table3_nlp_tiny.yaml"))
    spec = load_space(table.space)
    ranked = select_archs(spec, ranking.archs, ranking.arch_seed)
    for family in ("Transformer", "Lite Transformer"):
        arch = spec.canonical_arch(spec.baseline_arch(table.baselines[family]))
        assert arch in ranked, family
        subnet = {"subnet": json.dumps(arch), "output": "o"}
        theirs = dataclasses.asdict(ranking.recipe(ranking.standalone_overrides, subnet, "s"))
        ours = dataclasses.asdict(table.recipe(table.retrain_overrides, {**subnet, "seed": table.seeds[0]}, "r"))
        assert {k: ours[k] for k in (*RESUME_FIXED, *RESUME_REOPTIMISE)} == \
            {k: theirs[k] for k in (*RESUME_FIXED, *RESUME_REOPTIMISE)}, family
    assert "$(shared_runs runs/ranking_nlp_tiny/standalone)" in (ROOT / "results" / "studies.sh").read_text()

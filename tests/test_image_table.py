"""The image table of the paper (Table 4 / Fig. 6, ``nni-shiftadd reproduce table4``): thinning a front, comparing
networks by seed ranges and energy, recipe checks, and a tiny table that runs every phase and resumes from its
cache without training anything again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nni_shiftadd.config import ConfigError, from_dict
from nni_shiftadd.experiment.arch_selection import arch_id
from nni_shiftadd.experiment.image_table import ImageKind, ImageTableConfig, load_config, run_image_table
from nni_shiftadd.experiment.paper_table import (HYBRID, PaperTable, compare, comparisons, export_ledger, searches,
                                                thin_front)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "fashion_mnist" / "table4_cv_small.yaml"


def _row(name: str, family: str, lo: float, hi: float, energy: float) -> dict:
    return {"name": name, "family": family, "energy_mJ": energy,
            "score": {"mean": (lo + hi) / 2, "min": lo, "max": hi}}


def test_thin_front_keeps_both_ends_and_spreads_over_energy() -> None:
    front = [{"energy_mJ": e, "accuracy": a} for e, a in [(0.5, 0.8), (0.1, 0.5), (0.3, 0.7), (0.2, 0.6), (0.4, 0.75)]]
    assert [r["energy_mJ"] for r in thin_front(front, 3, "accuracy", True)] == [0.1, 0.3, 0.5]
    assert [r["energy_mJ"] for r in thin_front(front, 2, "accuracy", True)] == [0.1, 0.5]
    assert [r["energy_mJ"] for r in thin_front(front, 9, "accuracy", True)] == [0.1, 0.2, 0.3, 0.4, 0.5]  # all of it
    assert thin_front(front, 1, "accuracy", True) == [{"energy_mJ": 0.5, "accuracy": 0.8}]  # one: the most accurate
    assert thin_front(front, 1, "accuracy", False) == [{"energy_mJ": 0.1, "accuracy": 0.5}]  # a loss: the lowest


def test_compare_separates_only_beyond_the_seed_ranges() -> None:
    pick = _row("p", HYBRID, 0.80, 0.82, 0.2)
    assert compare(pick, _row("a", "x", 0.70, 0.79, 0.3)) == "better"  # more accurate at less energy
    assert compare(pick, _row("b", "x", 0.70, 0.79, 0.1)) == "more energy"  # more accurate, but costs more
    assert compare(pick, _row("c", "x", 0.85, 0.90, 0.1)) == "worse"  # the other wins at no more energy
    assert compare(pick, _row("d", "x", 0.85, 0.90, 0.4)) == "less accurate"  # the other wins but costs more
    assert compare(pick, _row("e", "x", 0.81, 0.90, 0.1)) == "within seed noise"  # ranges overlap


def test_a_pick_beats_all_only_when_it_beats_every_network_at_no_less_energy() -> None:
    rows = [_row("hybrid-1", HYBRID, 0.80, 0.82, 0.2), _row("hybrid-2", HYBRID, 0.84, 0.85, 0.5),
            _row("all_conv", "all-Conv", 0.70, 0.75, 0.3), _row("resnet", "ResNet", 0.83, 0.86, 0.1)]
    result = comparisons(rows)
    assert set(result) == {"hybrid-1", "hybrid-2"}  # picks are not compared among themselves
    assert result["hybrid-1"]["versus"] == {"all_conv": "better", "resnet": "worse"}
    assert result["hybrid-1"]["rivals_at_no_less_energy"] == ["all_conv"]
    assert result["hybrid-1"]["beats_all_at_no_more_energy"]
    assert result["hybrid-2"]["rivals_at_no_less_energy"] == []  # nothing spends as much: no claim either way
    assert not result["hybrid-2"]["beats_all_at_no_more_energy"]


def _tiny(output: Path) -> dict:
    return {
        "space": "cv_small", "picks": 1, "eval_batches": 1, "calibration_batches": 1, "eval_batch_size": 64,
        "supernet_recipe": str(ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml"),
        "supernet_overrides": {"epochs": 1, "warmup_epochs": 0, "batch_size": 32, "limit_train_batches": 2,
                               "limit_eval_batches": 1, "bn_calibration_batches": 1, "eval_archs": 0},
        "search_preset": "cv_small_pareto",
        "search_overrides": {"iterations": 1, "population": 3, "parents": 1, "mutation": 1, "crossover": 0},
        "retrain_recipe": str(ROOT / "examples" / "fashion_mnist" / "retrain_cv_small.yaml"),
        "retrain_overrides": {"quant_bits": None, "epochs": 1, "warmup_epochs": 0, "batch_size": 32,
                              "limit_train_batches": 2, "limit_eval_batches": 1},
        "seeds": [0, 1], "baselines": ["conv", "add"], "resnets": ["shiftadd_resnet8"],
        "resnet_families": {"AdderNet": "add"},
        "output": str(output),
    }


@pytest.mark.parametrize("bad, message", [
    ({"seeds": []}, "field 'seeds'"),
    ({"seeds": [0, 0]}, "field 'seeds'"),
    ({"picks": 0}, "field 'picks'"),
    ({"resnet_families": {"AdderNet": "mult"}}, "field 'resnet_families': AdderNet: unknown op 'mult'"),
    ({"resnets": ["shiftadd_resnet99"]}, "field 'resnets': shiftadd_resnet99 .*field 'model'"),
    ({"baselines": ["conv", "lstm"]}, "field 'baselines'"),
    ({"retrain_overrides": {"quant_bits": 8}}, "field 'retrain_overrides': quant_bits 8"),
    ({"retrain_overrides": {"lr": -1}}, "field 'retrain_overrides': .*field 'lr'"),
    ({"retrain_overrides": {"seed": 3}}, r"field 'retrain_overrides': \['seed'\] are set by the study"),
    ({"supernet_overrides": {"epochs": 0}}, "field 'supernet_overrides': .*field 'epochs'"),
    ({"supernet": "nowhere.ckpt"}, "field 'supernet': no such checkpoint"),
    ({"search_preset": "cv_small"}, "field 'search_preset': 'cv_small' must search the accuracy front"),
    ({"restricted_blocks": ["attn", "lstm"]}, "restricted_blocks.*unknown block type 'lstm'"),
])
def test_recipe_errors_name_the_field(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(ImageTableConfig, {**_tiny(Path("unused")), **bad})


def test_shipped_recipe_validates() -> None:
    cfg = load_config(str(RECIPE))
    assert cfg.picks >= 3 and len(cfg.seeds) >= 2 and cfg.baselines == ["conv", "shift", "add", "attn"]
    assert set(cfg.resnet_families.values()) == {"conv", "add", "shift"}
    assert set(searches(cfg)) == {"hybrid", "restricted"}
    assert searches(cfg)["restricted"]["blocks"] == ["attn", "conv"]
    quick = cfg.quick()
    quick.validate()
    assert quick.output.endswith("_quick") and quick.retrain_overrides["limit_train_batches"] < 10


def test_a_tiny_table_runs_every_phase_and_resumes_from_its_cache(tmp_path: Path) -> None:
    cfg = from_dict(ImageTableConfig, _tiny(tmp_path / "table"))
    out = tmp_path / "table"
    lines: list[str] = []
    seen: list[tuple[dict | None, str]] = []  # results.json and table.md as each network finishes training

    def log(line: str) -> None:
        if line.startswith("trained "):
            path = out / "results.json"
            seen.append((json.loads(path.read_text()) if path.exists() else None,
                         (out / "table.md").read_text() if path.exists() else ""))
        lines.append(line)

    results = run_image_table(cfg, log)
    # the table so far is written after every network: rows with the seeds trained, standing only among whole rows
    assert seen[0][0] is None and [s["networks"]["trained"] for s, _ in seen[1:]] == list(range(1, len(seen)))
    first, first_table = seen[1]
    assert first["complete"] is False and first["networks"]["planned"] == len(seen) == 10
    assert [(r["name"], r["seeds_trained"]) for r in first["rows"]] == [("hybrid-1", 1)] and first["comparisons"] == {}
    assert first_table.startswith("In progress: 1 of 10 networks trained.") and "(1 of 2 seeds)" in first_table
    assert (out / "score_energy.png").is_file()
    assert set(seen[2][0]["comparisons"]) == {"hybrid-1"}  # both seeds of the pick, nothing else yet
    assert results["complete"] and results["networks"] == {"trained": 10, "planned": 10}
    assert "In progress" not in (out / "table.md").read_text() and "of 2 seeds" not in (out / "table.md").read_text()
    rows = {r["name"]: r for r in results["rows"]}
    assert set(rows) == {"hybrid-1", "restricted-1", "all_conv", "all_add", "shiftadd_resnet8-add"}
    assert rows["hybrid-1"]["family"] == HYBRID and rows["all_add"]["family"] == "all-Add"
    for row in rows.values():
        assert set(row["score"]["per_seed"]) == {"0", "1"}
        assert row["score"]["min"] <= row["score"]["mean"] <= row["score"]["max"]
        assert row["params"] > 0 and row["energy_mJ"] > 0 and row["macs"] > 0
    # the restricted search only ever proposes Attn and Conv blocks
    restricted = rows["restricted-1"]["arch"]
    assert {v for k, v in restricted.items() if k.endswith(".op")} <= {"attn", "conv"}
    # AdderNet: only the stem and the classifier multiply
    assert rows["shiftadd_resnet8-add"]["mult"] < rows["shiftadd_resnet8-add"]["macs"] / 10
    assert set(results["comparisons"]) == {"hybrid-1"}
    assert not (out / "score_flops.png").exists()  # Fig. 6: accuracy against energy only
    for name in ("results.json", "table.md", "score_energy.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
    assert "| hybrid-1 |" in (out / "table.md").read_text()
    trained = [line for line in lines if line.startswith("trained ")]
    assert len(trained) == len({r.get("arch_id") or r["name"] for r in rows.values()}) * 2
    # run again: nothing is trained or searched again, and the table is the same
    again: list[str] = []
    assert run_image_table(cfg, again.append)["rows"] == results["rows"]
    assert again == []
    # the ledger alone (no checkpoint, no supernet) carries the study: nothing is searched or trained again
    written = export_ledger(out, tmp_path / "carried")
    assert written and not [p for p in written if p.suffix in (".ckpt", ".pt")]
    carried: list[str] = []
    carried_cfg = from_dict(ImageTableConfig, _tiny(tmp_path / "carried"))
    assert run_image_table(carried_cfg, carried.append)["rows"] == results["rows"] and carried == []
    with pytest.raises(FileNotFoundError, match="no study here"):
        export_ledger(tmp_path / "nothing", tmp_path / "elsewhere")
    # a cache trained with another recipe is refused, naming what changed
    changed = from_dict(ImageTableConfig, {**_tiny(out), "retrain_overrides": {
        **cfg.retrain_overrides, "limit_train_batches": 3}})
    with pytest.raises(ValueError, match=r"another recipe \(limit_train_batches: 2 -> 3\)"):
        PaperTable(changed, ImageKind())


def test_cli_refuses_a_bad_recipe_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nni_shiftadd.cli import main

    code = main(["reproduce", "table4", "--config", str(RECIPE), "--seeds", "[0, 0]", "--output",
                 str(tmp_path / "o")])
    assert code == 2 and "field 'seeds'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_shipped_table4_may_search_the_ranking_studys_naive_supernet(tmp_path: Path) -> None:
    """``results/studies.sh`` hands table4 the image ranking study's naive supernet at its largest budget instead of
    training the same recipe a second time: the two shipped studies must train it identically."""
    import dataclasses

    from nni_shiftadd.config import load_yaml
    from nni_shiftadd.experiment import ranking
    from nni_shiftadd.tasks.supernet import SupernetConfig

    cfg = load_config(str(RECIPE))
    study = ranking.Study(ranking.load_config(str(ROOT / "examples/fashion_mnist/ranking_cv_small.yaml"),
                                              {"output": str(tmp_path)}), log=lambda line: None)
    largest = [v for v in study.cfg.variants() if v.technique is None][-1]
    mode, seed = cfg.supernet_overrides["mode"], cfg.supernet_overrides["seed"]
    assert mode in study.cfg.modes and seed in study.cfg.seeds(mode)
    shared = dataclasses.asdict(study._supernet_recipe(largest, mode, seed))
    own = dataclasses.asdict(load_yaml(SupernetConfig, cfg.supernet_recipe, cfg.supernet_fields(tmp_path)))
    assert {k for k in own if own[k] != shared[k]} == {"output"}
    studies = (ROOT / "results" / "studies.sh").read_text()
    assert f"runs/ranking_cv_small/supernets/{largest.name}/{mode}_seed{seed}/checkpoints/last.ckpt" in studies


def test_every_planned_network_trains_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each seed of each row trains its own network into its own folder (no job bound to another row's model)."""
    cfg = from_dict(ImageTableConfig, {**_tiny(tmp_path), "resnets": ["shiftadd_resnet8", "shiftadd_resnet20"],
                                       "resnet_families": {"AdderNet": "add", "DeepShift": "shift"}})
    kind = ImageKind()
    called: list[tuple] = []
    monkeypatch.setattr(kind, "train_resnet", lambda _cfg, model, op, seed, folder: called.append(
        (f"{model}-{op}", seed, folder.name)))
    monkeypatch.setattr(kind, "train_arch", lambda _cfg, arch, seed, folder: called.append(
        (arch_id(arch), seed, folder.name)))
    planned = PaperTable(cfg, kind).plan({})
    for p in planned:
        for seed, (folder, train, what) in p.jobs.items():
            train()
            name = p.extra.get("arch_id", p.name)
            assert called[-1] == (name, seed, folder.name) == (name, seed, f"{name}-s{seed}") and name in what
    assert sorted(p.name for p in planned if p.family in ("AdderNet", "DeepShift")) == [
        "shiftadd_resnet20-add", "shiftadd_resnet20-shift", "shiftadd_resnet8-add", "shiftadd_resnet8-shift"]

"""The nnictl side without a full experiment: the loopback preload on NNI's own Node.js, socket inspection, the
generated search space and experiment configs, the demo recipe's validation."""
from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import NNI_EXPERIMENTS

from nni_shiftadd.config import ConfigError, load_yaml
from nni_shiftadd.experiment.demo import DemoConfig, experiment_config
from nni_shiftadd.experiment.nnictl import free_port, listening_addresses, loopback_env
from nni_shiftadd.strategy.tuner import search_space_json

pytestmark = NNI_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "fashion_mnist"


def _node() -> Path:
    import nni_node

    return Path(nni_node.__file__).parent / "node"


def _serve(env: dict[str, str] | None, port: int) -> subprocess.Popen:
    """NNI's Node.js listening the way NNI's manager does (``app.listen(port)``, no host)."""
    script = f"require('http').createServer((q, r) => r.end('ok')).listen({port}); setTimeout(() => {{}}, 20000);"
    return subprocess.Popen([str(_node()), "-e", script], env=env)


def _wait_listening(port: int, timeout: float = 10.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = listening_addresses(port)
        if found:
            return found
        time.sleep(0.1)
    return set()


def test_listening_addresses_reads_the_kernel_tables() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listening_addresses(port) == {"127.0.0.1"}
    assert listening_addresses(port) == set()


def test_loopback_preload_keeps_nnis_server_on_127_0_0_1() -> None:
    port = free_port(18500)
    plain = _serve(None, port)
    try:
        wide = _wait_listening(port)
    finally:
        plain.kill()
        plain.wait()
    assert wide and wide <= {"::", "0.0.0.0"}, f"without the preload node listens on every interface: {wide}"
    port = free_port(18600)
    local = _serve(loopback_env(), port)
    try:
        assert _wait_listening(port) == {"127.0.0.1"}
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:  # and it serves there
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert b"ok" in c.recv(1024)
    finally:
        local.kill()
        local.wait()
    port = free_port(18700)
    chosen = _serve(loopback_env("::1"), port)  # another address when the user asks for one
    try:
        assert _wait_listening(port) == {"::1"}
    finally:
        chosen.kill()
        chosen.wait()


def test_loopback_env_keeps_the_users_node_options() -> None:
    env = loopback_env(base={"NODE_OPTIONS": "--max-old-space-size=512", "PATH": "/bin"})
    assert env["NODE_OPTIONS"].startswith("--max-old-space-size=512 --require ")
    assert env["NODE_OPTIONS"].rstrip('"').endswith("loopback.js") and env["NNI_SHIFTADD_HOST"] == "127.0.0.1"


def test_shipped_search_space_is_the_generated_one() -> None:
    shipped = json.loads((EXAMPLES / "search_space.json").read_text())
    assert shipped == search_space_json("cv_small")
    assert shipped["stage2.depth"] == {"_type": "choice", "_value": [1, 2, 3]}


def test_example_nnictl_config_is_valid_for_nni() -> None:
    from nni.experiment.config import ExperimentConfig

    raw = yaml.safe_load((EXAMPLES / "config.yml").read_text())
    assert raw["tuner"] == {"name": "ShiftAddEvolution", "classArgs": {"space": "cv_small", "preset": "cv_small",
                                                                       "optimize_mode": "maximize"}}
    assert "--space cv_small" in raw["trialCommand"] and "nni-shiftadd trial" in raw["trialCommand"]
    config = ExperimentConfig(**{k: v for k, v in raw.items() if k not in ("searchSpaceFile", "trialCodeDirectory")})
    assert config.trial_concurrency == 2


def test_generated_experiment_config(tmp_path: Path) -> None:
    cfg = experiment_config(space="cv_small", preset="cv_small", preset_overrides={"iterations": 1},
                            search_dir=tmp_path / "search", search_space_file=tmp_path / "ss.json",
                            supernet=tmp_path / "last.ckpt", eval_batches=2, calibration_batches=3, batch_size=64,
                            threads=1, concurrency=2, max_trials=10, name="t")
    assert cfg["tuner"]["classArgs"] == {"space": "cv_small", "preset": "cv_small", "output": str(tmp_path / "search"),
                                         "overrides": {"iterations": 1}, "optimize_mode": "maximize"}
    assert f"--supernet {tmp_path / 'last.ckpt'} --space cv_small --eval-batches 2 --calibration-batches 3" in \
        cfg["trialCommand"]
    # the trials report their costs on the Eyeriss model (preset, bit width) the tuner constrains them with
    assert cfg["trialCommand"].endswith("--bits 32 --eyeriss shiftaddnas")
    physical = experiment_config(space="cv_small", preset="cv_small", preset_overrides={"eyeriss": "physical"},
                                 search_dir=tmp_path / "search", search_space_file=tmp_path / "ss.json",
                                 supernet=tmp_path / "last.ckpt", concurrency=2, max_trials=10, name="t")
    assert physical["trialCommand"].endswith("--eyeriss physical")
    with pytest.raises(ConfigError, match=r"field 'eyeriss': unknown Eyeriss preset 'eyeriss9'; expected one of"):
        experiment_config(space="cv_small", preset="cv_small", preset_overrides={"eyeriss": "eyeriss9"},
                          search_dir=tmp_path / "search", search_space_file=tmp_path / "ss.json",
                          supernet=tmp_path / "last.ckpt", concurrency=2, max_trials=10, name="t")


def test_demo_recipe_errors_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cfg = load_yaml(DemoConfig, EXAMPLES / "demo.yaml")
    assert cfg.host == "127.0.0.1" and cfg.preset == "cv_small"
    bad = tmp_path / "demo.yaml"
    bad.write_text("concurency: 2\n")
    with pytest.raises(ConfigError, match=r"unknown field 'concurency'; allowed fields are .*'concurrency'"):
        load_yaml(DemoConfig, bad)
    bad.write_text("supernet_recipe: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"supernet_recipe.*no such file 'nowhere.yaml'"):
        load_yaml(DemoConfig, bad)


def test_translation_examples_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The translation demo's recipe, its supernet recipe and its searches are data that validates: the demo sees a
    translation recipe, its two searches (hybrid, and HAT's Attn-only space) have valid presets, and a bad extra
    search is one error naming it."""
    from nni_shiftadd.experiment.demo import TranslationDemo, _searches, demo_kind, recipe_kind
    from nni_shiftadd.strategy.evolution import load_preset
    from nni_shiftadd.tasks.supertransformer import SuperTransformerConfig

    monkeypatch.chdir(ROOT)
    translation = ROOT / "examples" / "translation"
    cfg = load_yaml(DemoConfig, translation / "demo.yaml")
    assert recipe_kind(cfg.supernet_recipe) == "translation"
    assert recipe_kind(EXAMPLES / "supernet_cv_small.yaml") == "image_classification"
    job = demo_kind(recipe_kind(cfg.supernet_recipe))
    assert isinstance(job, TranslationDemo) and job.final_steps == 1  # the table after the searches
    space, checkpoint, what, _ = job.supernet_job(cfg, tmp_path)  # the recipe checked, nothing trained
    assert space == "nlp_tiny" and checkpoint.parent == tmp_path / "supernet" / "checkpoints"
    assert "SuperTransformer" in what and not checkpoint.exists()
    assert set(job.trial_flags(cfg)) == {"bleu_sentences", "beam", "lenpen"}
    with pytest.raises(ConfigError, match=r"no job for spaces of kind 'toy'; it knows \['image_classification', "
                       r"'translation'\]"):
        demo_kind("toy")
    searches = _searches(cfg, tmp_path)
    assert [s.name for s in searches] == ["", "hat"]
    assert searches[1].search_dir == tmp_path / "search_hat" and searches[1].overrides["blocks"] == ["attn"]
    assert load_preset(cfg.preset).constraints["latency_ms"].max == 0.6
    for recipe in ("supernet_nlp_tiny.yaml", "supernet_nlp_small.yaml"):
        recipe_cfg = load_yaml(SuperTransformerConfig, translation / recipe)
        assert recipe_cfg.space in ("nlp_tiny", "nlp_small")
    bad = load_yaml(DemoConfig, translation / "demo.yaml", {"extra_searches": {"hat": {"blocks": ["lstm"]}}})
    with pytest.raises(ConfigError, match=r"field 'extra_searches.hat': .*unknown block type 'lstm'"):
        _searches(bad, tmp_path)
    with pytest.raises(ConfigError, match=r"extra_searches.*name 'HAT!' must be lower-case"):
        load_yaml(DemoConfig, translation / "demo.yaml", {"extra_searches": {"HAT!": {}}})
    trial = experiment_config(space="nlp_tiny", preset="nlp_tiny", preset_overrides={}, search_dir=tmp_path,
                              search_space_file=tmp_path / "ss.json", supernet=tmp_path / "checkpoint_last.pt",
                              concurrency=2, max_trials=5, name="t", bleu_sentences=None, beam=1, threads=1)
    assert trial["trialCommand"].endswith("--space nlp_tiny --bleu-sentences null --beam 1 --threads 1 --bits 32 "
                                          "--eyeriss shiftaddnas")
    assert trial["tuner"]["classArgs"]["optimize_mode"] == "minimize"  # the web UI ranks losses lowest first
    from nni_shiftadd.strategy.tuner import ShiftAddEvolutionValidator

    raw = yaml.safe_load((ROOT / "examples" / "translation" / "search.yml").read_text())
    ShiftAddEvolutionValidator().validate_class_args(**raw["tuner"]["classArgs"])  # the shipped nnictl config
    with pytest.raises(ValueError, match=r"'optimize_mode': 'maximize' contradicts the preset's goal 'min'"):
        ShiftAddEvolutionValidator().validate_class_args(space="nlp_tiny", preset="nlp_tiny", optimize_mode="maximize")


def test_demo_summary_of_either_half(tmp_path: Path) -> None:
    """The demo's last screen: the CV table (best beside the baselines), or the translation Table 3; then each
    search's choice, files and web UI."""
    from nni_shiftadd.experiment.demo import format_summary

    arch = {"stage0.depth": 1}
    record = {"arch": arch, "accuracy": 0.7, "energy_mJ": 0.2, "latency_ms": 0.1, "mult_G": 0.004, "add_G": 0.005,
              "shift_G": 0.0, "params_M": 0.06, "status": "ok", "feasible": True}
    search = {"best": record, "baselines": {"all_conv": {**record, "accuracy": 0.5}}, "evaluated": 7,
              "generation": 2, "rejected_samples": 1, "search_dir": str(tmp_path), "web_ui": "http://127.0.0.1:8080",
              "stop_command": "nnictl stop abc", "constraints": {"energy_mJ": {"min": None, "max": 0.3}}}
    cv = format_summary({**search, "kind": "image_classification", "total_seconds": 300.0, "supernet_seconds": 150.0})
    assert "best (search)" in cv and "all-conv" in cv and "0.7000" in cv and "-- search" not in cv
    assert "ranks architectures coarsely" in cv and "/best.json" in cv  # says what inherited accuracy is worth
    assert "evaluated       7 architectures over 2 generation(s)" in cv and "nnictl stop abc" in cv
    row = {"label": "ShiftAddNAS search (best)", "feasible": True, "params_M": 0.37, "flops_G": 0.0234,
           "valid_loss": 4.065, "bleu": 0.52, "latency_ms": 0.461, "energy_mJ": 0.685, "test_sentences": 1000}
    table = {"rows": [row, {**row, "label": "all-Attn (Transformer)", "feasible": False}], "beam": 4,
             "bleu_signature": "nrefs:1|case:mixed", "constraints": search["constraints"], "plots": [],
             "inherited_loss": {"subnets": 36, "min": 4.031, "max": 4.075}}
    nlp = format_summary({**search, "kind": "translation", "table": table, "total_seconds": 790.0,
                          "supernet_seconds": 480.0, "supernet_updates": 4000, "supernet_checkpoint": "ck.pt",
                          "extra_searches": {"hat": {**search, "stop_command": "nnictl stop x"}}})
    assert "all-Attn (Transformer) *" in nlp and "ShiftAddNAS search (best)" in nlp and "4.065" in nlp
    # says what inherited losses are worth: how far apart they lie, that they rank coarsely, how to measure a pick
    assert "the 36 subnets the searches scored span 4.031-4.075 nats (0.044 apart)" in nlp
    assert "trained 4000 updates, which ranks subnets coarsely" in nlp
    assert f"retrain --supernet ck.pt --arch {tmp_path}/best.json" in nlp
    assert "-- search\n" in nlp and "-- search hat" in nlp and "nnictl stop x" in nlp
    assert "test split (1000 sentences), beam 4" in nlp and "wall time       790 s (supernet 480 s)" in nlp


class _FakeRest:
    """The two REST calls ``wait`` makes, answered from lists (an experiment whose tuner died after one trial)."""

    base = "http://127.0.0.1:0/api/v1/nni"

    def __init__(self, trials: list[dict]) -> None:
        self._trials = trials

    def get(self, path: str) -> dict:
        assert path == "check-status"
        return {"status": "TUNER_NO_MORE_TRIAL"}

    def trials(self) -> list[dict]:
        return self._trials


def test_wait_gives_up_on_a_tuner_that_stopped_answering() -> None:
    from nni_shiftadd.experiment.nnictl import ExperimentError, wait

    seen: list[int] = []
    with pytest.raises(ExperimentError, match=r"no trial has run for 0 s.*dispatcher.log"):
        wait(_FakeRest([{"status": "SUCCEEDED"}]), lambda: False, poll=0.01, stall_timeout=0.05,
             progress=lambda trials: seen.append(len(trials)))
    assert seen and seen[0] == 1
    assert wait(_FakeRest([{"status": "SUCCEEDED"}]), lambda: True, poll=0.01) == [{"status": "SUCCEEDED"}]


def test_demo_progress_shows_trials_and_the_generation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nni_shiftadd.experiment.demo import _progress_bar

    results = tmp_path / "results.json"
    update = _progress_bar(results)
    update([{"status": "RUNNING"}])  # before the tuner wrote anything
    results.write_text(json.dumps({"generation": 1, "iterations": 3}))
    update([{"status": "SUCCEEDED"}, {"status": "FAILED"}, {"status": "RUNNING"}])
    err = capsys.readouterr().err
    assert "2/3 [" in err and "running=1" in err and "generation=2/3" in err


def test_translation_table_says_how_far_apart_the_inherited_losses_lie() -> None:
    """The spread of inherited losses over every subnet the searches scored (the main search and the extra ones),
    failed trials and trials without a loss left out; nothing when no trial scored."""
    from nni_shiftadd.experiment.translation_report import inherited_loss

    results = {"records": [{"status": "ok", "valid_loss": 4.05}, {"status": "failed", "valid_loss": 9.0},
                           {"status": "ok", "valid_loss": None}],
               "extra_searches": {"hat": {"records": [{"status": "ok", "valid_loss": 4.02},
                                                      {"status": "ok", "valid_loss": 4.07}]}}}
    assert inherited_loss(results) == {"subnets": 3, "min": 4.02, "max": 4.07}
    assert inherited_loss({"records": [{"status": "failed"}]}) is None

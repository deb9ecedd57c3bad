"""The fairseq plugin (``--user-dir``) and ``nni-shiftadd train-supertransformer`` on a slice of the real trans-de-en
pairs and a tiny translation space: fairseq-train runs and resumes with weights-only checkpoints, a run killed with
``kill -9`` goes on with the subnet sequence (and ends with the weights) of an uninterrupted one, and subnets are
scored with inherited weights (validation loss, sacrebleu BLEU with its signature)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nni_shiftadd.checkpoint import load_checkpoint
from nni_shiftadd.cli import main
from nni_shiftadd.space import load_space
from nni_shiftadd.space.spec import canonical_arch
from nni_shiftadd.tasks.translation import USER_DIR
from nni_shiftadd.tasks.translation.evaluate import load_trained, supertransformer_data, validation_loss
from nni_shiftadd.tasks.supertransformer import checkpoint_training_seconds
from nni_shiftadd.tasks.translation.archs import named_arch, parse_arch, sampled_arch

ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["NNI_SHIFTADD_CACHE"] = str(cache)
    return env


def _recipe(tiny: dict[str, Path], output: Path, **fields: Any) -> list[str]:
    cfg = {"space": str(tiny["space"]), "data": json.dumps({"source": str(tiny["source"]), "bpe_merges": 400,
                                                            "valid_size": 200, "test_size": 800}),
           "max_updates": 12, "max_tokens": 512, "warmup_updates": 4, "save_interval_updates": 4,
           "log_interval": 2, "baselines": "[]", "eval_archs": 0, "output": str(output), **fields}
    args = []
    for key, value in cfg.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return args


def test_subnet_sequence_is_a_function_of_the_update() -> None:
    spec = load_space("nlp_small")
    first = [sampled_arch(spec, 0, u) for u in range(200)]
    assert first == [sampled_arch(spec, 0, u) for u in range(200)]  # any process, any rank, after a resume
    assert first != [sampled_arch(spec, 1, u) for u in range(200)]
    ops = Counter(a["encoder.layer0.op"] for a in first)
    assert set(ops) == set(spec.encoder.blocks) and min(ops.values()) > 10  # uniform over the block types
    assert named_arch(spec, "smallest")["encoder.embed_dim"] == 128
    with pytest.raises(ValueError, match="--valid-subnet: no such file 'huge'"):
        named_arch(spec, "huge")
    with pytest.raises(ValueError, match="--subnet .\{encoder.: not valid JSON"):
        parse_arch("{encoder", "--subnet")


def test_fairseq_train_with_the_user_dir(tiny_translation: dict[str, Path], tmp_path: Path) -> None:
    assert main(["fairseq-user-dir"]) == 0
    fairseq_train = Path(sys.executable).with_name("fairseq-train")
    args = [str(fairseq_train), str(tiny_translation["data_bin"]), "--user-dir", str(USER_DIR),
            "--task", "shiftadd_translation", "--arch", "shiftadd_supertransformer", "--space",
            str(tiny_translation["space"]), "--cpu", "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "512",
            "--max-update", "5", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--save-dir", str(tmp_path / "ckpt"), "--no-epoch-checkpoints", "--num-workers", "0",
            "--log-interval", "1", "--no-progress-bar", "--seed", "3"]
    run = subprocess.run(args, env=_env(tiny_translation["cache"]), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(re.findall(r"train_inner.*num_updates=\d", run.stdout + run.stderr)) >= 5
    state = load_checkpoint(tmp_path / "ckpt" / "checkpoint_last.pt")  # weights-only, as every load here
    assert state["optimizer_history"][-1]["num_updates"] == 5
    assert any(k.startswith("supernet.encoder_layers.0.branch.pools.") for k in state["model"])
    # every weight once: the encoder and decoder wrappers register nothing of their own
    assert not any(k.startswith(("encoder.", "decoder.")) for k in state["model"])


@pytest.mark.slow
def test_fairseq_distributed_training_on_two_cpu_processes(tiny_translation: dict[str, Path], tmp_path: Path) -> None:
    """fairseq's own data parallelism on CPU: one process per rank (fairseq spawns per GPU only), gloo, and the
    legacy all-reduce; every rank draws the same subnet per update, so the ranks train one network."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fairseq_train = Path(sys.executable).with_name("fairseq-train")
    common = [str(fairseq_train), str(tiny_translation["data_bin"]), "--user-dir", str(USER_DIR),
              "--task", "shiftadd_translation", "--arch", "shiftadd_supertransformer", "--space",
              str(tiny_translation["space"]), "--cpu", "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "512",
              "--max-update", "4", "--criterion", "label_smoothed_cross_entropy", "--save-dir", str(tmp_path / "ckpt"),
              "--no-epoch-checkpoints", "--num-workers", "0", "--no-progress-bar", "--distributed-world-size", "2",
              "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-backend", "gloo",
              "--distributed-no-spawn", "--ddp-backend", "legacy_ddp"]
    env = {**_env(tiny_translation["cache"]), "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([*common, "--distributed-rank", str(r)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "distributed init (rank 1)" in logs[1] and "'distributed_world_size': 2" in logs[0]
    state = load_checkpoint(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 4


def _train(tiny: dict[str, Path], output: Path, **fields: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nni_shiftadd.cli", "train-supertransformer",
                             *_recipe(tiny, output, **fields)], env=_env(tiny["cache"]), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_kill9_resume_goes_on_like_an_uninterrupted_run(tiny_translation: dict[str, Path], tmp_path: Path) -> None:
    """End to end (``-m slow``): ``kill -9`` of fairseq-train, its last checkpoint truncated as a kill mid-copy
    leaves it, and the resumed run ends with an uninterrupted run's weights. The default suite covers the parts:
    exact resume (``test_a_resume_in_a_later_epoch_ends_as_an_uninterrupted_run``) and passing over a bad last
    checkpoint (``test_a_non_finite_last_checkpoint_is_passed_over``) in ``tests/test_reliability_translation.py``."""
    killed = tmp_path / "killed"
    proc = _train(tiny_translation, killed)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list((killed / "checkpoints").glob("checkpoint_*_8.pt")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed: " + proc.stdout.read()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    # fairseq copies checkpoint_last.pt without a rename: truncate it as a kill mid-copy would
    last = killed / "checkpoints" / "checkpoint_last.pt"
    if last.is_file():
        last.write_bytes(last.read_bytes()[:4096])
    resumed = _train(tiny_translation, killed)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert re.search(r"checkpoint_last\.pt: not a readable checkpoint.*resuming from .*checkpoint_\d+_[48]\.pt", out), \
        out[-3000:]
    reference = _train(tiny_translation, tmp_path / "reference")
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out[-3000:]
    a = load_checkpoint(killed / "checkpoints" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "reference" / "checkpoints" / "checkpoint_last.pt")
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 12
    differ = [k for k in b["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"the resumed run's weights differ from an uninterrupted run's: {differ[:8]}"


def test_subnets_scored_with_inherited_weights(tiny_translation: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(tiny_translation["cache"]))
    out = tmp_path / "run"
    args = _recipe(tiny_translation, out, max_updates=6, baselines="[attn, add]", eval_archs=1,
                   eval_test_sentences=40, beam=2)
    assert main(["train-supertransformer", *args]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["subnets"]) == {"all_attn", "all_add", "random0"}
    for name, scored in metrics["subnets"].items():
        assert scored["valid"]["loss_nats"] > 0 and scored["valid"]["tokens"] > 1000
        assert 0 <= scored["test"]["bleu"] <= 100 and scored["test"]["sentences"] == 40  # the first 40 by id
        assert scored["test"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
        assert f"{name:<16s} valid loss" in printed
        assert scored["energy_mJ"] > 0 and scored["latency_ms"] > 0 and scored["params_M"] > 0
        assert scored["add_G"] >= scored["macs_G"] >= scored["mult_G"]
    subnets = metrics["subnets"]
    assert subnets["all_add"]["mult_G"] < subnets["all_attn"]["mult_G"]  # the Add encoder multiplies less
    assert subnets["all_add"]["shift_G"] == subnets["all_attn"]["shift_G"] == 0
    assert metrics["unigram_loss_nats"] > 0
    # a search trial on the trained SuperTransformer: HAT's objective, the validation loss with inherited weights
    random0 = metrics["subnets"]["random0"]
    checkpoint = str(out / "checkpoints" / "checkpoint_last.pt")
    assert main(["trial", "--supernet", checkpoint, "--arch", json.dumps(random0["arch"])]) == 0
    trial = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trial["default"] == trial["valid_loss"] == pytest.approx(random0["valid"]["loss_nats"], rel=1e-5)
    for key in ("energy_mJ", "latency_ms", "mult_G", "add_G", "shift_G", "params_M"):
        assert trial[key] == pytest.approx(random0[key], rel=1e-3), key
    assert trial["flops_G"] == pytest.approx(2 * random0["macs_G"], rel=1e-3)  # FLOPs = 2 MACs at 32 bits
    assert 0 <= trial["bleu"] <= 100 and trial["bleu_sentences"] == 200  # beam search on the validation split
    assert main(["trial", "--supernet", checkpoint, "--arch", json.dumps(random0["arch"]), "--bleu-sentences", "0",
                 "--bits", "8"]) == 0
    cheap = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "bleu" not in cheap and cheap["valid_loss"] == trial["valid_loss"]
    # the batches (fairseq breaks ties between equal lengths with NumPy's global generator) and so the loss are the
    # same whatever that generator's state: small batches, so that the ties decide what shares a batch
    model, task = load_trained(checkpoint, supertransformer_data(checkpoint))
    model.activate(canonical_arch(model.spec, random0["arch"]))
    losses = []
    for seed in (1, 2):
        np.random.seed(seed)
        losses.append(validation_loss(model, task, "valid", max_tokens=128)["loss_nats"])
    assert losses[0] == losses[1]
    assert cheap["flops_G"] == pytest.approx(trial["flops_G"] / 16)  # effective FLOPs x (8/32)^2
    bad = {**random0["arch"], "encoder.layer0.op": "lstm"}
    assert main(["trial", "--supernet", checkpoint, "--arch", json.dumps(bad)]) == 2
    assert "does not belong to space 'tiny'" in capsys.readouterr().err
    # the same command on a finished run scores again without training (fairseq would add an update)
    assert main(["train-supertransformer", *_recipe(tiny_translation, out, max_updates=6, eval_archs=1,
                                                    eval_test_sentences=40, beam=2)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["updates"] == metrics["updates"] == 6 and again["resumed"] and set(again["subnets"]) == {"random0"}
    assert again["fit_seconds"] == metrics["fit_seconds"] > 0  # the time its training took, not the scoring's 0
    assert "has all 6 updates; scoring only" in capsys.readouterr().out
    # `retrain` of a subnet on the SuperTransformer: from scratch with its recipe, beside its inherited weights
    retrain = ["retrain", "--supernet", checkpoint, "--arch", json.dumps(random0["arch"]), "--max-updates", "5",
               "--test-sentences", "40", "--output", str(tmp_path / "retrain")]
    assert main(retrain) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "retrain" / "metrics.json").read_text())
    assert result["updates"] == 5 and result["recipe"]["max_updates"] == 5 and result["recipe"]["lr"] == 1e-3
    assert result["recipe"]["max_tokens"] == 512 and result["recipe"]["warmup_updates"] == 4  # the supernet's recipe
    inherited, scratch = result["inherited"], result["scratch"]
    assert inherited["valid"]["loss_nats"] == pytest.approx(random0["valid"]["loss_nats"], rel=1e-5)
    assert inherited["test"]["beam"] == scratch["test"]["beam"] == 4 and inherited["supernet_updates"] == 6
    assert scratch["valid"]["loss_nats"] != inherited["valid"]["loss_nats"] and scratch["test"]["sentences"] == 40
    assert scratch["params_M"] == pytest.approx(random0["params_M"])
    assert "from scratch     valid loss" in printed and "inherited        valid loss" in printed
    assert main([*retrain[:-1], str(tmp_path / "retrain8"), "--quant-bits", "8"]) == 0  # quantisation-aware
    capsys.readouterr()
    result8 = json.loads((tmp_path / "retrain8" / "metrics.json").read_text())
    assert (result8["bits"], result8["recipe"]["quant_bits"]) == (8, 8)
    assert result8["scratch"]["energy_mJ"] < scratch["energy_mJ"] and result8["scratch"]["macs_G"] == scratch["macs_G"]
    assert main([*retrain[:-1], str(tmp_path / "retrain2"), "--epochs", "3"]) == 2
    assert "field 'epochs': applies to image spaces" in capsys.readouterr().err
    assert main([*retrain[:-1], str(tmp_path / "retrain2"), "--checkpoint-every", "3"]) == 2
    assert "field 'checkpoint_every': applies to image spaces" in capsys.readouterr().err
    assert main([*retrain, "--resume", "never"]) == 2  # fairseq's resume, as train-supertransformer's
    assert "--overwrite true" in capsys.readouterr().err
    assert main([*retrain[:-1], str(tmp_path / "retrain2"), "--max-updates", "4"]) == 2  # = the warm-up
    assert "the warm-up (4 updates) must end before the run does (4)" in capsys.readouterr().err
    assert main(["retrain", "--supernet", checkpoint, "--arch", json.dumps(bad), "--output",
                 str(tmp_path / "retrain3")]) == 2
    assert "field 'arch'" in capsys.readouterr().err and not (tmp_path / "retrain3").exists()
    # a bad recipe is one named error before anything runs
    assert main(["train-supertransformer", "--space", "cv_small", "--output", str(tmp_path / "x")]) == 2
    assert "field 'space': 'cv_small' is not a translation space" in capsys.readouterr().err
    assert main(["train-supertransformer", "--baselines", "[winograd]", "--output", str(tmp_path / "x")]) == 2
    assert "field 'baselines': 'winograd' is not an encoder block" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_an_8_bit_subnet_fine_tuned_from_its_float_weights(tiny_translation: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Quantisation-aware fine-tuning (Table 3's 8-bit rows): a float subnet, then its 8-bit twin started from its
    weights; scored on the quantised model and costed at 8 bits."""
    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(tiny_translation["cache"]))
    spec = load_space(str(tiny_translation["space"]))
    arch = json.dumps(spec.canonical_arch(spec.baseline_arch("attn+add")))
    common = {"subnet": arch, "eval_test_sentences": 20, "beam": 1}
    assert main(["train-supertransformer", *_recipe(tiny_translation, tmp_path / "float", **common)]) == 0
    start = tmp_path / "float" / "checkpoints" / "checkpoint_last.pt"
    quant = _recipe(tiny_translation, tmp_path / "q8", **common, max_updates=2, warmup_updates=1, quant_bits=8,
                    init_from=start)
    assert main(["train-supertransformer", *quant]) == 0
    capsys.readouterr()
    floated = json.loads((tmp_path / "float" / "metrics.json").read_text())
    result = json.loads((tmp_path / "q8" / "metrics.json").read_text())
    assert (floated["bits"], result["bits"], result["quant_bits"], result["updates"]) == (32, 8, 8, 2)
    a, b = floated["subnets"]["subnet"], result["subnets"]["subnet"]
    assert b["energy_mJ"] < a["energy_mJ"] and b["macs_G"] == a["macs_G"] and b["params_M"] == a["params_M"]
    assert 0 <= b["test"]["bleu"] <= 100
    # it went on from the float weights: two updates later its loss is the float network's, not a fresh one's
    scratch = _recipe(tiny_translation, tmp_path / "scratch", **common, max_updates=2, warmup_updates=1)
    assert main(["train-supertransformer", *scratch]) == 0
    fresh = json.loads((tmp_path / "scratch" / "metrics.json").read_text())["subnets"]["subnet"]["valid"]["loss_nats"]
    assert abs(b["valid"]["loss_nats"] - a["valid"]["loss_nats"]) < 0.25 * (fresh - a["valid"]["loss_nats"])
    # its training time is its own, not the float network's as well (which fairseq carries into its checkpoints)
    held = checkpoint_training_seconds(tmp_path / "q8" / "checkpoints" / "checkpoint_last.pt")
    donor = checkpoint_training_seconds(start)
    assert donor > 0 and 0 < result["train_seconds"] < held and result["train_seconds"] == round(held - donor, 1)
    state = load_checkpoint(tmp_path / "q8" / "checkpoints" / "checkpoint_last.pt")["model"]
    ranges = [k for k in state if k.endswith("operand_quant.depthwise.running_min")]
    assert ranges and all(float(state[k]) < 0 for k in ranges)  # the adders' inputs, observed: all negative
    assert any(k.endswith("parametrizations.weight.original") for k in state)
    # errors name the field before anything trains
    assert main(["train-supertransformer", *_recipe(tiny_translation, tmp_path / "bad", quant_bits=8)]) == 2
    assert "field 'quant_bits': 8 needs a 'subnet'" in capsys.readouterr().err
    assert main(["train-supertransformer", *_recipe(tiny_translation, tmp_path / "bad", **common,
                                                    quant_bits=1)]) == 2
    assert "field 'quant_bits': bits: got 1; expected an int in [2, 16]" in capsys.readouterr().err
    assert main(["train-supertransformer", *_recipe(tiny_translation, tmp_path / "bad", **common,
                                                    init_from=tmp_path / "none.pt")]) == 2
    assert "field 'init_from': no such checkpoint" in capsys.readouterr().err
    other = json.dumps(spec.canonical_arch(spec.baseline_arch("attn")))
    assert main(["train-supertransformer", *_recipe(tiny_translation, tmp_path / "bad", **{**common, "subnet": other},
                                                    quant_bits=8, init_from=start)]) == 2
    assert re.search(r"field 'init_from': .* holds subnet .*attn\+add.*; the run trains subnet", capsys.readouterr().err)
    assert main(["train-supertransformer", *_recipe(tiny_translation, tmp_path / "bad", **common,
                                                    init_from=tmp_path / "q8" / "checkpoints" / "checkpoint_last.pt")]) == 2
    assert "holds a network quantised to 8 bits; a float run cannot start from it" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

"""Faults of the translation half and of chained commands, as an adversarial user meets them through the command
line: resumes that would continue another run (another seed, subnet seed, batch size, mode, subnet, architecture,
or data), ``--resume never`` on a run that holds checkpoints, divergence at any learning rate (one message, nothing
non-finite saved, a rerun goes on from the last good checkpoint), scores that would overflow, malformed binarised
data, options of the fairseq plugin checked before training, SIGTERM / SIGINT ending every long command with 143 /
130 and a line saying what was kept, and a resume in a later epoch that ends exactly as an uninterrupted run.

The tiny translation data and space of ``tests/conftest.py`` keep each run to a few seconds.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from nni_shiftadd.checkpoint import load_checkpoint
from nni_shiftadd.cli import main
from nni_shiftadd.tasks.supertransformer import _checkpoint_problem, checkpoint_training_seconds
from nni_shiftadd.tasks.translation.evaluate import perplexity

ROOT = Path(__file__).resolve().parents[1]
IMAGE_TINY = ["--dataset", "digits", "--batch-size", "16", "--eval-archs", "0", "--limit-eval-batches", "1",
              "--bn-calibration-batches", "1", "--warmup-epochs", "0"]


def _recipe(tiny: dict[str, Path], output: Path, **fields: Any) -> list[str]:
    cfg = {"space": str(tiny["space"]), "data": json.dumps({"source": str(tiny["source"]), "bpe_merges": 400,
                                                            "valid_size": 200, "test_size": 800}),
           "max_updates": 6, "max_tokens": 512, "warmup_updates": 2, "save_interval_updates": 3,
           "log_interval": 2, "baselines": "[]", "eval_archs": 0, "eval_test_sentences": 10, "beam": 1,
           "output": str(output), **fields}
    return [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


@pytest.fixture
def cache(tiny_translation: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(tiny_translation["cache"]))
    return tiny_translation


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# --- resumes that check what they resume ----------------------------------------------------------------------------

def test_a_resume_of_another_run_is_refused_before_anything_is_written(cache: dict[str, Path], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train-supertransformer", *_recipe(cache, out)]) == 0
    capsys.readouterr()
    args_file = (out / "fairseq_args.json").read_text()
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    for flag, value, field in (("--subnet-seed", "3", "subnet_seed"), ("--seed", "5", "seed"),
                               ("--max-tokens", "1024", "max_tokens"), ("--mode", "naive", "mode"),
                               ("--kl-weight", "0.5", "kl_weight")):
        assert main(["train-supertransformer", *_recipe(cache, out), f"{flag}={value}"]) == 2
        line = _error(capsys)
        assert re.search(rf"field '{field}': .*{value}.* differs from .* of the run in {re.escape(str(out))}.*"
                         r"another --output, or --resume never --overwrite true", line), line
    subnet = json.dumps(json.loads((out / "run.json").read_text())["fixed"]["subnet"] or {})
    assert main(["train-supertransformer", *_recipe(cache, out), "--subnet",
                 json.dumps({"encoder.embed_dim": 16})]) == 2
    assert "field 'subnet'" in _error(capsys) and subnet == "{}"
    # nothing was written: the recipe of the run and its checkpoints are as they were
    assert (out / "fairseq_args.json").read_text() == args_file
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == checkpoints
    # --resume never on a finished run asks for --overwrite, which deletes and starts afresh
    assert main(["train-supertransformer", *_recipe(cache, out), "--resume=never"]) == 2
    assert re.search(r"field 'resume': never would delete the \d+ checkpoint\(s\) in .* \(the last at 6 updates\); "
                     r"add --overwrite true", _error(capsys))
    assert main(["train-supertransformer", *_recipe(cache, out), "--overwrite=true"]) == 2
    assert "field 'overwrite': only with resume: never" in _error(capsys)
    # optimisation fields may change: a longer run with a lower lr goes on and says what changed
    assert main(["train-supertransformer", *_recipe(cache, out), "--max-updates=8", "--lr=5e-4"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"resuming from .*checkpoint_last\.pt \(6 updates\); recipe changes applied from there on: "
                     r"lr 0\.001 -> 0\.0005, max_updates 6 -> 8", err), err
    assert load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"] == 8
    # run.json keeps what changed, and from which update (no other recipe's run to adopt), until it starts afresh
    assert json.loads((out / "run.json").read_text())["reoptimised"] == [
        {"updates": 6, "changes": {"lr": [0.001, 0.0005], "max_updates": [6, 8]}}]
    assert main(["train-supertransformer", *_recipe(cache, out), "--resume=never", "--overwrite=true"]) == 0
    assert f"deleted {out / 'checkpoints'}" in capsys.readouterr().err
    assert "reoptimised" not in json.loads((out / "run.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["updates"] == 6


def test_retrain_refuses_another_architecture_and_the_supernet_folder(cache: dict[str, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from nni_shiftadd.space import load_space
    from nni_shiftadd.space.nlp_spec import baseline_arch

    supernet = tmp_path / "supernet"
    assert main(["train-supertransformer", *_recipe(cache, supernet)]) == 0
    checkpoint = str(supernet / "checkpoints" / "checkpoint_last.pt")
    spec = load_space(str(cache["space"]))
    a, b = (json.dumps(baseline_arch(spec, op)) for op in ("attn", "add"))
    retrain = ["retrain", "--supernet", checkpoint, "--max-updates", "4", "--test-sentences", "10"]
    assert main([*retrain, "--arch", a, "--output", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main([*retrain, "--arch", b, "--output", str(tmp_path / "r")]) == 2
    line = _error(capsys)
    assert re.search(r"field 'arch': .* differs from .* of the run in .*/r,", line), line
    supernet_args = (supernet / "fairseq_args.json").read_text()
    assert main([*retrain, "--arch", a, "--output", str(supernet)]) == 2
    assert re.search(r"field 'arch': .* differs from 'the whole supernet' of the run in", _error(capsys))
    assert (supernet / "fairseq_args.json").read_text() == supernet_args


def test_a_changed_dictionary_under_a_checkpoint_is_named(cache: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data-bin"
    shutil.copytree(cache["data_bin"], data)
    recipe = _recipe(cache, tmp_path / "run", data=json.dumps({"binarized": str(data)}))
    assert main(["train-supertransformer", *recipe]) == 0
    capsys.readouterr()
    for lang in ("de", "en"):  # a joined dictionary replaced by one with another token
        path = data / f"dict.{lang}.txt"
        path.write_text(path.read_text().replace("\n", "x\n", 1))
    assert main(["train-supertransformer", *recipe]) == 2
    assert re.search(r"field 'data': dict\.de\.txt, dict\.en\.txt of the data differ from what the checkpoints in "
                     r".* were trained on", _error(capsys))


# --- divergence -------------------------------------------------------------------------------------------------------

def test_divergence_stops_with_one_message_and_saves_nothing_non_finite(cache: dict[str, Path], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lost"
    # the lost run: every update saved, a huge peak learning rate reached after one update
    bad = _recipe(cache, out, max_updates=10, lr=1e30, warmup_updates=1, save_interval_updates=1)
    assert main(["train-supertransformer", *bad]) == 2
    line = _error(capsys)
    assert re.search(r"training diverged: (update \d+: the (training loss is nan|gradient (of \S+ is not finite|norm "
                     r"overflows))|"
                     r"validation after update \d+: the loss of the largest subnet is nan); nothing non-finite was "
                     r"saved; the last good checkpoint is .*checkpoint_last\.pt \(\d+ updates\)", line), line
    saved = list((out / "checkpoints").glob("*.pt"))
    assert saved and all(_checkpoint_problem(p) is None for p in saved), [_checkpoint_problem(p) for p in saved]
    good = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"]
    # the rerun with a sane learning rate goes on from the last good checkpoint and finishes
    assert main(["train-supertransformer", *_recipe(cache, out, max_updates=10, warmup_updates=1,
                                                    save_interval_updates=1)]) == 0
    err = capsys.readouterr().err
    assert f"resuming from {out / 'checkpoints' / 'checkpoint_last.pt'} ({good} updates)" in err, err[-2000:]
    assert "lr 1e+30 -> 0.001" in err
    assert json.loads((out / "metrics.json").read_text())["updates"] == 10
    # diverging before any checkpoint: the same message, and the way out
    assert main(["train-supertransformer", *_recipe(cache, tmp_path / "early", lr=1e6)]) == 2
    assert re.search(r"training diverged: .*; no checkpoint was written before it diverged: run it again with a "
                     r"lower --lr", _error(capsys))
    # a learning rate outside float32 is refused before any work
    assert main(["train-supertransformer", *_recipe(cache, tmp_path / "huge", lr=1e39)]) == 2
    assert re.search(r"command line\)?: field 'lr': must be below 3\.4e38", _error(capsys))
    assert not (tmp_path / "huge").exists()


def test_a_non_finite_last_checkpoint_is_passed_over(cache: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train-supertransformer", *_recipe(cache, out)]) == 0
    last = out / "checkpoints" / "checkpoint_last.pt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, last)
    capsys.readouterr()
    assert main(["train-supertransformer", *_recipe(cache, out, max_updates=9)]) == 0
    err = capsys.readouterr().err
    assert re.search(rf"checkpoint_last\.pt: 1 tensor\(s\) hold NaN/Inf: model\.{re.escape(name)}; resuming from "
                     r".*checkpoint_\d+_6\.pt \(6 updates\) instead", err), err[-2000:]
    assert _checkpoint_problem(last) is None


def test_scores_never_overflow() -> None:
    assert perplexity(2.0) == pytest.approx(7.389056, rel=1e-6)
    assert perplexity(1e4) == float("inf") and perplexity(float("inf")) == float("inf")


# --- data ---------------------------------------------------------------------------------------------------------

def _break(data: Path, how: str) -> str:
    """Damage a copy of a binarised folder; returns the file the error must name."""
    if how == "empty dictionary":
        (data / "dict.en.txt").write_text("")
        return "dict.en.txt"
    if how == "truncated bin":
        path = data / "train.de-en.de.bin"
        path.write_bytes(path.read_bytes()[:-10])
        return "train.de-en.de.bin"
    if how == "missing split":
        (data / "valid.de-en.en.idx").unlink()
        return "valid.de-en.en.idx"
    if how == "foreign dictionary":
        for lang in ("de", "en"):
            path = data / f"dict.{lang}.txt"
            path.write_text("".join(path.read_text().splitlines(keepends=True)[:50]))
        return "train.de-en.de.bin"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["empty dictionary", "truncated bin", "missing split", "foreign dictionary"])
def test_malformed_binarised_data_is_refused_naming_the_file(how: str, cache: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data-bin"
    shutil.copytree(cache["data_bin"], data)
    name = _break(data, how)
    assert main(["data", "translation", "--binarized", str(data)]) == 2
    assert name in _error(capsys)
    out = tmp_path / "run"
    assert main(["train-supertransformer", *_recipe(cache, out, data=json.dumps({"binarized": str(data)}))]) == 2
    assert name in _error(capsys) and not (out / "checkpoints").exists()


def test_a_batch_smaller_than_a_sentence_is_refused(cache: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-supertransformer", *_recipe(cache, tmp_path / "run", max_tokens=5)]) == 2
    assert re.search(r"field 'max_tokens': 5 is below the longest sentence of .* \(\d+ tokens\)", _error(capsys))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_folder_left_by_a_killed_preparation_is_removed(trans_de_en_slice: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from nni_shiftadd.config import from_dict
    from nni_shiftadd.data.translation import TranslationDataConfig, dataset_dir, prepare_translation

    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(tmp_path / "cache"))
    cfg = from_dict(TranslationDataConfig, {"source": str(trans_de_en_slice), "bpe_merges": 50, "valid_size": 100,
                                            "test_size": 800})
    root = dataset_dir(cfg)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = root.with_name(f"{root.name}.building{dead.pid}")
    (stale / "tok").mkdir(parents=True)
    prepare_translation(cfg, progress=lambda line: None)
    assert not stale.exists() and (root / "manifest.json").is_file()


# --- the fairseq plugin's options -------------------------------------------------------------------------------

BAD_PLUGIN_OPTIONS = [
    (["--space", "no_such_space"], r"--space: no_such_space: no such search-space file"),
    (["--mode", "full"], r"--mode: got 'full'; expected one of \['none', 'naive', 'hws'\]"),
    (["--valid-subnet", '{"encoder.embed_dim": 7}'], r"--valid-subnet: arch: missing key"),
]


def test_fairseq_train_refuses_a_bad_plugin_option_before_training(cache: dict[str, Path], tmp_path: Path) -> None:
    """Each bad option of the plugin, given to fairseq-train: exit 2, one line naming it, no traceback, nothing
    saved. The runs go side by side (each is mostly fairseq's start-up)."""
    from nni_shiftadd.tasks.translation import USER_DIR

    runs = []
    for k, (option, message) in enumerate(BAD_PLUGIN_OPTIONS):
        save_dir = tmp_path / f"ck{k}"
        proc = subprocess.Popen([str(Path(sys.executable).parent / "fairseq-train"), str(cache["data_bin"]),
                                 "--user-dir", str(USER_DIR), "--task", "shiftadd_translation", "--arch",
                                 "shiftadd_supertransformer", "--space", str(cache["space"]), *option, "--max-tokens",
                                 "512", "--max-update", "2", "--optimizer", "adam", "--lr", "1e-3", "--cpu",
                                 "--save-dir", str(save_dir)],
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        runs.append((option, message, save_dir, proc))
    for option, message, save_dir, proc in runs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and "Traceback" not in err, (option, err[-3000:])
        assert re.search(r"^fairseq-train: error: " + message, err, re.M), (option, err[-3000:])
        assert not list(save_dir.glob("*.pt")), option


# --- signals: a stopped job never looks like a success ------------------------------------------------------------

def _stop_when(proc: subprocess.Popen, ready: Any, sig: int, timeout: float = 240) -> tuple[int, str]:
    """Send ``sig`` to ``proc`` once ``ready()`` holds; its exit status and stderr."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the job ended before it could be stopped: " + proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "timed out waiting to stop the job"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _cli(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nni_shiftadd.cli", *args], env=_env(**env), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigterm_stops_supernet_training_at_a_step_with_an_exact_checkpoint(tmp_path: Path) -> None:
    from nni_shiftadd.config import from_dict
    from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet

    args = [*IMAGE_TINY, "--limit-train-batches", "20", "--epochs", "3", "--checkpoint-every", "20"]
    out = tmp_path / "stopped"
    # stopped once the first epoch's checkpoint is written: somewhere in the second epoch
    code, err = _stop_when(_cli("train-supernet", *args, "--output", str(out)),
                           lambda: bool(list((out / "checkpoints").glob("*step=20.ckpt"))), signal.SIGTERM)
    assert code == 143, err[-3000:]
    found = re.search(r"train-supernet: stopped by SIGTERM \(checkpoint .*last\.ckpt at global step (\d+)\); run the "
                      r"same command again to go on", err)
    assert found, err[-3000:]
    stopped_at = int(found.group(1))
    assert 20 <= stopped_at < 60 and not (out / "metrics.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "nni_shiftadd.cli", "train-supernet", *args, "--output",
                              str(out)], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = tmp_path / "reference"
    train_supernet(from_dict(SupernetConfig, {"dataset": "digits", "batch_size": 16, "eval_archs": 0,
                                              "limit_eval_batches": 1, "bn_calibration_batches": 1,
                                              "warmup_epochs": 0, "limit_train_batches": 20, "epochs": 3,
                                              "checkpoint_every": 20, "output": str(reference)}))
    a = load_checkpoint(out / "checkpoints" / "last.ckpt")
    b = load_checkpoint(reference / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 60
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"stopped at step {stopped_at} and resumed: tensors differ: {differ[:8]}"


def test_sigint_stops_training_with_130(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, err = _stop_when(_cli("train", "--dataset", "digits", "--model", "shiftadd_resnet8", "--epochs", "50",
                                "--batch-size", "16", "--output", str(out)),
                           lambda: bool(list((out / "checkpoints").glob("*.ckpt"))), signal.SIGINT)
    assert code == 130, err[-3000:]
    assert re.search(r"train: stopped by SIGINT \(checkpoint .*last\.ckpt at global step \d+\); run the same command "
                     r"again to go on", err), err[-3000:]
    assert not (out / "metrics.json").exists()


def test_sigterm_stops_a_ranking_study_between_networks_with_143(tmp_path: Path) -> None:
    out = tmp_path / "study"
    code, err = _stop_when(_cli("ranking", "--config", "examples/fashion_mnist/ranking_cv_small.yaml", "--quick",
                                "--output", str(out)),
                           lambda: len(list(Path(f"{out}_quick").glob("standalone/*/metrics.json"))) >= 1,
                           signal.SIGTERM)
    assert code == 143 and re.search(r"ranking: stopped by SIGTERM", err), err[-3000:]
    assert not (Path(f"{out}_quick") / "results.json").exists()


def test_sigterm_stops_translation_training_with_143(cache: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, err = _stop_when(_cli("train-supertransformer", *_recipe(cache, out, max_updates=400),
                                NNI_SHIFTADD_CACHE=str(cache["cache"])),
                           lambda: bool(list((out / "checkpoints").glob("checkpoint_*_*.pt"))), signal.SIGTERM)
    assert code == 143 and "train-supertransformer: stopped by SIGTERM" in err, err[-3000:]
    assert not (out / "metrics.json").exists()


def test_translation_training_leaves_no_thread_behind(cache: dict[str, Path], tmp_path: Path) -> None:
    """A thread still inside torch when the interpreter exits aborts the process (status 134, "terminate called
    without an active exception") instead of exiting 143 after a stop: fairseq's batch-prefetching thread was one,
    left running by every run that ends or stops inside an epoch."""
    import threading

    before = set(threading.enumerate())
    assert main(["train-supertransformer", *_recipe(cache, tmp_path / "run")]) == 0
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads still running after training: {left}"


# --- exact resume ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampling", ["uniform", "sandwich"])
def test_a_resume_in_a_later_epoch_ends_as_an_uninterrupted_run(sampling: str, cache: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """fairseq builds an iterator's batches seeded with the epoch it was made in: a run resumed in epoch 2 batched
    differently from an uninterrupted one until the task rebuilt them every epoch. With a training technique
    (several paths an update) the paths come from the update's own generator, so the resume is exact too."""
    whole = tmp_path / "whole"
    recipe = {"max_tokens": 2048, "max_updates": 30, "save_interval_updates": 5, "keep_interval_updates": 10,
              "sampling": sampling}
    assert main(["train-supertransformer", *_recipe(cache, whole, **recipe)]) == 0
    later = sorted((p for p in (whole / "checkpoints").glob("checkpoint_*_*.pt") if not p.stem.startswith("checkpoint_1_")),
                   key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert later, "no checkpoint after the first epoch: make the run longer"
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)  # as a run killed right after saving that checkpoint leaves it
    shutil.copyfile(later[0], resumed / "checkpoints" / "checkpoint_last.pt")
    shutil.copyfile(whole / "run.json", resumed / "run.json")
    assert main(["train-supertransformer", *_recipe(cache, resumed, **recipe)]) == 0
    assert "resuming from" in capsys.readouterr().err
    a = load_checkpoint(whole / "checkpoints" / "checkpoint_last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "checkpoint_last.pt")
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 30
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"resumed from {later[0].name}: tensors differ: {differ[:8]}"
    # its training time counts the run that wrote the checkpoint it resumed as well as its own
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["train_seconds"] > checkpoint_training_seconds(later[0]) > 0

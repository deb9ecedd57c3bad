"""Bad inputs and faults through the real command line, as an adversarial new user would try them.

Every row of :data:`BAD_INPUTS` runs ``nni-shiftadd`` (its ``main``, in this process) and must end in one
``error:`` line that names the argument, field or file and the allowed values, with a non-zero exit status, and
before any expensive work (the output folders a run would create are checked to be absent). The faults below
them run real processes: two jobs on one output folder, a job killed with ``kill -9`` (its stale lock taken
over), a corrupt ``last.ckpt`` (auto-resume falls back to the previous good one), a NaN stop followed by a resume
with a sane learning rate, non-finite weights refused by the checkpoint writer, and ``kill -9`` of a running
search's tuner followed by a resumed search (two NNI experiments and four trials, about 90 s: marked ``slow``, run
with ``.venv/bin/pytest -m slow``). The kill -9 resume of supernet training itself is
``tests/test_supernet_train.py::test_kill9_resume_matches_uninterrupted_run``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import NNI_EXPERIMENTS, isolate_nni

from nni_shiftadd.checkpoint import CheckpointError, NonFiniteCheckpointError, load_checkpoint
from nni_shiftadd.tasks.checkpoint_io import SafeCheckpointIO
from nni_shiftadd.cli import main
from nni_shiftadd.config import ConfigError, from_dict, load_yaml_text, parse_yaml
from nni_shiftadd.lock import LOCK_NAME, OutputLockedError, acquire, output_lock, read_holder
from nni_shiftadd.space import baseline_arch, load_space, random_arch
from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--batch-size", "16", "--limit-train-batches", "6", "--checkpoint-every", "3",
        "--eval-archs", "0", "--limit-eval-batches", "1", "--bn-calibration-batches", "1", "--warmup-epochs", "0"]


class _RunsCode:
    """A pickle that would run a shell command when unpickled without ``weights_only``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, ("touch /tmp/nni-shiftadd-pwned",)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real tiny supernet checkpoint and broken variants of it, a file, a directory, recipes."""
    tmp = tmp_path_factory.mktemp("reliability")
    train_supernet(from_dict(SupernetConfig, {
        "dataset": "digits", "batch_size": 16, "limit_train_batches": 3, "checkpoint_every": 3, "eval_archs": 0,
        "limit_eval_batches": 1, "bn_calibration_batches": 1, "warmup_epochs": 0, "output": str(tmp / "run")}))
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp / "garbage.ckpt").write_bytes(os.urandom(4096))
    torch.save({"weights": torch.ones(3), "payload": _RunsCode()}, tmp / "code.ckpt")
    torch.save({"weights": torch.ones(3)}, tmp / "foreign.ckpt")
    (tmp / "a_file").write_text("not a folder\n")
    (tmp / "a_dir").mkdir()
    (tmp / "empty.yaml").write_text("")
    (tmp / "comments.yaml").write_text("# only a comment\n")
    (tmp / "malformed.yaml").write_text("lr: [0.1\nbatch_size: 8\n")
    (tmp / "unknown.yaml").write_text("dataset: digits\nlearning_rate: 0.1\n")
    (tmp / "list.yaml").write_text("- dataset: digits\n")
    arch = baseline_arch(load_space("cv_small"), "conv")
    (tmp / "arch.json").write_text(json.dumps(arch))
    return {"tmp": str(tmp), "ckpt": str(ckpt), "truncated": str(tmp / "truncated.ckpt"),
            "garbage": str(tmp / "garbage.ckpt"), "code": str(tmp / "code.ckpt"),
            "foreign": str(tmp / "foreign.ckpt"), "file": str(tmp / "a_file"), "dir": str(tmp / "a_dir"),
            "empty": str(tmp / "empty.yaml"), "comments": str(tmp / "comments.yaml"),
            "malformed": str(tmp / "malformed.yaml"), "unknown": str(tmp / "unknown.yaml"),
            "list": str(tmp / "list.yaml"), "arch": str(tmp / "arch.json"), "out": str(tmp / "out"),
            "bad_arch": json.dumps({**arch, "stage1.layer0.op": "winograd"})}


TRIAL = ["trial", "--eval-batches", "1", "--calibration-batches", "1", "--batch-size", "16"]
#: (case, argv with <placeholders> from the ``files`` fixture, exit status, what the error line must say)
_BAD_NLP_ARCH = json.dumps({**random_arch(load_space("nlp_small"), 0), "encoder.layer0.op": "lstm"})

BAD_INPUTS: list[tuple[str, list[str], int, str]] = [
    # recipes
    ("empty recipe", ["train-supernet", "--config", "<empty>"], 2, r"empty\.yaml: the file is empty.*allowed fields"),
    ("comment-only recipe", ["train", "--config", "<comments>"], 2, r"comments\.yaml: the file is empty"),
    ("malformed YAML recipe", ["train-supernet", "--config", "<malformed>"], 2, r"malformed\.yaml: not valid YAML"),
    ("unknown recipe field", ["train-supernet", "--config", "<unknown>"], 2,
     r"unknown\.yaml: unknown field 'learning_rate'; allowed fields are \[.*'lr'"),
    ("recipe not a mapping", ["retrain", "--config", "<list>"], 2, r"list\.yaml: expected a mapping.*got list"),
    ("missing recipe", ["train", "--config", "<tmp>/nope.yaml"], 2, r"nope\.yaml: no such config file"),
    # numbers and booleans as a user writes them
    ("non-number lr", ["train-supernet", "--lr", "fast"], 2, r"--lr: got 'fast'; expected float"),
    ("negative lr", ["train-supernet", "--lr=-1e-3"], 2, r"field 'lr': must be > 0, got -0\.001"),
    ("float batch size", ["train-supernet", "--batch-size", "1e2"], 2, r"--batch-size: got 100\.0; expected int"),
    ("yes is no bool", ["profile", "--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--option",
                        "adder_on_chip=yes"], 2, r"option 'adder_on_chip': got 'yes'; expected bool"),
    ("maybe is no bool", ["profile", "--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--option",
                          "adder_on_chip=maybe"], 2, r"option 'adder_on_chip': got 'maybe'; expected bool"),
    ("quoted false is no bool", ["profile", "--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--option",
                                 "adder_on_chip='false'"], 2, r"option 'adder_on_chip': got 'false'; expected bool"),
    ("unknown Eyeriss option", ["profile", "--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--option",
                                "pe_count=3"], 2, r"unknown Eyeriss option 'pe_count'; the options are \["),
    # optimiser, schedule, model
    ("unknown optimizer", ["train-supernet", "--optimizer", "adamx"], 2,
     r"field 'optimizer': unknown optimizer 'adamx'; e\.g\. \['adamw'"),
    ("unknown schedule", ["train-supernet", "--sched", "cosinus"], 2,
     r"field 'sched': unknown schedule 'cosinus'; expected one of \['cosine'"),
    ("unknown optimizer (train)", ["train", "--optimizer", "sgdx", "--dataset", "digits"], 2,
     r"field 'optimizer': unknown optimizer 'sgdx'"),
    ("unknown schedule (retrain)", ["retrain", "--arch", "all_conv", "--sched", "linear"], 2,
     r"field 'sched': unknown schedule 'linear'"),
    ("swallowed model kwarg", ["train", "--dataset", "digits", "--model-kwargs", "{bogus: 3}"], 2,
     r"field 'model_kwargs': shiftadd_resnet20 does not take \{'bogus': 3\}.*'bogus'"),
    ("model kwarg set by the data", ["train", "--dataset", "digits", "--model-kwargs", "{in_chans: 3}"], 2,
     r"field 'model_kwargs': 'in_chans' is set from the dataset"),
    ("profile model kwarg", ["profile", "--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--model-kwargs",
                             "{bogus: 3}"], 2, r"--model-kwargs \{'bogus': 3.*TypeError: .*unexpected keyword argument 'bogus'"),
    ("malformed model kwargs", ["profile", "--model", "shiftadd_resnet8", "--model-kwargs", "{op: [conv"], 2,
     r"--model-kwargs: '\{op: \[conv' is not valid YAML"),
    ("profile arch without space", ["profile", "--workload", "transformer_big", "--arch", "{}"], 2,
     r"--arch: goes with --space"),
    ("profile translation subnet, bad value", ["profile", "--space", "nlp_small", "--arch",
                                               _BAD_NLP_ARCH], 2,
     r"--arch: .*'encoder\.layer0\.op'.*'lstm'.*'attn'"),
    ("unknown model", ["train", "--model", "resnet_9000", "--dataset", "digits"], 2,
     r"field 'model': unknown model 'resnet_9000'"),
    # inline YAML / JSON
    ("malformed sample constraints", ["train-supernet", "--sample-constraints", "{energy_mJ: {max: 0.3"], 2,
     r"--sample-constraints: '\{energy_mJ: \{max: 0\.3' is not valid YAML"),
    ("unknown constraint metric", ["train-supernet", "--sample-constraints", "{energy: {max: 1}}"], 2,
     r"field 'sample_constraints': unknown metric 'energy'; allowed \['energy_mJ'"),
    ("malformed inline arch (retrain)", ["retrain", "--arch", "{stage0.depth: 1"], 2,
     r"--arch: '\{stage0\.depth: 1' is not valid YAML"),
    ("arch missing labels (retrain)", ["retrain", "--arch", "{stage0.depth: 1}"], 2,
     r"field 'arch': arch: missing key 'stage0\.layer0\.op'"),
    ("arch value outside choices (trial)", [*TRIAL, "--supernet", "<ckpt>", "--arch", "<bad_arch>"], 2,
     r"arch\['stage1\.layer0\.op'\]: got 'winograd'; expected one of \['conv'"),
    ("malformed inline arch (trial)", [*TRIAL, "--supernet", "<ckpt>", "--arch", "{stage0.depth: 1"], 2,
     r"--arch .*not valid JSON"),
    ("arch file missing (trial)", [*TRIAL, "--supernet", "<ckpt>", "--arch", "<tmp>/none.json"], 2,
     r"--arch: no such file '.*none\.json'; give inline JSON"),
    # data
    ("data dir for bundled digits", ["train-supernet", "--dataset", "digits", "--data-dir", "<dir>"], 2,
     r"field 'data_dir': dataset 'digits' ships with scikit-learn and reads no data directory"),
    ("data dir for bundled digits (data)", ["data", "digits", "--data-dir", "<dir>"], 2,
     r"--data-dir: dataset 'digits' ships with scikit-learn and reads no data directory"),
    ("missing data dir", ["train", "--data-dir", "<tmp>/no_such_dir"], 2,
     r"field 'data_dir': '.*no_such_dir' is not a directory"),
    ("unknown dataset", ["data", "cifar10"], 2, r"dataset: unknown name 'cifar10'; expected one of \["),
    ("empty Fashion-MNIST dir", ["data", "fashion_mnist", "--data-dir", "<dir>"], 2,
     r"Fashion-MNIST not found: .*a_dir.*apt-get install -y dataset-fashion-mnist"),
    # outputs
    ("output is a file", ["train-supernet", "--output", "<file>"], 2, r"field 'output': '.*a_file' is a file"),
    ("output under a file", ["train", "--dataset", "digits", "--output", "<file>/run"], 2,
     r"field 'output': '.*a_file/run' lies under '.*a_file', which is a file"),
    ("retrain output is a file", ["retrain", "--arch", "all_conv", "--output", "<file>"], 2,
     r"field 'output': '.*a_file' is a file"),
    ("search-space out is a dir", ["search-space", "cv_small", "--out", "<dir>"], 2,
     r"--out: '.*a_dir' is a directory; give a file name"),
    ("search-space out under a file", ["search-space", "cv_small", "--out", "<file>/space.json"], 2,
     r"--out: '.*a_file/space\.json' lies under '.*a_file', which is a file"),
    ("search-space out in a missing folder", ["search-space", "cv_small", "--out", "<tmp>/no/space.json"], 2,
     r"--out: the folder '.*/no' does not exist"),
    ("unknown space", ["search-space", "cv_huge", "--info"], 2, r"cv_huge"),
    ("translation space for train-supernet", ["train-supernet", "--space", "nlp_small"], 2,
     r"field 'space': 'nlp_small' is a translation space; train it with `nni-shiftadd train-supertransformer"),
    ("translation space for plot subnet", ["plot", "subnet", "--space", "nlp_small", "--arch", "<arch>", "--out",
                                           "<tmp>/s.png"], 2, r"--space: 'nlp_small' is a translation space"),
    # checkpoints
    ("resume from a missing file", ["train-supernet", "--resume", "<tmp>/none.ckpt"], 2,
     r"field 'resume': no such checkpoint '.*none\.ckpt'"),
    ("resume from a truncated checkpoint", ["train-supernet", *TINY, "--resume", "<truncated>", "--output", "<out>"],
     2, r"field 'resume': .*truncated\.ckpt: not a readable checkpoint \(truncated or corrupt"),
    ("resume from a code-carrying pickle", ["train-supernet", *TINY, "--resume", "<code>", "--output", "<out>"], 2,
     r"field 'resume': .*code\.ckpt: refused: .*Python object.*\(posix\.system\)"),
    ("resume from a foreign checkpoint", ["train-supernet", *TINY, "--resume", "<foreign>", "--output", "<out>"], 2,
     r"field 'resume': .*foreign\.ckpt is not a checkpoint of `nni-shiftadd train-supernet`"),
    ("trial on a truncated checkpoint", [*TRIAL, "--supernet", "<truncated>", "--arch", "<arch>"], 2,
     r"truncated\.ckpt: not a readable checkpoint \(truncated or corrupt"),
    ("trial on random bytes", [*TRIAL, "--supernet", "<garbage>", "--arch", "<arch>"], 2,
     r"garbage\.ckpt: not a readable checkpoint"),
    ("trial on a code-carrying pickle", [*TRIAL, "--supernet", "<code>", "--arch", "<arch>"], 2,
     r"code\.ckpt: refused"),
    ("trial on a foreign checkpoint", [*TRIAL, "--supernet", "<foreign>", "--arch", "<arch>"], 2,
     r"foreign\.ckpt: not a supernet checkpoint"),
    ("trial on a missing checkpoint", [*TRIAL, "--supernet", "<tmp>/none.ckpt", "--arch", "<arch>"], 2,
     r"none\.ckpt'?: no such file"),
    ("retrain from a truncated supernet", ["retrain", "--arch", "all_conv", "--supernet", "<truncated>"], 2,
     r"field 'supernet': .*truncated\.ckpt: not a readable checkpoint"),
    ("retrain from a code-carrying pickle", ["retrain", "--arch", "all_conv", "--supernet", "<code>"], 2,
     r"field 'supernet': .*code\.ckpt: refused"),
    ("plot weights of a truncated checkpoint", ["plot", "weights", "--supernet", "<truncated>", "--out",
                                                "<tmp>/w.png"], 2, r"truncated\.ckpt: not a readable checkpoint"),
    ("plot into a folder", ["plot", "subnet", "--space", "cv_small", "--arch", "<arch>", "--out", "<dir>"], 2,
     r"--out: '.*a_dir' is a folder; give a file name"),
    ("plot without a format", ["plot", "subnet", "--space", "cv_small", "--arch", "<arch>", "--out", "<tmp>/fig"],
     2, r"--out: '.*fig' has no figure format suffix; expected one of \[.*'\.png'"),
    ("trial negative threads", [*TRIAL, "--supernet", "<ckpt>", "--arch", "<arch>", "--threads=-1"], 2,
     r"field 'threads': must be null or >= 1, got -1"),
    ("plot weights of a code-carrying pickle", ["plot", "weights", "--supernet", "<code>", "--out", "<tmp>/w.png"],
     2, r"code\.ckpt: refused"),
    # the demo and nnictl: checked before any training starts
    ("demo negative timeout", ["demo", "--timeout-minutes", "-5", "--output", "<out>"], 2,
     r"field 'timeout_minutes': must be > 0, got -5\.0"),
    ("demo port out of range", ["demo", "--port", "70000", "--output", "<out>"], 2,
     r"field 'port': got 70000; expected a TCP port in 1-65535"),
    ("demo unresolvable host", ["demo", "--host", "no-such-host.invalid", "--output", "<out>"], 2,
     r"field 'host': cannot resolve 'no-such-host\.invalid'"),
    ("demo host of another machine", ["demo", "--host", "192.0.2.1", "--output", "<out>"], 2,
     r"field 'host': '192\.0\.2\.1' .*is not an address of this machine"),
    ("demo zero concurrency", ["demo", "--concurrency", "0", "--output", "<out>"], 2,
     r"field 'concurrency': must be >= 1, got 0"),
    ("demo output is a file", ["demo", "--output", "<file>"], 2, r"field 'output': '.*a_file' is a file"),
    ("demo bad supernet override", ["demo", "--supernet-overrides", "{lr: fast}", "--output", "<out>"], 2,
     r"supernet_cv_small\.yaml: field 'lr': got 'fast'; expected float"),
    ("demo unknown preset", ["demo", "--preset", "cv_tiny", "--output", "<out>"], 2,
     r"strategy preset 'cv_tiny': no such file.*shipped presets are \["),
    ("create port out of range", ["create", "--config", "examples/fashion_mnist/config.yml", "--port", "70000"], 2,
     r"--port: got 70000; expected a TCP port in 1-65535"),
    ("create unresolvable host", ["create", "--config", "examples/fashion_mnist/config.yml", "--host",
                                  "no-such-host.invalid"], 2, r"--host: cannot resolve 'no-such-host\.invalid'"),
    ("create missing config", ["create", "--config", "<tmp>/none.yml"], 2, r"--config: no such experiment config"),
]


@pytest.mark.parametrize("case, argv, status, message", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_one_named_error(case: str, argv: list[str], status: int, message: str, files: dict[str, str],
                                      capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the demo's and create's default recipes are relative to the checkout
    args = [re.sub(r"<(\w+)>", lambda m: files[m.group(1)], a) for a in argv]
    started = time.monotonic()
    code = main(args)
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == status, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and re.match(rf"nni-shiftadd {args[0]}( \w+)?: error: ", lines[0]), err
    assert re.search(message, err, re.S), err
    assert "Traceback" not in err
    # nothing expensive started: no run folder, no supernet, no checkpoint
    out = Path(files["out"])
    assert not (out / "supernet").exists() and not (out / "checkpoints").exists(), case
    assert elapsed < 60, f"{case}: took {elapsed:.0f} s to fail"


def test_no_pickled_code_ran() -> None:
    assert not Path("/tmp/nni-shiftadd-pwned").exists()


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("5E-4", 5e-4), ("1.0e6", 1e6), ("-2.5e+3", -2500.0), (".5", 0.5), ("3.", 3.0), ("1e3", 1000.0),
    ("010", 10), ("-7", -7), ("0x1F", 31), ("0o17", 15), (".inf", float("inf")),
    ("true", True), ("False", False), ("TRUE", True),
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"), ("1:30", "1:30"), ("e3", "e3"),
])
def test_numbers_and_booleans_parse_as_written(text: str, value: Any) -> None:
    assert load_yaml_text(f"x: {text}") == {"x": value}
    assert type(load_yaml_text(text)) is type(value)


def test_scientific_notation_in_recipes_and_flags(tmp_path: Path) -> None:
    cfg = parse_yaml(SupernetConfig, "dataset: digits\nlr: 1e-3\nweight_decay: 5E-4\n", "recipe.yaml")
    assert (cfg.lr, cfg.weight_decay) == (1e-3, 5e-4)
    from nni_shiftadd.cli import build_parser, recipe_overrides as _overrides

    args = build_parser().parse_args(["train-supernet", "--lr", "1e-3", "--kl-weight", "1.0e6"])
    assert _overrides(args, SupernetConfig) == {"lr": 1e-3, "kl_weight": 1e6}
    with pytest.raises(ConfigError, match=r"field 'warmup_epochs': got 'yes'; expected int"):
        parse_yaml(SupernetConfig, "warmup_epochs: yes\n", "recipe.yaml")


def test_freeze_names_the_label() -> None:
    spec = load_space("cv_small")
    space = HybridCVSpace(spec, "none")
    arch = baseline_arch(spec, "conv")
    with pytest.raises(ValueError, match=r"unknown key 'stage9\.depth'.*has the keys \['stage0\.depth'"):
        space.freeze({**arch, "stage9.depth": 1})
    with pytest.raises(ValueError, match=r"arch\['stage0\.layer0\.op'\]: got 'mul'; expected one of \['conv'"):
        space.freeze({**arch, "stage0.layer0.op": "mul"})
    assert isinstance(space.freeze(arch), torch.nn.Module)


# --- faults ----------------------------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nni_shiftadd.cli", *args]


def _wait_for(predicate: Any, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended early: {proc.stderr.read().decode()[-3000:] if proc.stderr else ''}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_jobs_on_one_folder_and_a_stale_lock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--limit-train-batches", "60", "--output", str(out)]
    first = subprocess.Popen(_cli("train-supernet", *args), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (out / "checkpoints").is_dir(), 120, first)  # training: the lock is held
        holder = read_holder(out)
        assert holder is not None and holder["pid"] == first.pid and "train-supernet" in holder["command"]
        assert main(["train-supernet", *TINY, "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert re.search(rf"output: '{re.escape(str(out))}' is in use by another running job \(pid {first.pid}, "
                         r"'nni-shiftadd train-supernet --dataset digits", err), err
        assert main(["demo", "--output", str(out)]) == 2  # any command writing there refuses
        assert f"pid {first.pid}" in capsys.readouterr().err
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    # the killed job's record is left behind, its flock is gone: the next job takes over and says so
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid
    assert read_holder(out) is None
    assert main(["train-supernet", *TINY, "--resume", "never", "--overwrite", "true", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"took over the lock of '{out}' left by pid {first.pid}" in err and "no longer running" in err, err
    assert (out / LOCK_NAME).read_text() == ""  # released at the end


def test_lock_in_process(tmp_path: Path) -> None:
    with output_lock(tmp_path / "x") as folder:
        assert read_holder(folder)["pid"] == os.getpid()
        with pytest.raises(OutputLockedError, match=rf"in use by another running job \(pid {os.getpid()}"):
            acquire(folder)
    assert read_holder(tmp_path / "x") is None
    with output_lock(tmp_path / "x"):  # free again
        pass


def _step_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("epoch=*-step=*.ckpt"))


def test_corrupt_last_checkpoint_falls_back_to_the_previous_good_one(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    cfg = {"dataset": "digits", "batch_size": 16, "limit_train_batches": 6, "checkpoint_every": 3, "eval_archs": 0,
           "limit_eval_batches": 1, "bn_calibration_batches": 1, "warmup_epochs": 0, "epochs": 1,
           "output": str(out)}
    train_supernet(from_dict(SupernetConfig, cfg))
    ckpts = out / "checkpoints"
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(last)
    step = _step_files(ckpts)
    assert step, list(ckpts.iterdir())
    assert main(["train-supernet", *TINY, "--epochs", "2", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert re.search(rf"resuming from {re.escape(str(step[0]))} \(global step 6\); passed over: .*last\.ckpt: not a "
                     r"readable checkpoint \(truncated or corrupt", err), err[-3000:]
    assert load_checkpoint(last)["global_step"] == 12
    # every checkpoint unusable: an error naming them and the way out, nothing trained over them
    for path in ckpts.glob("*.ckpt"):
        path.write_bytes(b"\0" * 100)
    assert main(["train-supernet", *TINY, "--epochs", "2", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"field 'resume': no usable checkpoint in .*checkpoints to resume from: .*last\.ckpt: not a "
                     r"readable checkpoint.*Start afresh with --resume never", err), err


def test_nan_stop_then_resume_with_a_sane_lr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    cfg = {"dataset": "digits", "batch_size": 16, "limit_train_batches": 12, "checkpoint_every": 5, "eval_archs": 0,
           "limit_eval_batches": 1, "bn_calibration_batches": 1, "warmup_epochs": 0, "output": str(out)}
    forward, calls = HybridCVSpace.forward, {"n": 0}

    def poisoned(self: HybridCVSpace, x: torch.Tensor) -> torch.Tensor:
        y = forward(self, x)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 8:  # global step 7
                return y * float("nan")
        return y

    with monkeypatch.context() as m:
        m.setattr(HybridCVSpace, "forward", poisoned)
        with pytest.raises(FloatingPointError, match=r"loss is nan at global step 7 .*arch \{'stage0\.depth'.*the "
                           rf"last good checkpoint is {re.escape(str(out))}/checkpoints/last\.ckpt \(global step 5, "
                           r"all tensors finite\)"):
            train_supernet(from_dict(SupernetConfig, {**cfg, "lr": 0.02}))
    state = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 5 and not (out / "metrics.json").exists()
    result = train_supernet(from_dict(SupernetConfig, {**cfg, "lr": 1e-3}))
    assert result["global_step"] == 12 and result["resumed_from"].endswith("last.ckpt")
    assert result["recipe_changes"] == {"lr": [0.02, 1e-3]}
    groups = load_checkpoint(out / "checkpoints" / "last.ckpt")["optimizer_states"][0]["param_groups"]
    assert {g["initial_lr"] for g in groups} == {1e-3}  # the new lr applied, not the checkpoint's
    with pytest.raises(ConfigError, match=r"field 'batch_size': 32 differs from 16 of the checkpoint"):
        train_supernet(from_dict(SupernetConfig, {**cfg, "batch_size": 32, "epochs": 2}))


def test_divergence_with_a_real_lr_writes_no_bad_checkpoint(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: ``--lr 1000000 --checkpoint-every 3``, then the same with ``--lr 0.001``."""
    out = tmp_path / "run"
    args = ["train-supernet", *TINY, "--limit-train-batches", "12", "--output", str(out)]
    assert main([*args, "--lr", "1000000"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.search(r"(loss is nan|the run diverged, \d+ tensor\(s\) hold NaN/Inf)", errors[0])
    for path in (out / "checkpoints").glob("*.ckpt"):
        state = load_checkpoint(path)
        assert not [k for k, v in state["state_dict"].items() if v.is_floating_point() and not v.isfinite().all()]
    assert main([*args, "--lr", "1e-3"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"] == 12


def test_checkpoint_writer_refuses_non_finite_tensors(tmp_path: Path) -> None:
    io = SafeCheckpointIO()
    good = {"global_step": 3, "state_dict": {"w": torch.ones(2)}, "optimizer_states": [{"state": {}}]}
    io.save_checkpoint(good, tmp_path / "last.ckpt")
    bad = {"global_step": 4, "state_dict": {"w": torch.tensor([1.0, float("inf")])},
           "optimizer_states": [{"state": {0: {"exp_avg_sq": torch.tensor([float("nan")])}}}]}
    with pytest.raises(NonFiniteCheckpointError, match=r"global step 4: the run diverged, 2 tensor\(s\) hold NaN/Inf: "
                       r"state_dict\.w, optimizer_states\[0\]\.state\.0\.exp_avg_sq"):
        io.save_checkpoint(bad, tmp_path / "last.ckpt")
    assert load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 3  # the good one is still there
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


# --- a running search killed with kill -9 ---------------------------------------------------------------------

@pytest.fixture()
def nni_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_nni(monkeypatch, tmp_path)
    yield tmp_path
    from nni_shiftadd.experiment.nnictl import nnictl

    nnictl("stop", "--all", check=False)


@pytest.mark.slow
@NNI_EXPERIMENTS
def test_kill9_of_a_running_search_resumes_without_reevaluating(nni_home: Path, files: dict[str, str],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from nni_shiftadd.experiment.demo import experiment_config
    from nni_shiftadd.experiment.nnictl import Rest, free_port, register, stop
    from nni_shiftadd.strategy.tuner import search_space_json

    register()
    search = nni_home / "search"
    search.mkdir()
    space_file = nni_home / "search_space.json"
    space_file.write_text(json.dumps(search_space_json("cv_small")))
    preset = {"iterations": 1, "population": 3, "parents": 1, "mutation": 0, "crossover": 0, "baselines": ["conv"],
              "constraints": {}}
    expected = 1 + 3  # the baseline and one generation
    config = experiment_config(space="cv_small", preset="cv_small", preset_overrides=preset, search_dir=search,
                               search_space_file=space_file, supernet=Path(files["ckpt"]), eval_batches=1,
                               calibration_batches=1, batch_size=32, threads=1, concurrency=2, max_trials=20,
                               name="nni-shiftadd kill -9 test")
    config_file = nni_home / "config.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port(21000 + os.getpid() % 9000)
    assert main(["create", "--config", str(config_file), "--port", str(port)]) == 0
    first_id = re.search(r"experiment (\w+)", capsys.readouterr().out).group(1)
    state = search / "state.json"

    def evaluated() -> int:
        try:
            return len(json.loads(state.read_text())["results"])
        except (OSError, ValueError):
            return 0

    _wait_for(lambda: evaluated() >= 1, 240)
    holder = read_holder(search)
    assert holder is not None and holder["experiment"] == first_id, holder
    # a second search on the same folder is refused at start, naming the first one
    other = free_port(port + 1)
    assert main(["create", "--config", str(config_file), "--port", str(other)]) == 1
    err = capsys.readouterr().err
    assert f"is in use by another running job (pid {holder['pid']}" in err and first_id in err, err[-2000:]
    os.kill(int(holder["pid"]), signal.SIGKILL)  # the tuner (NNI's dispatcher process)
    before = {json.dumps(r["arch"], sort_keys=True) for r in json.loads(state.read_text())["results"]}
    stop(first_id)
    assert main(["create", "--config", str(config_file), "--port", str(port)]) == 0
    second_id = re.search(r"experiment (\w+)", capsys.readouterr().out).group(1)
    results = search / "results.json"
    _wait_for(lambda: results.is_file() and json.loads(results.read_text())["done"], 300)
    final = json.loads(results.read_text())
    assert not final["error"] and final["evaluated"] == expected
    trials = Rest(port).trials()
    rerun = [json.dumps(json.loads(t["hyperParameters"][0])["parameters"], sort_keys=True) for t in trials]
    assert not before & set(rerun), "an architecture evaluated before the kill was evaluated again"
    stop(second_id)

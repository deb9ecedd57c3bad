"""A real ``nnictl create`` experiment (evolution tuner + supernet trials) and its web UI.

One small experiment per half: a cv_small supernet trained for 3 batches, then 4 trials (the all-Conv and all-Add
baselines and a first generation of 2); and a tiny SuperTransformer trained for 4 updates, then 3 translation trials.
The default suite checks that the web UI and REST API listen on 127.0.0.1 only and that the REST API returns the
hardware metrics; the ``browser`` tests (``.venv/bin/pytest -m browser``) open the trials tables in headless Chromium
and save ``runs/webui/trials.png`` and ``runs/webui/trials_translation.png``: the image one is part of the default
run, the translation one (its validation loss, BLEU and FLOPs columns; a minute of its own) is also ``slow``.

The experiment runs with its own ``HOME`` (NNI keeps its experiments under ``~/nni-experiments``) and
``NNI_CONFIG_DIR`` (the tuner registration), and is always stopped at teardown. Nothing here connects to an
address that is not on this machine.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import NNI_EXPERIMENTS, isolate_nni

from nni_shiftadd.experiment.demo import experiment_config
from nni_shiftadd.tasks.kinds import task_kind_of
from nni_shiftadd.experiment.nnictl import Rest, create, free_port, listening_addresses, nnictl, register, stop, wait
from nni_shiftadd.trial_host import running_host

pytestmark = NNI_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "runs" / "webui"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# PLATFORM.md: without the background-networking flags Chromium keeps trying to reach Google's services.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1800,1000")
# No constraints: with cv_small's energy budget the first generation is drawn through the Eyeriss cost model
# (about 10 s on 2 cores), which this test does not need.
PRESET = {"iterations": 1, "population": 2, "parents": 1, "mutation": 0, "crossover": 0,
          "baselines": ["conv", "add"], "constraints": {}}
TRIALS = 4  # 2 baselines + a population of 2
HARDWARE_METRICS = ("energy_mJ", "latency_ms")


def _final_metrics(trial: dict[str, Any]) -> dict[str, Any]:
    """A trial's final result from the REST API (``finalMetricData[0].data`` is JSON of a JSON string)."""
    data = json.loads(trial["finalMetricData"][0]["data"])
    return json.loads(data) if isinstance(data, str) else data


def _local_ipv4_addresses() -> set[str]:
    """The IPv4 addresses of this machine's own interfaces (the kernel's LOCAL routes in ``/proc/net/fib_trie``)."""
    found: set[str] = set()
    table = Path("/proc/net/fib_trie")
    if table.is_file():
        previous = ""
        for line in table.read_text().splitlines():
            if "/32 host LOCAL" in line and previous:
                found.add(previous)
            fields = line.split()
            previous = fields[1] if len(fields) == 2 and fields[0] in ("|--", "+--") else ""
    return found


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A finished small experiment, still running (its web UI and REST API up); stopped at teardown."""
    from nni_shiftadd.strategy.tuner import search_space_json
    from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet

    tmp = tmp_path_factory.mktemp("webui")
    experiment_ids: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        isolate_nni(env, tmp)
        try:
            supernet = SupernetConfig(space="cv_small", epochs=1, batch_size=32, limit_train_batches=3, eval_archs=0,
                                      bn_calibration_batches=1, limit_eval_batches=1, output=str(tmp / "supernet"))
            train_supernet(supernet)
            register()
            search_dir = tmp / "search"
            search_dir.mkdir()
            space_file = tmp / "search_space.json"
            space_file.write_text(json.dumps(search_space_json("cv_small")))
            results = search_dir / "results.json"

            def finished() -> bool:
                if not results.is_file():
                    return False
                state = json.loads(results.read_text())
                return bool(state["done"] or state["error"])

            # the trials run as the demo runs them: forks of a warm trial host
            with running_host(task_kind_of(None, "cv_small").trial_preload, tmp / "trial_host.log") as trial_host:
                config = experiment_config(space="cv_small", preset="cv_small", preset_overrides=PRESET,
                                           search_dir=search_dir, search_space_file=space_file,
                                           supernet=tmp / "supernet" / "checkpoints" / "last.ckpt", eval_batches=1,
                                           calibration_batches=1, batch_size=64, threads=1, concurrency=2,
                                           max_trials=10, name="nni-shiftadd webui test", trial_host=trial_host)
                config_file = tmp / "config.yml"
                config_file.write_text(yaml.safe_dump(config, sort_keys=False))
                port = free_port(20000 + os.getpid() % 10000)  # below the ephemeral range (32768-)
                experiment_ids.append(create(config_file, port))
                trials = wait(Rest(port), finished, timeout=300, poll=1.0)
            yield {"port": port, "id": experiment_ids[0], "trials": trials, "tmp": tmp, "config": config_file,
                   "results": json.loads(results.read_text())}
        finally:
            for experiment_id in experiment_ids:
                stop(experiment_id)
            # anything else started under this HOME (e.g. a `create` that failed after the manager came up)
            nnictl("stop", "--all", check=False)


def test_webui_listens_on_loopback_only(experiment: dict[str, Any]) -> None:
    port = experiment["port"]
    assert listening_addresses(port) == {"127.0.0.1"}

    # the web UI's port answers on loopback and refuses connections to this machine's other addresses
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    for address in sorted(_local_ipv4_addresses() - {"127.0.0.1"}):
        if address.startswith("127."):
            continue
        with socket.socket() as s:
            s.settimeout(5)
            assert s.connect_ex((address, port)) == errno.ECONNREFUSED, f"port {port} answers on {address}"

    # the REST API on 127.0.0.1: the finished trials with their hardware metrics
    assert not experiment["results"]["error"]
    assert experiment["results"]["done"]
    trials = Rest(port).trials()
    assert len(trials) == TRIALS
    assert {t["status"] for t in trials} == {"SUCCEEDED"}
    # every trial ran as a fork of the warm host, none fell back to a fresh process
    host_log = (experiment["tmp"] / "trial_host.log").read_text()
    assert host_log.count("exited with status 0") == TRIALS, host_log[-2000:]
    for trial in trials:
        metrics = _final_metrics(trial)
        for key in ("default", "accuracy", *HARDWARE_METRICS):
            assert isinstance(metrics[key], float), (key, metrics)
        assert metrics["energy_mJ"] > 0 and metrics["latency_ms"] > 0


def test_create_listens_on_the_address_asked_for(experiment: dict[str, Any]) -> None:
    """``create(host=...)`` is the way to reach the web UI from elsewhere: a second experiment on 0.0.0.0, stopped
    as soon as it is up (no trial needs to finish)."""
    config = yaml.safe_load(experiment["config"].read_text())
    search_dir = experiment["tmp"] / "search_any"
    search_dir.mkdir()
    config.update({"trialCommand": "true", "trialConcurrency": 1, "maxTrialNumber": 1,
                   "trialCodeDirectory": str(search_dir), "experimentName": "nni-shiftadd webui test (0.0.0.0)"})
    config["tuner"]["classArgs"]["output"] = str(search_dir)
    config_file = experiment["tmp"] / "config_any.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port(experiment["port"] + 1)
    experiment_id = create(config_file, port, host="0.0.0.0")
    try:
        assert listening_addresses(port) == {"0.0.0.0"}
        assert Rest(port).status()
    finally:
        stop(experiment_id)
    assert listening_addresses(port) == set()


def _chromium() -> Any:
    """Headless Debian Chromium through Debian's chromedriver; fails (never skips) when they are missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"the browser test needs Debian's Chromium and its driver ({', '.join(missing)} missing): "
                    "install them with `apt-get install chromium chromium-driver` (./install.sh --test does "
                    "this when run as root)", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser test needs selenium: pip install -e '.[test]' (./install.sh --test)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = Path(os.environ["HOME"]) / f"chromium-profile-{time.monotonic_ns()}"  # fresh, inside the test HOME
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def _show_columns(driver: Any, base: str, headers: set[str], trials: int, screenshot: str) -> str:
    """Open the trials table of the web UI at ``base``, add the metric columns ``headers`` through its
    "Add/Remove columns" dialog, save a screenshot and return the page's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 60)

    def text() -> str:
        return driver.find_element(By.TAG_NAME, "body").text

    # the trials detail page: NNI lists every key of a dict final result as a column it can show
    driver.get(f"{base}/detail")
    wait.until(lambda _: "Trial jobs" in text() and text().count("SUCCEEDED") >= trials)
    shown = {h.text.strip() for h in driver.find_elements(By.CSS_SELECTOR, "[role=columnheader]")}
    if not headers <= shown:
        driver.find_element(By.XPATH, "//button[normalize-space()='Add/Remove columns']").click()
        dialog = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "[role=dialog]"))
        for header in sorted(headers - shown):
            # a Fluent UI checkbox: <label><div>(check mark icon)</div><span>{header}</span></label>
            dialog.find_element(By.XPATH, f".//label[.//span[normalize-space()='{header}']]").click()
        dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']").click()

    def header_texts(_: Any) -> set[str] | bool:
        found = {h.text.strip() for h in driver.find_elements(By.CSS_SELECTOR, "[role=columnheader]")}
        return found if headers <= found else False

    shown = wait.until(header_texts)
    table = driver.find_element(By.ID, "tableList")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", table)
    time.sleep(0.5)  # let the table settle before the screenshot
    driver.save_screenshot(str(SCREENSHOTS / screenshot))
    assert headers <= shown, shown
    return text()


def _values_shown(page: str, trials: list[dict[str, Any]], metrics: tuple[str, ...]) -> None:
    """Every trial's value of every metric is on the page (NNI prints the numbers as JavaScript does: in positional
    notation down to 1e-7, e.g. 9.12e-06 as 0.00000912, possibly rounded)."""
    import numpy as np

    for trial in trials:
        values = _final_metrics(trial)
        for metric in metrics:
            value = values[metric]
            rounded = [float(f"{value:.{digits}g}") for digits in range(4, 8)]
            shown_as = {repr(value), str(value), *(f"{value:.{digits}g}" for digits in range(4, 8)),
                        *(np.format_float_positional(v, trim="-") for v in (value, *rounded))}
            assert any(v in page for v in shown_as), (metric, value)


@pytest.mark.browser
def test_webui_trials_table_shows_hardware_columns(experiment: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = f"http://127.0.0.1:{experiment['port']}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver = _chromium()
    try:
        # the overview page: the experiment is there, with its trials
        driver.get(f"{base}/oview")
        WebDriverWait(driver, 60).until(
            lambda _: experiment["id"] in driver.find_element(By.TAG_NAME, "body").text)
        driver.save_screenshot(str(SCREENSHOTS / "overview.png"))
        headers = {f"{metric} (metric)" for metric in HARDWARE_METRICS}
        page = _show_columns(driver, base, headers, TRIALS, "trials.png")
        assert all(h in page for h in headers)
        _values_shown(page, experiment["trials"], HARDWARE_METRICS)
    finally:
        driver.quit()


# --- translation: the same tuner and trial on a SuperTransformer, with its own columns -------------------------------

NLP_PRESET = {"iterations": 1, "population": 2, "parents": 1, "mutation": 0, "crossover": 0, "baselines": ["attn"],
              "constraints": {}}
NLP_TRIALS = 3  # the all-Attn baseline + a population of 2
NLP_METRICS = ("valid_loss", "bleu", "energy_mJ", "latency_ms", "flops_G", "mult_G", "add_G", "shift_G", "params_M")


@pytest.fixture(scope="module")
def translation_experiment(tiny_translation: dict[str, Path],
                           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A finished small translation experiment (a 4-update SuperTransformer of the tiny space on the trans-de-en
    slice, 3 trials), still running; stopped at teardown."""
    from nni_shiftadd.config import from_dict
    from nni_shiftadd.strategy.tuner import search_space_json
    from nni_shiftadd.tasks.supertransformer import LAST, SuperTransformerConfig, train_supertransformer

    tmp = tmp_path_factory.mktemp("webui_nlp")
    experiment_ids: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        isolate_nni(env, tmp)
        try:
            space = str(tiny_translation["space"])
            train_supertransformer(from_dict(SuperTransformerConfig, {
                "space": space, "data": {"binarized": str(tiny_translation["data_bin"])}, "max_updates": 4,
                "max_tokens": 512, "warmup_updates": 2, "save_interval_updates": 4, "baselines": [],
                "eval_archs": 0, "output": str(tmp / "supernet")}))
            register()
            search_dir = tmp / "search"
            search_dir.mkdir()
            space_file = tmp / "search_space.json"
            space_file.write_text(json.dumps(search_space_json(space)))
            results = search_dir / "results.json"

            def finished() -> bool:
                return results.is_file() and bool(json.loads(results.read_text())["done"])

            with running_host(task_kind_of(None, "nlp_tiny").trial_preload, tmp / "trial_host.log") as trial_host:
                config = experiment_config(space=space, preset="nlp_tiny", preset_overrides=NLP_PRESET,
                                           search_dir=search_dir, search_space_file=space_file,
                                           supernet=tmp / "supernet" / "checkpoints" / LAST, concurrency=2,
                                           max_trials=10, name="nni-shiftadd webui test (translation)",
                                           bleu_sentences=20, beam=1, threads=1, trial_host=trial_host)
                config_file = tmp / "config.yml"
                config_file.write_text(yaml.safe_dump(config, sort_keys=False))
                port = free_port(22000 + os.getpid() % 9000)
                experiment_ids.append(create(config_file, port))
                trials = wait(Rest(port), finished, timeout=300, poll=1.0)
            yield {"port": port, "id": experiment_ids[0], "trials": trials, "results": json.loads(results.read_text()),
                   "host_log": (tmp / "trial_host.log").read_text()}
        finally:
            for experiment_id in experiment_ids:
                stop(experiment_id)
            nnictl("stop", "--all", check=False)


@pytest.mark.slow
@pytest.mark.browser
def test_webui_shows_translation_trials_with_their_columns(translation_experiment: dict[str, Any]) -> None:
    """The translation search behind nnictl: every trial reports the validation loss (the objective), BLEU and the
    hardware columns, which the web UI's trials table shows."""
    experiment = translation_experiment
    assert not experiment["results"]["error"] and experiment["results"]["done"]
    trials = Rest(experiment["port"]).trials()
    assert len(trials) == NLP_TRIALS and {t["status"] for t in trials} == {"SUCCEEDED"}
    assert experiment["host_log"].count("exited with status 0") == NLP_TRIALS, experiment["host_log"][-2000:]
    for trial in trials:
        metrics = _final_metrics(trial)
        assert metrics["default"] == metrics["valid_loss"] > 0 and 0 <= metrics["bleu"] <= 100
        assert metrics["flops_G"] > 0 and metrics["energy_mJ"] > 0 and metrics["bleu_sentences"] == 20
    assert listening_addresses(experiment["port"]) == {"127.0.0.1"}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver = _chromium()
    try:
        headers = {f"{metric} (metric)" for metric in NLP_METRICS}
        page = _show_columns(driver, f"http://127.0.0.1:{experiment['port']}", headers, NLP_TRIALS,
                             "trials_translation.png")
        _values_shown(page, experiment["trials"], NLP_METRICS)
    finally:
        driver.quit()

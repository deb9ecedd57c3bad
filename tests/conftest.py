"""Shared test set-up."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (pytest.ini): one torch thread each, inherited by the processes the tests
    # start, so that the workers do not oversubscribe the cores
    os.environ["OMP_NUM_THREADS"] = "1"

# NNI experiments (nnictl, NasExperiment) bind the web UI's port and share NNI's state under the user's home: the
# modules that start them run on one xdist worker, one after another (--dist loadgroup)
NNI_EXPERIMENTS = pytest.mark.xdist_group("nni-experiments")


def _loadgroup_broken() -> str:
    """Why ``--dist loadgroup`` would not group the xdist_group tests here, or "": pytest 9.2 ignores the node-id
    suffix through which pytest-xdist up to 3.8 groups them (pytest-xdist#1386), and the NNI experiments would then
    run side by side, their tuners timing out on a loaded machine."""
    import xdist
    from packaging.version import Version

    if Version(pytest.__version__) >= Version("9.2") and Version(xdist.__version__) <= Version("3.8.0"):
        return (f"pytest {pytest.__version__} with pytest-xdist {xdist.__version__} does not group the xdist_group "
                "tests under --dist loadgroup (pytest-xdist#1386): install the versions setup.py's test extra allows "
                "(./install.sh --test)")
    return ""


def pytest_configure(config: pytest.Config) -> None:
    """Refuse ``--dist loadgroup`` where it is known not to group (one clear error instead of flaky NNI tests)."""
    if config.getoption("dist", "no") == "loadgroup" and (reason := _loadgroup_broken()):
        raise pytest.UsageError(reason)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker under ``--dist loadgroup``, stop when a grouped test carries no group in its node id (a
    pytest and pytest-xdist pair the version check above does not know): the run would otherwise go on ungrouped."""
    if getattr(config.option, "loadgroup", False):
        untagged = [item.nodeid for item in items if (groups := sorted({
            str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}))
            and not item.nodeid.endswith("@" + "_".join(groups))]
        if untagged:
            reason = f"--dist loadgroup did not group {untagged[0]} (pytest-xdist#1386)"
            print(f"ERROR: {reason}", file=sys.__stderr__)  # the controller reports only a crashed worker
            raise pytest.UsageError(reason)


@pytest.fixture(scope="session", autouse=True)
def _quiet_nni_at_exit() -> Iterator[None]:
    """NNI stops its experiments again at interpreter exit and logs that through handlers bound to pytest's
    (by then closed) capture streams; point them at the real stderr and keep only errors, so nothing routine is printed
    after pytest's summary line."""
    yield
    for name in ("nni", ""):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__module__.startswith("_pytest"):
                continue
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.stream = sys.__stderr__  # not setStream(): it flushes the closed stream first
                handler.setLevel(logging.ERROR)


def isolate_nni(env: pytest.MonkeyPatch, home: Path) -> None:
    """Give NNI a ``HOME`` of its own (it keeps experiments under ``~/nni-experiments``) and its own
    ``NNI_CONFIG_DIR`` (tuner registrations), keeping the built kernels, prepared data and matplotlib's font cache;
    NNI's tuner and trial processes import this same copy of nni_shiftadd (a checkout or not)."""
    import matplotlib

    import nni_shiftadd
    from nni_shiftadd.cache import cache_root

    env.setenv("NNI_SHIFTADD_CACHE", str(cache_root()))
    env.setenv("MPLCONFIGDIR", os.environ.get("MPLCONFIGDIR") or matplotlib.get_cachedir())
    env.setenv("HOME", str(home / "home"))
    env.setenv("NNI_CONFIG_DIR", str(home / "nni"))
    source = str(Path(nni_shiftadd.__file__).resolve().parents[1])
    env.setenv("PYTHONPATH", os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p))


@pytest.fixture(scope="session")
def trans_de_en_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lines of the real trans-de-en (Debian package; install.sh installs it) that give its first 2,200 sentence
    pairs, written at test time into a temporary folder (GPL data: never committed)."""
    from nni_shiftadd.data.translation import extract_pairs, locate_trans_de_en

    source = locate_trans_de_en()  # a missing dictionary fails here, naming the command that installs it
    keep, count = [], 0
    with open(source, encoding="utf-8", errors="replace") as f:
        for line in f:
            found = extract_pairs([line])
            if found:
                keep.append(line)
                count += len(found)
                if count >= 2200:
                    break
    path = tmp_path_factory.mktemp("trans") / "de-en"
    path.write_text("".join(keep), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_translation(trans_de_en_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """That slice prepared (400 BPE merges) in a cache of its own, and a tiny translation space YAML."""
    from nni_shiftadd.config import from_dict
    from nni_shiftadd.data.translation import TranslationDataConfig, prepare_translation

    root = tmp_path_factory.mktemp("tiny_translation")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NNI_SHIFTADD_CACHE", str(root / "cache"))
        manifest = prepare_translation(from_dict(TranslationDataConfig, {
            "source": str(trans_de_en_slice), "bpe_merges": 400, "valid_size": 200, "test_size": 800}),
            progress=lambda line: None)
    space = root / "tiny.yaml"
    space.write_text(
        "name: tiny\nkind: translation\nqkv_dim: 16\nmax_positions: 128\ndropout: 0.1\n"
        "encoder: {depths: [2], blocks: [attn, attn+conv, attn+shift, attn+add, conv, shift, add], "
        "embed_dims: [32, 16], heads: [2, 1], ffn_dims: [64, 32], kernel_sizes: [3, 5]}\n"
        "decoder: {depths: [2, 1], blocks: [attn, attn+conv, attn+shift, attn+add], embed_dims: [32, 16], "
        "heads: [2, 1], ffn_dims: [64, 32], kernel_sizes: [3, 5], attend: [1, 2]}\n")
    return {"data_bin": Path(manifest["data_bin"]), "raw": Path(manifest["raw"]), "space": space,
            "cache": root / "cache", "source": trans_de_en_slice}

"""The documentation: every Python snippet of README.md and of every page under docs/ runs as written (each file in
its own namespace, its snippets in order, as a reader running them one after the other; a snippet that continues
another says so), the README's first screen holds the two set-up commands, the README stays a short front door
without dated measurements (those live in docs/results.md), and the MkDocs site builds in strict mode (broken links
between pages or to anchors, and pages missing from the nav, fail it)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NNI_EXPERIMENTS

pytestmark = NNI_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SNIPPET_PAGES = [p for p in PAGES if "```python\n" in p.read_text()]
#: Sentences that narrate one run's history; they belong in docs/results.md.
HISTORY = re.compile(r"at commit [0-9a-f]{7}|in one session|in a later session")


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", SNIPPET_PAGES, ids=[str(p.relative_to(ROOT)) for p in SNIPPET_PAGES])
def test_python_snippets_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # NNI keeps its experiments under ~/nni-experiments
    monkeypatch.setenv("NNI_CONFIG_DIR", str(tmp_path / "nni"))
    blocks = _python_blocks(path)
    namespace = {"__name__": path.stem.replace("-", "_")}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)
        if "search = ShiftAddEvolutionStrategy(" in block:  # the search on MySpace filled its generations under 6 uJ
            best = namespace["search"].best()
            assert best is not None and "attn" not in best["arch"].values(), best  # Attn anywhere: 19 uJ or more


def test_the_snippets_are_where_the_tests_expect_them() -> None:
    assert len(_python_blocks(README)) >= 2
    assert sum(len(_python_blocks(p)) for p in PAGES) >= 15
    assert any("search = ShiftAddEvolutionStrategy(" in block for p in PAGES for block in _python_blocks(p))


def test_ci_runs_the_readme_test_command() -> None:
    first_screen = README.read_text().split("---", 1)[0]
    commands = [line for line in re.findall(r"```sh\n(.*?)```", first_screen, flags=re.S)[0].splitlines()
                if line and not line.startswith("#")]
    assert len(commands) == 2
    assert commands[1] in CI.read_text()


def test_readme_is_a_short_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert not HISTORY.search(text), HISTORY.search(text)
    for page in sorted((ROOT / "docs").glob("*.md")):  # every page is linked from the README
        assert f"(docs/{page.name}" in text, page.name


def test_only_the_results_page_names_commits() -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "results.md":
            assert "at commit" not in page.read_text(), page.name


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

"""The README's Python snippets run as written (in order, in one namespace, as a reader running them one after the
other; a snippet that continues another says so), and its first screen holds the two set-up commands."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CI = Path(__file__).resolve().parents[1] / ".ci" / "run"


def test_python_snippets_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # NNI keeps its experiments under ~/nni-experiments
    monkeypatch.setenv("NNI_CONFIG_DIR", str(tmp_path / "nni"))
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
        if "search = ShiftAddEvolution(" in block:  # the search on MySpace filled its generations under 6 uJ
            best = namespace["search"].best()
            assert best is not None and "attn" not in best["arch"].values(), best  # Attn anywhere: 19 uJ or more


def test_ci_runs_the_readme_test_command() -> None:
    first_screen = README.read_text().split("---", 1)[0]
    commands = [line for line in re.findall(r"```sh\n(.*?)```", first_screen, flags=re.S)[0].splitlines()
                if line and not line.startswith("#")]
    assert len(commands) == 2
    assert commands[1] in CI.read_text()

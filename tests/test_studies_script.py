"""``results/studies.sh``, the chain of long studies, run with a stand-in for the CLI that records its calls: a
study whose committed results are complete is not run again, the others resume from their ledgers in order."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_CLI = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
"""


def _run(tmp_path: Path, **env: str) -> tuple[list[str], str]:
    calls = tmp_path / "calls.txt"
    calls.unlink(missing_ok=True)
    proc = subprocess.run(["bash", "results/studies.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CLI": str(tmp_path / "cli"), "CALLS": str(calls), **env})
    assert proc.returncode == 0, proc.stderr
    return calls.read_text().splitlines(), proc.stdout + proc.stderr


def test_complete_studies_are_not_run_again(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    shutil.copy(ROOT / "results" / "studies.sh", tmp_path / "results" / "studies.sh")
    (tmp_path / "cli").write_text(FAKE_CLI)
    (tmp_path / "cli").chmod(0o755)
    for name, complete in (("ranking_cv_small", True), ("table4_cv_small", True), ("ranking_nlp_tiny", False)):
        (tmp_path / "results" / name).mkdir()
        (tmp_path / "results" / name / "results.json").write_text(json.dumps({"complete": complete}))
    (tmp_path / "results" / "ranking_cv_small" / "archs.json").write_text("[]")

    calls, log = _run(tmp_path)
    studies = [c.split()[0] + " " + c.split()[1] for c in calls if "--export-ledger" not in c]
    assert studies == ["translation-ranking --config", "reproduce table3"], calls
    assert "ranking_cv_small: complete in results/ranking_cv_small, not run again" in log
    assert "no runs/ranking_nlp_tiny/supernets/uniform_seed1/checkpoints/checkpoint_last.pt to share" in log
    assert (tmp_path / "runs" / "ranking_cv_small" / "archs.json").is_file()  # the ledger is still in runs/
    exports = [c for c in calls if "--export-ledger" in c]
    assert [c.split("--export-ledger ")[1] for c in exports] == ["results/ranking_nlp_tiny", "results/table3_nlp_tiny"]

    calls, _ = _run(tmp_path, RERUN="1")
    assert [c.split()[0] for c in calls if "--export-ledger" not in c] == [
        "ranking", "reproduce", "translation-ranking", "reproduce"]

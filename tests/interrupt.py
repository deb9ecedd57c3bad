"""Stopping a training command at a chosen step, as a kill or a signal would: the helper of the exact-resume tests
of the Lightning runs (``train``, ``retrain``, ``train-supernet``)."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    """The environment of a subprocess that imports this checkout's ``nni_shiftadd``."""
    variables = dict(os.environ)
    variables["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [variables.get("PYTHONPATH")])])
    return variables


def global_step(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])


def stop_at(args: list[str], folder: Path, step: int, signum: int) -> int:
    """Run the command ``args`` until a periodic checkpoint of ``step`` or later is in ``folder``, then send
    ``signum`` (SIGKILL: the run keeps its ``last.ckpt`` of that step; SIGTERM: it stops at the end of the step it is
    in); the step of its ``last.ckpt``."""
    proc = subprocess.Popen(args, env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120

    def reached() -> bool:
        steps = [int(m.group(1)) for p in folder.glob("epoch=*.ckpt") if (m := re.search(r"step=(\d+)", p.name))]
        if not steps or max(steps) < step:
            return False
        with contextlib.suppress(Exception):  # being written
            return signum != signal.SIGKILL or global_step(folder / "last.ckpt") >= step
        return False

    try:
        while time.monotonic() < deadline and proc.poll() is None and not reached():
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be stopped: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signum)
    finally:
        proc.wait()
    return global_step(folder / "last.ckpt")

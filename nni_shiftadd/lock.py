"""Output-folder locks: one job at a time writes into a run's folder.

Two jobs on one output interleave their checkpoints and metrics (two ``train-supernet`` runs), or evaluate the same
architectures twice and overwrite each other's search state (two tuners). Every command that writes a run folder
holds :func:`output_lock` on it for as long as it runs: an advisory ``flock`` on ``<folder>/.nni-shiftadd.lock``,
which also records who holds it (pid, host, command, start time, NNI experiment). The kernel drops a ``flock`` when
its process dies, so the lock of a job killed with ``kill -9`` is free at once; the record it left is recognised
as stale and taken over (and said so).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_NAME = ".nni-shiftadd.lock"


class OutputLockedError(RuntimeError):
    """The output folder is in use by another running job; the message names its pid and command."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


class OutputPathError(ValueError):
    """An output path that cannot be a folder (it is a file, or lies under one)."""


def check_output_dir(path: str | os.PathLike[str], field: str = "output") -> Path:
    """``path`` as a folder to write into: it may exist as a folder or not exist yet, but neither it nor any of
    its parents may be a file. Raises :class:`OutputPathError` naming ``field``; creates nothing."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{field}: {str(p)!r} is a file, not a folder; choose a folder for the run's outputs")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{field}: {str(p)!r} lies under {str(parent)!r}, which is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputPathError(f"{field}: cannot create {str(p)!r}: no write permission in {str(parent)!r}")
            break
    return p


def is_rank_zero() -> bool:
    """False in the worker processes of a distributed run (their rank 0 holds the lock for them)."""
    return all(os.environ.get(name, "0") in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (someone else's included; a zombie, dead but not yet reaped by
    its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux), or the process just ended
        return True


def read_holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the lock of ``folder`` now (its record), or ``None`` when nobody does."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            return _parse(f.read())
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _parse(text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict[str, Any]) -> str:
    parts = [f"pid {record.get('pid', '?')}"]
    if record.get("host") and record["host"] != socket.gethostname():
        parts.append(f"on {record['host']}")
    if record.get("experiment"):
        parts.append(f"NNI experiment {record['experiment']}")
    if record.get("command"):
        parts.append(repr(record["command"][:160]))
    if record.get("started"):
        parts.append(f"since {record['started']}")
    return ", ".join(parts)


def _command() -> str | None:
    """This process's command line, as the user typed it where it was ``nni-shiftadd`` or ``python -m``."""
    if not sys.argv or not sys.argv[0]:
        return None
    program = Path(sys.argv[0])
    python_m = program.name == "__main__.py" and program.parent.name == "cli" and program.parent.parent.name == \
        "nni_shiftadd"  # python -m nni_shiftadd.cli
    name = "nni-shiftadd" if python_m else program.name
    return " ".join([name, *sys.argv[1:]])


@contextmanager
def output_lock(folder: str | os.PathLike[str], field: str = "output", what: str | None = None) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) while the ``with`` block runs.

    Raises :class:`OutputLockedError` at once when a running job holds it, naming that job, and
    :class:`OutputPathError` when ``folder`` cannot be a folder. A distributed run's worker processes (``RANK`` or
    ``LOCAL_RANK`` not 0) take no lock: their rank 0 holds it.
    """
    lock = acquire(folder, field, what)
    try:
        yield Path(folder)
    finally:
        lock.release()


class HeldLock:
    """An acquired output lock (see :func:`acquire`); :meth:`release` frees it."""

    def __init__(self, path: Path | None, handle: Any) -> None:
        self.path, self._handle = path, handle

    def __del__(self) -> None:
        self.release()

    def release(self) -> None:
        if getattr(self, "_handle", None) is None:
            return
        handle, self._handle = self._handle, None
        try:
            handle.seek(0)
            handle.truncate()  # an empty record: free, and nothing stale left to report
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def acquire(folder: str | os.PathLike[str], field: str = "output", what: str | None = None) -> HeldLock:
    """Take the lock of ``folder`` and keep it until :meth:`HeldLock.release` or the process ends (for a
    long-lived holder such as a tuner); errors as :func:`output_lock`."""
    folder = check_output_dir(folder, field)
    if not is_rank_zero():
        return HeldLock(None, None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _parse(handle.read())
        handle.close()
        raise OutputLockedError(
            f"{field}: {str(folder)!r} is in use by another running job ({_describe(holder)}); wait for it to "
            f"finish, stop it (kill {holder.get('pid', '<pid>')}), or point {field} at another folder", holder) from None
    handle.seek(0)
    stale = _parse(handle.read())
    if stale.get("pid") and stale.get("pid") != os.getpid():
        state = "no longer running" if not process_alive(int(stale["pid"])) else "its lock was released"
        print(f"nni-shiftadd: {field}: took over the lock of {str(folder)!r} left by {_describe(stale)} ({state})",
              file=sys.stderr, flush=True)
    experiment = None
    log_dir = os.environ.get("NNI_LOG_DIRECTORY")  # set in NNI's tuner and trial processes
    if log_dir:
        experiment = Path(log_dir).parent.name
    record = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "command": _command(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "experiment": experiment}
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(record))
    handle.flush()
    return HeldLock(path, handle)

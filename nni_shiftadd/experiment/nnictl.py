"""Launching and watching ``nnictl`` experiments: tuner registration, creation on loopback, the REST API, and
the listening sockets that prove where the web UI is reachable.

NNI's manager calls ``app.listen(port)`` without a host, so its web UI and REST API listen on every interface, and
``nnictl`` has no option to change that. Experiments started through :func:`create` preload ``loopback.js`` into
the manager (``NODE_OPTIONS=--require``), which makes such a server listen on ``host`` (127.0.0.1 by default).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

NNICTL = "from nni.tools.nnictl.nnictl import parse_args; parse_args()"
FINISHED = ("DONE", "STOPPED", "ERROR", "NO_MORE_TRIAL")
TRIAL_ACTIVE = ("WAITING", "RUNNING", "UNKNOWN")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExperimentError(RuntimeError):
    """``nnictl`` failed or the experiment ended in an error; the message holds what NNI said."""


def nnictl(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nnictl args`` with this interpreter (the one that has nni and nni_shiftadd installed)."""
    proc = subprocess.run([sys.executable, "-c", NNICTL, *args], env=env, capture_output=True, text=True)
    out = _ANSI.sub("", proc.stdout + proc.stderr)
    if check and (proc.returncode != 0 or "ERROR" in out):
        if "Traceback (most recent call last)" in out:  # NNI raised: its last line says what was wrong
            out = out.strip().splitlines()[-1]
        raise ExperimentError(f"nnictl {' '.join(args)} failed (exit {proc.returncode}): {out.strip()}")
    return proc


def register() -> str:
    """``nnictl algo register`` the evolution tuner (``ShiftAddEvolution``) from the meta file in the package;
    registering again updates it. Returns nnictl's message."""
    with resources.as_file(resources.files("nni_shiftadd.strategies").joinpath("meta.yml")) as meta:
        proc = nnictl("algo", "register", "--meta", str(meta))
    return _ANSI.sub("", proc.stdout).strip()


def loopback_env(host: str = "127.0.0.1", base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that makes NNI's manager listen on ``host`` only (see the module docstring)."""
    env = dict(os.environ if base is None else base)
    script = resources.files("nni_shiftadd.experiment").joinpath("loopback.js")
    require = f'--require "{script}"'
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} {require}".strip()
    env["NNI_SHIFTADD_HOST"] = host
    return env


def check_address(host: str, port: int, host_name: str = "--host", port_name: str = "--port") -> None:
    """Raise ``ValueError`` naming the flag or field (``host_name``, ``port_name``) when ``port`` is outside 1-65535
    or ``host`` is not an address of this machine that the web UI could listen on."""
    if not 1 <= port <= 65535:
        raise ValueError(f"{port_name}: got {port}; expected a TCP port in 1-65535 (8080 by default)")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise ValueError(f"{host_name}: cannot resolve {host!r} ({err}); give an address of this "
                         "machine, e.g. 127.0.0.1 (loopback only) or 0.0.0.0 (every interface)") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address[0], 0))
        except OSError as err:
            raise ValueError(f"{host_name}: {host!r} ({address[0]}) is not an address of this machine "
                             f"({err.strerror}); e.g. 127.0.0.1 or 0.0.0.0") from None


def free_port(preferred: int = 8080, host: str = "127.0.0.1", tries: int = 50) -> int:
    """``preferred`` if nothing listens on it, else the next free port."""
    for port in range(preferred, preferred + tries):
        with socket.socket() as s:
            if s.connect_ex((host, port)) != 0:
                return port
    raise ExperimentError(f"no free port in {preferred}..{preferred + tries - 1}")


def create(config: str | os.PathLike[str], port: int, host: str = "127.0.0.1", *, attempts: int = 3) -> str:
    """``nnictl create --config config --port port`` with the web UI on ``host``; returns the experiment id.

    NNI's manager fails an experiment whose tuner process has not connected within 10 s, which a loaded 2-core
    machine can miss (Python, NNI and the tuner must start); such an experiment is stopped and created again, up to
    ``attempts`` times. An experiment of the ShiftAddEvolution tuner whose ``output`` folder another running
    tuner holds is refused before anything starts, naming that tuner's pid and experiment."""
    _check_tuner_output(Path(config))
    for attempt in range(1, attempts + 1):
        proc = nnictl("create", "--config", str(config), "--port", str(port), env=loopback_env(host))
        found = re.search(r"Experiment ID:\s*(\w+)", _ANSI.sub("", proc.stdout))
        if found is None:
            raise ExperimentError(f"nnictl create printed no experiment id:\n{proc.stdout}{proc.stderr}")
        experiment_id = found.group(1)
        error = _startup_error(Rest(port, host))
        if error is None:
            return experiment_id
        stop(experiment_id)
        tuner_error = _dispatcher_error(experiment_id)
        if tuner_error is not None:  # the tuner raised while starting: retrying cannot help
            raise ExperimentError(f"experiment {experiment_id} failed to start: its tuner raised {tuner_error}")
        if "did not connect" not in error or attempt == attempts:
            raise ExperimentError(f"experiment {experiment_id} failed to start: {error}")
    raise AssertionError("unreachable")


def _check_tuner_output(config: Path) -> None:
    """Refuse an experiment whose ShiftAddEvolution tuner would write into a folder another running job holds."""
    import yaml

    from ..lock import read_holder

    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ExperimentError(f"{config}: not a readable experiment config: {err}") from None
    tuner = (data or {}).get("tuner") or {}
    output = (tuner.get("classArgs") or {}).get("output")
    if tuner.get("name") != "ShiftAddEvolution" or not output:
        return  # the default output is inside the new experiment's own folder
    holder = read_holder(output)
    if holder is not None:
        experiment = holder.get("experiment")
        raise ExperimentError(
            f"{config}: tuner classArgs 'output': {output!r} is in use by another running job (pid "
            f"{holder.get('pid')}" + (f", NNI experiment {experiment}; stop it with: nnictl stop {experiment}"
                                      if experiment else "") + ")")


def _dispatcher_error(experiment_id: str) -> str | None:
    """The last exception line of an experiment's dispatcher (tuner) log, if it logged one."""
    log = Path.home() / "nni-experiments" / experiment_id / "log" / "dispatcher.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.strip() for line in lines if re.match(r"^\s*[\w.]+(Error|Exception): ", line)]
    return errors[-1] if errors else None


def _startup_error(rest: Rest, timeout: float = 30.0) -> str | None:
    """NNI's error if the experiment fails while its tuner starts; ``None`` once a trial exists, the experiment
    has finished, or ``timeout`` passed without an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = rest.get("check-status")
            if status.get("status") == "ERROR":
                return str(status.get("errors") or status)
            if status.get("status") in ("DONE", "NO_MORE_TRIAL") or rest.trials():
                return None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    return None


def stop(experiment_id: str) -> None:
    """``nnictl stop``; an experiment that is already stopped is fine."""
    nnictl("stop", experiment_id, check=False)


class Rest:
    """The NNI manager's REST API (``/api/v1/nni``) of an experiment on ``host:port``."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.base = f"http://{host}:{port}/api/v1/nni"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base}/{path}", timeout=10) as r:
            return json.loads(r.read())

    def status(self) -> str:
        return str(self.get("check-status")["status"])

    def trials(self) -> list[dict[str, Any]]:
        return list(self.get("trial-jobs"))


def wait(rest: Rest, finished: Callable[[], bool], *, timeout: float = 3600, poll: float = 2.0,
         progress: Callable[[list[dict[str, Any]]], None] | None = None,
         stall_timeout: float = 180.0) -> list[dict[str, Any]]:
    """Poll until ``finished()`` and no trial is active, or the experiment ends; returns the trials. An
    experiment in ERROR raises :class:`ExperimentError` with NNI's message, and so does one with no trial active
    for ``stall_timeout`` seconds while unfinished: its tuner has stopped answering (NNI 3.0 shows no error when
    its dispatcher dies)."""
    deadline = time.monotonic() + timeout
    idle_since: float | None = None
    while True:
        try:
            status, trials = rest.get("check-status"), rest.trials()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise ExperimentError(f"the NNI manager at {rest.base} stopped answering: {err}") from None
        if progress is not None:
            progress(trials)
        active = [t for t in trials if t.get("status") in TRIAL_ACTIVE]
        if status.get("status") == "ERROR":
            raise ExperimentError(f"the experiment failed: {status.get('errors') or status}")
        if not active and (finished() or status.get("status") in ("DONE", "STOPPED")):
            return trials
        idle_since = (idle_since or time.monotonic()) if not active else None
        if idle_since is not None and time.monotonic() - idle_since > stall_timeout:
            raise ExperimentError(f"no trial has run for {stall_timeout:.0f} s and the search has not finished: the "
                                  "tuner stopped answering; see the experiment's log/dispatcher.log")
        if time.monotonic() > deadline:
            raise ExperimentError(f"the experiment did not finish within {timeout:.0f} s ({len(active)} trials "
                                  "still active)")
        time.sleep(poll)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from ``/proc/net/tcp{,6}``): ``"127.0.0.1"``,
    ``"0.0.0.0"``, ``"::"``, ..."""
    found: set[str] = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        table = Path("/proc/net") / name
        if not table.is_file():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            if int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc stores the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found

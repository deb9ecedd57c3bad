"""The warm trial host (:mod:`nni_shiftadd.trial_host`): a command run through it behaves as the same command run as
a fresh process (arguments, environment, working folder, stdio, exit status), a killed client takes its child with
it, a client without a host runs the command itself, and the host never holds NNI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nni_shiftadd.trial_host import client_command, running_host

PROBE = '''
import os, sys, time
print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("PROBE"), "pid", os.getpid(), flush=True)
print("stdin", sys.stdin.readline().strip(), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise RuntimeError("the probe failed")
if sys.argv[1] == "nni":
    import nni
    print("trial", nni.get_trial_id())
    sys.exit(0)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[1]))
'''


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.py").write_text(PROBE)
    return folder


@pytest.fixture(scope="module")
def host(probe_dir: Path) -> Iterator[str]:
    """A host whose children can import the probe module."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(probe_dir), os.environ.get("PYTHONPATH")])))
        with running_host(["json"], probe_dir / "host.log") as path:
            yield path


def _run(command: list[str], cwd: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_a_command_runs_as_a_fresh_process_would(host: str, probe_dir: Path, tmp_path: Path) -> None:
    run = _run(client_command(host, "probe") + ["3"], tmp_path, stdin="hello\n", PROBE="x")
    assert run.returncode == 3, run.stderr
    assert f"argv ['3'] cwd {tmp_path} env x pid" in run.stdout
    assert "stdin hello" in run.stdout
    assert run.stderr == "to stderr\n"
    child = int(run.stdout.split("pid")[1].split()[0])
    assert f"child {child} exited with status 3" in (probe_dir / "host.log").read_text()
    # the next command sees its own environment, not the last one's
    again = _run(client_command(host, "probe") + ["0"], tmp_path, PROBE="y")
    assert again.returncode == 0 and "env y" in again.stdout


def test_an_uncaught_exception_prints_its_traceback_and_exits_1(host: str, tmp_path: Path) -> None:
    run = _run(client_command(host, "probe") + ["raise"], tmp_path)
    assert run.returncode == 1
    assert "Traceback" in run.stderr and "RuntimeError: the probe failed" in run.stderr


def test_a_child_imports_nni_with_its_own_trials_environment(host: str, tmp_path: Path) -> None:
    for trial in ("trialA", "trialB"):
        run = _run(client_command(host, "probe") + ["nni"], tmp_path, NNI_TRIAL_JOB_ID=trial)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"trial {trial}" in run.stdout


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_client_takes_its_child_with_it(host: str, tmp_path: Path) -> None:
    client = subprocess.Popen(client_command(host, "probe") + ["0", "120"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    child = int(client.stdout.readline().split("pid")[1])
    client.kill()
    client.wait()
    deadline = time.monotonic() + 10
    while not _gone(child):
        assert time.monotonic() < deadline, f"child {child} outlived its killed client"
        time.sleep(0.05)


def test_a_child_killed_by_a_signal_exits_its_client_with_128_plus_the_signal(host: str, tmp_path: Path) -> None:
    client = subprocess.Popen(client_command(host, "probe") + ["0", "120"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    os.kill(int(client.stdout.readline().split("pid")[1]), signal.SIGKILL)
    assert client.wait(timeout=30) == 128 + signal.SIGKILL


def test_without_a_host_the_client_runs_the_command_itself(probe_dir: Path, tmp_path: Path) -> None:
    path = os.pathsep.join(filter(None, [str(probe_dir), os.environ.get("PYTHONPATH")]))
    run = _run(client_command(str(tmp_path / "no-socket"), "probe") + ["4"], tmp_path, stdin="x\n", PYTHONPATH=path)
    assert run.returncode == 4
    assert "stdin x" in run.stdout
    assert "trial host: none at" in run.stderr and "running the command in a fresh process" in run.stderr


def test_the_host_refuses_to_hold_nni(tmp_path: Path) -> None:
    run = _run([sys.executable, "-m", "nni_shiftadd.trial_host", "serve", "--socket", str(tmp_path / "s"),
                "--preload", "json", "nni"], tmp_path)
    assert run.returncode == 2
    assert "preloading 'nni' imported 'nni'" in run.stderr
    assert not (tmp_path / "s").exists()


def test_the_host_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    starter = ("import subprocess, sys, os, time\n"
               f"p = subprocess.Popen([sys.executable, '-m', 'nni_shiftadd.trial_host', 'serve', '--socket', "
               f"{str(tmp_path / 's')!r}])\n"
               "print(p.pid, flush=True)\n"
               f"while not os.path.exists({str(tmp_path / 's')!r}): time.sleep(0.05)\n"
               "os._exit(0)\n")
    run = _run([sys.executable, "-c", starter], tmp_path)
    host = int(run.stdout.split()[0])
    deadline = time.monotonic() + 10
    while not _gone(host):
        assert time.monotonic() < deadline, "the host outlived the process that started it"
        time.sleep(0.05)
    assert not (tmp_path / "s").exists()


def test_a_stopped_host_lets_its_running_commands_finish(probe_dir: Path, tmp_path: Path) -> None:
    path = os.pathsep.join(filter(None, [str(probe_dir), os.environ.get("PYTHONPATH")]))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", path)
        with running_host(["json"], tmp_path / "host.log") as socket_path:
            client = subprocess.Popen(client_command(socket_path, "probe") + ["5", "2"], cwd=tmp_path,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            assert client.stdout is not None
            assert "pid" in client.stdout.readline()
        # the host has stopped: the running command ended with its own status, a new one runs on its own
        assert client.wait(timeout=30) == 5
        late = _run(client_command(socket_path, "probe") + ["6"], tmp_path, PYTHONPATH=path)
        assert late.returncode == 6 and "running the command in a fresh process" in late.stderr

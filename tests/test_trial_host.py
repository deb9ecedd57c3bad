"""The warm trial host (:mod:`nni_shiftadd.trial_host`): a command run through it behaves as the same command run as
a fresh process (arguments, environment, working folder, stdio, exit status), a killed client takes its child with
it, a client without a host runs the command itself, and the host never holds NNI."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
        env.setenv("PYTHONPATH", _probe_path(probe_dir))
        with running_host(["json"], probe_dir / "host.log") as path:
            yield path


def _probe_path(probe_dir: Path) -> str:
    """``PYTHONPATH`` with the probe's folder first."""
    return os.pathsep.join(filter(None, [str(probe_dir), os.environ.get("PYTHONPATH")]))


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
    path = _probe_path(probe_dir)
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
    path = _probe_path(probe_dir)
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


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    """A temporary directory with a short path: a shared host's socket lies under it, and a Unix socket's path is at
    most 107 bytes (pytest's ``tmp_path`` can be longer)."""
    folder = Path(tempfile.mkdtemp(prefix="nsa-"))
    yield folder
    for proc in Path("/proc").glob("[0-9]*"):  # no host of the test outlives it (one that failed half-way)
        with contextlib.suppress(OSError):
            if str(folder).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _shared(probe_dir: Path, folder: Path, *args: str, idle: float = 30, preload: str = "json", **env: str
            ) -> subprocess.CompletedProcess[str]:
    """``run --shared`` of the probe in ``folder``, which is also the temporary directory (where shared hosts live)."""
    return _run([sys.executable, "-m", "nni_shiftadd.trial_host", "run", "--shared", "--preload", preload,
                 "--idle-exit", str(idle), "probe", *args], folder, PYTHONPATH=_probe_path(probe_dir),
                TMPDIR=str(folder), **env)


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _hosts(folder: Path) -> list[int]:
    log = (folder / "host.log").read_text() if (folder / "host.log").is_file() else ""
    return [int(line.split()[3]) for line in log.splitlines() if line.startswith("trial host: pid ")]


def test_a_shared_host_starts_with_the_first_command_serves_the_next_and_exits_when_idle(probe_dir: Path,
                                                                                          tmp_short: Path) -> None:
    first = _shared(probe_dir, tmp_short, "3", idle=5, PROBE="a")
    assert first.returncode == 3 and "env a" in first.stdout
    assert "starting the shared host in" in first.stderr and "running the command in a fresh process" in first.stderr
    (folder,) = tmp_short.glob("nni-shiftadd-host-*")
    assert folder.stat().st_mode & 0o777 == 0o700
    _wait_for(lambda: (folder / "socket").exists(), "the shared host did not start")
    second = _shared(probe_dir, tmp_short, "4", idle=5, PROBE="b")
    assert second.returncode == 4 and "env b" in second.stdout and second.stderr == "to stderr\n"
    child = int(second.stdout.split("pid")[1].split()[0])
    assert f"child {child} exited with status 4" in (folder / "host.log").read_text()
    # five seconds without a command: it exits
    (host,) = _hosts(folder)
    _wait_for(lambda: _gone(host), "the idle shared host did not exit")
    assert "no command for 5 s; exiting" in (folder / "host.log").read_text() and not (folder / "socket").exists()


def test_commands_that_start_together_start_one_shared_host(probe_dir: Path, tmp_short: Path) -> None:
    path = _probe_path(probe_dir)
    command = [sys.executable, "-m", "nni_shiftadd.trial_host", "run", "--shared", "--preload", "json", "probe", "0"]
    env = {**os.environ, "PYTHONPATH": path, "TMPDIR": str(tmp_short)}
    clients = [subprocess.Popen(command, cwd=tmp_short, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(4)]
    assert [c.wait(timeout=60) for c in clients] == [0] * 4
    (folder,) = tmp_short.glob("nni-shiftadd-host-*")
    _wait_for(lambda: (folder / "socket").exists(), "no shared host started")
    time.sleep(1)  # a second starter's host, had one been started, has read the lock by now
    assert len(_hosts(folder)) == 1, (folder / "host.log").read_text()


def test_a_shared_folder_that_others_may_enter_is_not_used(probe_dir: Path, tmp_short: Path) -> None:
    path = _probe_path(probe_dir)
    where = _run([sys.executable, "-c", "from nni_shiftadd.trial_host import shared_folder; "
                  "print(shared_folder(['json']))"], tmp_short, PYTHONPATH=path, TMPDIR=str(tmp_short))
    folder = Path(where.stdout.strip())
    folder.chmod(0o755)
    run = _shared(probe_dir, tmp_short, "5")
    assert run.returncode == 5
    assert f"no shared host ({folder} is not a folder of this user's alone)" in run.stderr
    assert not (folder / "host.log").exists()
    # nor a link, to a private folder or not
    elsewhere = tmp_short / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.rmdir()
    folder.symlink_to(elsewhere)
    run = _shared(probe_dir, tmp_short, "6")
    assert run.returncode == 6 and "is not a folder of this user's alone" in run.stderr
    assert not list(elsewhere.iterdir())


def test_a_shared_host_that_fails_its_preload_is_not_started_again_by_every_command(probe_dir: Path,
                                                                                      tmp_short: Path) -> None:
    first = _shared(probe_dir, tmp_short, "0", idle=10, preload="json,no_such_module")
    assert first.returncode == 0 and "starting the shared host" in first.stderr
    (folder,) = tmp_short.glob("nni-shiftadd-host-*")
    _wait_for(lambda: "keeping the lock" in (folder / "host.log").read_text(), "the failed host did not back off")
    assert "ModuleNotFoundError: No module named 'no_such_module'" in (folder / "host.log").read_text()
    second = _shared(probe_dir, tmp_short, "0", idle=10, preload="json,no_such_module")
    assert second.returncode == 0 and "is starting (or failed: see its host.log)" in second.stderr
    assert (folder / "host.log").read_text().count("ModuleNotFoundError") == 1


def test_a_killed_shared_host_takes_its_running_commands_with_it(probe_dir: Path, tmp_short: Path) -> None:
    assert _shared(probe_dir, tmp_short, "0").returncode == 0
    (folder,) = tmp_short.glob("nni-shiftadd-host-*")
    _wait_for(lambda: (folder / "socket").exists(), "the shared host did not start")
    path = _probe_path(probe_dir)
    client = subprocess.Popen([sys.executable, "-m", "nni_shiftadd.trial_host", "run", "--shared", "--preload", "json",
                               "--idle-exit", "30", "probe", "0", "120"], cwd=tmp_short, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": path, "TMPDIR": str(tmp_short)})
    assert client.stdout is not None
    child = int(client.stdout.readline().split("pid")[1])
    (host,) = _hosts(folder)
    os.kill(host, signal.SIGKILL)
    assert client.wait(timeout=30) == 1  # its host went away before the command ended
    _wait_for(lambda: _gone(child), f"child {child} outlived its killed host", timeout=10)


def test_the_trial_command_hands_itself_to_the_shared_host(tmp_short: Path) -> None:
    """``nni-shiftadd trial --shared-host``: the first runs alone and starts the host of its space's kind, the next
    runs in a child of it with the same result (here: the error of a missing supernet, exit status 2)."""
    command = [sys.executable, "-m", "nni_shiftadd.cli", "trial", "--shared-host", "--space", "cv_small",
               "--supernet", str(tmp_short / "missing.ckpt"), "--arch", "{}"]
    first = _run(command, tmp_short, TMPDIR=str(tmp_short))
    assert first.returncode == 2 and "missing.ckpt" in first.stderr and "starting the shared host" in first.stderr
    (folder,) = tmp_short.glob("nni-shiftadd-host-*")
    _wait_for(lambda: (folder / "socket").exists(), "the shared host did not start", timeout=120)
    # the client hands itself over before it imports torch
    client = ("import runpy, sys\n"
              f"sys.argv = ['nni-shiftadd', *{command[3:]!r}]\n"
              "try:\n    runpy.run_module('nni_shiftadd.cli', run_name='__main__', alter_sys=True)\n"
              "except SystemExit as end:\n"
              "    print('client held torch:', 'torch' in sys.modules, file=sys.stderr)\n    raise\n")
    second = _run([sys.executable, "-c", client], tmp_short, TMPDIR=str(tmp_short))
    assert second.returncode == 2 and "missing.ckpt" in second.stderr
    assert "fresh process" not in second.stderr and "client held torch: False" in second.stderr
    log = (folder / "host.log").read_text()
    assert "preloaded 6 module(s)" in log and "exited with status 2" in log

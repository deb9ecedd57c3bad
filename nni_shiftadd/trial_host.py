"""A warm host for a search's trial processes: each trial is forked from a process that has already imported torch,
Lightning and the rest, instead of starting Python from nothing.

NNI's local training service starts every trial command as a new process, and a trial of this package spends about
6 of its 9 s importing torch, Lightning (which imports torchmetrics and torchvision to read their versions), timm,
scipy and pandas. Under a host the trial command is a small client (``python -m nni_shiftadd.trial_host run --socket
S MODULE ARGS...``): it hands the host its arguments, environment, working directory and its stdin, stdout and stderr
(over a Unix socket), the host forks a child that runs ``python -m MODULE ARGS...`` as that process would have, and
the client exits with the child's exit status. So NNI sees an ordinary trial: same output files, same status.

What keeps a child equal to a fresh process:

- The host never imports NNI (:data:`FORBIDDEN`): ``nni`` reads the trial's environment (``NNI_TRIAL_JOB_ID``,
  ``NNI_OUTPUT_DIR``, ...) when it is imported, so each child imports it after taking on its trial's environment.
  The host preloads third-party modules only; this package's modules load in the child (0.4 s).
- The host runs no computation and starts no thread, so nothing is half-done in the forked copy.
- A child runs in a process group of its own. When its client goes away (NNI cancels the trial, the client is
  killed) the group gets SIGTERM, then SIGKILL after :data:`KILL_GRACE` seconds; when the host is killed, the child
  gets SIGTERM (Linux).
- A child keeps its client's ``sys.path[0]`` (a console script's folder, or the working folder of ``-m``).
- A host that is stopped, or whose starter dies, takes no more clients and exits once its running children have
  ended, so that the trials NNI is running still report; it runs in a session of its own, out of reach of the
  caller's Ctrl-C.
- A client that finds no host (not started, already gone, stopping) runs the command itself, as a fresh process.
- What a child cannot take from its client: the interpreter's start-up settings (``PYTHONHASHSEED``,
  ``PYTHONPATH``, ...) are the host's, so a host is started with its clients' environment.

Two ways to have a host. The demo starts one for its searches (:func:`running_host`) and stops it after them. An
experiment that outlives the command that created it (``nnictl create``, ``nni-shiftadd create``) uses a **shared**
host instead (``run --shared``, or ``nni-shiftadd trial --shared-host``): the first trial that finds none starts it
and runs itself as a fresh process meanwhile; later trials fork from it. A shared host belongs to one user, one
interpreter and one set of start-up settings and preloads (its socket lies in a private folder named for them under
the temporary directory), exactly one runs per such set (it holds a lock on its folder), and it exits once it has
had no trial for :data:`IDLE_EXIT` seconds.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import runpy
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from .lock import process_alive

#: Modules a host must not hold: they read the trial's environment when imported.
FORBIDDEN = ("nni",)
#: Seconds between SIGTERM and SIGKILL for a child whose client went away.
KILL_GRACE = 5.0
#: Seconds a stopping host waits for its running trials before :func:`running_host` kills them.
DRAIN_TIMEOUT = 120.0
#: The largest request a host reads (arguments and environment).
MAX_REQUEST = 16 << 20
_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!i")
_STDIO = (0, 1, 2)
_STARTED = b"+"
#: The size of a Unix socket's path field (``sun_path``) on Linux, its final NUL included.
_SOCKET_PATH_MAX = 108
#: This module's name, also when it runs as ``python -m``.
_MODULE = __spec__.name if __spec__ is not None else __name__
#: Seconds without a trial after which a shared host exits.
IDLE_EXIT = 120.0
#: Set in the environment of every command a host's child or a client's fall-back runs: a command that would hand
#: itself to a host (``nni-shiftadd trial --shared-host``) runs itself instead.
ROLE_VARIABLE = "NNI_SHIFTADD_TRIAL_HOST_ROLE"
#: What a shared host's identity includes besides the interpreter, its options and the preloads: the environment
#: variables (by prefix) that its interpreter and the libraries it preloads read when they start, which a child
#: takes from its host and not from its client.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "OMP_", "MKL_", "KMP_", "GOMP_")


@contextlib.contextmanager
def running_host(preload_modules: Sequence[str], log: Path, timeout: float = 300.0) -> Iterator[str]:
    """Start a host (its output in ``log``) that preloads ``preload_modules``; yields its socket path once it has
    preloaded them and listens, and stops it (and any child still running) on exit. Waiting keeps the preload off
    the CPU while NNI starts its tuner (which must connect within 10 s). The socket lies in a private temporary
    folder."""
    folder = tempfile.mkdtemp(prefix="nni-shiftadd-host-")
    path = os.path.join(folder, "socket")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # a session of its own: a Ctrl-C of the caller's terminal reaches the caller, which stops the host, and the
        # trials NNI is running finish instead of dying with it
        process = subprocess.Popen([sys.executable, "-m", _MODULE, "serve", "--socket", path, "--parent",
                                    str(os.getpid()), "--preload", *preload_modules], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the trial host did not start (exit status {process.poll()}); see {log}")
            time.sleep(0.05)
        yield path
    finally:
        process.terminate()  # the host stops taking trials and waits for those running
        try:
            process.wait(timeout=DRAIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()  # its children, each in a group of its own, get SIGTERM as it dies (Linux)
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def client_command(socket_path: str, module: str) -> list[str]:
    """The command line that runs ``python -m module ...`` through the host at ``socket_path`` (append the
    module's arguments)."""
    return [sys.executable, "-m", _MODULE, "run", "--socket", socket_path, module]


def in_host_command() -> bool:
    """Whether this process is a command that a host's child or a client's fall-back runs: such a command must not
    hand itself to a host again."""
    return ROLE_VARIABLE in os.environ


def run_client(socket_path: str, module: str, args: Sequence[str]) -> int:
    """Run ``python -m module args`` in a child of the host at ``socket_path`` with this process's environment,
    working directory and stdio; its exit status (128 + N for a child killed by signal N). Without a host answering
    there, this process becomes ``python -m module args`` itself."""
    sock, error = _connect(socket_path)
    if sock is None:
        _run_fresh(module, args, f"none at {socket_path} ({error})")
    return _through(sock, socket_path, module, args)


def shared_folder(preload_modules: Sequence[str]) -> Path:
    """The private folder (created, mode 0700) of the shared host for this user, this interpreter and this package's
    files, the start-up settings a child takes from its host, and ``preload_modules``; ``OSError`` when the path is
    taken by anything but a folder of this user that only this user may enter."""
    startup = sorted((k, v) for k, v in os.environ.items() if k.startswith(_STARTUP_PREFIXES))
    identity = json.dumps([sys.executable, str(sys.flags), sys.warnoptions, sorted(map(str, sys._xoptions.items())),
                           __file__, os.stat(__file__).st_mtime_ns, startup, list(preload_modules)])
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"nni-shiftadd-host-{os.getuid()}-{key}"
    if len(os.fsencode(folder / "socket")) >= _SOCKET_PATH_MAX:
        raise OSError(f"{folder / 'socket'} is longer than a Unix socket's path may be ({_SOCKET_PATH_MAX - 1} bytes)")
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise OSError(f"{folder} is not a folder of this user's alone")
    return folder


def run_shared(module: str, args: Sequence[str], preload_modules: Sequence[str], idle_exit: float = IDLE_EXIT) -> int:
    """Run ``python -m module args`` as :func:`run_client` does, through the shared host of ``preload_modules``
    (:func:`shared_folder`). Without one answering, start it (unless one is already starting) and become
    ``python -m module args`` meanwhile: the commands after this one fork from it."""
    try:
        folder = shared_folder(preload_modules)
    except OSError as err:
        _run_fresh(module, args, f"no shared host ({err})")
    socket_path = str(folder / "socket")
    sock, _ = _connect(socket_path)
    if sock is None:
        try:
            started = _start_shared(folder, preload_modules, idle_exit)
        except OSError as err:
            _run_fresh(module, args, f"the shared host in {folder} could not start ({err})")
        _run_fresh(module, args, f"starting the shared host in {folder}" if started else
                   f"the shared host in {folder} is starting (or failed: see its host.log)")
    return _through(sock, socket_path, module, args)


def _start_shared(folder: Path, preload_modules: Sequence[str], idle_exit: float) -> bool:
    """Start the shared host of ``folder`` unless a process holds its lock (a host serving, or still preloading);
    whether one was started. The host is nobody's child (it outlives the command that starts it) and takes the lock
    before its preload; of two starters racing here, the second host finds the lock held and exits."""
    with open(folder / "lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    command = [sys.executable, "-m", _MODULE, "serve", "--socket", str(folder / "socket"), "--lock",
               str(folder / "lock"), "--idle-exit", str(idle_exit), "--preload", *preload_modules]
    pid = os.fork()
    if pid == 0:  # an intermediate process that exits at once, so that the host is adopted by init
        code = 1
        try:
            with open(folder / "host.log", "ab") as out:
                try:
                    subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=folder, start_new_session=True)
                    code = 0
                except OSError as err:
                    out.write(f"trial host: could not start: {err}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _connect(socket_path: str) -> tuple[socket.socket | None, str]:
    """A connection to the host at ``socket_path``, or ``None`` and why not."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except OSError as err:
        sock.close()
        return None, str(err.strerror or err)
    return sock, ""


def _through(sock: socket.socket, socket_path: str, module: str, args: Sequence[str]) -> int:
    """Hand ``python -m module args`` to the host connected on ``sock`` and wait for its exit status; the command
    runs here, fresh, when the host does not take it."""
    request = json.dumps({"module": module, "args": list(args), "cwd": os.getcwd(), "path0": sys.path[0],
                          "env": dict(os.environ)}).encode()
    try:
        socket.send_fds(sock, [_HEADER.pack(len(request))], list(_STDIO))
        sock.sendall(request)
        started = _read_exactly(sock, len(_STARTED))
    except OSError:
        started = None
    if started != _STARTED:  # the host ended before it forked the command (it was stopping, or failed to start)
        sock.close()
        _run_fresh(module, args, f"the host at {socket_path} did not take the command")
    try:
        reply = _read_exactly(sock, _STATUS.size)
    except OSError:
        reply = None
    if reply is None:
        print(f"nni-shiftadd trial host: the host at {socket_path} went away before the command ended",
              file=sys.stderr, flush=True)
        return 1
    code = _STATUS.unpack(reply)[0]
    return 128 - code if code < 0 else code


def _run_fresh(module: str, args: Sequence[str], why: str) -> NoReturn:
    """Become ``python -m module args`` (this process, replaced), saying why on stderr."""
    print(f"nni-shiftadd trial host: {why}; running the command in a fresh process", file=sys.stderr, flush=True)
    os.environ[ROLE_VARIABLE] = "fresh"
    if sys.path[0] != os.getcwd():  # a script's client (a console script): no working folder first on the path
        os.environ["PYTHONSAFEPATH"] = "1"
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """A client's request and its three stdio descriptors (closed again if the request is incomplete or bad)."""
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, len(_STDIO))
    try:
        rest = _read_exactly(conn, _HEADER.size - len(header)) if len(header) < _HEADER.size else b""
        if rest is None or len(fds) != len(_STDIO):
            raise ConnectionError("incomplete request")
        size = _HEADER.unpack(header + rest)[0]
        if size > MAX_REQUEST:
            raise ConnectionError(f"a request of {size} bytes (at most {MAX_REQUEST})")
        body = _read_exactly(conn, size)
        if body is None:
            raise ConnectionError("incomplete request")
        return json.loads(body), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def preload(modules: Sequence[str]) -> None:
    """Import ``modules``; ``ValueError`` naming the module if one is, or pulls in, a :data:`FORBIDDEN` module."""
    for module in modules:
        importlib.import_module(module)
        held = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
        if held:
            raise ValueError(f"preloading {module!r} imported {held[0]!r}, which reads a trial's environment when "
                             f"imported; a trial host must not hold {', '.join(FORBIDDEN)}")


class TrialHost:
    """The host's accept-fork-reap loop on the Unix socket ``socket_path`` (see the module docstring); ``parent``:
    the process whose death stops the host; ``idle_exit``: the seconds without a trial after which it stops (a shared
    host, which has no parent); ``lock``: the shared host's lock, which no child holds."""

    def __init__(self, socket_path: str, parent: int | None, idle_exit: float | None = None,
                 lock: IO[str] | None = None) -> None:
        self.socket_path = socket_path
        self.parent, self.idle_exit, self.lock = parent, idle_exit, lock
        self.pid = os.getpid()
        self.active = time.monotonic()  # when a child last started or ended
        self.listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        self.listener.bind(socket_path)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.children: dict[int, socket.socket] = {}
        self.kill_at: dict[int, float] = {}
        self.stopping = False

    def serve(self) -> None:
        """Accept clients until SIGTERM, SIGINT or SIGHUP, until ``parent`` dies, or until ``idle_exit`` seconds
        pass without a child; then take no more and wait for the running children (a client arriving after that runs
        its command itself)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        try:
            while self.listener is not None or self.children:
                if self.listener is not None and (self.stopping or self._orphaned() or self._idle()):
                    self._close_listener()
                for key, _ in self.selector.select(timeout=0.1):
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        self._client_gone(key.fileobj)
                self._reap()
                self._kill_overdue()
        finally:
            self._shutdown()

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _orphaned(self) -> bool:
        return self.parent is not None and not process_alive(self.parent)

    def _idle(self) -> bool:
        if self.idle_exit is None or self.children or time.monotonic() - self.active < self.idle_exit:
            return False
        print(f"trial host: no command for {self.idle_exit:g} s; exiting", flush=True)
        return True

    def _close_listener(self) -> None:
        if self.listener is None:
            return
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError as err:
            print(f"trial host: accept failed: {err}", file=sys.stderr, flush=True)
            return
        try:
            conn.settimeout(10)
            request, fds = _receive(conn)
        except (OSError, ValueError) as err:
            print(f"trial host: dropped a client: {err}", file=sys.stderr, flush=True)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as err:  # the client, given no start, runs its command itself
            print(f"trial host: fork failed: {err}", file=sys.stderr, flush=True)
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        if pid == 0:
            self._child(request, fds, conn)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also here, so that the group exists whichever process runs first
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(_STARTED)
        except OSError:
            pass
        self.children[pid] = conn
        self.active = time.monotonic()
        self.selector.register(conn, selectors.EVENT_READ, pid)
        print(f"trial host: child {pid} runs {request.get('module')} in {request.get('cwd')}", flush=True)

    def _child(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> NoReturn:
        """In the forked child: become ``python -m module args`` of the client; never returns."""
        code = 1
        try:
            for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _end_with_parent(signal.SIGTERM, self.pid)  # a host that is killed takes its children with it
            with contextlib.suppress(OSError):
                os.setpgid(0, 0)  # a group of its own: a signal for the command reaches what it starts too
            self.selector.close()
            for held in (self.listener, conn, *self.children.values(), self.lock):
                if held is not None:
                    held.close()
            for target, fd in zip(_STDIO, fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            os.environ[ROLE_VARIABLE] = "child"
            sys.path[0] = request.get("path0") or os.getcwd()  # the client's: its script's folder, or its `-m` cwd
            if "numpy" in sys.modules:  # a fresh process seeds NumPy's global generator from the OS
                sys.modules["numpy"].random.seed()
            sys.argv = [request["module"], *request["args"]]
            try:
                runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    code = exit_.code or 0
                else:
                    print(exit_.code, file=sys.stderr)
            except KeyboardInterrupt:
                traceback.print_exc()
                code = 128 + signal.SIGINT
            except BaseException:  # noqa: BLE001 - the child reports it as Python would, then exits
                traceback.print_exc()
            threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads, as interpreter exit does
            atexit._run_exitfuncs()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)

    def _client_gone(self, conn: Any) -> None:
        pid = self.selector.get_key(conn).data
        self.selector.unregister(conn)
        if pid in self.children and pid not in self.kill_at:
            _signal(pid, signal.SIGTERM)
            self.kill_at[pid] = time.monotonic() + KILL_GRACE

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            self.kill_at.pop(pid, None)
            self.active = time.monotonic()
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            print(f"trial host: child {pid} exited with status {code}", flush=True)
            try:
                self.selector.unregister(conn)
            except KeyError:
                pass
            try:
                conn.sendall(_STATUS.pack(code))
            except OSError:
                pass
            conn.close()

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for pid, deadline in list(self.kill_at.items()):
            if now >= deadline:
                _signal(pid, signal.SIGKILL)
                self.kill_at[pid] = float("inf")

    def _shutdown(self) -> None:
        """After an error in the loop: the children still running get SIGTERM, then SIGKILL."""
        self._close_listener()
        for pid in self.children:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in self.children:
            _signal(pid, signal.SIGKILL)
        self.selector.close()


def _signal(pid: int, signum: int) -> None:
    """Signal a child's process group (the child and what it started), or the child alone before it has made its
    group."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _end_with_parent(signum: int, parent: int) -> None:
    """Linux: have this process sent ``signum`` when its parent (``parent``, the host that forked it) ends
    (``prctl(PR_SET_PDEATHSIG)``), and now if it already has; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signum))  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


def main(argv: Sequence[str] | None = None) -> int:
    """``serve --socket S [--preload M ...]`` (the host) or ``run --socket S MODULE ARGS...`` (a client)."""
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    serve = sub.add_parser("serve", help="listen on the socket and run each client's command in a forked child")
    serve.add_argument("--socket", required=True)
    serve.add_argument("--parent", type=int, help="stop when this process ends (default: the parent process)")
    serve.add_argument("--idle-exit", type=float, help="stop after this many seconds without a command, instead "
                       "of with a parent")
    serve.add_argument("--lock", help="a file to hold locked while serving: exit at once when another process holds "
                       "it")
    serve.add_argument("--preload", nargs="*", default=[], help="modules to import before accepting")
    run = sub.add_parser("run", help="run python -m MODULE ARGS... through the host (or alone without one)")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="the host's socket (a host that running_host started)")
    where.add_argument("--shared", action="store_true", help="the shared host of --preload, started if none runs")
    run.add_argument("--preload", default="", help="--shared: the host's modules, comma-separated")
    run.add_argument("--idle-exit", type=float, default=IDLE_EXIT, help="--shared: a host started now stops after "
                     "this many seconds without a command")
    run.add_argument("module")
    run.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.role == "run":
        signal.signal(signal.SIGINT, lambda *_: os._exit(128 + signal.SIGINT))
        if args.shared:
            return run_shared(args.module, args.args, [m for m in args.preload.split(",") if m], args.idle_exit)
        return run_client(args.socket, args.module, args.args)
    parent = None if args.idle_exit is not None else args.parent or os.getppid()  # now: before the preload's seconds
    lock = None
    if args.lock:
        lock = open(args.lock, "a")  # noqa: SIM115 - held for the host's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"trial host: another host holds {args.lock}", flush=True)
            return 0
    try:
        preload(args.preload)
    except Exception as err:  # noqa: BLE001 - a module that fails to import, or one that would hold NNI
        print(f"trial host: error: {type(err).__name__ + ': ' if not isinstance(err, ValueError) else ''}{err}",
              file=sys.stderr, flush=True)
        if lock is not None and args.idle_exit:  # a shared host: its clients run alone meanwhile, not start another
            print(f"trial host: keeping the lock for {args.idle_exit:g} s before exiting", file=sys.stderr, flush=True)
            time.sleep(args.idle_exit)
        return 2
    host = TrialHost(args.socket, parent, args.idle_exit, lock)  # the socket appears once the host is ready
    print(f"trial host: pid {os.getpid()} on {args.socket}, preloaded {len(args.preload)} module(s)", flush=True)
    host.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

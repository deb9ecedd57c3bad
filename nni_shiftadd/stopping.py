"""Stopping a long command cleanly on SIGTERM or SIGINT (Ctrl+C), so that a command chained after it with ``&&``
does not run on unfinished work.

:func:`handling` (the CLI runs every command inside it) replaces both signals' handlers: a signal raises :class:`Stopped` where the
program is, and the command exits with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT) and one line saying what
was kept. Inside a Lightning fit the stop is deferred to the end of the current training step instead
(:func:`graceful`; Lightning's own SIGTERM handling does the stopping there, and SIGINT is passed on to it), so the
checkpoint written on the way out is an exact resume point. A second signal while a deferred stop is pending stops
at once.

The state is per process, as signal handlers are.
"""
from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Stopped", "graceful", "handling", "note", "received", "stop_message"]

SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A signal asked the process to stop (a ``BaseException``, like ``KeyboardInterrupt``: nothing that catches
    ``Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclasses.dataclass
class _State:
    signum: int | None = None  # the first signal received
    graceful: int = 0  # nesting depth of graceful() blocks
    forwarding: bool = False  # passing SIGINT on to Lightning's SIGTERM handler
    notes: list[str] = dataclasses.field(default_factory=list)


_state = _State()


@contextmanager
def handling() -> Iterator[None]:
    """Handle SIGTERM and SIGINT as this module describes while inside (a command's run), starting with no signal
    received; the previous handlers come back on the way out. Outside the main thread it changes nothing."""
    import threading

    _state.signum, _state.forwarding, _state.notes = None, False, []
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handle) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def received() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _state.signum


def note(text: str) -> None:
    """Record what was kept on the way out (e.g. the checkpoint written), for :func:`stop_message`."""
    _state.notes.append(text)


def stop_message(signum: int) -> str:
    """The one line a stopped command prints: which signal, what was kept."""
    kept = "; ".join(_state.notes) if _state.notes else "nothing was written since the last checkpoint"
    return f"stopped by {signal.Signals(signum).name} ({kept}); run the same command again to go on"


def _handle(signum: int, frame: FrameType | None) -> None:
    if _state.forwarding:  # Lightning's SIGTERM handler calling the handlers it found, ours among them
        return
    first = _state.signum is None
    if first:
        _state.signum = signum
    if _state.graceful and first:
        if signum != signal.SIGTERM:
            lightning = signal.getsignal(signal.SIGTERM)
            if callable(lightning) and lightning is not _handle:
                _state.forwarding = True
                try:
                    lightning(signal.SIGTERM, frame)
                finally:
                    _state.forwarding = False
        return
    raise Stopped(_state.signum if _state.signum is not None else signum)


@contextmanager
def graceful() -> Iterator[None]:
    """While inside, a first signal only marks the stop (Lightning stops at the end of the step); a signal that
    came before entering, or during a last step that ended normally, stops on the way in or out."""
    if _state.signum is not None:
        raise Stopped(_state.signum)
    _state.graceful += 1
    try:
        yield
    finally:
        _state.graceful -= 1
    if _state.signum is not None:  # it came during the last step, which ended normally
        raise Stopped(_state.signum)

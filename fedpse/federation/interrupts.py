"""Stopping a simulation cleanly (on a signal or a server-side error), and cleaning up after one that was not.

Ctrl-C (SIGINT) or SIGTERM during ``fedpse simulate``: the signal handler sets ``STOP`` at once and raises
``Interrupted`` in the main thread (where Flower's simulation engine runs). The ServerApp runs in another thread; it
checks ``STOP`` wherever it waits (``check_stop``) and stops without committing the user rounds in progress, so the
run directory stays resumable and ``--resume`` redoes exactly the cut-off work. A terminal's Ctrl-C reaches every
process of the foreground group, Ray's workers included: a device whose training was cut by it answers with an
error that is an interruption, not a device failure (``is_interruption``), and it is never recorded as one.

``kill -9`` gives no chance to clean up: Ray's agents of the killed run outlive it for a minute or two. Each Ray
session fedpse starts carries a marker in its processes' environment (``RAY_OWNER_ENV``, noted in the run's lock
file); the next ``simulate`` / ``--resume`` of the same run directory kills the processes that still carry the
marker of a holder that is dead (``kill_orphans``), and no others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

STOP = threading.Event()  # set by the first SIGINT/SIGTERM of a simulation; cleared when one starts
RAY_OWNER_ENV = "FEDPSE_RAY_OWNER"
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class ServerError(RuntimeError):
    """Server-side work failed for a reason that is not the device's (cache, disk, teacher): the run stops
    instead of charging the failure to every user; its directory stays resumable."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (``signum``); the run directory is left resumable."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 130)


def check_stop() -> None:
    """Raise ``Interrupted`` if the simulation was asked to stop (called by the server thread where it waits)."""
    if STOP.is_set():
        raise Interrupted(getattr(STOP, "signum", signal.SIGINT))


def request_stop(signum: int = signal.SIGINT) -> None:
    STOP.signum = signum  # type: ignore[attr-defined]
    STOP.set()


def is_interruption(error: str) -> bool:
    """A device's error reply that an interrupt caused (the device was not at fault)."""
    return STOP.is_set() or "KeyboardInterrupt" in error


@contextlib.contextmanager
def trap_signals() -> Iterator[None]:
    """SIGINT and SIGTERM set ``STOP`` and raise ``Interrupted`` in the main thread for the duration (no-op
    outside the main thread: only it can handle signals). A second signal while stopping is ignored, so the clean
    shutdown is not cut short."""
    STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if STOP.is_set():
            return  # already stopping
        request_stop(signum)
        raise Interrupted(signum)

    saved = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, previous in saved.items():
            signal.signal(s, previous)


# ------------------------------------------------------------------------------------------- orphans of kill -9
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_with_marker(marker: str) -> list[int]:
    """Pids whose initial environment holds ``RAY_OWNER_ENV=marker`` (this process excluded)."""
    needle = f"{RAY_OWNER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if needle in environ:
            found.append(int(entry))
    return found


def kill_orphans(previous_note: dict, grace_s: float = 3.0) -> int:
    """Kill the Ray processes of a previous holder of the run directory that died without shutting Ray down
    (its pid no longer runs); return how many were found. Nothing is touched while that holder is alive."""
    marker, pid = previous_note.get("ray_owner"), previous_note.get("pid")
    if not marker or not isinstance(pid, int) or _pid_alive(pid):
        return 0
    pids = processes_with_marker(str(marker))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_pid_alive(p) and not _zombie(p) for p in pids):
            time.sleep(0.05)
    return len(pids)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

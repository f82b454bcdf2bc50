"""One writer per run directory: an advisory ``fcntl`` lock on ``RUN_DIR/.fedpse.lock``.

``fedpse simulate`` (fresh or ``--resume``) and every study that writes a run take the lock before they read or
write any table, and hold it until the process ends. The OS releases it when the holder dies, even by ``kill -9``,
so a lock is never stale. The lock file also carries a note about its holder (pid, host, start time, and the marker
of the Ray session the holder started), so a second writer can be told who holds the directory, and the next holder
can clean up Ray processes a killed holder left behind (``federation/interrupts.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from fedpse.results.store import RunDirError

LOCK_NAME = ".fedpse.lock"


class RunLockedError(RunDirError):
    """Another process is writing the run directory."""


class RunLock:
    """The held lock of one run directory (``acquire`` creates the directory if needed)."""

    def __init__(self, run_dir: Path, fd: int, created_dir: bool, previous: dict):
        self.run_dir = run_dir
        self.fd = fd
        self.created_dir = created_dir
        self.previous = previous  # the note of the last holder (e.g. a run killed with kill -9), {} if none
        self.note: dict = {}

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK_NAME

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        """Lock ``run_dir`` for this process; ``RunLockedError`` (naming the holder's pid) if another holds it."""
        run_dir = Path(run_dir)
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_note(run_dir)
            os.close(fd)
            pid = holder.get("pid", "unknown")
            since = f" since {holder['started']}" if "started" in holder else ""
            raise RunLockedError(
                f"{run_dir}: another fedpse process (pid {pid} on {holder.get('host', '?')}{since}) is writing "
                "this run directory; wait for it to finish (or stop it), or choose another --out"
            ) from None
        lock = cls(run_dir, fd, created, read_note(run_dir))
        lock.write_note(
            pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%d %H:%M:%S")
        )
        return lock

    def write_note(self, **fields) -> None:
        """Update the holder's note (truncate + write in place: the lock lives on this inode)."""
        self.note.update(fields)
        data = json.dumps(self.note).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self, remove_if_unused: bool = False) -> None:
        """Drop the lock. ``remove_if_unused``: also remove a run directory this lock created if nothing else
        was written into it (a run that failed its checks leaves no empty folder behind)."""
        if self.fd < 0:
            return
        unused = self.created_dir and remove_if_unused
        if unused:
            unused = [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]
        if unused:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1
        if unused:
            try:
                self.run_dir.rmdir()
            except OSError:
                pass


def read_note(run_dir: str | Path) -> dict:
    """The note of the lock's (last) holder, {} if none or unreadable (e.g. being written this instant)."""
    try:
        return json.loads((Path(run_dir) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}


_HELD: dict[Path, RunLock] = {}


def hold(run_dir: str | Path) -> RunLock:
    """Acquire the lock of ``run_dir`` for this process (a second call for a directory already held by this
    process returns the held lock)."""
    key = Path(run_dir).expanduser().resolve()
    if key not in _HELD:
        _HELD[key] = RunLock.acquire(key)
    return _HELD[key]


def release(run_dir: str | Path, remove_if_unused: bool = False) -> None:
    lock = _HELD.pop(Path(run_dir).expanduser().resolve(), None)
    if lock is not None:
        lock.release(remove_if_unused)

"""Memory of a whole process tree (a driver plus its worker processes, e.g. Ray's), sampled from /proc."""

from __future__ import annotations

import os
import threading
import time


def _pss_bytes(pid: int) -> int | None:
    """Proportional set size: shared pages (e.g. a memory-mapped babble bank read by 2 workers) counted once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _tree_rss_bytes(pid: int, pss: bool = False) -> int:
    """RSS (or PSS) of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += (_pss_bytes(p) or rss.get(p, 0)) if pss else rss.get(p, 0)
        stack += children.get(p, [])
    return total


class PeakRSS:
    """Samples the process tree's RSS and PSS in a background thread; ``.peak`` / ``.peak_pss`` in bytes."""

    def __init__(self, interval: float = 0.1, pid: int | None = None, pss: bool = True):
        self.interval, self.peak, self.peak_pss, self._stop = interval, 0, 0, threading.Event()
        self.pid, self.pss = pid or os.getpid(), pss

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(self.pid))
            if self.pss:
                self.peak_pss = max(self.peak_pss, _tree_rss_bytes(self.pid, pss=True))
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

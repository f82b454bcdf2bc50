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


def _scan() -> dict[int, tuple[int, int, float, str]]:
    """Every process: pid -> (parent pid, RSS bytes, CPU seconds used so far, short name), from /proc."""
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                head, _, tail = fh.read().rpartition(")")
            fields = tail.split()
            name = head.partition("(")[2]
            procs[int(entry)] = (
                int(fields[1]),
                int(fields[21]) * page,
                (int(fields[11]) + int(fields[12])) / tick,
                name,
            )
        except (OSError, IndexError, ValueError):
            continue
    return procs


def _tree(procs: dict, pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p, (ppid, *_) in procs.items():
        children.setdefault(ppid, []).append(p)
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack += children.get(p, [])
    return out


def _tree_rss_bytes(pid: int, pss: bool = False) -> int:
    """RSS (or PSS) of ``pid`` and all its descendants."""
    procs = _scan()
    return sum(
        ((_pss_bytes(p) or procs[p][1]) if pss else procs[p][1]) for p in _tree(procs, pid) if p in procs
    )


class PeakRSS:
    """Samples the process tree in a background thread: ``.peak`` / ``.peak_pss`` (bytes) and the CPU seconds each
    process of the tree used (last value seen before it exited), summed by process name in ``cpu_by_name()``."""

    def __init__(self, interval: float = 0.1, pid: int | None = None, pss: bool = True):
        self.interval, self.peak, self.peak_pss, self._stop = interval, 0, 0, threading.Event()
        self.pid, self.pss = pid or os.getpid(), pss
        self.cpu: dict[int, tuple[str, float]] = {}

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            procs = _scan()
            tree = [p for p in _tree(procs, self.pid) if p in procs]
            self.peak = max(self.peak, sum(procs[p][1] for p in tree))
            if self.pss:
                self.peak_pss = max(self.peak_pss, sum(_pss_bytes(p) or procs[p][1] for p in tree))
            for p in tree:
                self.cpu[p] = (procs[p][3], procs[p][2])
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def cpu_by_name(self) -> dict[str, float]:
        """CPU seconds per process name, largest first (sampling misses at most one interval per process)."""
        total: dict[str, float] = {}
        for name, seconds in self.cpu.values():
            total[name] = total.get(name, 0.0) + seconds
        return dict(sorted(total.items(), key=lambda kv: -kv[1]))

"""Finished run directories as the report sees them: found, read, labelled and given a colour and marker.

A mode's colour, its place in a comparison and whether it is a reference come from ``fedpse.results.modes``, where
each delivery strategy registers them; a mode nobody registered gets the next spare colour and sorts last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpse.results.modes import mode_style, registered_modes
from fedpse.results.report.run_files import (
    EVALUATION_NUMERIC,
    LEDGER_CHECKS,
    LEDGER_NUMERIC,
    ROUND_NUMERIC,
    UNFINISHED_HINT,
    USER_NUMERIC,
    ReportError,
    finite_or_nan,
    nested_get,
    read_config,
    read_csv_table,
    read_summary,
)
from fedpse.results.store import RunStore

# Colours for runs whose mode has none registered (or whose registered colour another run already took).
SPARE_COLORS = ["#17becf", "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173"]
MARKERS = ["o", "s", "D", "P", "X", "h", "p", "*", "<", ">"]


@dataclass
class Run:
    """One finished run, as the report sees it."""

    root: Path
    mode: str
    summary: dict
    config: dict
    users: list[dict]
    evaluations: list[dict]
    rounds: list[dict]
    label: str = ""
    color: str = "#1f77b4"
    marker: str = "o"

    @property
    def reference(self) -> bool:
        return mode_style(self.mode).reference

    def column(self, name: str) -> np.ndarray:
        """A users.csv column as floats (NaN where missing or empty)."""
        return np.array([row.get(name, math.nan) for row in self.users], dtype=float)

    def gains(self) -> np.ndarray:
        """Per-user SI-SDR gain personalized − generic (dB); NaN for users without scores."""
        if any("gain_db" in row for row in self.users):
            gain = self.column("gain_db")
        else:
            gain = np.full(len(self.users), math.nan)
        fallback = self.column("si_sdr_personalized") - self.column("si_sdr_generic")
        return np.where(np.isnan(gain), fallback, gain)

    def teacher_gaps(self) -> np.ndarray:
        """Per-user teacher − generic SI-SDR (dB): how much there is to gain from the teacher."""
        return self.column("si_sdr_teacher") - self.column("si_sdr_generic")

    def gap_closures(self) -> np.ndarray:
        """Per-user (personalized − generic) / (teacher − generic); NaN where the teacher is not better."""
        gaps = self.teacher_gaps()
        with np.errstate(divide="ignore", invalid="ignore"):
            computed = np.where(gaps > 1e-6, self.gains() / gaps, math.nan)
        stored = self.column("gap_closure")
        return np.where(np.isnan(stored), computed, stored)

    def user_ids(self) -> list[str]:
        return [row.get("user", "?") for row in self.users]

    def cost_per_user(self, name: str) -> float:
        """Mean of a users.csv cost column over all users; falls back to summary.json's per_user block."""
        values = self.column(name)
        if np.isfinite(values).any():
            return float(np.nanmean(values))
        return finite_or_nan(nested_get(self.summary, "per_user", name))

    def cost_total(self, name: str) -> float:
        values = self.column(name)
        if np.isfinite(values).any():
            return float(np.nansum(values))
        return finite_or_nan(nested_get(self.summary, "totals", name))


def _looks_like_run(path: Path) -> bool:
    return any((path / name).is_file() for name in ("users.csv", "summary.json", "config.yaml", "ledger.csv"))


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """The run directories named by ``paths``; a ``simulate --modes`` folder (only runs inside) gives its runs."""
    if not paths:
        raise ReportError("no run directory given")
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise ReportError(f"{path}: no such run directory")
        if not path.is_dir():
            raise ReportError(
                f"{path}: not a directory — expected a fedpse run directory (users.csv, summary.json)"
            )
        if _looks_like_run(path):
            found.append(path)
        elif (path / "report.html").is_file():
            raise ReportError(f"{path}: a report written by `fedpse report`, not a run directory")
        else:
            found.extend(_runs_inside(path))
    resolved = [p.resolve() for p in found]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise ReportError(f"{found[i]}: given twice")
    return found


def _runs_inside(folder: Path) -> list[Path]:
    """The runs of a folder that holds only runs (and earlier reports), baseline first; else a clear error."""
    children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    runs = [p for p in children if _looks_like_run(p)]
    others = [p for p in children if p not in runs and not (p / "report.html").is_file()]
    if not runs:
        raise ReportError(
            f"{folder}: not a fedpse run directory (no users.csv or summary.json in it or in its subfolders)"
        )
    if others:
        names = " ".join(str(p) for p in sorted(runs)[:4])
        raise ReportError(
            f"{folder}: not a fedpse run directory (no users.csv or summary.json); it holds run directories "
            f"among other folders — name the runs, e.g. fedpse report {names}"
        )
    order = registered_modes()
    return sorted(runs, key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))


def load_run(root: str | Path) -> Run:
    """Read one finished run directory; ``ReportError`` names what is missing or corrupt."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ReportError(f"{root}: no such run directory")
    store = RunStore(root)
    for name in ("users.csv", "summary.json"):
        if (root / name).is_file():
            continue
        if (root / "config.yaml").is_file():
            raise ReportError(f"{root / name}: missing — {UNFINISHED_HINT.format(root=root)}")
        raise ReportError(
            f"{root / name}: missing — not a fedpse run directory (expected config.yaml, users.csv, summary.json)"
        )
    users = read_csv_table(store.path("users"), USER_NUMERIC, required=("user",), what="users table")
    if not users:
        raise ReportError(
            f"{store.path('users')}: no user rows — expected one row per user of a finished run"
        )
    summary = read_summary(store)
    config = read_config(root / "config.yaml")
    evaluations = (
        read_csv_table(
            store.path("evaluations"),
            EVALUATION_NUMERIC,
            required=("round", "user"),
            what="evaluations table",
        )
        if store.path("evaluations").is_file()
        else []
    )
    rounds = (
        read_csv_table(store.path("rounds"), ROUND_NUMERIC, required=("round",), what="rounds table")
        if store.path("rounds").is_file()
        else []
    )
    if store.path(
        "ledger"
    ).is_file():  # not drawn, but the costs in users.csv come from it: a damaged one is said
        read_csv_table(
            store.path("ledger"),
            LEDGER_NUMERIC,
            required=("round", "user", "direction", "bytes"),
            what="ledger",
            checks=LEDGER_CHECKS,
        )
    mode = summary.get("mode") or nested_get(config, "federation", "mode") or "unknown"
    return Run(root, str(mode), summary, config, users, evaluations, rounds)


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Read every run and give each a label (its mode; the folder name too when two runs share a mode)."""
    runs = [load_run(p) for p in expand_run_dirs(paths)]
    label_runs(runs)
    return runs


def label_runs(runs: list[Run]) -> None:
    """Label by mode, disambiguated by the shortest distinguishing folder suffix; fix colours and markers."""
    by_mode: dict[str, list[Run]] = {}
    for run in runs:
        by_mode.setdefault(run.mode, []).append(run)
    for mode, same in by_mode.items():
        if len(same) == 1:
            same[0].label = mode
            continue
        parts = [run.root.resolve().parts for run in same]
        depth = 1
        while depth < max(len(p) for p in parts) and _ambiguous([p[-depth:] for p in parts], mode):
            depth += 1
        for run, p in zip(same, parts, strict=True):
            run.label = f"{mode} ({'/'.join(p[-depth:])})"
    used: set[str] = set()
    spare = iter(SPARE_COLORS * 4)
    for i, run in enumerate(runs):
        color = mode_style(run.mode).color
        run.color = color if color and color not in used else next(spare)
        used.add(run.color)
        run.marker = MARKERS[i % len(MARKERS)]


def _ambiguous(suffixes: list[tuple[str, ...]], mode: str) -> bool:
    """Folder suffixes that do not tell runs apart (or just repeat the mode, as `simulate --modes` folders do)."""
    return len(set(suffixes)) < len(suffixes) or (mode,) in suffixes

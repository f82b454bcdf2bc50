"""The report's tables, each built from the runs: what was run, results, costs, worst and unscored users."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpse.config import flatten
from fedpse.results.report.run_files import finite_or_nan, nested_get
from fedpse.results.report.runs import Run
from fedpse.results.report.stats import adaptation_curve, gain_stats, status_counts, unit_scale
from fedpse.results.rooms import bin_stats

WORST_USERS = 5


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  # columns aligned right (numbers)


def number_cell(value: float, digits: int = 2, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _scaled(values: list[float], kind: str, digits: int = 2) -> tuple[list[str], str]:
    scale, unit = unit_scale(values, kind)
    return [number_cell(v / scale, digits) for v in values], unit


def runs_table(runs: Sequence[Run]) -> Table:
    rows = []
    for run in runs:
        counts = status_counts(run)
        statuses = ", ".join(
            f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0]))
        )
        student = nested_get(run.config, "student", "checkpoint")
        if not student:
            layers, hidden = (nested_get(run.config, "student", k, default="?") for k in ("layers", "hidden"))
            student = f"GRU {layers}×{hidden}"
        teacher = nested_get(run.config, "teacher", "arch", default="?")
        weights = nested_get(run.config, "teacher", "checkpoint")
        if weights and teacher in ("gru", "convtasnet"):  # which weights (e.g. the dereverberation teacher's)
            teacher = f"{teacher} ({weights})"
        rounds = run.summary.get("rounds", nested_get(run.config, "federation", "num_rounds", default="–"))
        fraction = run.summary.get("fraction", nested_get(run.config, "federation", "fraction", default="–"))
        rows.append(
            [
                run.label,
                str(run.root),
                str(len(run.users)),
                statuses,
                str(rounds),
                str(fraction),
                str(student),
                str(teacher),
            ]
        )
    return Table(
        ["run", "directory", "users", "status", "rounds", "fraction", "student", "teacher"],
        rows,
        right={2, 4, 5},
    )


def results_table(runs: Sequence[Run]) -> Table:
    rows = []
    for run in runs:
        stats = gain_stats(run)
        closure = run.gap_closures()
        means = [np.nanmean(run.column(c)) if np.isfinite(run.column(c)).any() else math.nan for c in _SI_SDR]
        rows.append(
            [
                run.label,
                f"{stats.scored}/{len(run.users)}",
                *[number_cell(m) for m in means],
                number_cell(stats.mean, signed=True),
                number_cell(stats.median, signed=True),
                f"{stats.improved}/{stats.scored} ({number_cell(stats.improved_percent, 0)} %)"
                if stats.scored
                else "–",
                number_cell(float(np.nanmedian(closure)) if np.isfinite(closure).any() else math.nan),
            ]
        )
    return Table(
        [
            "run",
            "scored",
            "noisy",
            "generic",
            "personalized",
            "teacher",
            "mean gain",
            "median gain",
            "users improved",
            "median gap closure",
        ],
        rows,
        right=set(range(1, 10)),
    )


_SI_SDR = ("si_sdr_noisy", "si_sdr_generic", "si_sdr_personalized", "si_sdr_teacher")
_DNSMOS_MODELS = ("noisy", "generic", "personalized", "teacher")


def dnsmos_table(runs: Sequence[Run]) -> Table | None:
    """Mean DNSMOS OVR / SIG / BAK per model of the runs that scored it (``scoring.dnsmos``); None when none did."""
    scored = [
        run for run in runs if any(np.isfinite(run.column(f"dnsmos_ovr_{m}")).any() for m in _DNSMOS_MODELS)
    ]
    if not scored:
        return None
    rows = []
    for run in scored:
        gain = run.column("dnsmos_ovr_personalized") - run.column("dnsmos_ovr_generic")
        cells = [
            "/".join(number_cell(_mean(run.column(f"dnsmos_{q}_{m}"))) for q in ("ovr", "sig", "bak"))
            for m in _DNSMOS_MODELS
        ]
        improved = int(np.sum(gain[np.isfinite(gain)] > 0))
        count = int(np.isfinite(gain).sum())
        rows.append(
            [
                run.label,
                *cells,
                number_cell(_mean(gain), signed=True),
                f"{improved}/{count}" if count else "–",
            ]
        )
    return Table(
        ["run", "noisy", "generic", "personalized", "teacher", "mean OVR gain", "users OVR improved"],
        rows,
        right=set(range(1, 7)),
    )


def rt60_table(runs: Sequence[Run]) -> Table | None:
    """Per run whose users are in rooms (users.csv has ``rt60_s``) and per RT60 bin: users, mean gain over the
    generic student, users improved, the teacher's lead over the generic student, gap closure; None when no run
    has rooms."""
    rows = []
    for run in runs:
        if not np.isfinite(run.column("rt60_s")).any():
            continue
        for label, b in bin_stats(run.users).items():
            rows.append(
                [
                    run.label,
                    label,
                    f"{b['scored']}/{b['users']}",
                    number_cell(b["mean_gain_db"], signed=True),
                    f"{b['improved']}/{b['scored']} ({number_cell(100 * b['improved'] / b['scored'], 0)} %)"
                    if b["scored"]
                    else "–",
                    number_cell(b["teacher_lead_db"], signed=True),
                    number_cell(b["gap_closure_of_means"]),
                ]
            )
    if not rows:
        return None
    headers = ["run", "RT60", "scored", "mean gain", "users improved", "teacher lead", "gap closure"]
    return Table(headers, rows, right=set(range(2, 7)))


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def costs_table(runs: Sequence[Run]) -> Table:
    """Totals per mode: per-user bytes, exposed audio and compute, run totals, wall time."""
    columns: list[list[str]] = []
    headers = []
    for name, kind, label in [
        ("bytes_up", "bytes", "up / user"),
        ("bytes_down", "bytes", "down / user"),
    ]:
        cells, unit = _scaled([run.cost_per_user(name) for run in runs], kind)
        columns.append(cells)
        headers.append(f"{label} ({unit})")
    columns.append([number_cell(run.cost_per_user("audio_seconds_exposed"), 1) for run in runs])
    headers.append("audio exposed / user (s)")
    columns.append([number_cell(run.cost_total("audio_seconds_exposed"), 0) for run in runs])
    headers.append("audio exposed, all users (s)")
    for name, label in [("device_macs", "device / user"), ("server_macs", "server / user")]:
        cells, unit = _scaled([run.cost_per_user(name) for run in runs], "macs")
        columns.append(cells)
        headers.append(f"{label} ({unit})")
    for name, label in [("bytes_up", "up, all users"), ("bytes_down", "down, all users")]:
        cells, unit = _scaled([run.cost_total(name) for run in runs], "bytes")
        columns.append(cells)
        headers.append(f"{label} ({unit})")
    if any(np.isfinite(run.column("sim_seconds")).any() for run in runs):  # runs with simulated devices
        columns.append([number_cell(run.cost_per_user("sim_seconds"), 1) for run in runs])
        headers.append("simulated device time / user (s)")
    columns.append([number_cell(finite_or_nan(run.summary.get("wall_seconds")), 1) for run in runs])
    headers.append("wall (s)")
    rows = [[run.label, *[col[k] for col in columns]] for k, run in enumerate(runs)]
    return Table(["run", *headers], rows, right=set(range(1, len(headers) + 1)))


def worst_users_table(runs: Sequence[Run], count: int = WORST_USERS) -> Table:
    rows = []
    for run in runs:
        gains = run.gains()
        if not np.any(gains[np.isfinite(gains)] != 0):
            continue  # nothing adapted (the generic baseline): no user is worse than another
        order = [k for k in np.argsort(np.where(np.isfinite(gains), gains, np.inf)) if np.isfinite(gains[k])]
        for k in order[:count]:
            row = run.users[k]
            rows.append(
                [
                    run.label,
                    row.get("user", "?"),
                    row.get("status", "") or "–",
                    number_cell(row.get("si_sdr_generic", math.nan)),
                    number_cell(row.get("si_sdr_personalized", math.nan)),
                    number_cell(row.get("si_sdr_teacher", math.nan)),
                    number_cell(float(gains[k]), signed=True),
                    number_cell(float(run.gap_closures()[k])),
                ]
            )
    return Table(
        ["run", "user", "status", "generic", "personalized", "teacher", "gain (dB)", "gap closure"],
        rows,
        right={3, 4, 5, 6, 7},
    )


def unscored_users_table(runs: Sequence[Run]) -> Table | None:
    """Users that failed or have no scores, with their error, if any."""
    rows = []
    for run in runs:
        gains = run.gains()
        for k, row in enumerate(run.users):
            status = row.get("status", "") or "–"
            if status not in ("ok", "–") or not math.isfinite(gains[k]):
                error = (row.get("error") or "").strip().replace("\n", " ")
                rows.append([run.label, row.get("user", "?"), status, error[:160] or "–"])
    return Table(["run", "user", "status", "error"], rows) if rows else None


def rounds_table(runs: Sequence[Run]) -> Table:
    rows = []
    for run in runs:
        means, _ = adaptation_curve(run)
        for m in means:
            rows.append(
                [
                    run.label,
                    str(m["round"]),
                    str(m["users"]),
                    number_cell(m["minutes"]),
                    number_cell(m["gain"], signed=True),
                ]
            )
    return Table(
        ["run", "round", "users scored", "adaptation audio (min / user)", "mean gain (dB)"],
        rows,
        {1, 2, 3, 4},
    )


def per_user_table(runs: Sequence[Run]) -> Table:
    rows = []
    for run in runs:
        gains, closures = run.gains(), run.gap_closures()
        for k, row in enumerate(run.users):
            rows.append(
                [
                    row.get("user", "?"),
                    run.label,
                    row.get("status", "") or "–",
                    *[number_cell(row.get(c, math.nan)) for c in _SI_SDR],
                    number_cell(float(gains[k]), signed=True),
                    number_cell(float(closures[k])),
                    number_cell(row.get("audio_seconds_exposed", math.nan), 1),
                ]
            )
    rows.sort(key=lambda r: r[0])
    return Table(
        [
            "user",
            "run",
            "status",
            "noisy",
            "generic",
            "personalized",
            "teacher",
            "gain (dB)",
            "gap closure",
            "audio exposed (s)",
        ],
        rows,
        right=set(range(3, 10)),
    )


_KNOWN_SUMMARY_KEYS = {
    "mode",
    "run_dir",
    "world",
    "users",
    "rounds",
    "fraction",
    "users_ok",
    "users_failed",
    "users_not_selected",
    "mean",
    "totals",
    "per_user",
    "student_params",
    "student_fp32_bytes",
    "teacher_params",
    "teacher_fp32_bytes",
    "precision",
    "upload_codec",
    "wall_seconds",
    "simulation",
    "guard",  # the personalization guard's table
    "rt60_bins",  # the RT60 table (from users.csv)
}


def extra_summary_table(runs: Sequence[Run]) -> Table | None:
    """summary.json fields the report does not know (e.g. a mode's ``cold_start``), one column per run."""
    values: list[dict[str, Any]] = []
    for run in runs:
        extra = {k: v for k, v in run.summary.items() if k not in _KNOWN_SUMMARY_KEYS}
        values.append(flatten(extra))
    fields = list(dict.fromkeys(name for per_run in values for name in per_run))
    if not fields:
        return None
    rows = [[name, *(_plain(per_run.get(name)) for per_run in values)] for name in fields]
    return Table(["field", *(run.label for run in runs)], rows, right=set(range(1, len(runs) + 1)))


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return number_cell(value, 3 if abs(value) < 1000 else 0)
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "–"
    return "–" if value is None else str(value)


# ------------------------------------------------------------------------------------------ the guard
def _guarded(run: Run) -> bool:
    return any(row.get("guard_decision") for row in run.users)


def guard_table(runs: Sequence[Run]) -> Table | None:
    """Per run with ``adapt.guard`` on: its decisions and the mean and worst gain with and without it (without =
    every fine-tuned student adopted, ``gain_unguarded_db``); None when no run used the guard."""
    guarded = [run for run in runs if _guarded(run)]
    if not guarded:
        return None
    rows = []
    for run in guarded:
        decisions = [row.get("guard_decision", "") for row in run.users]
        with_guard, without = run.gains(), run.column("gain_unguarded_db")
        rows.append(
            [
                run.label,
                str(decisions.count("kept_generic")),
                str(decisions.count("adopted")),
                number_cell(_mean(with_guard), signed=True),
                number_cell(_mean(without), signed=True),
                number_cell(_min(with_guard), signed=True),
                number_cell(_min(without), signed=True),
            ]
        )
    headers = ["run", "kept generic", "adopted", "mean gain", "without guard", "worst user", "worst without"]
    return Table(headers, rows, right=set(range(1, 7)))


def guard_users_table(runs: Sequence[Run]) -> Table:
    """Every user of the guarded runs: the guard's decision, its scores and the gain with and without it."""
    rows = []
    for run in (r for r in runs if _guarded(r)):
        gains, without = run.gains(), run.column("gain_unguarded_db")
        lead = run.column("guard_teacher_lead_db")
        student = run.column("guard_personalized_db") - run.column("guard_generic_db")
        for k, row in enumerate(run.users):
            rows.append(
                [
                    run.label,
                    str(row.get("user", "?")),
                    str(row.get("guard_decision") or "–"),
                    number_cell(lead[k], signed=True),
                    number_cell(student[k], signed=True),
                    number_cell(gains[k], signed=True),
                    number_cell(without[k], signed=True),
                ]
            )
    headers = [
        "run",
        "user",
        "decision",
        "teacher lead",
        "fine-tuned − generic",
        "gain",
        "gain without guard",
    ]
    return Table(headers, rows, right=set(range(3, 7)))


def _min(values: np.ndarray) -> float:
    return float(np.nanmin(values)) if np.isfinite(values).any() else math.nan

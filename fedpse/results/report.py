"""Reports over finished run directories: PNG figures, a Markdown report and a self-contained HTML page.

``build_report([run_dir, ...], out_dir)`` reads each run (``users.csv``, ``summary.json``, ``evaluations.csv``,
``rounds.csv``, ``config.yaml``; see ``fedpse.results.store``; ``ledger.csv`` is only validated), draws the figures
and writes::

    OUT/report.md        the report, referencing figures/*.png
    OUT/report.html      the same report with the figures embedded (one file, no external references)
    OUT/figures/*.png    gain_distribution, gain_vs_minutes, gap_closure, tradeoffs

Columns are read by name: optional columns may be missing or empty, extra columns are ignored. A directory that
cannot be read raises ``ReportError`` naming the file (and line) at fault; so does a number that is not finite (an
empty cell is "no value"; a ``nan`` or ``inf`` cell was written by something broken). Figure functions are pure:
runs in, PNG bytes out (matplotlib's Agg canvas, no pyplot state).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedpse.config import flatten
from fedpse.results.store import (
    LEDGER_COLUMNS,
    LEDGER_TEXT_COLUMNS,
    USER_COLUMNS,
    USER_TEXT_COLUMNS,
    RunStore,
)

# Said when a started run directory (it has config.yaml) lacks users.csv or summary.json, written when a run ends.
UNFINISHED_HINT = "is this a finished fedpse run directory? (fedpse simulate --resume {root} finishes it)"
# Modes drawn on the trade-off plots as references but kept off the Pareto front: not deployable.
REFERENCE_MODES = frozenset({"oracle_clean"})
WORST_USERS = 5
FIGURE_DPI = 110

USER_NUMERIC = set(USER_COLUMNS) - USER_TEXT_COLUMNS
EVALUATION_NUMERIC = {
    "round",
    "si_sdr_generic",
    "si_sdr_personalized",
    "si_sdr_teacher",
    "gain_db",
    "adapt_audio_seconds",
}
ROUND_NUMERIC = {"round", "selected", "completed", "failed", "mean_gain_db", "wall_seconds"}
LEDGER_NUMERIC = set(LEDGER_COLUMNS) - LEDGER_TEXT_COLUMNS


def _whole(value: float) -> bool:
    return math.isfinite(value) and value >= 0 and value == int(value)


def _non_negative_or_empty(value: float) -> bool:
    return math.isnan(value) or value >= 0


# Per ledger column: (accepted?, what was expected). Every message row has a round, a direction and a size.
LEDGER_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "round": (_whole, "a whole number >= 0 (0 = registration)"),
    "direction": (lambda v: v in ("up", "down"), "'up' or 'down'"),
    "bytes": (_whole, "a whole number of bytes >= 0"),
    **{
        name: (_non_negative_or_empty, "a number >= 0, or empty when unknown")
        for name in ("audio_seconds", "device_macs", "server_macs", "sim_seconds", "wall_seconds")
    },
}
# Per-user cost columns of users.csv: (column, what it is).
COSTS = {
    "bytes_up": "bytes up",
    "bytes_down": "bytes down",
    "audio_seconds_exposed": "raw audio uploaded (s)",
    "device_macs": "device MACs",
    "server_macs": "server MACs",
}
# Stable colours for the known modes, so a mode looks the same in every report.
MODE_COLORS = {
    "pseudo_targets": "#1f77b4",
    "teacher_weights": "#2ca02c",
    "cloud_student": "#ff7f0e",
    "generic": "#7f7f7f",
    "oracle_clean": "#d62728",
    "fedavg_generic": "#9467bd",
}
FRONT_COLOR = "#f2b134"
# Order of a `simulate --modes` folder's runs in a report: baseline first, the oracle upper bound last.
MODE_ORDER = [
    "generic",
    "fedavg_generic",
    "pseudo_targets",
    "teacher_weights",
    "cloud_student",
    "oracle_clean",
]
SPARE_COLORS = ["#17becf", "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173"]
MARKERS = ["o", "s", "D", "P", "X", "h", "p", "*", "<", ">"]


class ReportError(ValueError):
    """A run directory the report cannot use; the message names the file (and line) and what was expected."""


# ------------------------------------------------------------------------------------------------ reading runs


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
        return self.mode in REFERENCE_MODES

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
        return _finite_or_nan(_get(self.summary, "per_user", name))

    def cost_total(self, name: str) -> float:
        values = self.column(name)
        if np.isfinite(values).any():
            return float(np.nansum(values))
        return _finite_or_nan(_get(self.summary, "totals", name))


def _get(node: Any, *keys: str, default: Any = None) -> Any:
    """``node[k1][k2]…`` through nested dicts, or ``default`` where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _finite_or_nan(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _number(text: str) -> float:
    """A CSV cell as a float: empty → NaN (no value); non-numeric or non-finite text raises ValueError."""
    text = text.strip()
    if not text:
        return math.nan
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not finite")
    return value


def read_csv_table(
    path: Path,
    numeric: set[str],
    required: Sequence[str] = (),
    what: str = "table",
    checks: dict[str, tuple[Callable[[Any], bool], str]] | None = None,
) -> list[dict]:
    """Rows of a run table as dicts; ``numeric`` columns (those present) parsed as floats.

    Raises ``ReportError`` naming the file and line for a missing header, a row with the wrong number of fields
    (e.g. a truncated last line), a non-numeric or non-finite value in a numeric column, or a value that fails the
    column's entry in ``checks`` (``{column: (accepted(value) -> bool, what was expected)}``).
    """
    checks = checks or {}
    rows: list[dict] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise ReportError(f"{path}: empty — expected a CSV header line (the {what})")
            absent = [c for c in required if c not in header]
            if absent:
                raise ReportError(
                    f"{path}, line 1: no column(s) {', '.join(absent)} — not a fedpse {what} "
                    f"(header: {', '.join(header[:6])}{', …' if len(header) > 6 else ''})"
                )
            parse = [c in numeric for c in header]
            for fields in reader:
                if not fields:
                    continue
                line = reader.line_num
                if len(fields) != len(header):
                    raise ReportError(
                        f"{path}, line {line}: {len(fields)} fields where the header has {len(header)} "
                        "— the file is truncated or corrupt"
                    )
                row: dict[str, Any] = {}
                for name, text, is_number in zip(header, fields, parse, strict=True):
                    if is_number:
                        try:
                            row[name] = _number(text)
                        except ValueError:
                            kind = "finite number" if _is_float(text) else "number"
                            raise ReportError(
                                f"{path}, line {line}: column {name} = {text[:40]!r} is not a {kind} "
                                "(an empty cell means no value)"
                            ) from None
                    else:
                        row[name] = text
                    if name in checks and not checks[name][0](row[name]):
                        raise ReportError(
                            f"{path}, line {line}: column {name} = {text[:40]!r}; expected {checks[name][1]}"
                        )
                rows.append(row)
    except csv.Error as err:
        raise ReportError(f"{path}: not a readable CSV file ({err})") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text CSV file (undecodable bytes) — the file is corrupt") from None
    return rows


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_summary(store: RunStore) -> dict:
    path = store.root / "summary.json"
    try:
        summary = store.read_summary()
    except json.JSONDecodeError as err:
        raise ReportError(
            f"{path}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}) — the file is corrupt"
        ) from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text JSON file (undecodable bytes) — the file is corrupt") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{path}: expected a JSON object (the run's summary), got {type(summary).__name__}")
    return summary


def read_config(path: Path) -> dict:
    """The run's resolved config as a plain dict ({} if absent: it only adds context to the report)."""
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ReportError(f"{path}{where}: not valid YAML — the file is corrupt") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text YAML file (undecodable bytes) — the file is corrupt") from None
    return config if isinstance(config, dict) else {}


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
    return sorted(
        runs, key=lambda p: (MODE_ORDER.index(p.name) if p.name in MODE_ORDER else len(MODE_ORDER), p.name)
    )


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
    mode = summary.get("mode") or _get(config, "federation", "mode") or "unknown"
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
        color = MODE_COLORS.get(run.mode)
        run.color = color if color and color not in used else next(spare)
        used.add(run.color)
        run.marker = MARKERS[i % len(MARKERS)]


def _ambiguous(suffixes: list[tuple[str, ...]], mode: str) -> bool:
    """Folder suffixes that do not tell runs apart (or just repeat the mode, as `simulate --modes` folders do)."""
    return len(set(suffixes)) < len(suffixes) or (mode,) in suffixes


# ------------------------------------------------------------------------------------------------ statistics


def pareto_front(costs: Sequence[float], gains: Sequence[float], tolerance_db: float = 0.01) -> list[int]:
    """Indices of the points no other point beats: one costs no more and gains at least as much, one strictly.

    Gains within ``tolerance_db`` count as equal (modes that reach the same students differ only by rounding),
    so then the cheaper one wins. Points with a NaN cost or gain are never on the front and beat nothing.
    """
    finite = [i for i, (c, g) in enumerate(zip(costs, gains, strict=True)) if math.isfinite(c + g)]

    def beats(j: int, i: int) -> bool:
        no_worse = costs[j] <= costs[i] and gains[j] >= gains[i] - tolerance_db
        return no_worse and (costs[j] < costs[i] or gains[j] > gains[i] + tolerance_db)

    return [i for i in finite if not any(beats(j, i) for j in finite if j != i)]


@dataclass
class GainStats:
    scored: int
    improved: int
    mean: float
    median: float

    @property
    def improved_percent(self) -> float:
        return 100.0 * self.improved / self.scored if self.scored else math.nan


def gain_stats(run: Run) -> GainStats:
    gains = run.gains()
    scored = gains[np.isfinite(gains)]
    if not scored.size:
        return GainStats(0, 0, math.nan, math.nan)
    return GainStats(
        int(scored.size), int((scored > 0).sum()), float(scored.mean()), float(np.median(scored))
    )


def status_counts(run: Run) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in run.users:
        status = row.get("status") or "unknown"
        counts[status] = counts.get(status, 0) + 1
    return counts


def adaptation_curve(run: Run) -> tuple[list[dict], list[tuple[float, float]]]:
    """Per-round means and per-(round, user) points of (cumulative adaptation minutes, gain dB).

    Adaptation minutes are the distinct unlabeled audio a user's student has been fine-tuned on by that round:
    the running maximum of each round's ``adapt_audio_seconds`` (``federation.adapt_on=all`` retrains on
    everything so far), or the running sum when ``federation.adapt_on=new``.
    """
    adapt_on = _get(run.config, "federation", "adapt_on", default="all")
    heard: dict[str, float] = {}
    by_round: dict[float, list[tuple[float, float]]] = {}
    points = []
    rows = sorted(
        (r for r in run.evaluations if math.isfinite(r.get("round", math.nan))), key=lambda r: r["round"]
    )
    for row in rows:
        gain = row.get("gain_db", math.nan)
        if not math.isfinite(gain):
            gain = row.get("si_sdr_personalized", math.nan) - row.get("si_sdr_generic", math.nan)
        seconds = row.get("adapt_audio_seconds", math.nan)
        seconds = seconds if math.isfinite(seconds) else 0.0
        user = row.get("user", "?")
        before = heard.get(user, 0.0)
        heard[user] = before + seconds if adapt_on == "new" else max(before, seconds)
        if math.isfinite(gain):
            point = (heard[user] / 60.0, gain)
            points.append(point)
            by_round.setdefault(row["round"], []).append(point)
    means = [
        {
            "round": int(r),
            "users": len(pts),
            "minutes": float(np.mean([p[0] for p in pts])),
            "gain": float(np.mean([p[1] for p in pts])),
        }
        for r, pts in sorted(by_round.items())
    ]
    return means, points


# ------------------------------------------------------------------------------------------------ figures


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, facecolor="white", bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


def _nested_width(i: int, n: int, thinnest: float = 1.6, step: float = 1.3) -> float:
    """Earlier runs drawn wider, so runs with identical curves show as nested stripes instead of hiding."""
    return thinnest + step * (n - 1 - i)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777")


def _style(ax) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def figure_gain_distribution(runs: Sequence[Run]) -> bytes:
    """Per-user gain: empirical CDF per run (left) and box plots with every user as a dot (right)."""
    fig = _figure(12.5, 4.8)
    cdf_ax, box_ax = fig.subplots(1, 2, width_ratios=[1.6, min(1.4, 0.35 + 0.25 * len(runs))])
    fig.suptitle("Per-user SI-SDR gain, personalized − generic", fontweight="bold")
    rng = np.random.default_rng(0)
    any_scored = False
    for i, run in enumerate(runs):
        gains = run.gains()
        gains = np.sort(gains[np.isfinite(gains)])
        stats = gain_stats(run)
        if gains.size:
            any_scored = True
            steps = np.arange(1, gains.size + 1) / gains.size
            cdf_ax.step(
                np.r_[gains[0], gains],
                np.r_[0.0, steps],
                where="post",
                color=run.color,
                linewidth=_nested_width(i, len(runs)),
                alpha=0.9,
                label=f"{run.label}: {stats.improved_percent:.0f} % improved",
            )
            box_ax.boxplot(
                [gains],
                positions=[i],
                widths=0.55,
                showfliers=False,
                medianprops={"color": run.color, "linewidth": 2},
                boxprops={"color": "#444444"},
                whiskerprops={"color": "#444444"},
                capprops={"color": "#444444"},
            )
            jitter = rng.uniform(-0.17, 0.17, gains.size)
            box_ax.scatter(i + jitter, gains, s=14, color=run.color, alpha=0.7, zorder=3, linewidths=0)
        else:
            box_ax.text(
                i,
                0.5,
                "no scored\nusers",
                ha="center",
                va="center",
                fontsize=8,
                color="#777777",
                transform=box_ax.get_xaxis_transform(),
            )
    for ax in (cdf_ax, box_ax):
        _style(ax)
    cdf_ax.axvline(0, color="black", linewidth=1)
    cdf_ax.set_xlabel("gain (dB)")
    cdf_ax.set_ylabel("fraction of users with gain ≤ x")
    cdf_ax.set_ylim(0, 1.02)
    cdf_ax.set_title("cumulative distribution", fontsize=10)
    if any_scored:
        fig.legend(loc="outside lower center", ncols=min(len(runs), 4), fontsize=9)
    else:
        _no_data(cdf_ax, "no scored users")
    box_ax.axhline(0, color="black", linewidth=1)
    box_ax.set_xticks(range(len(runs)), [_wrap(run.label) for run in runs], fontsize=8)
    box_ax.set_xlim(-0.6, len(runs) - 0.4)
    box_ax.set_ylabel("gain (dB)")
    box_ax.set_title("box: quartiles, whiskers 1.5 IQR; dots: users", fontsize=10)
    return _png(fig)


def figure_gain_vs_minutes(runs: Sequence[Run]) -> bytes:
    """Mean gain after each round against the unlabeled audio the students have been fine-tuned on."""
    from matplotlib.lines import Line2D

    fig = _figure(9.0, 5.0)
    ax = fig.subplots()
    _style(ax)
    drawn = 0
    labelled: set[tuple[float, float]] = set()
    for i, run in enumerate(runs):
        means, points = adaptation_curve(run)
        if not means:
            continue
        drawn += 1
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=10, color=run.color, alpha=0.25, linewidths=0)
        ax.plot(
            [0.0] + [m["minutes"] for m in means],
            [0.0] + [m["gain"] for m in means],
            color=run.color,
            linewidth=_nested_width(i, len(runs)),
            alpha=0.9,
            marker=run.marker,
            markersize=5 + 2.5 * (len(runs) - 1 - i),
            markerfacecolor="none",
            markeredgewidth=1.5,
            label=run.label,
        )
        if len(means) <= 8:
            for m in means:
                spot = (round(m["minutes"], 2), round(m["gain"], 1))
                if m["minutes"] > 0 and spot not in labelled:
                    labelled.add(spot)
                    ax.annotate(
                        f"round {m['round']}",
                        (m["minutes"], m["gain"]),
                        textcoords="offset points",
                        xytext=(8, -14),
                        fontsize=7.5,
                        color="#444444",
                    )
    ax.axhline(0, color="black", linewidth=1)
    ax.set_xlabel("unlabeled audio fine-tuned on (minutes per user, cumulative)")
    ax.set_ylabel("SI-SDR gain (dB)")
    ax.set_title("Gain vs adaptation audio, round by round", fontweight="bold")
    ax.set_xlim(left=-0.02)
    if drawn:
        handles = [
            Line2D(
                [],
                [],
                color=run.color,
                linewidth=2,
                marker=run.marker,
                markerfacecolor="none",
                label=run.label,
            )
            for run in runs
        ]
        ax.legend(handles=handles, loc="upper left", fontsize=8)
    else:
        _no_data(ax, "no per-round evaluations (evaluations.csv) in these runs")
    return _png(fig)


def figure_gap_closure(runs: Sequence[Run], clip: tuple[float, float] = (-1.0, 2.0)) -> bytes:
    """Teacher–student gap per user: gain against the teacher's lead (left), gap closure per user (right)."""
    from matplotlib.lines import Line2D

    fig = _figure(13.0, 5.4)
    gap_ax, user_ax = fig.subplots(1, 2, width_ratios=[1, 1.5])
    fig.suptitle(
        "Teacher–student gap closure: (personalized − generic) / (teacher − generic)", fontweight="bold"
    )
    for ax in (gap_ax, user_ax):
        _style(ax)
    users = sorted({u for run in runs for u in run.user_ids()})
    position = {u: k for k, u in enumerate(users)}
    dodge = min(0.6 / max(len(runs), 1), 0.2)
    closures_all = np.concatenate([run.gap_closures() for run in runs]) if runs else np.array([])
    finite_all = closures_all[np.isfinite(closures_all)]
    low = max(clip[0], min(-0.1, float(finite_all.min()) if finite_all.size else 0.0))
    high = min(clip[1], max(1.1, float(finite_all.max()) if finite_all.size else 1.0))
    bottom = low - 0.08 * (high - low)
    leads: list[float] = []
    undefined = 0
    for i, run in enumerate(runs):
        gaps, gains, closures = run.teacher_gaps(), run.gains(), run.gap_closures()
        ok = np.isfinite(gaps) & np.isfinite(gains)
        if ok.any():
            leads.extend(gaps[ok].tolist())
            gap_ax.scatter(
                gaps[ok],
                gains[ok],
                s=20 + 14 * (len(runs) - 1 - i),
                marker=run.marker,
                facecolors="none",
                edgecolors=run.color,
                linewidths=1.4,
            )
        xs = np.array([position[u] for u in run.user_ids()], dtype=float) + (i - (len(runs) - 1) / 2) * dodge
        finite = np.isfinite(closures)
        shown = np.clip(closures, low, high)
        inside = finite & (closures >= low) & (closures <= high)
        user_ax.scatter(xs[inside], shown[inside], s=26, marker=run.marker, color=run.color, zorder=3)
        for beyond, marker in ((finite & (closures > high), "^"), (finite & (closures < low), "v")):
            if beyond.any():
                user_ax.scatter(
                    xs[beyond],
                    shown[beyond],
                    s=44,
                    marker=marker,
                    color=run.color,
                    edgecolors="black",
                    linewidths=0.6,
                    zorder=4,
                )
        missing = ~finite & np.isfinite(gaps)
        undefined += int(missing.sum())
        user_ax.scatter(xs[missing], np.full(missing.sum(), bottom), s=22, marker="x", color="#888888")
    if leads:
        line = np.array([min(0.0, min(leads)), max(0.0, max(leads))]) * 1.05
        gap_ax.plot(line, line, color="black", linewidth=1)
        gap_ax.plot(line, line / 2, color="black", linewidth=1, linestyle=":")
        gap_ax.axhline(0, color="#555555", linewidth=0.8)
        gap_ax.axvline(0, color="#555555", linewidth=0.8)
    else:
        _no_data(gap_ax, "no users with teacher and student scores")
    gap_ax.set_xlabel("teacher − generic (dB): the teacher's lead")
    gap_ax.set_ylabel("personalized − generic (dB): the gain")
    gap_ax.set_title("each marker a user", fontsize=10)
    user_ax.axhline(1, color="black", linewidth=1)
    user_ax.axhline(0, color="#555555", linewidth=0.8)
    user_ax.set_ylim(bottom - 0.06 * (high - low), high + 0.08 * (high - low))
    user_ax.set_ylabel("gap closure")
    user_ax.set_title(f"per user: 1 = reached the teacher; ▲/▼ beyond [{low:.2g}, {high:.2g}]", fontsize=10)
    if len(users) <= 60:
        rotation = 0 if len(users) <= 10 else 90
        user_ax.set_xticks(range(len(users)), users, rotation=rotation, fontsize=7 if len(users) > 20 else 8)
    else:
        user_ax.set_xticks([])
        user_ax.set_xlabel(f"{len(users)} users, by id")
    user_ax.set_xlim(-0.7, len(users) - 0.3)
    handles = [
        Line2D([], [], linestyle="none", marker=run.marker, color=run.color, label=run.label) for run in runs
    ]
    handles += [
        Line2D([], [], color="black", linewidth=1, label="left: gap closed (= teacher)"),
        Line2D([], [], color="black", linewidth=1, linestyle=":", label="left: half the gap"),
    ]
    if undefined:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="x",
                color="#888888",
                label="right: no closure (teacher ≤ generic)",
            )
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=9)
    return _png(fig)


def _unit(values: Sequence[float], kind: str) -> tuple[float, str]:
    """A scale and unit name so the largest value reads between 1 and 1000."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    top = max(finite, default=0.0)
    if kind == "bytes":
        ladder = [(1.0, "B"), (1e3, "kB"), (1e6, "MB"), (1e9, "GB")]
    elif kind == "macs":
        ladder = [(1.0, "MAC"), (1e6, "MMAC"), (1e9, "GMAC"), (1e12, "TMAC")]
    else:
        return 1.0, "s"
    scale, name = ladder[0]
    for step, step_name in ladder:
        if top >= step:
            scale, name = step, step_name
    return scale, name


MAX_POINT_LABELS = 6
TRADEOFFS = [
    ("audio_seconds_exposed", "seconds", "privacy: raw audio uploaded", "raw audio uploaded per user"),
    ("bytes_up", "bytes", "upload", "bytes up per user"),
    ("bytes_down", "bytes", "download", "bytes down per user"),
    ("device_macs", "macs", "device compute", "device compute per user"),
]


def tradeoff_points(runs: Sequence[Run], cost: str) -> tuple[list[float], list[float], list[int]]:
    """Per-user cost and mean gain of each run, and the Pareto front (indices into runs; references left out)."""
    costs = [run.cost_per_user(cost) for run in runs]
    gains = [gain_stats(run).mean for run in runs]
    candidates = [i for i, run in enumerate(runs) if not run.reference]
    front = pareto_front([costs[i] for i in candidates], [gains[i] for i in candidates])
    return costs, gains, [candidates[k] for k in front]


def figure_tradeoffs(runs: Sequence[Run]) -> bytes:
    """Mean gain against each per-user cost, the Pareto front (lowest cost for the gain) highlighted."""
    from matplotlib.lines import Line2D

    fig = _figure(4.6 * len(TRADEOFFS), 5.0)
    axes = fig.subplots(1, len(TRADEOFFS), sharey=True)
    fig.suptitle("Mean gain vs what it costs each user", fontweight="bold")
    for ax, (cost, kind, title, xlabel) in zip(axes, TRADEOFFS, strict=True):
        _style(ax)
        costs, gains, front = tradeoff_points(runs, cost)
        scale, unit = _unit(costs, kind)
        xs = [c / scale for c in costs]
        if len(front) > 1:
            order = sorted(front, key=lambda i: (xs[i], gains[i]))
            ax.step(
                [xs[i] for i in order],
                [gains[i] for i in order],
                where="post",
                color=FRONT_COLOR,
                linewidth=7,
                alpha=0.5,
                solid_capstyle="round",
                zorder=1,
            )
        for i, run in enumerate(runs):
            if not (math.isfinite(xs[i]) and math.isfinite(gains[i])):
                continue
            if i in front:
                ax.scatter(xs[i], gains[i], s=330, color=FRONT_COLOR, alpha=0.6, linewidths=0, zorder=2)
            ax.scatter(
                xs[i],
                gains[i],
                s=70,
                marker=run.marker,
                color="white" if run.reference else run.color,
                edgecolors=run.color,
                linewidths=2.0 if run.reference else 1.0,
                zorder=3,
            )
        if len(runs) <= MAX_POINT_LABELS:  # beyond that the labels pile up: the legend names every marker
            _annotate_groups(ax, xs, gains, runs)
        if not any(math.isfinite(g) for g in gains):
            _no_data(ax, "no scored users")
            ax.set_ylim(-1, 1)
        ax.axhline(0, color="#555555", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{xlabel} ({unit})")
        ax.margins(y=0.15)
        right = max((x for x in xs if math.isfinite(x)), default=0.0) or 1.0
        ax.set_xlim(-0.06 * right, 1.15 * right)  # from zero: a cost axis that starts elsewhere misleads
    axes[0].set_ylabel("mean SI-SDR gain (dB)")
    handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=run.marker,
            markersize=8,
            color=run.color,
            markerfacecolor="white" if run.reference else run.color,
            label=run.label + (" (reference: kept off the front)" if run.reference else ""),
        )
        for run in runs
    ]
    handles.append(
        Line2D(
            [], [], color=FRONT_COLOR, linewidth=7, alpha=0.5, marker="o", markersize=14, label="Pareto front"
        )
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=9)
    return _png(fig)


def _annotate_groups(ax, xs: list[float], ys: list[float], runs: Sequence[Run]) -> None:
    """Name the points; runs at the same spot share one label instead of printing over each other."""
    finite = [i for i in range(len(runs)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
    if not finite:
        return
    span_x = (max(xs[i] for i in finite) - min(xs[i] for i in finite)) or 1.0
    span_y = (max(ys[i] for i in finite) - min(ys[i] for i in finite)) or 1.0
    groups: list[list[int]] = []
    for i in finite:
        for group in groups:
            j = group[0]
            if abs(xs[i] - xs[j]) < 0.03 * span_x and abs(ys[i] - ys[j]) < 0.05 * span_y:
                group.append(i)
                break
        else:
            groups.append([i])
    for group in groups:
        j = group[0]
        on_right = xs[j] > min(xs[i] for i in finite) + 0.6 * span_x
        ax.annotate(
            "\n".join(runs[i].label for i in group),
            (xs[j], ys[j]),
            textcoords="offset points",
            xytext=(-9, 8) if on_right else (9, 8),
            ha="right" if on_right else "left",
            fontsize=7.5,
            color="#333333",
            zorder=4,
        )


def _wrap(label: str, width: int = 16) -> str:
    """Break long run labels (at '_', ' ' or '/') so tick labels do not run into each other."""
    if len(label) <= width:
        return label
    pieces = re.split(r"(?<=[_ /(])", label)
    lines, line = [], ""
    for piece in pieces:
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\n".join(lines)


FIGURES: dict[str, tuple[Callable[[Sequence[Run]], bytes], str]] = {
    "gain_distribution": (
        figure_gain_distribution,
        "Per-user SI-SDR gain (personalized − generic): cumulative distribution and box plot, per run.",
    ),
    "gain_vs_minutes": (
        figure_gain_vs_minutes,
        "Mean gain after each round against the unlabeled audio each student has been fine-tuned on; "
        "faint dots are individual users.",
    ),
    "gap_closure": (
        figure_gap_closure,
        "Teacher–student gap closure per user: the gain against the teacher's lead over the generic student "
        "(on the solid line a user reached the teacher), and each user's closure. Closure is undefined (–, ×) for "
        "users whose teacher is not better than their generic student.",
    ),
    "tradeoffs": (
        figure_tradeoffs,
        "Mean gain against raw audio uploaded, bytes downloaded and device compute per user; the shaded step is "
        "the Pareto front (no other run gains more for less). Reference modes (oracle_clean: clean targets, "
        "simulation only) are hollow and kept off the front.",
    ),
}


# ------------------------------------------------------------------------------------------------ document


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  # columns aligned right (numbers)


# A report is a list of blocks, rendered to Markdown and to HTML alike:
#   ("h1"|"h2"|"h3", text)  ("p", text)  ("list", [text])  ("table", Table)  ("figure", name, caption)
#   ("details", summary, [blocks])
Block = tuple


def _f(value: float, digits: int = 2, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _scaled(values: list[float], kind: str, digits: int = 2) -> tuple[list[str], str]:
    scale, unit = _unit(values, kind)
    return [_f(v / scale, digits) for v in values], unit


def runs_table(runs: Sequence[Run]) -> Table:
    rows = []
    for run in runs:
        counts = status_counts(run)
        statuses = ", ".join(
            f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0]))
        )
        student = _get(run.config, "student", "checkpoint")
        if not student:
            layers, hidden = (_get(run.config, "student", k, default="?") for k in ("layers", "hidden"))
            student = f"GRU {layers}×{hidden}"
        teacher = _get(run.config, "teacher", "arch", default="?")
        rounds = run.summary.get("rounds", _get(run.config, "federation", "num_rounds", default="–"))
        fraction = run.summary.get("fraction", _get(run.config, "federation", "fraction", default="–"))
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
                *[_f(m) for m in means],
                _f(stats.mean, signed=True),
                _f(stats.median, signed=True),
                f"{stats.improved}/{stats.scored} ({_f(stats.improved_percent, 0)} %)"
                if stats.scored
                else "–",
                _f(float(np.nanmedian(closure)) if np.isfinite(closure).any() else math.nan),
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
    columns.append([_f(run.cost_per_user("audio_seconds_exposed"), 1) for run in runs])
    headers.append("audio exposed / user (s)")
    columns.append([_f(run.cost_total("audio_seconds_exposed"), 0) for run in runs])
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
        columns.append([_f(run.cost_per_user("sim_seconds"), 1) for run in runs])
        headers.append("simulated device time / user (s)")
    columns.append([_f(_finite_or_nan(run.summary.get("wall_seconds")), 1) for run in runs])
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
                    _f(row.get("si_sdr_generic", math.nan)),
                    _f(row.get("si_sdr_personalized", math.nan)),
                    _f(row.get("si_sdr_teacher", math.nan)),
                    _f(float(gains[k]), signed=True),
                    _f(float(run.gap_closures()[k])),
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
                [run.label, str(m["round"]), str(m["users"]), _f(m["minutes"]), _f(m["gain"], signed=True)]
            )
    return Table(
        ["run", "round", "users scored", "adaptation audio (min / user)", "mean gain (dB)"],
        rows,
        {1, 2, 3, 4},
    )


def pareto_lines(runs: Sequence[Run]) -> list[str]:
    lines = []
    for cost, _, title, _ in TRADEOFFS:
        costs, _, front = tradeoff_points(runs, cost)
        names = ", ".join(runs[i].label for i in sorted(front, key=lambda i: costs[i])) or "–"
        lines.append(f"{title}: {names}")
    return lines


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
                    *[_f(row.get(c, math.nan)) for c in _SI_SDR],
                    _f(float(gains[k]), signed=True),
                    _f(float(closures[k])),
                    _f(row.get("audio_seconds_exposed", math.nan), 1),
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
        return _f(value, 3 if abs(value) < 1000 else 0)
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "–"
    return "–" if value is None else str(value)


def report_blocks(runs: Sequence[Run], created: str) -> list[Block]:
    """The whole report as blocks (shared by the Markdown and HTML renderers)."""
    blocks: list[Block] = [
        ("h1", "fedpse report"),
        (
            "p",
            f"{len(runs)} run(s), report made {created}. SI-SDR in dB; gain = personalized − generic student on "
            "each user's held-out test mixtures; a user improved when the gain is above 0 dB.",
        ),
        ("h2", "Runs"),
        ("table", runs_table(runs)),
        ("h2", "Results"),
        ("table", results_table(runs)),
        ("h2", "Costs per mode"),
        (
            "p",
            "Per-user means and run totals from users.csv (every message charged by the ledger); audio exposed = "
            "seconds of a user's raw audio that left the device.",
        ),
        ("table", costs_table(runs)),
        ("h2", "Per-user gain"),
        ("list", [_improved_line(run) for run in runs]),
        ("figure", "gain_distribution", FIGURES["gain_distribution"][1]),
        (
            "h3",
            f"Worst users (lowest gain, up to {WORST_USERS} per run; runs where every gain is 0 left out)",
        ),
        ("table", worst_users_table(runs)),
    ]
    unscored = unscored_users_table(runs)
    if unscored is not None:
        blocks += [("h3", "Users without a final score or not ok"), ("table", unscored)]
    blocks += [
        ("h2", "Gain vs adaptation minutes"),
        ("figure", "gain_vs_minutes", FIGURES["gain_vs_minutes"][1]),
        _fold_if_long("Mean gain per round", rounds_table(runs)),
        ("h2", "Teacher–student gap closure"),
        ("figure", "gap_closure", FIGURES["gap_closure"][1]),
        ("h2", "Trade-offs: privacy, download, device compute"),
        ("figure", "tradeoffs", FIGURES["tradeoffs"][1]),
        ("p", "On the Pareto front (lowest cost for its gain; reference modes excluded):"),
        ("list", pareto_lines(runs)),
    ]
    extra = extra_summary_table(runs)
    if extra is not None:
        blocks += [("h2", "Other summary fields"), ("table", extra)]
    blocks.append(
        ("details", "Per-user results (every user of every run)", [("table", per_user_table(runs))])
    )
    return blocks


def _fold_if_long(title: str, table: Table, rows: int = 12) -> Block:
    return ("table", table) if len(table.rows) <= rows else ("details", title, [("table", table)])


def _improved_line(run: Run) -> str:
    stats = gain_stats(run)
    if not stats.scored:
        return f"{run.label}: no scored users"
    return (
        f"{run.label}: {stats.improved} of {stats.scored} users improved ({stats.improved_percent:.0f} %), "
        f"mean gain {_f(stats.mean, signed=True)} dB, median {_f(stats.median, signed=True)} dB"
    )


# ------------------------------------------------------------------------------------------------ rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], figure_dir: str = "figures") -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {block[1]}\n")
        elif kind == "p":
            out.append(block[1] + "\n")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]) + "\n")
        elif kind == "figure":
            out.append(f"![{block[1]}]({figure_dir}/{block[1]}.png)\n\n*{block[2]}*\n")
        elif kind == "table":
            table: Table = block[1]
            if not table.rows:
                out.append("(none)\n")
                continue
            align = ["---:" if k in table.right else "---" for k in range(len(table.headers))]
            lines = [
                "| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
                "| " + " | ".join(align) + " |",
                *("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows),
            ]
            out.append("\n".join(lines) + "\n")
        elif kind == "details":
            out.append(f"<details><summary>{html.escape(block[1])}</summary>\n")
            out.append(render_markdown(block[2], figure_dir))
            out.append("</details>\n")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 2em auto;
       max-width: 1400px; padding: 0 1.5em; line-height: 1.45; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #d8d8d8; padding: 3px 8px; }
th { background: #f3f5f8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; max-width: 1100px; }
details summary { cursor: pointer; font-weight: 600; margin: 1.5em 0 .5em; }
"""


def render_html(blocks: Sequence[Block], figures: dict[str, bytes], title: str = "fedpse report") -> str:
    body = _html_blocks(blocks, figures)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _html_blocks(blocks: Sequence[Block], figures: dict[str, bytes]) -> str:
    out: list[str] = []
    esc = html.escape
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{esc(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{esc(block[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "figure":
            data = base64.b64encode(figures[block[1]]).decode("ascii")
            out.append(
                f'<figure><img alt="{esc(block[1])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block[2])}</figcaption></figure>"
            )
        elif kind == "table":
            table: Table = block[1]
            if not table.rows:
                out.append("<p>(none)</p>")
                continue
            head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
            rows = "".join(
                "<tr>"
                + "".join(
                    f'<td class="num">{esc(c)}</td>' if k in table.right else f"<td>{esc(c)}</td>"
                    for k, c in enumerate(row)
                )
                + "</tr>"
                for row in table.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "details":
            out.append(
                f"<details><summary>{esc(block[1])}</summary>{_html_blocks(block[2], figures)}</details>"
            )
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ entry point


@dataclass
class Report:
    """Where a report was written."""

    out_dir: Path
    markdown: Path
    html: Path
    figures: list[Path]
    runs: list[str]


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """``RUN_DIR/report`` for one directory, ``runs/report-<date>-<time>`` for several (like simulate's runs)."""
    if len(paths) == 1:
        return Path(paths[0]).expanduser() / "report"
    return Path("runs") / f"report-{time.strftime('%Y%m%d-%H%M%S')}"


def build_report(paths: Sequence[str | Path], out_dir: str | Path | None = None) -> Report:
    """Read the runs, draw every figure and write report.md, report.html and figures/*.png under ``out_dir``."""
    runs = load_runs(paths)
    out = Path(out_dir).expanduser() if out_dir is not None else default_out_dir(paths)
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures = {name: draw(runs) for name, (draw, _) in FIGURES.items()}
    figure_paths = []
    for name, png in figures.items():
        path = figure_dir / f"{name}.png"
        path.write_bytes(png)
        figure_paths.append(path)
    blocks = report_blocks(runs, time.strftime("%Y-%m-%d %H:%M"))
    markdown = out / "report.md"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(blocks, figures), encoding="utf-8")
    return Report(out, markdown, page, figure_paths, [run.label for run in runs])

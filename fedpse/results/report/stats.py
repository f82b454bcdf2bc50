"""Numbers the report draws and tabulates: gain statistics, adaptation curves, Pareto fronts, unit scales."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedpse.results.report.run_files import nested_get
from fedpse.results.report.runs import Run


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
    adapt_on = nested_get(run.config, "federation", "adapt_on", default="all")
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


def unit_scale(values: Sequence[float], kind: str) -> tuple[float, str]:
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

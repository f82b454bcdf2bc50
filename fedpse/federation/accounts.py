"""The server's running account of a run: per user, what it took part in, how its rounds ended and its latest
scores (bounded: numbers and chunk names only); from it, ``users.csv`` rows and ``summary.json`` at the end.

A round is accounted once it commits, whether it ran now or is replayed from the tables of a resumed run: the same
arithmetic either way, so a resumed run ends with the numbers of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from torch import nn

from fedpse.distill.scores import score_row
from fedpse.federation.ledger import Ledger, stored
from fedpse.federation.plan import RunPlan
from fedpse.federation.strategies.base import UserRound
from fedpse.models.macs import count_params
from fedpse.results.rooms import bin_stats, room_columns
from fedpse.results.store import (
    EVALUATION_COLUMNS,
    GUARD_COLUMNS,
    SCORE_COLUMNS,
    USER_COLUMNS,
    RunStore,
)

SCORE_KEYS = [c for c in EVALUATION_COLUMNS if c.startswith(("si_sdr_", "pesq_", "stoi_", "dnsmos_"))]


@dataclasses.dataclass
class UserState:
    """The server's running account of one user (bounded: numbers and chunk names only)."""

    rounds_available: int = 0  # rounds whose start found the user's device inside its availability window
    rounds_selected: int = 0
    rounds_completed: int = 0
    rounds_failed: int = 0
    retries: int = 0  # selections that retried a failed round
    failed_streak: int = 0  # failed rounds since the last completed one (> 0: to be retried first)
    streak_since: int = 0  # the round the current streak of failures began
    last_ok: bool = True
    error: str = ""
    delivered: list[str] = dataclasses.field(default_factory=list)  # chunks whose round completed
    used_seconds: float = 0.0  # distinct adaptation audio the student has been trained on
    adapt_steps: int = 0
    scores: dict[str, float] = dataclasses.field(default_factory=dict)  # of the last completed round
    scored_round: int | None = None
    # the guard's decision and scores in the last completed round (adapt.guard on)
    guard: dict = dataclasses.field(default_factory=dict)
    sim_seconds: float = 0.0  # the device's simulated time in all its rounds


def only(scores: dict, columns: list[str]) -> dict:
    return {k: v for k, v in scores.items() if k in columns}


def mean(values) -> float:
    """Mean of the values that are numbers (None and NaN left out); NaN when none is."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def gain(scores: dict) -> float:
    """Personalized minus generic SI-SDR (dB); NaN for a user not scored."""
    if "si_sdr_personalized" not in scores:
        return float("nan")
    return scores["si_sdr_personalized"] - scores["si_sdr_generic"]


def finite(value):
    """NaN -> None, so summary.json stays valid JSON."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def guard_counts(rows: list[dict]) -> dict:
    """``{"guard": {"adopted": n, "kept_generic": m}}``: users by the guard's decision in their last completed
    round (nothing when no decision was made: the guard is off)."""
    decisions = [r["guard_decision"] for r in rows if r.get("guard_decision")]
    if not decisions:
        return {}
    return {"guard": {d: decisions.count(d) for d in ("adopted", "kept_generic")}}


def rt60_bins(rows: list[dict]) -> dict:
    """``{"rt60_bins": {bin: users, mean gain, improved, teacher lead, ...}}`` for a world of users in rooms
    (``fedpse.results.rooms.bin_stats``); nothing when no user has a room."""
    roomed = [r for r in rows if "rt60_s" in r]
    return {"rt60_bins": bin_stats(roomed)} if roomed else {}


class Accounts:
    """Every user's ``UserState`` in run ``plan``, and counts of how attempts ended and which faults were injected."""

    def __init__(self, plan: RunPlan, ledger: Ledger):
        self.plan = plan
        self.ledger = ledger
        self.users = {user: UserState() for user in plan.users}
        self.attempt_counts: dict[str, int] = {}
        self.injected_counts: dict[str, int] = {}

    def to_retry(self) -> list[str]:
        """Users whose last round failed, longest-failing first (they fill the next cohort first)."""
        return sorted(
            (u for u, s in self.users.items() if s.failed_streak),
            key=lambda u: (self.users[u].streak_since, u),
        )

    def adapted_seconds(self) -> dict[str, float]:
        """User -> distinct adaptation audio (s) its student trained on, for each user whose student adapted."""
        return {
            user: state.used_seconds
            for user, state in self.users.items()
            if state.rounds_completed and state.used_seconds > 0
        }

    def add(self, job: UserRound, attempt: dict, scores: dict[str, float]) -> None:
        """One committed round of ``job.user`` (live or replayed: the same arithmetic)."""
        state = self.users[job.user]
        status = attempt["status"]
        self.attempt_counts[status] = self.attempt_counts.get(status, 0) + 1
        for fault in filter(None, attempt["injected"].split("+")):
            self.injected_counts[fault] = self.injected_counts.get(fault, 0) + 1
        state.sim_seconds = stored(state.sim_seconds + attempt["sim_seconds"])
        if status != "ok":
            state.last_ok, state.error = False, attempt["error"]
            state.rounds_failed += 1
            state.streak_since = state.streak_since if state.failed_streak else job.round
            state.failed_streak += 1
        else:
            state.last_ok, state.error, state.failed_streak = True, "", 0
            state.rounds_completed += 1
            state.adapt_steps += attempt["steps"]
            if attempt["adapted"]:
                seconds = {s["name"]: s["seconds"] for s in self.plan.world.segments(job.user, "adapt")}
                trained = set(state.delivered) | set(job.train_on)
                state.used_seconds = max(state.used_seconds, sum(seconds[n] for n in trained))
            state.delivered += [n for n in job.new if n not in state.delivered]
            state.scores, state.scored_round = scores, job.round
            state.guard = only(attempt, GUARD_COLUMNS)

    # ------------------------------------------------------------------------------------------- tables
    def status(self, user: str) -> str:
        """ok | failed (its last round failed; scores, if any, are those of ``scored_round``) | not_selected |
        unavailable (its device was never inside its availability window at a round's start)."""
        state = self.users[user]
        if not state.rounds_selected:
            return "not_selected" if state.rounds_available else "unavailable"
        return "ok" if state.last_ok else "failed"

    def user_row(self, user: str) -> dict:
        """The user's ``users.csv`` row: how its rounds went, its latest scores and its cost totals."""
        state = self.users[user]
        s = state.scores
        row = {
            "user": user,
            "status": self.status(user),
            **room_columns(self.plan.world.user(user).get("room")),  # world.room.enabled: RT60, distance
            "rounds_available": state.rounds_available,
            "rounds_selected": state.rounds_selected,
            "rounds_completed": state.rounds_completed,
            "rounds_failed": state.rounds_failed,
            "retries": state.retries,
            "scored_round": state.scored_round,
            "audio_minutes_used": state.used_seconds / 60.0,
            "adapt_steps": state.adapt_steps,
            "sim_seconds": state.sim_seconds,
            "error": state.error,
            **self.ledger.user_totals(user),
        }
        if s:
            row.update(only(s, USER_COLUMNS))
            noisy, generic, teacher = s["si_sdr_noisy"], s["si_sdr_generic"], s["si_sdr_teacher"]
            row.update(score_row(noisy, generic, s["si_sdr_personalized"], teacher))
            row["si_sdri_db"] = s["si_sdr_personalized"] - s["si_sdr_noisy"]
            if "si_sdr_unguarded" in s:
                row["gain_unguarded_db"] = s["si_sdr_unguarded"] - generic
        row.update(state.guard)
        return row

    def summary(self, student: nn.Module, teacher: nn.Module, clock: dict, wall_seconds: float) -> dict:
        """``summary.json``: users by status, mean scores over scored users, cost totals, simulated time."""
        fed = self.plan.cfg.federation
        rows = [self.user_row(u) for u in self.plan.users]
        scored = [r for r in rows if "si_sdr_personalized" in r]
        totals = self.ledger.totals()
        columns = RunStore(self.plan.run_dir).columns("users")  # DNSMOS means only where the run scored it
        means = {key: mean(r.get(key) for r in scored) for key in SCORE_COLUMNS if key in columns}
        summary = {
            "mode": fed.mode,
            "run_dir": str(self.plan.run_dir),
            "world": str(self.plan.world.root),
            "users": len(rows),
            "rounds": fed.num_rounds,
            "fraction": fed.fraction,
            "users_ok": sum(r["status"] == "ok" for r in rows),
            "users_failed": [r["user"] for r in rows if r["status"] == "failed"],
            "users_not_selected": sum(r["status"] == "not_selected" for r in rows),
            "users_unavailable": sum(r["status"] == "unavailable" for r in rows),
            "mean": means,
            "totals": totals,
            "per_user": {k: v / max(len(rows), 1) for k, v in totals.items()},
            "attempts": dict(sorted(self.attempt_counts.items())),
            "injected_faults": dict(sorted(self.injected_counts.items())),
            "sim": {
                "availability": fed.devices.availability,
                "start_s": clock["start_s"],
                "end_s": clock["end_s"],
                "seconds": clock["end_s"] - clock["start_s"],
            },
            "student_params": count_params(student),
            "student_fp32_bytes": 4 * count_params(student),
            "teacher_params": count_params(teacher),
            "teacher_fp32_bytes": 4 * count_params(teacher),
            "precision": {"weights": fed.weights_precision, "targets": fed.targets_precision},
            "upload_codec": fed.upload_codec,
            "wall_seconds": wall_seconds,
            **guard_counts(rows),
            **rt60_bins(rows),
        }
        return finite(summary)

"""ServerApp: registers the devices, runs the rounds of a run with its delivery strategy, has every participating
user scored after each round, and writes the run directory.

Two entry points build the same ``Federation``:
- ``make_server_app(plans, ...)`` for ``fedpse simulate`` (``runner.simulate``): runs one or more prepared runs
  back to back in one simulation (one Ray start-up);
- the module-level ``app`` for ``flwr run .``: reads ``config`` / ``overrides`` / ``out`` from ``[tool.flwr.app.config]``
  (or ``--run-config``), prepares the run directory and runs it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedpse.distill.adapt import gap_closure
from fedpse.federation.evaluator import Evaluator
from fedpse.federation.ledger import Ledger, Observer
from fedpse.federation.plan import RunPlan, select_users
from fedpse.federation.strategies import strategy_class
from fedpse.federation.strategies.base import Outcome, ServerSide, UserRound, drive
from fedpse.models.macs import count_params
from fedpse.results.store import EVALUATION_COLUMNS, USER_COLUMNS, RunStore


class RegistrationError(ValueError):
    """The simulated devices do not match the run's users (too few nodes, duplicates, a failed hello)."""


@dataclasses.dataclass
class UserState:
    """The server's running account of one user (bounded: numbers and chunk names only)."""

    rounds_selected: int = 0
    rounds_completed: int = 0
    last_ok: bool = True
    error: str = ""
    delivered: list[str] = dataclasses.field(default_factory=list)  # chunks whose round completed
    used_seconds: float = 0.0  # distinct adaptation audio the student has been trained on
    adapt_steps: int = 0
    scores: dict[str, float] = dataclasses.field(default_factory=dict)


def register_devices(grid: Grid, plan: RunPlan, ledger: Ledger, timeout_s: float = 300.0) -> dict[str, int]:
    """Wait until every device has registered, ask each which user it carries; return user id -> node id."""
    need = len(plan.users)
    deadline = time.monotonic() + timeout_s
    while len(nodes := sorted(grid.get_node_ids())) < need:
        if time.monotonic() > deadline:
            raise RegistrationError(
                f"only {len(nodes)} of {need} devices registered in {timeout_s:.0f} s; "
                "a simulation needs one node (supernode) per user"
            )
        time.sleep(0.05)
    task = ConfigRecord({"run_dir": str(plan.run_dir)})
    sent = {
        n: Message(RecordDict({"task": task}), dst_node_id=n, message_type="query.hello", group_id="0")
        for n in nodes
    }
    replies = list(grid.send_and_receive(list(sent.values()), timeout=timeout_s))
    node_of: dict[str, int] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise RegistrationError(f"device on node {node} failed to register: {reply.error.reason[-300:]}")
        user = str(reply.content["device"].get("user", ""))
        for direction, message in (("down", sent[node]), ("up", reply)):
            ledger.charge(message, direction=direction, round=0, user=user, node_id=node, kind="control")
        if not user:
            continue  # a spare device (more nodes than users)
        if user in node_of:
            raise RegistrationError(
                f"user {user} is carried by two devices (nodes {node_of[user]} and {node})"
            )
        node_of[user] = node
    missing = sorted(set(plan.users) - set(node_of))
    if missing:
        raise RegistrationError(f"no device answered for users {missing[:5]} ({len(missing)} missing)")
    return node_of


def _only(scores: dict, columns: list[str]) -> dict:
    return {k: v for k, v in scores.items() if k in columns}


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


class Federation:
    """One run on a ``Grid``: registration, rounds, evaluation, run directory."""

    def __init__(
        self, grid: Grid, plan: RunPlan, progress: bool = True, observers: tuple[Observer, ...] = ()
    ):
        self.grid = grid
        self.plan = plan
        self.fed = plan.cfg.federation
        self.store = RunStore(plan.run_dir)
        self.ledger = Ledger(self.store, observers)
        self.strategy = strategy_class(self.fed.mode)(ServerSide(plan))
        self.evaluator = Evaluator(plan)
        self.users = {user: UserState() for user in plan.users}
        self.progress = progress
        self._bar = None

    # ------------------------------------------------------------------------------------------- the run
    def run(self) -> dict:
        import torch
        from tqdm import tqdm

        torch.set_num_threads(self.fed.server_threads)
        started = time.perf_counter()
        node_of = register_devices(self.grid, self.plan, self.ledger)
        schedule = {
            r: select_users(self.plan.users, self.fed.fraction, self.plan.cfg.seed, r)
            for r in range(1, self.fed.num_rounds + 1)
        }
        self._bar = tqdm(
            total=sum(len(s) for s in schedule.values()),
            desc=self.fed.mode,
            unit="user",
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            for r, selected in schedule.items():
                self._bar.set_postfix_str(f"round {r}/{self.fed.num_rounds}")
                self.round(r, selected, node_of)
        finally:
            self._bar.close()
        self.store.write_table("users", [self.user_row(u) for u in self.plan.users])
        summary = self.summary(time.perf_counter() - started)
        self.store.write_summary(summary)
        return summary

    def round(self, r: int, selected: list[str], node_of: dict[str, int]) -> None:
        started = time.perf_counter()
        jobs, idle = [], []
        for user in selected:
            state = self.users[user]
            state.rounds_selected += 1
            available = self.plan.chunks_available(user, r)
            new = [n for n in available if n not in state.delivered]
            job = UserRound(user, r, new, available if self.fed.adapt_on == "all" else new)
            (jobs if job.train_on or not self.strategy.adapts else idle).append(job)
        outcomes = {}
        for job in idle:  # nothing new to learn from (adapt_on=new and no new chunks)
            outcomes[job.user] = Outcome(job.user)
            self.user_done(job, outcomes[job.user])
        outcomes.update(
            drive(
                self.grid,
                self.strategy,
                jobs,
                node_of,
                self.ledger,
                self.fed.reply_timeout_s,
                self.user_done,
                max_in_flight=self.fed.max_in_flight,
            )
        )
        done = [o for o in outcomes.values() if o.ok]
        costs = self.ledger.by_round[r]
        self.store.append(
            "rounds",
            {
                "round": r,
                "chunks_available": _mean(len(self.plan.chunks_available(u, r)) for u in selected),
                "selected": len(selected),
                "completed": len(done),
                "failed": len(outcomes) - len(done),
                "mean_si_sdr_personalized": _mean(
                    self.users[o.user].scores.get("si_sdr_personalized") for o in done
                ),
                "mean_gain_db": _mean(self._gain(self.users[o.user].scores) for o in done),
                **costs,
                "wall_seconds": time.perf_counter() - started,
            },
        )

    def user_done(self, job: UserRound, outcome: Outcome) -> None:
        """A user's round finished: update the account, score the device's student, record it."""
        state = self.users[job.user]
        state.last_ok, state.error = outcome.ok, outcome.error if not outcome.ok else ""
        if outcome.ok:
            state.rounds_completed += 1
            state.adapt_steps += outcome.steps
            seconds = {s["name"]: s["seconds"] for s in self.plan.world.segments(job.user, "adapt")}
            if outcome.adapted:
                trained = set(state.delivered) | set(job.train_on)
                state.used_seconds = max(state.used_seconds, sum(seconds[n] for n in trained))
            state.delivered += [n for n in job.new if n not in state.delivered]
            state.scores = {**self.evaluator.baseline(job.user), **self.evaluator.personalized(job.user)}
            self.store.append(
                "evaluations",
                {
                    "round": job.round,
                    "user": job.user,
                    **_only(state.scores, EVALUATION_COLUMNS),
                    "gain_db": self._gain(state.scores),
                    "adapt_audio_seconds": outcome.adapt_audio_seconds,
                    "steps": outcome.steps,
                },
            )
        if self._bar is not None:
            self._bar.update(1)

    # ------------------------------------------------------------------------------------------- tables
    @staticmethod
    def _gain(scores: dict) -> float:
        if "si_sdr_personalized" not in scores:
            return float("nan")
        return scores["si_sdr_personalized"] - scores["si_sdr_generic"]

    def user_row(self, user: str) -> dict:
        state = self.users[user]
        s = state.scores
        status = "not_selected" if not state.rounds_selected else ("ok" if state.last_ok else "failed")
        row = {
            "user": user,
            "status": status,
            "rounds_selected": state.rounds_selected,
            "rounds_completed": state.rounds_completed,
            "audio_minutes_used": state.used_seconds / 60.0,
            "adapt_steps": state.adapt_steps,
            "error": state.error,
            **self.ledger.by_user[user],
        }
        if s:
            row.update(_only(s, USER_COLUMNS))
            row["si_sdri_db"] = s["si_sdr_personalized"] - s["si_sdr_noisy"]
            row["gain_db"] = self._gain(s)
            row["gap_closure"] = gap_closure(
                s["si_sdr_generic"], s["si_sdr_personalized"], s["si_sdr_teacher"]
            )
        return row

    def summary(self, wall_seconds: float) -> dict:
        rows = [self.user_row(u) for u in self.plan.users]
        scored = [r for r in rows if "si_sdr_personalized" in r]
        totals = self.ledger.totals()
        student, teacher = self.evaluator.generic, self.evaluator.teacher
        means = {
            key: _mean(r.get(key) for r in scored)
            for key in (
                "si_sdr_noisy",
                "si_sdr_generic",
                "si_sdr_personalized",
                "si_sdr_teacher",
                "si_sdri_db",
                "gain_db",
                "gap_closure",
                "pesq_generic",
                "pesq_personalized",
                "stoi_generic",
                "stoi_personalized",
            )
        }
        summary = {
            "mode": self.fed.mode,
            "run_dir": str(self.plan.run_dir),
            "world": str(self.plan.world.root),
            "users": len(rows),
            "rounds": self.fed.num_rounds,
            "fraction": self.fed.fraction,
            "users_ok": sum(r["status"] == "ok" for r in rows),
            "users_failed": [r["user"] for r in rows if r["status"] == "failed"],
            "users_not_selected": sum(r["status"] == "not_selected" for r in rows),
            "mean": means,
            "totals": totals,
            "per_user": {k: v / max(len(rows), 1) for k, v in totals.items()},
            "student_params": count_params(student),
            "student_fp32_bytes": 4 * count_params(student),
            "teacher_params": count_params(teacher),
            "teacher_fp32_bytes": 4 * count_params(teacher),
            "precision": {"weights": self.fed.weights_precision, "targets": self.fed.targets_precision},
            "upload_codec": self.fed.upload_codec,
            "wall_seconds": wall_seconds,
        }
        return _finite(summary)


def _finite(value):
    """NaN -> None, so summary.json stays valid JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def make_server_app(
    plans: list[RunPlan], summaries: list[dict], progress: bool = True, observers: tuple[Observer, ...] = ()
) -> ServerApp:
    """A ServerApp that runs prepared ``plans`` one after another and appends each run's summary."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        for plan in plans:
            summaries.append(Federation(grid, plan, progress, observers).run())

    return server


app = ServerApp()


@app.main()
def flwr_main(grid: Grid, context: Context) -> None:
    """``flwr run .``: the run is described by the app's run config (see pyproject ``[tool.flwr.app.config]``)."""
    from fedpse.federation.runner import default_run_dir, prepare_run

    rc = context.run_config
    overrides = [o.strip() for o in str(rc.get("overrides", "")).split(";") if o.strip()]
    out = str(rc.get("out", "")) or str(default_run_dir())
    plan = prepare_run(str(rc.get("config", "")) or None, overrides, Path(out))
    summary = Federation(grid, plan, progress=False).run()
    print(f"fedpse: run written to {plan.run_dir} ({summary['users_ok']}/{summary['users']} users ok)")

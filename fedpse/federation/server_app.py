"""ServerApp: registers the devices, runs the rounds of a run with its delivery strategy, has every participating
user scored after each round, and writes the run directory.

Two entry points build the same ``Federation``:
- ``make_server_app(plans, ...)`` for ``fedpse simulate`` (``runner.simulate``): runs one or more prepared runs
  back to back in one simulation (one Ray start-up);
- the module-level ``app`` for ``flwr run .``: reads ``config`` / ``overrides`` / ``out`` from ``[tool.flwr.app.config]``
  (or ``--run-config``), prepares the run directory and runs it.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedpse.federation.accounts import SCORE_KEYS, Accounts, finite, gain, mean, only
from fedpse.federation.evaluator import Evaluator
from fedpse.federation.interrupts import Interrupted, ServerError, check_stop
from fedpse.federation.ledger import Ledger, Observer, stored
from fedpse.federation.plan import RunPlan, cohort_size, select_round
from fedpse.federation.prepare import default_run_dir, prepare_run
from fedpse.federation.resume import History, RoundUndo, replayed, resume_point
from fedpse.federation.strategies import strategy_class
from fedpse.federation.strategies.base import (
    Conversation,
    FinishContext,
    Outcome,
    ServerSide,
    UserRound,
    drive,
)
from fedpse.models.finite import NonFiniteOutputError
from fedpse.results.store import RunDirError, RunStore


class RegistrationError(ValueError):
    """The simulated devices do not match the run's users (too few nodes, duplicates, a failed hello)."""


def register_devices(
    grid: Grid, plan: RunPlan, ledger: Ledger | None, timeout_s: float = 300.0
) -> dict[str, int]:
    """Wait until every device has registered, ask each which user it carries; return user id -> node id.
    The messages are charged to ``ledger`` (None: a resumed run, whose registration is already recorded)."""
    need = len(plan.users)
    deadline = time.monotonic() + timeout_s
    while len(nodes := sorted(grid.get_node_ids())) < need:
        check_stop()
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
    replies = exchange(grid, list(sent.values()), timeout_s)
    node_of: dict[str, int] = {}
    for reply in sorted(
        replies, key=lambda m: str(m.content["device"].get("user", "")) if m.has_content() else ""
    ):
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise RegistrationError(f"device on node {node} failed to register: {reply.error.reason[-300:]}")
        user = str(reply.content["device"].get("user", ""))
        for direction, message in (("down", sent[node]), ("up", reply)):
            if ledger is not None:
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


def exchange(grid: Grid, messages: list[Message], timeout_s: float, poll_s: float = 0.05) -> list[Message]:
    """``grid.send_and_receive`` that stops waiting when the simulation is interrupted (``check_stop``)."""
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        check_stop()
        got = list(grid.pull_messages(list(pending)))
        for reply in got:
            pending.discard(reply.metadata.reply_to_message_id)
        replies += got
        if pending and not got:
            time.sleep(poll_s)
    return replies


class Federation:
    """One run on a ``Grid``: registration, rounds, evaluation, run directory.

    The run directory is also the run's memory: ``run()`` first replays whatever the directory holds (nothing for
    a fresh run; the completed work of a killed one), so a fresh run and a resumed one are the same code. A user's
    round *commits* when its ``attempts.csv`` row is written (after its evaluation row, if it completed); on resume,
    ledger and evaluation rows of rounds that did not commit are dropped, their effects on the user's device and
    server storage are undone (``resume.RoundUndo``) and they run again, so the tables end up with the rows of an
    uninterrupted run. Selection, the simulated clock and fault draws depend only on committed work and seeds.
    Each user's account is kept by ``accounts.Accounts``.
    """

    def __init__(
        self, grid: Grid, plan: RunPlan, progress: bool = True, observers: tuple[Observer, ...] = ()
    ):
        self.grid = grid
        self.plan = plan
        self.fed = plan.cfg.federation
        self.fleet = plan.fleet
        self.store = RunStore(plan.run_dir)
        self.ledger = Ledger(self.store, observers, timing=self._message_seconds)
        self.strategy = strategy_class(self.fed.mode)(ServerSide(plan))
        self.evaluator = Evaluator(plan)
        self.accounts = Accounts(plan, self.ledger)
        self.users = self.accounts.users
        self.node_of: dict[str, int] = {}  # user -> Flower node id, once the devices have registered
        self.clock = {"start_s": math.nan, "end_s": 0.0}
        self.progress = progress
        self._bar = None
        self._round_units: list[dict] = []  # (status, sim seconds, deadline) of the round in progress
        self._round_wall_start = time.perf_counter()

    def _message_seconds(self, row) -> tuple[float, float, float]:
        return self.fleet.message_seconds(
            row.user, row.round, row.direction, row.bytes, row.device_macs, row.server_macs
        )

    # ------------------------------------------------------------------------------------------- the run
    def run(self) -> dict:
        import torch
        from tqdm import tqdm

        torch.set_num_threads(self.fed.server_threads)
        started = time.perf_counter()
        history = self.resume_point()
        node_of = self.node_of = register_devices(
            self.grid, self.plan, None if history.registered else self.ledger
        )
        self.store.write_table(
            "devices", [self.fleet.profile(u).row(self.fed.devices) for u in self.plan.users]
        )
        self._bar = tqdm(
            total=self.fed.num_rounds * self._cohort(),
            desc=self.fed.mode,
            unit="user",
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            for r in range(1, self.fed.num_rounds + 1):
                self._bar.set_postfix_str(f"round {r}/{self.fed.num_rounds}")
                self.round(r, node_of, history)
        finally:
            self._bar.close()
        undo_notes = self.plan.run_dir / "undo"
        if undo_notes.is_dir() and not any(undo_notes.iterdir()):
            undo_notes.rmdir()
        # After the rounds, before users.csv and the summary (e.g. aggregate the students). A resumed run calls it
        # again: its ledger rows (round > num_rounds, no attempts.csv row) were dropped on resume.
        finish = FinishContext(
            self.accounts.adapted_seconds(), self.converse, self.evaluator, self.store.write_table
        )
        extra = self.strategy.finish(finish) or {}
        self.store.write_table("users", [self.accounts.user_row(u) for u in self.plan.users])
        wall_seconds = time.perf_counter() - started
        summary = self.accounts.summary(
            self.evaluator.generic, self.evaluator.teacher, self.clock, wall_seconds
        )
        summary = {**summary, **finite(extra)}
        self.store.write_summary(summary)
        return summary

    def converse(
        self, jobs: list[UserRound], conversation: Callable[[UserRound], Conversation]
    ) -> dict[str, Outcome]:
        """Run ``conversation(job)`` with each job's device outside the rounds (``DeliveryStrategy.finish``)."""
        talk = types.SimpleNamespace(name=self.strategy.name, conversation=conversation)
        return drive(
            self.grid,
            talk,
            jobs,
            self.node_of,
            self.ledger,
            self.fed.reply_timeout_s,
            max_in_flight=self.fed.max_in_flight,
        )

    def _cohort(self) -> int:
        return cohort_size(len(self.plan.users), self.fed.fraction)

    def resume_point(self) -> History:
        """Keep the run directory's committed work only (``resume.resume_point``); rebuild the ledger's totals and
        the strategy's in-memory state from it."""
        history = resume_point(self.store, self.plan)
        self.ledger.restore(history.ledger)
        self.strategy.restore(history.ledger)
        return history

    def round(self, r: int, node_of: dict[str, int], history: History) -> None:
        started = self._round_wall_start = time.perf_counter()
        start_s = self.fleet.round_start_s(r, self.clock["end_s"])
        if r == 1:
            self.clock["start_s"] = start_s
        eligible = [u for u in self.plan.users if self.fleet.available(u, start_s)]
        for user in eligible:
            self.users[user].rounds_available += 1
        retry = self.accounts.to_retry()
        selection = select_round(
            self.plan.users, self.fed.fraction, self.plan.cfg.seed, r, eligible=eligible, retry=retry
        )
        self._bar.total += len(selection.selected) - self._cohort()
        self._bar.refresh()
        committed = history.attempts.get(r, {})
        strays = sorted(set(committed) - set(selection.selected))
        if strays:
            raise RunDirError(
                f"{self.store.path('attempts')}: users {strays[:5]} took part in round {r}, which this "
                "config.yaml does not select; the tables belong to another config"
            )
        self._round_units = []
        jobs, idle = [], []
        for user in selection.selected:
            job = self.job(user, r)
            state = self.users[user]
            state.rounds_selected += 1
            state.retries += 1 if state.failed_streak else 0
            if user in committed:
                self.replay(job, committed[user], history.evaluations.get((r, user)))
            elif job.train_on or not self.strategy.adapts:
                RoundUndo(self.plan, user).begin(r)
                jobs.append(job)
            else:
                idle.append(job)
        for job in idle:  # nothing new to learn from (adapt_on=new and no new chunks)
            self.user_done(job, Outcome(job.user), start_s)
        drive(
            self.grid,
            self.strategy,
            jobs,
            node_of,
            self.ledger,
            self.fed.reply_timeout_s,
            lambda job, outcome: self.user_done(job, outcome, start_s),
            max_in_flight=self.fed.max_in_flight,
        )
        units = self._round_units
        done = sorted(u["user"] for u in units if u["status"] == "ok")
        sim_round = max((min(u["sim_seconds"], u["deadline_s"]) for u in units), default=0.0)
        self.clock["end_s"] = start_s + sim_round
        if r in history.rounds:
            return  # this round's row was written before the run was resumed
        self.store.append(
            "rounds",
            {
                "round": r,
                "sim_start_s": start_s,
                "chunks_available": mean(len(self.plan.chunks_available(u, r)) for u in selection.selected),
                "eligible": len(eligible),
                "selected": len(selection.selected),
                "retried": len(selection.retried),
                "completed": len(done),
                "failed": len(units) - len(done),
                "late": sum(u["status"] in ("missed_deadline", "left_window") for u in units),
                "mean_si_sdr_personalized": mean(
                    self.users[u].scores.get("si_sdr_personalized") for u in done
                ),
                "mean_gain_db": mean(gain(self.users[u].scores) for u in done),
                **self.ledger.round_totals(r),
                "sim_round_seconds": sim_round,
                "wall_seconds": time.perf_counter() - started,
            },
        )

    def job(self, user: str, r: int) -> UserRound:
        """The user's work in round ``r``: chunks recorded since its last completed round, what to train on."""
        available = self.plan.chunks_available(user, r)
        new = [n for n in available if n not in self.users[user].delivered]
        return UserRound(user, r, new, available if self.fed.adapt_on == "all" else new)

    def user_done(self, job: UserRound, outcome: Outcome, start_s: float) -> None:
        """A user's round ended: check it against its deadline, score the device's student or undo the round,
        then commit it (``attempts.csv``) and update the account."""
        undo = RoundUndo(self.plan, job.user)
        transfer, device, server = self.ledger.unit_seconds(job.round, job.user)
        self.ledger.forget_unit(job.round, job.user)
        sim = stored(transfer + device + server)
        deadline, binding = self.fleet.deadline_s(job.user, start_s)
        deadline = stored(deadline) if math.isfinite(deadline) else deadline  # as a resumed run reads it back
        status, error = ("ok", "") if outcome.ok else ("failed", outcome.error)
        if outcome.ok and sim > deadline:
            status = binding
            error = (
                f"{binding}: its round took {sim:.1f} simulated s, "
                f"{'the round deadline' if binding == 'missed_deadline' else 'its availability window'} "
                f"allowed {deadline:.1f} s; the update is discarded"
            )
        scores: dict[str, float] = {}
        if status == "ok":
            status, error, raw = self._scores(job, outcome)
        if status == "ok":
            scores = {k: stored(v) for k, v in only(raw, SCORE_KEYS).items()}
            self.store.append(
                "evaluations",
                {
                    "round": job.round,
                    "user": job.user,
                    **scores,
                    "gain_db": gain(scores),
                    "adapt_audio_seconds": outcome.adapt_audio_seconds,
                    "steps": outcome.steps,
                },
            )
        else:
            check_stop()  # a round cut off by an interrupt is not the device's failure: it is redone on resume
            undo.rollback()
        attempt = {
            "round": job.round,
            "user": job.user,
            "status": status,
            "error": error,
            "injected": self.fleet.faults(job.user, job.round).label,
            "retry": self.users[job.user].failed_streak,
            "adapted": int(outcome.adapted),
            "steps": outcome.steps,
            "adapt_audio_seconds": outcome.adapt_audio_seconds,
            **outcome.guard,  # adapt.guard's decision, scores and MACs (none when it is off)
            "sim_start_s": start_s,
            "sim_seconds": sim,
            "sim_transfer_s": transfer,
            "sim_device_s": device,
            "sim_server_s": server,
            "deadline_s": deadline if math.isfinite(deadline) else None,
            "wall_seconds": time.perf_counter() - self._round_wall_start,  # from the round's start
        }
        self.store.append("attempts", attempt)  # the commit point of the user's round
        if status == "ok":
            undo.commit()
        self.account(job, attempt, scores)

    def _scores(self, job: UserRound, outcome: Outcome) -> tuple[str, str, dict]:
        """(status, error, raw scores) of a completed round. A personalized student whose outputs are not finite
        fails its user (its device diverged); non-finite baseline or teacher outputs stop the run. With the guard on,
        also the fine-tuned student's score before the guard's decision (``si_sdr_unguarded``)."""
        try:
            baseline = self.evaluator.baseline(job.user)
        except NonFiniteOutputError as err:
            raise ServerError(f"scoring user {job.user} in round {job.round}: {err}") from err
        try:
            personalized = self.evaluator.personalized(job.user)
            unguarded = self.evaluator.unguarded(job.user, outcome.guard, personalized)
            return "ok", "", {**baseline, **personalized, **unguarded}
        except NonFiniteOutputError as err:
            if not err.device_fault:
                raise ServerError(f"scoring user {job.user} in round {job.round}: {err}") from err
            return "failed", str(err)[:300], {}

    def replay(self, job: UserRound, attempt: dict, evaluation: dict | None) -> None:
        """Account for a user round committed before the run was resumed, from its table rows."""
        self.account(job, *replayed(self.store, job.user, job.round, attempt, evaluation))

    def account(self, job: UserRound, attempt: dict, scores: dict[str, float]) -> None:
        """One committed user round (live or replayed): into the user's account and the round's tally."""
        deadline = attempt["deadline_s"]
        self._round_units.append(
            {
                "user": job.user,
                "status": attempt["status"],
                "sim_seconds": attempt["sim_seconds"],
                "deadline_s": math.inf if deadline is None or math.isnan(deadline) else deadline,
            }
        )
        self.accounts.add(job, attempt, scores)
        if self._bar is not None:
            self._bar.update(1)


def make_server_app(
    plans: list[RunPlan],
    summaries: list[dict],
    progress: bool = True,
    observers: tuple[Observer, ...] = (),
    done: threading.Event | None = None,
    interrupted: list[Interrupted] | None = None,
) -> ServerApp:
    """A ServerApp that runs prepared ``plans`` one after another and appends each run's summary; ``done`` is
    set when it stops, however it stops. An interrupt ends it quietly (Flower's server thread would print it as an
    unhandled exception) and is appended to ``interrupted`` for the caller to raise."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            for plan in plans:
                summaries.append(Federation(grid, plan, progress, observers).run())
        except Interrupted as err:
            if interrupted is not None:
                interrupted.append(err)
        finally:
            if done is not None:
                done.set()

    return server


app = ServerApp()


@app.main()
def flwr_main(grid: Grid, context: Context) -> None:
    """``flwr run .``: the run is described by the app's run config (see pyproject ``[tool.flwr.app.config]``)."""
    rc = context.run_config
    overrides = [o.strip() for o in str(rc.get("overrides", "")).split(";") if o.strip()]
    out = str(rc.get("out", "")) or str(default_run_dir())
    plan = prepare_run(str(rc.get("config", "")) or None, overrides, Path(out))
    summary = Federation(grid, plan, progress=False).run()
    print(f"fedpse: run written to {plan.run_dir} ({summary['users_ok']}/{summary['users']} users ok)")

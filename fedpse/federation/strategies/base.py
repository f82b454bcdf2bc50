"""What every delivery mode shares: a per-user conversation protocol and the loop that drives many at once.

A delivery mode is a ``DeliveryStrategy`` subclass whose ``conversation(job)`` is a generator: it yields the
messages it wants delivered to one user's device (``Send``) and receives each reply, doing any server-side work
(teacher inference, cloud fine-tuning) in between; it returns an ``Outcome``. ``drive`` runs the conversations of
all users selected in a round concurrently over Flower's ``Grid``: it pushes each conversation's next message as
soon as the previous reply arrives, so server work for one user overlaps with other devices' training. Every
message is charged to the ledger, from the message itself, by ``drive`` alone.

Server work that batches across users is asked for by yielding a ``ServerWork`` (``TeacherRequest``: the teacher's
pseudo-targets for a user's chunks; ``cloud_student.FineTuneRequest``: the fine-tuning of the server's copy of a
user's student) and gets its result back. On a CPU server ``drive`` runs it at once, alone,
exactly where the conversation asked (the calls, results and ledger rows fedpse always had); on a GPU server (or
with ``device.batch_on_cpu``) it parks the conversation and, once every conversation of the loop step has been
advanced, runs the parked work of one kind together (one fixed-shape teacher pass over all users' chunks; with
``device.stack_finetune``, the users' students stepped together, ``distill/stacked.py``).

Everything else a mode may do is a hook declared here as a documented no-op, overridden where a mode needs it:
``check`` (settings it cannot run with), ``restore`` (its in-memory state on resume) and ``finish`` (work after the
last round, through a ``FinishContext``). Class attributes say how reports draw it (``color``, ``order``,
``reference``) and whether ``fedavg_generic`` may run it for its rounds (``inner_capable``). Defining the subclass
registers it: its ``name`` becomes a value of ``federation.mode``.
"""

from __future__ import annotations

import abc
import dataclasses
import re
import sys
import time
from collections.abc import Callable, Generator
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from torch import nn

from fedpse.config import Config
from fedpse.distill.cache import ResultCache, model_key
from fedpse.distill.guard import TeacherCheck, teacher_check
from fedpse.federation.device import generic_student
from fedpse.federation.evaluator import Evaluator
from fedpse.federation.interrupts import Interrupted, ServerError, check_stop, is_interruption
from fedpse.federation.ledger import Ledger
from fedpse.federation.payloads import PayloadError, describe_payload, guard_columns
from fedpse.federation.plan import RunPlan
from fedpse.models.accelerator import model_device, role_device
from fedpse.models.macs import forward_macs
from fedpse.results.modes import ModeStyle, register_mode


@dataclasses.dataclass
class Send:
    """A message for one user's device, with how the ledger labels it and its reply."""

    message_type: str  # "train.upload" | "train.adapt" | "train.install"
    content: RecordDict
    kind: str  # ledger kind of this (down) message
    reply_kind: str  # ledger kind of the device's reply
    server_macs: float = 0.0  # server compute that produced this message
    server_wall_seconds: float = 0.0


@dataclasses.dataclass
class UserRound:
    """One selected user's work in one round: which chunks are new and which to adapt on."""

    user: str
    round: int
    new: list[str]  # chunks recorded since the user last took part successfully
    train_on: list[str]  # what the student fine-tunes on (all so far, or only the new ones)


@dataclasses.dataclass
class Outcome:
    """What a user's round produced (filled from the device's replies)."""

    user: str
    ok: bool = True
    error: str = ""
    steps: int = 0
    adapt_audio_seconds: float = 0.0
    adapted: bool = False
    guard: dict = dataclasses.field(default_factory=dict)  # the guard's attempt columns (adapt.guard on)


class ServerWork(abc.ABC):
    """Server-side work a conversation yields instead of doing it, so that ``drive`` can gather the same kind of
    work of all active conversations (``gather``) and run it together; the conversation receives ``run()``'s
    result (or its exception, raised where it yielded)."""

    @property
    @abc.abstractmethod
    def gather(self) -> bool:
        """Whether ``drive`` parks this work to run it with others of its kind (False: at once, alone)."""

    @abc.abstractmethod
    def run(self) -> object:
        """This work alone."""

    @classmethod
    @abc.abstractmethod
    def run_together(cls, works: list) -> list[object]:
        """Several works of this kind (from different conversations): one result or exception per work, in order,
        each equal to what ``run()`` on a server of the same kind would give."""


Conversation = Generator[Send | ServerWork, Message | object, Outcome]


class ServerSide:
    """What the server holds for a run: the plan and (loaded on first use) the teacher, on ``device.server``."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        self.noted: set[str] = set()  # what the run was told (``note_once``)

    @cached_property
    def device(self) -> torch.device:
        return role_device(self.plan.cfg, "server")

    @cached_property
    def teacher(self) -> nn.Module:
        return self.plan.teacher().to(self.device)

    @cached_property
    def teacher_key(self) -> str:
        return model_key(self.teacher)

    @cached_property
    def cache(self) -> ResultCache:
        return ResultCache(self.plan.cfg.federation.cache_dir)

    @cached_property
    def batches(self) -> bool:
        """Whether server work is gathered across users (``ServerWork.gather``): on a GPU server, or on the CPU with
        ``device.batch_on_cpu`` (a testing aid). On the CPU by default each user's work runs alone, as always."""
        return self.device.type == "cuda" or self.plan.cfg.device.batch_on_cpu

    @cached_property
    def stacks_finetune(self) -> bool:
        """Whether cloud fine-tuning requests are gathered and their students stepped together
        (``device.stack_finetune`` on a server that batches); asked for on a CPU server that does not, it does
        nothing and the run says so once."""
        asked = self.plan.cfg.device.stack_finetune
        if asked and not self.batches:
            self.note_once(
                "device.stack_finetune=true does nothing on a CPU server: its users are fine-tuned one at a time "
                "(device.batch_on_cpu=true takes the GPU's batched path here, for testing)"
            )
        return asked and self.batches

    def note_once(self, text: str) -> None:
        """Tell the person running the simulation ``text`` (stderr), once per run."""
        if text not in self.noted:
            self.noted.add(text)
            print(f"fedpse: {text}", file=sys.stderr)

    @cached_property
    def teacher_batch(self) -> int:
        """Chunks per teacher pass: ``device.teacher_batch`` for a torch teacher on a GPU (or, with
        ``device.batch_on_cpu``, on the CPU), else 1: the CPU's one chunk at a time, and any ONNX teacher (it has
        no torch parameters and runs on the CPU)."""
        on_gpu = model_device(self.teacher).type == "cuda"
        torch_teacher = next(iter(self.teacher.parameters()), None) is not None
        batched = on_gpu or (self.plan.cfg.device.batch_on_cpu and torch_teacher)
        return self.plan.cfg.device.teacher_batch if batched else 1

    def teacher_outputs(self, chunks: list[np.ndarray], user: str | None = None) -> list[np.ndarray]:
        """The teacher's pseudo-targets for ``user``'s ``chunks`` (reused from the result cache when computed before;
        the caller charges the teacher's MACs either way). NaN or inf outputs raise ``NonFiniteOutputError``.

        On a GPU the chunks go through the teacher ``device.teacher_batch`` at a time (fixed-shape passes: a chunk's
        output does not depend on its companions, see ``pseudo_targets_batched``)."""
        return self.cache.targets(self.teacher, self.teacher_key, chunks, user=user, batch=self.teacher_batch)

    def ask_teacher(
        self, chunks: list[np.ndarray], user: str
    ) -> Generator[TeacherRequest, object, list[np.ndarray]]:
        """``teacher_outputs(chunks, user)`` from inside a conversation: ``outputs = yield from
        server.ask_teacher(...)`` lets ``drive`` batch it with other users' requests on a GPU."""
        outputs = yield TeacherRequest(self, chunks, user)
        return outputs  # type: ignore[return-value]

    @cached_property
    def generic(self) -> nn.Module:
        """The run's generic student, on ``device.server`` (the guard's teacher check)."""
        return generic_student(self.plan).to(self.device)

    def teacher_check(self, chunks: list[np.ndarray], user: str, round_number: int) -> TeacherCheck | None:
        """``adapt.guard=on``: the teacher's lead over the generic student on probes built from ``user``'s
        ``chunks`` (that the server holds anyway), for a device that fine-tunes without the teacher; else None."""
        cfg = self.plan.round_adapt()
        if cfg.guard != "on" or not chunks:
            return None
        seed = self.plan.adapt_seed(user, round_number)
        return teacher_check(cfg, self.generic, self.teacher, chunks, seed)

    def teacher_macs(self, audio_seconds: float) -> float:
        """MACs of running the teacher on ``audio_seconds`` of audio (NaN when they cannot be counted, e.g. an ONNX
        graph with control flow)."""
        try:
            return forward_macs(self.teacher, audio_seconds)
        except ValueError:
            return float("nan")


@dataclasses.dataclass
class TeacherRequest(ServerWork):
    """The teacher's pseudo-targets for one user's chunks (``ServerSide.ask_teacher``)."""

    server: ServerSide
    chunks: list[np.ndarray]
    user: str

    @property
    def gather(self) -> bool:
        return self.server.batches

    def run(self) -> list[np.ndarray]:
        return self.server.teacher_outputs(self.chunks, self.user)

    @classmethod
    def run_together(cls, works: list[TeacherRequest]) -> list[object]:
        """All users' chunks through the teacher in one call: the same fixed-shape passes of
        ``ServerSide.teacher_batch`` chunks as each user alone, so every chunk gets the very same output (and the
        same result-cache entry); a non-finite output fails every request of the call (it stops the run anyway)."""
        server = works[0].server
        users = ", ".join(dict.fromkeys(w.user for w in works))
        try:
            outputs = server.teacher_outputs([c for w in works for c in w.chunks], users)
        except Exception as err:
            return [err] * len(works)
        results, start = [], 0
        for work in works:
            results.append(outputs[start : start + len(work.chunks)])
            start += len(work.chunks)
        return results


@dataclasses.dataclass(frozen=True)
class FinishContext:
    """What a mode's ``finish`` may use after the last round, and nothing else of the run."""

    # user -> distinct adaptation audio (s) its student trained on, for each user whose student adapted
    adapted_seconds: dict[str, float]
    # talk to devices: run ``conversation(job)`` for each job (charged to the ledger like a round's messages)
    converse: Callable[[list[UserRound], Callable[[UserRound], Conversation]], dict[str, Outcome]]
    evaluator: Evaluator  # scores a model on a user's held-out test set
    write_table: Callable[[str, list[dict]], None]  # a table of the run directory (``results.store.TABLES``)


STRATEGIES: dict[str, type[DeliveryStrategy]] = {}


class DeliveryStrategy(abc.ABC):
    """Base of the delivery modes: one subclass per mode, registered under its ``name`` when it is defined."""

    name: ClassVar[str] = ""
    adapts: ClassVar[bool] = True  # False: the device keeps the generic student (no messages at all)
    inner_capable: ClassVar[bool] = False  # fedavg_generic may run its rounds with it (fedavg.inner_mode)
    # How reports draw the mode: a matplotlib colour (None: a spare one), its place among the modes compared
    # (baseline first, upper bounds last) and whether it is a reference (an upper bound, not deployable).
    color: ClassVar[str | None] = None
    order: ClassVar[int] = 1000
    reference: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            STRATEGIES[cls.name] = cls
            register_mode(cls.name, ModeStyle(cls.color, cls.order, cls.reference))

    def __init__(self, server: ServerSide):
        self.server = server
        self.plan = server.plan
        self.fed = server.plan.cfg.federation

    @abc.abstractmethod
    def conversation(self, job: UserRound) -> Conversation:
        """The messages this mode exchanges with one user's device in one round (a generator of ``Send``)."""

    # ------------------------------------------------------------------------------------------ optional hooks
    @classmethod
    def check(cls, cfg: Config) -> None:
        """Settings this mode cannot run with, found before any work: raise ``ConfigError`` naming the key.
        Default: none."""
        return None

    def restore(self, ledger_rows: list[dict]) -> None:
        """A resumed run: rebuild the mode's in-memory state from the ledger rows of committed work (e.g. which
        devices already hold the teacher). Default: the mode keeps none."""
        return None

    def finish(self, ctx: FinishContext) -> dict:
        """After the last round, before ``users.csv`` and ``summary.json``: work on what the rounds produced (e.g.
        aggregate the students); returns entries for ``summary.json``. A resumed run calls it again (the ledger rows
        of an unfinished ``finish``, rounds > num_rounds, were dropped on resume). Default: nothing."""
        return {}

    def request_upload(self, job: UserRound) -> Generator[Send, Message, Message | None]:
        """Ask the device for this round's new noisy chunks (encoded with ``federation.upload_codec``)."""
        if not job.new:
            return None
        return (
            yield Send(
                "train.upload",
                RecordDict({"task": self.task(job, upload=job.new, codec=self.fed.upload_codec)}),
                kind="control",
                reply_kind="noisy_audio",
            )
        )

    def task(self, job: UserRound, **extra) -> ConfigRecord:
        """The control record every request carries (lists left out when empty: Flower cannot send those)."""
        fields = {"run_dir": str(self.plan.run_dir), "user": job.user, "round": job.round}
        fields.update({k: v for k, v in extra.items() if not (isinstance(v, list) and not v)})
        return ConfigRecord(fields)

    @staticmethod
    def device_metrics(reply: Message) -> dict[str, float]:
        return dict(reply.content["device"]) if "device" in reply.content.metric_records else {}


def record_adaptation(outcome: Outcome, reply: Message) -> Outcome:
    """Fill an outcome from a ``train.adapt`` reply."""
    metrics = DeliveryStrategy.device_metrics(reply)
    outcome.adapted = True
    outcome.steps = int(metrics.get("steps", 0))
    outcome.adapt_audio_seconds = float(metrics.get("adapt_audio_seconds", 0.0))
    outcome.guard = guard_columns(metrics)
    return outcome


# ------------------------------------------------------------------------------------------------ driving
def device_fault(err: BaseException) -> bool:
    """Whether a server-side exception is the user's device's fault (it sent a payload that cannot be decoded, or
    its own student diverged), so that only this user's round fails."""
    return isinstance(err, PayloadError) or getattr(err, "device_fault", False)


def stops_run(error: str) -> bool:
    """A device's error reply that is not the device's fault either: the teacher it runs (teacher_weights) gave
    non-finite outputs, which every device would hit alike."""
    return error.startswith("NonFiniteOutputError: teacher ")


def error_summary(reason: str) -> str:
    """The device's own exception from Flower's long error reason (falls back to its last line)."""
    found = re.findall(r"(?:^|\n)\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)", reason)
    found = [(t, m) for t, m in found if "ClientAppException" not in t and "RayTaskError" not in t]
    if found:
        kind, text = found[-1]
        return f"{kind.rsplit('.', 1)[-1]}: {text.strip()}"[:300]
    lines = [ln.strip() for ln in reason.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown device error")[:300]


def drive(
    grid: Grid,
    strategy: DeliveryStrategy,
    jobs: list[UserRound],
    node_of: dict[str, int],
    ledger: Ledger,
    timeout_s: float,
    on_done: Callable[[UserRound, Outcome], None] = lambda job, outcome: None,
    max_in_flight: int = 8,
    poll_s: float = 0.05,
) -> dict[str, Outcome]:
    """Run the conversations of ``jobs``, at most ``max_in_flight`` at once (bounding the payloads held in memory
    and queued for devices); a failing device or server step fails only that user."""
    outcomes: dict[str, Outcome] = {}
    waiting = list(reversed(jobs))
    active: dict[str, tuple[UserRound, Conversation]] = {}
    pending: dict[str, tuple[str, str, str, float]] = {}  # message id -> (user, type, reply kind, sent at)
    parked: list[tuple[str, ServerWork]] = []  # conversations waiting for gathered server work

    def finish(user: str, outcome: Outcome) -> None:
        job, conversation = active.pop(user)
        conversation.close()
        outcomes[user] = outcome
        on_done(job, outcome)

    def advance(user: str, reply: Message | object | None, error: BaseException | None = None) -> None:
        """Resume ``user``'s conversation with ``reply`` (or raise ``error`` in it) up to its next message."""
        job, conversation = active[user]
        try:
            while True:  # send(None) starts a fresh conversation
                send = conversation.throw(error) if error is not None else conversation.send(reply)
                error = None
                if not isinstance(send, ServerWork):
                    break
                if send.gather:
                    parked.append((user, send))
                    return
                reply = send.run()  # the CPU path: at once, alone
        except StopIteration as stop:
            finish(user, stop.value)
            return
        except Exception as err:
            check_stop()  # interrupted in the middle of server-side work: nobody's failure
            if not device_fault(err):
                raise ServerError(
                    f"server-side {strategy.name} work for user {user} in round {job.round} failed "
                    f"({type(err).__name__}: {err}); the run stops here, as every user would fail alike"
                ) from err
            finish(user, Outcome(user, ok=False, error=f"server: {type(err).__name__}: {err}"[:300]))
            return
        message = Message(
            send.content, dst_node_id=node_of[user], message_type=send.message_type, group_id=str(job.round)
        )
        facts = describe_payload(send.content)
        ledger.charge(
            message,
            direction="down",
            round=job.round,
            user=user,
            node_id=node_of[user],
            kind=send.kind,
            precision=facts["precision"],
            codec=facts["codec"],
            server_macs=send.server_macs,
            wall_seconds=send.server_wall_seconds,
        )
        (message_id,) = grid.push_messages([message])
        pending[message_id] = (user, send.message_type, send.reply_kind, time.monotonic())

    def run_parked() -> None:
        """The parked server work, each kind together; the conversations resume in the order they asked (and may
        ask again: a cloud student's fine-tuning after its teacher outputs)."""
        while parked:
            by_kind: dict[type, list[tuple[str, ServerWork]]] = {}
            for user, work in parked:
                by_kind.setdefault(type(work), []).append((user, work))
            parked.clear()
            for kind, asked in by_kind.items():
                results = kind.run_together([work for _, work in asked])
                for (user, _), result in zip(asked, results, strict=True):
                    failed = isinstance(result, BaseException)
                    advance(user, None if failed else result, result if failed else None)

    while waiting or pending:
        check_stop()
        while waiting and len(active) < max_in_flight:
            job = waiting.pop()
            active[job.user] = (job, strategy.conversation(job))
            advance(job.user, None)
        run_parked()
        if not pending:
            continue
        replies = list(grid.pull_messages(list(pending)))
        for reply in replies:
            user, _, reply_kind, _ = pending.pop(reply.metadata.reply_to_message_id)
            common = {
                "round": active[user][0].round,
                "user": user,
                "node_id": node_of[user],
                "kind": reply_kind,
            }
            if reply.has_error():
                error = error_summary(reply.error.reason or "")
                if is_interruption(error):  # the device's work was cut by Ctrl-C, not by a fault of its own
                    check_stop()
                    raise Interrupted()
                if stops_run(error):
                    raise ServerError(f"user {user}'s device, round {common['round']}: {error}")
                ledger.charge(reply, direction="up", status="error", error=error, **common)
                finish(user, Outcome(user, ok=False, error=error))
                continue
            metrics = DeliveryStrategy.device_metrics(reply)
            ledger.charge(
                reply,
                direction="up",
                **describe_payload(reply.content),
                device_macs=float(metrics.get("device_macs", 0.0)),
                wall_seconds=float(metrics.get("wall_seconds", 0.0)),
                **common,
            )
            advance(user, reply)
        run_parked()
        now = time.monotonic()
        for message_id, (user, message_type, _, sent_at) in list(pending.items()):
            if now - sent_at > timeout_s:
                del pending[message_id]
                finish(
                    user, Outcome(user, ok=False, error=f"no reply to {message_type} in {timeout_s:.0f} s")
                )
        if pending and not replies:
            time.sleep(poll_s)
    return outcomes

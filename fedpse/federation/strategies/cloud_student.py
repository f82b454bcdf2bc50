"""``cloud_student``: the device uploads its new noisy chunks; the server keeps them and its own copy of the
user's student, fine-tunes that copy with the teacher's pseudo-targets (the same ``distill.adapt``, guard included),
and sends the student's weights down. The device only installs them. With ``device.stack_finetune`` on a server that
batches, the students of the users gathered in a step are fine-tuned together (``FineTuneRequest``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from pathlib import Path

import numpy as np
from flwr.app import Message, RecordDict
from torch import nn

from fedpse.audio.io import SAMPLE_RATE, load_audio, save_audio
from fedpse.distill.adapt import AdaptResult
from fedpse.distill.stacked import AdaptJob, adapt_stacked, alone_reason
from fedpse.federation.device import generic_student, keep_unguarded
from fedpse.federation.payloads import decode_audio_record, encode_weights
from fedpse.federation.plan import RunPlan
from fedpse.federation.strategies.base import (
    Conversation,
    DeliveryStrategy,
    Outcome,
    Send,
    ServerSide,
    ServerWork,
    TeacherRequest,
    UserRound,
)
from fedpse.models.accelerator import role_device
from fedpse.models.checkpoints import load_checkpoint, save_checkpoint


class ServerCopy:
    """What the server keeps about one user, on disk: received uploads, teacher outputs, the student copy."""

    def __init__(self, plan: RunPlan, user: str):
        self.plan = plan
        self.user = user
        self.root = plan.server_dir(user)

    def keep_uploads(self, chunks: dict[str, np.ndarray]) -> None:
        for name, audio in chunks.items():
            save_audio(self.root / "uploads" / f"{name}.flac", audio)

    def uploads(self, names: list[str]) -> list[np.ndarray]:
        return [load_audio(self.root / "uploads" / f"{name}.flac") for name in names]

    def keep_targets(self, targets: dict[str, np.ndarray]) -> None:
        for name, audio in targets.items():
            path = self.root / "targets" / f"{name}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.asarray(audio, dtype=np.float32))

    def targets(self, names: list[str]) -> list[np.ndarray]:
        return [np.load(self.root / "targets" / f"{name}.npy") for name in names]

    @property
    def student_path(self) -> Path:
        return self.root / "student.pt"

    @property
    def unguarded_path(self) -> Path:
        return self.root / "unguarded_student.pt"

    def adapt_job(
        self,
        noisy: list[np.ndarray],
        targets: list[np.ndarray],
        round_number: int,
        guarded: bool = True,
        teacher: nn.Module | None = None,
    ) -> AdaptJob:
        """The fine-tuning of the server's copy of the user's student (generic at first, on ``device.server``), with
        ``adapt.guard`` unless not ``guarded``."""
        path = self.student_path
        server = role_device(self.plan.cfg, "server")
        student = load_checkpoint(path)[0] if path.is_file() else generic_student(self.plan)
        student = student.to(server)
        adapt_cfg = self.plan.round_adapt()
        if not guarded:
            adapt_cfg = dataclasses.replace(adapt_cfg, guard="off")
        generic = generic_student(self.plan).to(server) if adapt_cfg.guard != "off" else None
        seed = self.plan.adapt_seed(self.user, round_number)
        return AdaptJob(student, noisy, targets, adapt_cfg, seed, self.user, generic, teacher)

    def fine_tune(
        self,
        server: ServerSide,
        noisy: list[np.ndarray],
        targets: list[np.ndarray],
        round_number: int,
        guarded: bool = True,
        teacher: nn.Module | None = None,
    ) -> Generator[FineTuneRequest, object, tuple[nn.Module, AdaptResult]]:
        """Fine-tune the server's copy of the user's student (``drive`` may step it with other users') and keep it.
        With ``adapt.guard`` (and ``guarded``) the copy is kept only if the guard finds it (and the ``teacher``) no
        worse than the generic student; the one it turned down is kept apart for the evaluator
        (``unguarded_student.pt``)."""
        job = self.adapt_job(noisy, targets, round_number, guarded, teacher)
        result = yield FineTuneRequest(server, job)
        save_checkpoint(
            self.student_path, job.student, card={"user": self.user, "round": round_number}, dtype="fp32"
        )
        if result.guard != "off":
            keep_unguarded(self.plan, self.unguarded_path, result.finetuned_state, round_number, self.user)
        return job.student, result


@dataclasses.dataclass
class FineTuneRequest(ServerWork):
    """The fine-tuning of one user's server copy of its student (``ServerCopy.fine_tune``). With
    ``device.stack_finetune`` on a server that batches, ``drive`` gathers the requests of a loop step and their
    students take their steps together (``distill.stacked.adapt_stacked``); otherwise each runs ``adapt`` alone, where
    the conversation asked, as always."""

    server: ServerSide
    job: AdaptJob

    @property
    def gather(self) -> bool:
        return self.server.stacks_finetune

    def run(self) -> AdaptResult:
        return self.job.run_alone()

    @classmethod
    def run_together(cls, works: list[FineTuneRequest]) -> list[object]:
        """The users' fine-tuning, stacked where it can be (the run is told once of each reason it cannot)."""
        server = works[0].server
        for work in works:
            reason = alone_reason(work.job)
            if reason is not None:
                server.note_once(
                    f"device.stack_finetune: users are fine-tuned one at a time here, as {reason}"
                )
        return adapt_stacked([work.job for work in works])


def install_outcome(job: UserRound, result: AdaptResult, adapt_audio_seconds: float) -> Outcome:
    return Outcome(
        job.user,
        steps=result.steps,
        adapt_audio_seconds=adapt_audio_seconds,
        adapted=True,
        guard=result.guard_columns(),
    )


class CloudStudent(DeliveryStrategy):
    name = "cloud_student"
    inner_capable = True
    color, order = "#ff7f0e", 4

    def conversation(self, job: UserRound) -> Conversation:
        upload = yield from self.request_upload(job)
        send, outcome = yield from self.fine_tune(job, upload)
        upload = None
        yield send  # the device installs the weights; its failure is recorded by the driver
        return outcome

    def fine_tune(
        self, job: UserRound, upload: Message | None
    ) -> Generator[TeacherRequest | FineTuneRequest, object, tuple[Send, Outcome]]:
        """Keep the new uploads, run the teacher on them, fine-tune the user's student copy on the server (``drive``
        may batch both with other users')."""
        started = time.perf_counter()
        copy = ServerCopy(self.plan, job.user)
        server_macs = 0.0
        if upload is not None:
            uploaded = decode_audio_record(upload.content["audio"])
            copy.keep_uploads(uploaded)
            noisy_new = [uploaded[name] for name in job.new]
            targets = yield from self.server.ask_teacher(noisy_new, job.user)
            copy.keep_targets(dict(zip(job.new, targets, strict=True)))
            server_macs += self.server.teacher_macs(sum(len(x) for x in noisy_new) / SAMPLE_RATE)
        noisy = copy.uploads(job.train_on)
        teacher = self.server.teacher if self.plan.round_adapt().guard == "on" else None  # the guard's check
        targets = copy.targets(job.train_on)
        student, result = yield from copy.fine_tune(self.server, noisy, targets, job.round, teacher=teacher)
        server_macs += result.device_macs  # the student's training ran on the server
        content = RecordDict(
            {
                "task": self.task(job),
                "student": encode_weights(student.state_dict(), self.fed.weights_precision),
            }
        )
        send = Send(
            "train.install",
            content,
            kind="student_weights",
            reply_kind="metrics",
            server_macs=server_macs,
            server_wall_seconds=time.perf_counter() - started,
        )
        return send, install_outcome(job, result, sum(len(x) for x in noisy) / SAMPLE_RATE)

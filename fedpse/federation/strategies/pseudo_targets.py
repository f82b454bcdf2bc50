"""``pseudo_targets``: the device uploads its new noisy chunks, the server runs the teacher on them and sends the
pseudo-targets down, the device fine-tunes its student locally (it keeps earlier targets for later rounds). With
``adapt.guard=on`` the server also measures the teacher's lead over the generic student on probes built from the
uploaded chunks and sends it along: the device's guard has no teacher of its own to check."""

from __future__ import annotations

import time
from collections.abc import Generator

from flwr.app import Message, RecordDict

from fedpse.audio.io import SAMPLE_RATE
from fedpse.federation.payloads import decode_audio_record, encode_targets, teacher_check_task
from fedpse.federation.strategies.base import (
    Conversation,
    DeliveryStrategy,
    Outcome,
    Send,
    TeacherRequest,
    UserRound,
    record_adaptation,
)


class PseudoTargets(DeliveryStrategy):
    name = "pseudo_targets"
    inner_capable = True
    color, order = "#1f77b4", 2

    def conversation(self, job: UserRound) -> Conversation:
        upload = yield from self.request_upload(job)
        send = yield from self.targets_message(job, upload)
        upload = None  # the audio is not kept on the server
        reply = yield send
        return record_adaptation(Outcome(job.user), reply)

    def targets_message(
        self, job: UserRound, upload: Message | None
    ) -> Generator[TeacherRequest, object, Send]:
        """Run the teacher on the uploaded chunks (``drive`` may batch it with other users'); the adapt message
        carries their pseudo-targets."""
        if upload is None:  # nothing new: the device adapts on the targets it already holds
            content = RecordDict({"task": self.task(job, train_on=job.train_on, targets_from="message")})
            return Send("train.adapt", content, kind="control", reply_kind="metrics")
        started = time.perf_counter()
        uploaded = decode_audio_record(upload.content["audio"])
        noisy = [uploaded[name] for name in job.new]
        targets = yield from self.server.ask_teacher(noisy, job.user)
        server_macs = self.server.teacher_macs(sum(len(x) for x in noisy) / SAMPLE_RATE)
        # adapt.guard=on: the device has no teacher, so the server checks it on probes from the uploaded chunks
        check = self.server.teacher_check(noisy, job.user, job.round)
        server_macs += check.macs if check is not None else 0.0
        task = self.task(job, train_on=job.train_on, targets_from="message", **teacher_check_task(check))
        content = RecordDict({"task": task})
        content["targets"] = encode_targets(
            dict(zip(job.new, targets, strict=True)), self.fed.targets_precision
        )
        return Send(
            "train.adapt",
            content,
            kind="pseudo_targets",
            reply_kind="metrics",
            server_macs=server_macs,
            server_wall_seconds=time.perf_counter() - started,
        )

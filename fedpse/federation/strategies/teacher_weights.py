"""``teacher_weights``: the teacher's weights go down once per device (cached there afterwards); the device runs
the teacher on its own chunks and fine-tunes locally. No audio ever leaves the device."""

from __future__ import annotations

import json

from flwr.app import RecordDict

from fedpse.config import Config, ConfigError
from fedpse.federation.payloads import encode_weights
from fedpse.federation.strategies.base import (
    Conversation,
    DeliveryStrategy,
    Outcome,
    Send,
    UserRound,
    record_adaptation,
)
from fedpse.models.registry import model_spec


class TeacherWeights(DeliveryStrategy):
    name = "teacher_weights"
    inner_capable = True
    color, order = "#2ca02c", 3

    @classmethod
    def check(cls, cfg: Config) -> None:
        if cfg.teacher.arch == "onnx":
            raise ConfigError(
                "federation.mode='teacher_weights' ships the teacher's weights to devices; "
                "an ONNX teacher (teacher.arch='onnx') has none: use a gru/convtasnet teacher or another mode"
            )

    def __init__(self, server):
        super().__init__(server)
        self.devices_with_teacher: set[str] = set()  # confirmed by a successful reply

    def conversation(self, job: UserRound) -> Conversation:
        first = job.user not in self.devices_with_teacher
        extra = {"teacher_spec": json.dumps(model_spec(self.server.teacher))} if first else {}
        content = RecordDict(
            {"task": self.task(job, train_on=job.train_on, targets_from="device_teacher", **extra)}
        )
        if first:
            content["teacher"] = encode_weights(self.server.teacher.state_dict(), self.fed.weights_precision)
        reply = yield Send(
            "train.adapt",
            content,
            kind="teacher_weights" if first else "control",
            reply_kind="metrics",
        )
        self.devices_with_teacher.add(job.user)
        return record_adaptation(Outcome(job.user), reply)

    def restore(self, ledger_rows: list[dict]) -> None:
        """A resumed run: the devices that confirmed a teacher download (``ledger.csv`` rows of committed work)."""
        sent = {(r["round"], r["user"]) for r in ledger_rows if r["kind"] == "teacher_weights"}
        self.devices_with_teacher = {
            r["user"]
            for r in ledger_rows
            if r["direction"] == "up" and r["status"] == "ok" and (r["round"], r["user"]) in sent
        }

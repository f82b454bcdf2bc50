"""``teacher_weights``: the teacher's weights go down once per device (cached there afterwards); the device runs
the teacher on its own chunks and fine-tunes locally. No audio ever leaves the device. An ONNX teacher goes down as
its graph file(s), byte for byte, with its ``teacher.onnx`` block; the device runs it with the server's loader."""

from __future__ import annotations

import json

from flwr.app import ArrayRecord, RecordDict

from fedpse.federation.payloads import encode_files, encode_weights
from fedpse.federation.strategies.base import (
    Conversation,
    DeliveryStrategy,
    Outcome,
    Send,
    UserRound,
    record_adaptation,
)
from fedpse.models.onnx import onnx_files
from fedpse.models.onnx_teacher import TorchOnnxTeacher
from fedpse.models.registry import model_spec


class TeacherWeights(DeliveryStrategy):
    name = "teacher_weights"
    inner_capable = True
    color, order = "#2ca02c", 3

    def __init__(self, server):
        super().__init__(server)
        self.devices_with_teacher: set[str] = set()  # confirmed by a successful reply

    def conversation(self, job: UserRound) -> Conversation:
        first = job.user not in self.devices_with_teacher
        extra, download = self._teacher_download() if first else ({}, None)
        content = RecordDict(
            {"task": self.task(job, train_on=job.train_on, targets_from="device_teacher", **extra)}
        )
        if download is not None:
            content["teacher"] = download
        reply = yield Send(
            "train.adapt",
            content,
            kind="teacher_weights" if first else "control",
            reply_kind="metrics",
        )
        self.devices_with_teacher.add(job.user)
        return record_adaptation(Outcome(job.user), reply)

    def _teacher_download(self) -> tuple[dict, ArrayRecord]:
        """What the device needs to run the teacher: spec + weights, or an ONNX teacher's block + graph files."""
        teacher = self.server.teacher
        if isinstance(teacher, TorchOnnxTeacher):
            files = {f"stage{k}.onnx": path.read_bytes() for k, path in enumerate(onnx_files(teacher.config))}
            return {"teacher_onnx": json.dumps(teacher.config)}, encode_files(files)
        spec = {"teacher_spec": json.dumps(model_spec(teacher))}
        return spec, encode_weights(teacher.state_dict(), self.fed.weights_precision)

    def restore(self, ledger_rows: list[dict]) -> None:
        """A resumed run: the devices that confirmed a teacher download (``ledger.csv`` rows of committed work)."""
        sent = {(r["round"], r["user"]) for r in ledger_rows if r["kind"] == "teacher_weights"}
        self.devices_with_teacher = {
            r["user"]
            for r in ledger_rows
            if r["direction"] == "up" and r["status"] == "ok" and (r["round"], r["user"]) in sent
        }

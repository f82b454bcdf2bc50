"""Baseline ``oracle_clean`` (simulation-only upper bound): fine-tune on the clean references instead of the
teacher's outputs. The oracle sits with the evaluator on the server side, so clean audio never reaches a device:
the oracle fine-tunes its copy of the user's student and sends the weights down, like ``cloud_student`` (and, with
``device.stack_finetune`` on a server that batches, stacked with other users' like it)."""

from __future__ import annotations

import time

from flwr.app import RecordDict

from fedpse.audio.io import SAMPLE_RATE
from fedpse.config import Config, ConfigError
from fedpse.federation.payloads import encode_weights
from fedpse.federation.strategies.base import Conversation, DeliveryStrategy, Send, UserRound
from fedpse.federation.strategies.cloud_student import ServerCopy, install_outcome


class OracleClean(DeliveryStrategy):
    name = "oracle_clean"
    color, order, reference = "#d62728", 5, True  # an upper bound: last, and kept off the Pareto front

    @classmethod
    def check(cls, cfg: Config) -> None:
        if cfg.adapt.refresh != "off":  # a refreshed or remixed target would no longer be the clean reference
            raise ConfigError(
                f"adapt.refresh={cfg.adapt.refresh}: federation.mode='oracle_clean' fine-tunes on the clean "
                "references, which need no refresh; set adapt.refresh=off for this mode"
            )

    def conversation(self, job: UserRound) -> Conversation:
        started = time.perf_counter()
        world = self.plan.world
        noisy = [world.load(job.user, name, "noisy") for name in job.train_on]
        clean = [world.load(job.user, name, "clean") for name in job.train_on]
        # no guard: the oracle is the upper bound of clean targets, not a deployable student
        copy = ServerCopy(self.plan, job.user)
        student, result = yield from copy.fine_tune(self.server, noisy, clean, job.round, guarded=False)
        seconds = sum(len(x) for x in noisy) / SAMPLE_RATE
        del noisy, clean  # not held while the device installs the weights
        content = RecordDict(
            {
                "task": self.task(job),
                "student": encode_weights(student.state_dict(), self.fed.weights_precision),
            }
        )
        yield Send(
            "train.install",
            content,
            kind="student_weights",
            reply_kind="metrics",
            server_macs=result.device_macs,
            server_wall_seconds=time.perf_counter() - started,
        )
        return install_outcome(job, result, seconds)

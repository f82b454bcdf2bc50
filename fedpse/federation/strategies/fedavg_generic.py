"""``fedavg_generic``: personalize every device with an inner delivery mode, then fold what the devices learned back
into a new generic student, for users who have not joined yet.

The rounds run exactly as ``federation.fedavg.inner_mode`` (``teacher_weights`` by default: no audio leaves a device).
After the last round every device whose student adapted sends its weight delta (personalized − generic, at
``federation.weights_precision``; charged to the ledger as ``student_delta``). A Flower strategy aggregates the deltas
(``federation.fedavg.aggregator``: ``fedavg`` = Flower's ``FedAvg``, weighted by the adaptation audio each user
trained on; ``fedadam`` = Flower's ``FedAdam`` server optimizer applied to that average) into the new generic student
``RUN_DIR/models/federated_student.pt``. Deltas are averaged in groups of ``aggregation_group`` replies by ``FedAvg``
and the group means then aggregated by the configured strategy (exact for a weighted mean), so the server never holds
more than one group of deltas.

Cold start: users of the world who never took part in the run (``world.num_users`` beyond ``federation.num_users``,
at most ``federation.fedavg.holdout_users``) are scored with the original and with the federated generic student on
their held-out test sets; ``cold_start.csv`` has one row per held-out user, ``summary.json`` a ``cold_start`` block.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import DEFAULT_TTL, Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict

from fedpse.config import Config, ConfigError
from fedpse.federation.device import generic_student
from fedpse.federation.payloads import decode_weights
from fedpse.federation.strategies.base import (
    STRATEGIES,
    Conversation,
    DeliveryStrategy,
    FinishContext,
    Outcome,
    Send,
    UserRound,
)
from fedpse.models.checkpoints import save_checkpoint

WEIGHT_KEY = "num-examples"


def _message(arrays: dict[str, np.ndarray], weight: float) -> Message:
    """A reply-shaped message for Flower's ``aggregate_train``: one ArrayRecord, one MetricRecord with the weight."""
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
            "metrics": MetricRecord({WEIGHT_KEY: float(weight)}),
        }
    )
    # Never sent: a server-local message in the shape Flower's strategies aggregate (explicit metadata, so it can be
    # built outside a running ServerApp too).
    metadata = Metadata(
        run_id=0,
        message_id="",
        src_node_id=0,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="fedavg_generic",
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=MessageType.TRAIN,
    )
    return Message(content=content, metadata=metadata)


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.numpy(), dtype=np.float32) for k, v in record.items()}


def flower_strategy(name: str, server_lr: float):
    """Flower's aggregation strategy ``name`` (``fedavg`` | ``fedadam``), configured for one aggregation of deltas."""
    from flwr.serverapp.strategy import FedAdam, FedAvg

    if name == "fedavg":
        return FedAvg(weighted_by_key=WEIGHT_KEY)
    if name == "fedadam":
        return FedAdam(weighted_by_key=WEIGHT_KEY, eta=server_lr)
    raise ConfigError(f"federation.fedavg.aggregator={name!r}: expected 'fedavg' or 'fedadam'")


class DeltaAggregator:
    """Weighted aggregation of weight deltas with a Flower strategy, in bounded memory (groups of ``group``)."""

    def __init__(self, aggregator: str = "fedavg", server_lr: float = 1.0, group: int = 32):
        self.aggregator, self.server_lr, self.group = aggregator, server_lr, group
        self._pending: list[Message] = []
        self._partials: list[Message] = []
        self._pending_weight = 0.0
        self.count = 0

    def add(self, delta: dict[str, np.ndarray], weight: float) -> None:
        if not weight > 0:
            raise ValueError(f"aggregation weight must be positive, got {weight}")
        self._pending.append(_message(delta, weight))
        self._pending_weight += weight
        self.count += 1
        if len(self._pending) >= self.group:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        mean, _ = flower_strategy("fedavg", 1.0).aggregate_train(1, self._pending)
        self._partials.append(_message(_numpy(mean), self._pending_weight))
        self._pending, self._pending_weight = [], 0.0

    def result(self) -> dict[str, np.ndarray]:
        """The aggregated update (to add to the generic student's weights)."""
        self._flush()
        if not self._partials:
            raise ValueError("no deltas to aggregate")
        strategy = flower_strategy(self.aggregator, self.server_lr)
        if self.aggregator == "fedadam":  # FedOpt steps from its current arrays: the deltas' origin is 0
            first = _numpy(self._partials[0].content["arrays"])
            strategy.current_arrays = {k: np.zeros_like(v) for k, v in first.items()}
        update, _ = strategy.aggregate_train(1, self._partials)
        if update is None:
            raise ValueError("the Flower strategy returned no aggregate")
        out = _numpy(update)
        if self.aggregator == "fedavg" and self.server_lr != 1.0:
            out = {k: v * self.server_lr for k, v in out.items()}
        return out


def inner_modes() -> list[str]:
    """The modes ``fedavg_generic`` can run its rounds with (registered strategies that are ``inner_capable``)."""
    return [name for name, cls in STRATEGIES.items() if cls.inner_capable]


class FedAvgGeneric(DeliveryStrategy):
    name = "fedavg_generic"
    color, order = "#9467bd", 1

    @classmethod
    def check(cls, cfg: Config) -> None:
        fed = cfg.federation
        if fed.num_users in (0, cfg.world.num_users):
            raise ConfigError(
                "federation.mode='fedavg_generic' scores the federated generic student on users who never took "
                f"part: set federation.num_users below world.num_users={cfg.world.num_users} "
                f"(got {fed.num_users or 'all'})"
            )
        if fed.fedavg.inner_mode not in inner_modes():
            raise ConfigError(
                f"federation.fedavg.inner_mode={fed.fedavg.inner_mode!r}: expected one of {inner_modes()}"
            )
        STRATEGIES[fed.fedavg.inner_mode].check(cfg)

    def __init__(self, server):
        super().__init__(server)
        options = self.fed.fedavg
        self.inner = STRATEGIES[options.inner_mode](server)
        self.aggregator = DeltaAggregator(options.aggregator, options.server_lr, options.aggregation_group)

    def conversation(self, job: UserRound) -> Conversation:
        return (yield from self.inner.conversation(job))

    def restore(self, ledger_rows: list[dict]) -> None:
        """A resumed run: the inner mode's in-memory state (e.g. which devices already hold the teacher)."""
        self.inner.restore(ledger_rows)

    # ------------------------------------------------------------------------------------------ after the rounds
    def share_conversation(self, job: UserRound, weight: float) -> Conversation:
        """Ask one device for its student's delta and add it to the aggregate with ``weight``."""
        reply = yield Send(
            "train.share",
            RecordDict({"task": self.task(job, precision=self.fed.weights_precision)}),
            kind="control",
            reply_kind="student_delta",
        )
        delta = {k: v.numpy() for k, v in decode_weights(reply.content["delta"]).items()}
        self.aggregator.add(delta, weight)
        return Outcome(job.user)

    def federated_student(self) -> torch.nn.Module:
        """The generic student plus the aggregated update."""
        model = generic_student(self.plan)
        update = self.aggregator.result()
        state = model.state_dict()
        missing = sorted(set(state) - set(update))
        if missing:
            raise ValueError(f"aggregated update lacks parameters {missing[:3]}")
        model.load_state_dict({k: v + torch.from_numpy(update[k]).to(v.dtype) for k, v in state.items()})
        return model.eval()

    def holdout_users(self) -> list[str]:
        """World users that never took part in this run (at most ``federation.fedavg.holdout_users``)."""
        taking_part = set(self.plan.users)
        others = [u for u in self.plan.world.user_ids() if u not in taking_part]
        limit = self.fed.fedavg.holdout_users
        return others[:limit] if limit else others

    def save(self, model: torch.nn.Module) -> None:
        path = self.plan.run_dir / "models" / "federated_student.pt"
        card = {
            "source": "fedavg_generic",
            "aggregator": self.fed.fedavg.aggregator,
            "inner_mode": self.fed.fedavg.inner_mode,
            "devices_aggregated": self.aggregator.count,
        }
        save_checkpoint(path, model, card=card, dtype="fp32")

    def finish(self, ctx: FinishContext) -> dict:
        """After the last round: collect the deltas of every device whose student adapted (weighted by the audio
        it adapted on), aggregate them, save the federated student and score it on held-out users."""
        weights = ctx.adapted_seconds
        share_round = self.fed.num_rounds + 1  # the ledger's rows of the aggregation step
        jobs = [UserRound(user, share_round, [], []) for user in weights]
        outcomes = ctx.converse(jobs, lambda job: self.share_conversation(job, weights[job.user]))
        failed = sorted(u for u, o in outcomes.items() if not o.ok)
        if not self.aggregator.count:
            return {"cold_start": {"error": "no device shared a delta", "share_failed": failed}}
        model = self.federated_student()
        self.save(model)
        rows = []
        for user in self.holdout_users():
            base = ctx.evaluator.baseline(user)
            fed = ctx.evaluator.score(model, user, "federated")
            rows.append(
                {
                    "user": user,
                    "si_sdr_noisy": base["si_sdr_noisy"],
                    "si_sdr_generic": base["si_sdr_generic"],
                    "si_sdr_federated": fed["si_sdr_federated"],
                    "si_sdr_teacher": base["si_sdr_teacher"],
                    "gain_db": fed["si_sdr_federated"] - base["si_sdr_generic"],
                }
            )
        ctx.write_table("cold_start", rows)
        gains = [r["gain_db"] for r in rows]

        def mean(key: str) -> float | None:
            return float(np.mean([r[key] for r in rows])) if rows else None

        return {
            "cold_start": {
                "aggregator": self.fed.fedavg.aggregator,
                "inner_mode": self.fed.fedavg.inner_mode,
                "devices_aggregated": self.aggregator.count,
                "share_failed": failed,
                "holdout_users": len(rows),
                "mean_si_sdr_noisy": mean("si_sdr_noisy"),
                "mean_si_sdr_generic": mean("si_sdr_generic"),
                "mean_si_sdr_federated": mean("si_sdr_federated"),
                "mean_si_sdr_teacher": mean("si_sdr_teacher"),
                "mean_gain_db": mean("gain_db"),
                "users_improved": float(np.mean([g > 0 for g in gains])) if gains else None,
            }
        }

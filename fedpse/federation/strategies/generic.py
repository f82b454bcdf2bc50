"""Baseline ``generic``: no adaptation. Selected users keep the generic student; nothing is sent."""

from __future__ import annotations

from fedpse.federation.strategies.base import Conversation, DeliveryStrategy, Outcome, UserRound


class Generic(DeliveryStrategy):
    name = "generic"
    adapts = False
    color, order = "#7f7f7f", 0  # the baseline: first in a comparison

    def conversation(self, job: UserRound) -> Conversation:
        yield from ()  # no messages: the device already holds the generic student
        return Outcome(job.user)

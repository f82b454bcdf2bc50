"""The cost ledger: one row per Flower message, charged from the message actually sent or received.

``bytes`` is the sum of ``count_bytes()`` over every record in the message's content (payload and control
records alike); ``audio_seconds`` is raw user audio inside the message (the privacy exposure, read from the upload
arrays' sample counts); ``device_macs`` / ``server_macs`` are the compute each party spent producing the message,
from the MAC counts of the models actually run times the audio they processed.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from flwr.app import Message

from fedpse.federation.payloads import content_bytes
from fedpse.results.store import RunStore

COST_KEYS = ("bytes_up", "bytes_down", "audio_seconds_exposed", "device_macs", "server_macs")


@dataclasses.dataclass
class LedgerRow:
    round: int
    user: str
    node_id: int
    direction: str  # "up" (device -> server) | "down" (server -> device)
    kind: str  # control | noisy_audio | pseudo_targets | teacher_weights | student_weights | metrics
    message_type: str
    bytes: int
    audio_seconds: float = 0.0
    precision: str = ""
    codec: str = ""
    device_macs: float = 0.0
    server_macs: float = 0.0
    wall_seconds: float = 0.0
    status: str = "ok"
    error: str = ""


# Called as observe(run_dir, row, message) for every charged message (e.g. tests inspecting what was sent).
Observer = Callable[[Path | None, LedgerRow, Message], None]


class Ledger:
    """Writes ledger rows to the run directory and keeps running totals per user and per round."""

    def __init__(self, store: RunStore | None = None, observers: tuple[Observer, ...] = ()):
        self.store = store
        self.observers = tuple(observers)
        self.by_user: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COST_KEYS, 0.0))
        self.by_round: dict[int, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COST_KEYS, 0.0))

    def charge(self, message: Message, *, direction: str, **fields) -> LedgerRow:
        """Record ``message`` (bytes measured from its content; an error reply weighs 0 bytes)."""
        size = content_bytes(message.content) if message.has_content() else 0
        row = LedgerRow(direction=direction, bytes=size, message_type=message.metadata.message_type, **fields)
        if self.store is not None:
            self.store.append("ledger", dataclasses.asdict(row))
        for totals in (self.by_user[row.user], self.by_round[row.round]):
            totals["bytes_up" if direction == "up" else "bytes_down"] += row.bytes
            totals["audio_seconds_exposed"] += row.audio_seconds if direction == "up" else 0.0
            totals["device_macs"] += row.device_macs
            totals["server_macs"] += row.server_macs
        for observe in self.observers:
            observe(self.store.root if self.store is not None else None, row, message)
        return row

    def totals(self) -> dict[str, float]:
        out = dict.fromkeys(COST_KEYS, 0.0)
        for totals in self.by_round.values():
            for key in COST_KEYS:
                out[key] += totals[key]
        return out

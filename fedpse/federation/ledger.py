"""The cost ledger: one row per Flower message, charged from the message actually sent or received.

``bytes`` is the sum of ``count_bytes()`` over every record in the message's content (payload and control
records alike); ``audio_seconds`` is raw user audio inside the message (the privacy exposure, read from the upload
arrays' sample counts); ``device_macs`` / ``server_macs`` are the compute each party spent producing the message,
from the MAC counts of the models actually run times the audio they processed; ``sim_seconds`` is the message's
time on the simulated clock (transfer at the user's link rate plus the compute that produced it, see ``devices``).

Totals are exact sums of the values as written to ``ledger.csv`` (kept as integers of 10⁻⁶ units), so they do not
depend on the order in which concurrent users' messages arrive, and a resumed run rebuilds them exactly from the
file (``restore``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from flwr.app import Message

from fedpse.federation.payloads import content_bytes
from fedpse.results.store import RunStore

COST_KEYS = ("bytes_up", "bytes_down", "audio_seconds_exposed", "device_macs", "server_macs")
DECIMALS = 6  # what the run store keeps of a float
_UNIT = 10**DECIMALS


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
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    status: str = "ok"
    error: str = ""


# Called as observe(run_dir, row, message) for every charged message (e.g. tests inspecting what was sent).
Observer = Callable[[Path | None, LedgerRow, Message], None]
# timing(row) -> simulated (transfer, device compute, server compute) seconds of the message.
Timing = Callable[[LedgerRow], tuple[float, float, float]]


def stored(value: float) -> float:
    """``value`` as the run store keeps it (``DECIMALS`` decimals)."""
    return round(value, DECIMALS)


def _units(value: float) -> int | None:
    """A stored value as an exact integer of 10⁻⁶ units (None for NaN, e.g. an ONNX teacher's unknown MACs)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(stored(float(value)) * _UNIT)


class Totals:
    """Exact running sums of ``COST_KEYS`` (a key that ever saw NaN totals to NaN)."""

    def __init__(self):
        self._sum = dict.fromkeys(COST_KEYS, 0)
        self._nan: set[str] = set()

    def add(self, key: str, value: float) -> None:
        units = _units(value)
        if units is None:
            self._nan.add(key)
        else:
            self._sum[key] += units

    def as_dict(self) -> dict[str, float]:
        return {k: (math.nan if k in self._nan else self._sum[k] / _UNIT) for k in COST_KEYS}

    def merge(self, other: Totals) -> None:
        for key in COST_KEYS:
            self._sum[key] += other._sum[key]
        self._nan |= other._nan


class Ledger:
    """Writes ledger rows to the run directory and keeps running totals per user, per round and per user round."""

    def __init__(
        self,
        store: RunStore | None = None,
        observers: tuple[Observer, ...] = (),
        timing: Timing | None = None,
    ):
        self.store = store
        self.observers = tuple(observers)
        self.timing = timing
        self._by_user: dict[str, Totals] = defaultdict(Totals)
        self._by_round: dict[int, Totals] = defaultdict(Totals)
        self._sim: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def charge(self, message: Message, *, direction: str, **fields) -> LedgerRow:
        """Record ``message`` (bytes measured from its content; an error reply weighs 0 bytes)."""
        size = content_bytes(message.content) if message.has_content() else 0
        row = LedgerRow(direction=direction, bytes=size, message_type=message.metadata.message_type, **fields)
        if self.timing is not None:
            parts = [stored(s) for s in self.timing(row)]
            row.sim_seconds = stored(sum(parts))
            unit = self._sim[(row.round, row.user)]
            for i, part in enumerate(parts):
                unit[i] += part
        if self.store is not None:
            self.store.append("ledger", dataclasses.asdict(row))
        self._count(
            row.round, row.user, direction, row.bytes, row.audio_seconds, row.device_macs, row.server_macs
        )
        for observe in self.observers:
            observe(self.store.root if self.store is not None else None, row, message)
        return row

    def _count(self, round_number, user, direction, size, audio_seconds, device_macs, server_macs) -> None:
        for totals in (self._by_user[user], self._by_round[round_number]):
            totals.add("bytes_up" if direction == "up" else "bytes_down", size)
            totals.add("audio_seconds_exposed", audio_seconds if direction == "up" else 0.0)
            totals.add("device_macs", device_macs)
            totals.add("server_macs", server_macs)

    def restore(self, rows: list[dict]) -> None:
        """Rebuild the totals from ``ledger.csv`` rows kept by a resumed run (empty cells read as NaN)."""

        def number(text: str) -> float:
            return float(text) if text != "" else math.nan

        for r in rows:
            self._count(
                int(r["round"]),
                r["user"],
                r["direction"],
                int(r["bytes"]),
                number(r["audio_seconds"]),
                number(r["device_macs"]),
                number(r["server_macs"]),
            )

    # ------------------------------------------------------------------------------------------- reading
    def user_totals(self, user: str) -> dict[str, float]:
        return self._by_user[user].as_dict()

    def round_totals(self, round_number: int) -> dict[str, float]:
        return self._by_round[round_number].as_dict()

    def totals(self) -> dict[str, float]:
        out = Totals()
        for totals in self._by_round.values():
            out.merge(totals)
        return out.as_dict()

    def unit_seconds(self, round_number: int, user: str) -> tuple[float, float, float]:
        """Simulated (transfer, device, server) seconds of ``user``'s messages in round ``round_number`` so far."""
        return tuple(self._sim.get((round_number, user), (0.0, 0.0, 0.0)))

    def forget_unit(self, round_number: int, user: str) -> None:
        self._sim.pop((round_number, user), None)

"""A run directory: the resolved config and the run's tables, written row by row as work completes.

Layout of ``RUN_DIR/``:

    config.yaml        the resolved config (loadable again with ``load_config``)
    devices.csv        one row per user: its device profile (speed, link rates, availability window)
    ledger.csv         one row per message (appended as it is sent or received)
    evaluations.csv    one row per (round, user) scored by the evaluator (appended as each user is scored)
    attempts.csv       one row per (round, user) selected: how the user's round ended (appended as it ends; the
                       row that commits the user's round: a resumed run keeps exactly the work these rows name)
    rounds.csv         one row per finished round
    users.csv          one row per user: final scores and cost totals (written when the run ends)
    summary.json       run-level totals and means (written when the run ends: its presence = a finished run)

Rows are appended and flushed as soon as they exist, so a killed run keeps everything finished before the kill;
``fedpse simulate --resume`` continues it (see ``server_app.Federation``). The column order of each table is fixed
here; values that do not apply are left empty. Columns in ``OPTIONAL_COLUMNS`` (DNSMOS scores, the guard's, users'
rooms) are in a run's tables only when its config.yaml turns them on, so every other run, and every run directory
written before they existed, keeps exactly the tables it had. ``TIMING_COLUMNS`` lists, per table, the columns that
differ between two runs of the same config and seed (wall-clock times, Flower's random node ids); everything else is
reproducible (row order within a round follows completion order, so compare tables sorted by round and user).
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from pathlib import Path
from typing import Any

import yaml

from fedpse.config import Config, dump_config

LEDGER_COLUMNS = [
    "round",
    "user",
    "node_id",
    "direction",
    "kind",
    "message_type",
    "bytes",
    "audio_seconds",
    "precision",
    "codec",
    "device_macs",
    "server_macs",
    "sim_seconds",
    "wall_seconds",
    "status",
    "error",
]
# DNSMOS P.835 (``scoring.dnsmos``): MOS (about 1..5) per quality, mean over the user's test mixtures, per model.
DNSMOS_MODELS = ("noisy", "generic", "personalized", "teacher")
DNSMOS_COLUMNS = [f"dnsmos_{q}_{m}" for m in DNSMOS_MODELS for q in ("sig", "bak", "ovr")]
# The personalization guard (``adapt.guard``): its decision (adopted | kept_generic), its scores of the generic and
# the fine-tuned student and the teacher's lead over the generic one (dB of SI-SDR on probe mixtures; 10 x DNSMOS OVR
# with guard=dnsmos); ``si_sdr_unguarded``: the fine-tuned student as if the guard had adopted it
# (= si_sdr_personalized where it did), so reports show the gain with and without the guard.
GUARD_COLUMNS = ["guard_decision", "guard_generic_db", "guard_personalized_db", "guard_teacher_lead_db"]
GUARD_SCORE_COLUMNS = ["si_sdr_unguarded", "gain_unguarded_db"]
# Users in rooms (``world.room.enabled``): the RT60 (s) the user's room was drawn with and the talker-to-microphone
# distance (m), from the world's plan (``fedpse.results.rooms.room_columns``); reports bin users by RT60.
ROOM_COLUMNS = ["rt60_s", "source_mic_m"]
EVALUATION_COLUMNS = [
    "round",
    "user",
    "si_sdr_noisy",
    "si_sdr_generic",
    "si_sdr_personalized",
    "si_sdr_teacher",
    "gain_db",
    "pesq_generic",
    "pesq_personalized",
    "stoi_generic",
    "stoi_personalized",
    *DNSMOS_COLUMNS,
    "si_sdr_unguarded",
    "adapt_audio_seconds",
    "steps",
]
ATTEMPT_COLUMNS = [
    "round",
    "user",
    "status",  # ok | failed (device or server error) | missed_deadline | left_window
    "error",
    "injected",  # faults drawn for this round of the user (crash, dropout, straggler), '' when none
    "retry",  # failed rounds of this user right before this one (0 = not a retry)
    "adapted",
    "steps",
    "adapt_audio_seconds",
    *GUARD_COLUMNS,
    "guard_macs",  # the guard's compute (part of the device_macs / server_macs of the round's ledger rows)
    "sim_start_s",
    "sim_seconds",
    "sim_transfer_s",
    "sim_device_s",
    "sim_server_s",
    "deadline_s",
    "wall_seconds",
]
ROUND_COLUMNS = [
    "round",
    "sim_start_s",
    "chunks_available",
    "eligible",
    "selected",
    "retried",
    "completed",
    "failed",
    "late",
    "mean_si_sdr_personalized",
    "mean_gain_db",
    "bytes_up",
    "bytes_down",
    "audio_seconds_exposed",
    "device_macs",
    "server_macs",
    "sim_round_seconds",
    "wall_seconds",
]
# A user's scores (users.csv), averaged over scored users in summary.json's "mean".
SCORE_COLUMNS = [
    "si_sdr_noisy",
    "si_sdr_generic",
    "si_sdr_personalized",
    "si_sdr_teacher",
    "si_sdri_db",
    "gain_db",
    "gap_closure",
    "pesq_generic",
    "pesq_personalized",
    "stoi_generic",
    "stoi_personalized",
    *DNSMOS_COLUMNS,
    *GUARD_SCORE_COLUMNS,
]
USER_TEXT_COLUMNS = {"user", "status", "error", "guard_decision"}  # every other users.csv column is a number
LEDGER_TEXT_COLUMNS = {"user", "direction", "kind", "message_type", "precision", "codec", "status", "error"}
USER_COLUMNS = [
    "user",
    "status",
    *ROOM_COLUMNS,
    "rounds_available",
    "rounds_selected",
    "rounds_completed",
    "rounds_failed",
    "retries",
    "scored_round",
    *SCORE_COLUMNS,
    *GUARD_COLUMNS,  # the guard's decision in the user's last completed round
    "audio_minutes_used",
    "bytes_up",
    "bytes_down",
    "audio_seconds_exposed",
    "device_macs",
    "server_macs",
    "sim_seconds",
    "adapt_steps",
    "error",
]
DEVICE_COLUMNS = [
    "user",
    "speed",
    "macs_per_s",
    "uplink_mbps",
    "downlink_mbps",
    "availability",
    "window_start_hour",
    "window_hours",
]
COLD_START_COLUMNS = [
    "user",
    "si_sdr_noisy",
    "si_sdr_generic",
    "si_sdr_federated",
    "si_sdr_teacher",
    "gain_db",
]
TABLES = {
    "devices": DEVICE_COLUMNS,
    "ledger": LEDGER_COLUMNS,
    "evaluations": EVALUATION_COLUMNS,
    "attempts": ATTEMPT_COLUMNS,
    "rounds": ROUND_COLUMNS,
    "users": USER_COLUMNS,
    "cold_start": COLD_START_COLUMNS,
}
# Columns a table holds only when the run's config turns them on (dotted key -> table -> columns; "on" = not
# null / false / "off"). Every other column is in every run's table.
OPTIONAL_COLUMNS: dict[str, dict[str, list[str]]] = {
    "scoring.dnsmos": {"evaluations": DNSMOS_COLUMNS, "users": DNSMOS_COLUMNS},
    "adapt.guard": {
        "evaluations": ["si_sdr_unguarded"],
        "attempts": [*GUARD_COLUMNS, "guard_macs"],
        "users": [*GUARD_COLUMNS, *GUARD_SCORE_COLUMNS],
    },
    "world.room.enabled": {"users": ROOM_COLUMNS},
}
# Columns that differ between two runs of one config and seed (and between a resumed and an uninterrupted run).
TIMING_COLUMNS = {
    "devices": [],
    "ledger": ["node_id", "wall_seconds"],
    "evaluations": [],
    "attempts": ["wall_seconds"],
    "rounds": ["wall_seconds"],
    "users": [],
    "cold_start": [],
}


class RunDirError(ValueError):
    """A run directory that cannot be used (e.g. it already holds another run's results)."""


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else round(value, 6)
    return value


class RunStore:
    """Writer (and reader) of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._columns: dict[str, list[str]] | None = None

    def columns(self, table: str) -> list[str]:
        """This run's columns of ``table``: ``TABLES[table]`` less the optional ones its config.yaml leaves off
        (a run directory without a readable config.yaml has none of them)."""
        if self._columns is None:
            self._columns = _run_columns(self.root / "config.yaml")
        return self._columns[table]

    @staticmethod
    def check_free(root: str | Path) -> None:
        """Raise ``RunDirError`` if ``root`` already holds a run's results."""
        root = Path(root)
        taken = [f"{t}.csv" for t in TABLES if (root / f"{t}.csv").exists()]
        taken += ["summary.json"] if (root / "summary.json").exists() else []
        if taken:
            raise RunDirError(f"{root}: already holds a run ({', '.join(taken)}); choose a new --out folder")

    @classmethod
    def create(cls, root: str | Path, cfg: Config) -> RunStore:
        """A fresh run directory for ``cfg``; refuses one that already holds results."""
        cls.check_free(root)
        store = cls(root)
        store.root.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, store.root / "config.yaml")
        return store

    def path(self, table: str) -> Path:
        return self.root / f"{table}.csv"

    @property
    def finished(self) -> bool:
        """A run is finished once its summary is written (users.csv is written just before it)."""
        return (self.root / "summary.json").is_file()

    def append(self, table: str, row: dict) -> None:
        """Append one row (unknown keys are an error: the columns are the contract)."""
        columns = self.columns(table)
        extra = sorted(set(row) - set(columns))
        if extra:
            raise KeyError(f"{table}.csv has no column(s) {extra}")
        path = self.path(table)
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            if new:
                writer.writeheader()
            writer.writerow({c: _cell(row.get(c)) for c in columns})

    def write_table(self, table: str, rows: list[dict]) -> None:
        """Write a whole table at once (atomically replaced; keys that are not this run's columns are left out)."""
        columns = self.columns(table)
        tmp = self.path(table).with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({c: _cell(row.get(c)) for c in columns})
        tmp.replace(self.path(table))

    def read_table(self, table: str) -> list[dict]:
        """Rows as dicts of strings (empty list if the table does not exist yet). A last line cut short by a
        killed writer is not a row and is left out; a header that is not this version's columns is an error."""
        path = self.path(table)
        if not path.exists():
            return []
        with open(path, newline="") as fh:
            text = fh.read()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        header = text.split("\r\n", 1)[0].split("\n", 1)[0]
        if header and header.split(",") != self.columns(table):
            raise RunDirError(
                f"{path}: its columns are not those this version of fedpse writes ({self.columns(table)}); "
                "it was written by another version"
            )
        return rows

    def write_summary(self, summary: dict) -> Path:
        """Write ``summary.json`` (NaN, "no value", as null; an inf raises ``ValueError`` and nothing is written)."""
        path = self.root / "summary.json"
        text = json_text(summary, str(path))
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)
        return path

    def read_summary(self) -> dict:
        return json.loads((self.root / "summary.json").read_text())


def _run_columns(config_path: Path) -> dict[str, list[str]]:
    """Per table, the columns of the run whose config.yaml is ``config_path`` (see ``OPTIONAL_COLUMNS``)."""
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        config = {}
    off: dict[str, set[str]] = {table: set() for table in TABLES}
    for key, tables in OPTIONAL_COLUMNS.items():
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, False, "off", ""):
            for table, columns in tables.items():
                off[table].update(columns)
    return {table: [c for c in columns if c not in off[table]] for table, columns in TABLES.items()}


def json_text(value: Any, where: str, indent: int = 1) -> str:
    """``value`` as strict JSON for a results file (``summary.json``, ``result.json``).

    NaN means "no value" in results (a mean over zero scored users, a gap closure without a teacher lead, MACs that
    cannot be counted) and is written as null; an infinite number has no such meaning: it raises ``ValueError``
    naming ``where`` and the key, so a results file never holds invalid JSON (NaN/Infinity) or a silent wrong number.
    """
    return json.dumps(_nan_as_null(value, where, ""), indent=indent, default=_json_default, allow_nan=False)


def _nan_as_null(value: Any, where: str, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _nan_as_null(v, where, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_as_null(v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # float, numpy floats
        number = float(value)
        if math.isnan(number):
            return None
        if math.isinf(number):
            raise ValueError(
                f"{where}: {key or 'value'} = {number} is not a finite number; expected a finite number "
                "(or no value, written as null)"
            )
        return number
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")

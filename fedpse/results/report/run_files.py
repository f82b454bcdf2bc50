"""The files of one run directory, read and checked: CSV tables, summary.json, config.yaml.

Columns are read by name: optional columns may be missing or empty, extra columns are ignored. A file that cannot be
read raises ``ReportError`` naming the file (and line) at fault; so does a number that is not finite (an empty cell
is "no value"; a ``nan`` or ``inf`` cell was written by something broken).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedpse.results.store import (
    LEDGER_COLUMNS,
    LEDGER_TEXT_COLUMNS,
    USER_COLUMNS,
    USER_TEXT_COLUMNS,
    RunStore,
)

# Said when a started run directory (it has config.yaml) lacks users.csv or summary.json, written when a run ends.
UNFINISHED_HINT = "is this a finished fedpse run directory? (fedpse simulate --resume {root} finishes it)"

USER_NUMERIC = set(USER_COLUMNS) - USER_TEXT_COLUMNS
EVALUATION_NUMERIC = {
    "round",
    "si_sdr_generic",
    "si_sdr_personalized",
    "si_sdr_teacher",
    "gain_db",
    "adapt_audio_seconds",
}
ROUND_NUMERIC = {"round", "selected", "completed", "failed", "mean_gain_db", "wall_seconds"}
LEDGER_NUMERIC = set(LEDGER_COLUMNS) - LEDGER_TEXT_COLUMNS


def _whole(value: float) -> bool:
    return math.isfinite(value) and value >= 0 and value == int(value)


def _non_negative_or_empty(value: float) -> bool:
    return math.isnan(value) or value >= 0


# Per ledger column: (accepted?, what was expected). Every message row has a round, a direction and a size.
LEDGER_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "round": (_whole, "a whole number >= 0 (0 = registration)"),
    "direction": (lambda v: v in ("up", "down"), "'up' or 'down'"),
    "bytes": (_whole, "a whole number of bytes >= 0"),
    **{
        name: (_non_negative_or_empty, "a number >= 0, or empty when unknown")
        for name in ("audio_seconds", "device_macs", "server_macs", "sim_seconds", "wall_seconds")
    },
}


class ReportError(ValueError):
    """A run directory the report cannot use; the message names the file (and line) and what was expected."""


def nested_get(node: Any, *keys: str, default: Any = None) -> Any:
    """``node[k1][k2]…`` through nested dicts, or ``default`` where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def finite_or_nan(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _number(text: str) -> float:
    """A CSV cell as a float: empty → NaN (no value); non-numeric or non-finite text raises ValueError."""
    text = text.strip()
    if not text:
        return math.nan
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not finite")
    return value


def read_csv_table(
    path: Path,
    numeric: set[str],
    required: Sequence[str] = (),
    what: str = "table",
    checks: dict[str, tuple[Callable[[Any], bool], str]] | None = None,
) -> list[dict]:
    """Rows of a run table as dicts; ``numeric`` columns (those present) parsed as floats.

    Raises ``ReportError`` naming the file and line for a missing header, a row with the wrong number of fields
    (e.g. a truncated last line), a non-numeric or non-finite value in a numeric column, or a value that fails the
    column's entry in ``checks`` (``{column: (accepted(value) -> bool, what was expected)}``).
    """
    checks = checks or {}
    rows: list[dict] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise ReportError(f"{path}: empty — expected a CSV header line (the {what})")
            absent = [c for c in required if c not in header]
            if absent:
                raise ReportError(
                    f"{path}, line 1: no column(s) {', '.join(absent)} — not a fedpse {what} "
                    f"(header: {', '.join(header[:6])}{', …' if len(header) > 6 else ''})"
                )
            parse = [c in numeric for c in header]
            for fields in reader:
                if not fields:
                    continue
                line = reader.line_num
                if len(fields) != len(header):
                    raise ReportError(
                        f"{path}, line {line}: {len(fields)} fields where the header has {len(header)} "
                        "— the file is truncated or corrupt"
                    )
                row: dict[str, Any] = {}
                for name, text, is_number in zip(header, fields, parse, strict=True):
                    if is_number:
                        try:
                            row[name] = _number(text)
                        except ValueError:
                            kind = "finite number" if _is_float(text) else "number"
                            raise ReportError(
                                f"{path}, line {line}: column {name} = {text[:40]!r} is not a {kind} "
                                "(an empty cell means no value)"
                            ) from None
                    else:
                        row[name] = text
                    if name in checks and not checks[name][0](row[name]):
                        raise ReportError(
                            f"{path}, line {line}: column {name} = {text[:40]!r}; expected {checks[name][1]}"
                        )
                rows.append(row)
    except csv.Error as err:
        raise ReportError(f"{path}: not a readable CSV file ({err})") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text CSV file (undecodable bytes) — the file is corrupt") from None
    return rows


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_summary(store: RunStore) -> dict:
    path = store.root / "summary.json"
    try:
        summary = store.read_summary()
    except json.JSONDecodeError as err:
        raise ReportError(
            f"{path}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}) — the file is corrupt"
        ) from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text JSON file (undecodable bytes) — the file is corrupt") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{path}: expected a JSON object (the run's summary), got {type(summary).__name__}")
    return summary


def read_config(path: Path) -> dict:
    """The run's resolved config as a plain dict ({} if absent: it only adds context to the report)."""
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ReportError(f"{path}{where}: not valid YAML — the file is corrupt") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text YAML file (undecodable bytes) — the file is corrupt") from None
    return config if isinstance(config, dict) else {}

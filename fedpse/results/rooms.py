"""Users in rooms, as results group them: each user's room columns and gains per reverberation-time (RT60) bin.

Bins follow the JASA 2024 extension's tables (0.2–0.4, 0.4–0.6, 0.6–0.8 s); a user outside them (a world drawn
with another ``world.room.rt60_s`` range) lands in a below or above bin, so every user is counted somewhere.
``summary.json``, ``fedpse report`` and ``simulations/dereverb.py`` all bin with ``rt60_bin`` and summarise with
``bin_stats``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

RT60_BINS_S = ((0.2, 0.4), (0.4, 0.6), (0.6, 0.8))  # [low, high); the last one also holds its upper edge


def room_columns(room: dict | None) -> dict[str, float]:
    """A user's ``rt60_s`` (the reverberation time its room was drawn with) and ``source_mic_m`` (talker to
    microphone, metres) from the room its world plan stores; nothing for a user without a room."""
    if not room:
        return {}
    return {"rt60_s": float(room["rt60_s"]), "source_mic_m": math.dist(room["source_m"], room["mic_m"])}


def bin_label(low: float, high: float) -> str:
    return f"{low:g}–{high:g} s"


def rt60_bin(rt60_s: float) -> str | None:
    """The label of the bin ``rt60_s`` falls in (``"0.2–0.4 s"``, ``"below 0.2 s"``, ``"above 0.8 s"``); None
    for a missing value (NaN: a user without a room)."""
    if rt60_s is None or not math.isfinite(rt60_s):
        return None
    lowest, highest = RT60_BINS_S[0][0], RT60_BINS_S[-1][1]
    if rt60_s < lowest:
        return f"below {lowest:g} s"
    if rt60_s > highest:
        return f"above {highest:g} s"
    for low, high in RT60_BINS_S:
        if rt60_s < high or high == highest:
            return bin_label(low, high)
    raise AssertionError("unreachable: the bins cover [lowest, highest]")


def bin_order() -> list[str]:
    """Every label ``rt60_bin`` can return, from the least to the most reverberant."""
    lowest, highest = RT60_BINS_S[0][0], RT60_BINS_S[-1][1]
    return [f"below {lowest:g} s", *(bin_label(lo, hi) for lo, hi in RT60_BINS_S), f"above {highest:g} s"]


def _value(row: dict, key: str) -> float:
    value = row.get(key)
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def gain_stats(rows: Iterable[dict]) -> dict:
    """Over users rows (``si_sdr_generic`` / ``_personalized`` / ``_teacher``): users, users scored, mean gain over
    the generic student (dB), users improved (gain > 0), mean teacher lead over the generic student (dB) and gap
    closure of the means (mean gain / mean lead; NaN where the teacher does not lead)."""
    rows = list(rows)
    generic = np.array([_value(r, "si_sdr_generic") for r in rows])
    gain = np.array([_value(r, "si_sdr_personalized") for r in rows]) - generic
    lead = np.array([_value(r, "si_sdr_teacher") for r in rows]) - generic
    scored = np.isfinite(gain)
    mean_gain = float(gain[scored].mean()) if scored.any() else math.nan
    mean_lead = float(np.nanmean(lead)) if np.isfinite(lead).any() else math.nan
    return {
        "users": len(rows),
        "scored": int(scored.sum()),
        "mean_gain_db": mean_gain,
        "improved": int((gain[scored] > 0).sum()),
        "teacher_lead_db": mean_lead,
        "gap_closure_of_means": mean_gain / mean_lead if mean_lead > 1e-9 else math.nan,
    }


def by_bin(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Rows with ``rt60_s`` grouped by RT60 bin, least reverberant first (rows without a room left out)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        label = rt60_bin(_value(row, "rt60_s"))
        if label is not None:
            groups.setdefault(label, []).append(row)
    return {label: groups[label] for label in bin_order() if label in groups}


def bin_stats(rows: Iterable[dict]) -> dict[str, dict]:
    """``gain_stats`` per RT60 bin (only bins with users, least reverberant first)."""
    return {label: gain_stats(group) for label, group in by_bin(rows).items()}

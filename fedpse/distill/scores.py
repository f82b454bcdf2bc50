"""One user's scores, and the seed of a user's adaptation outside a federated run: one definition each, used by the
bare adaptation loop (``fedpse adapt``, the paper table) and by the federated run's accounts (``users.csv``)."""

from __future__ import annotations

import zlib


def user_seed(seed: int, user: str) -> int:
    """The seed of ``user``'s adaptation from the master ``seed`` (one per user; a federated run seeds each of a
    user's rounds instead: ``RunPlan.adapt_seed``)."""
    return zlib.crc32(f"{seed}:{user}".encode())


def gap_closure(generic: float, personalized: float, teacher: float) -> float:
    """(personalized − generic) / (teacher − generic); NaN when the teacher is not better than the generic student."""
    gap = teacher - generic
    return (personalized - generic) / gap if gap > 1e-6 else float("nan")


def score_row(noisy: float, generic: float, personalized: float, teacher: float) -> dict[str, float]:
    """A user's SI-SDR scores (dB) on its held-out test set — the noisy mixture itself, the generic student, the
    personalized student, the teacher — with the gain of personalizing and the share of the teacher gap it closed."""
    return {
        "si_sdr_noisy": noisy,
        "si_sdr_generic": generic,
        "si_sdr_personalized": personalized,
        "si_sdr_teacher": teacher,
        "gain_db": personalized - generic,
        "gap_closure": gap_closure(generic, personalized, teacher),
    }

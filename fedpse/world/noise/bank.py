"""The caller's speech for babble places: one long recording per talker, played on the place's timeline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import welch

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.common import HISTORY


class BabbleBank:
    """Long speech recordings, one per babble talker (float32, 16 kHz), supplied by the caller.

    A babble place plays talker j at absolute time t from bank sample ``(offset_j + t * sr) mod len(talker)``, so
    babble stays on the place's timeline. Talkers wrap around when the timeline outruns them; make each one at
    least ``BabbleBank.required_seconds(timeline_seconds)`` long for content never to repeat. Each talker is
    heard with 10 ms fades at its two ends, so a wrap-around is a brief dip rather than a click (the arrays are
    kept as given, not copied, when they are already float32).
    """

    def __init__(self, talkers: Sequence[np.ndarray]):
        if len(talkers) == 0:
            raise ValueError("BabbleBank needs at least one talker recording")
        self.talkers: list[np.ndarray] = []
        for j, audio in enumerate(talkers):
            audio = np.ascontiguousarray(audio, dtype=np.float32)
            if audio.ndim != 1 or audio.size < SAMPLE_RATE:
                raise ValueError(
                    f"BabbleBank talker {j}: expected mono audio of at least 1 s, got shape {audio.shape}"
                )
            if not np.all(np.isfinite(audio)) or not np.any(audio):
                raise ValueError(f"BabbleBank talker {j}: audio must be finite and not silent")
            self.talkers.append(audio)
        self._psd: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.talkers)

    @staticmethod
    def required_seconds(timeline_seconds: float) -> float:
        """Talker length (s) at which no bank sample is heard twice on a place's timeline [0, timeline_seconds)."""
        return float(timeline_seconds) + HISTORY / SAMPLE_RATE

    def segment(self, talker: int, start: int, length: int) -> np.ndarray:
        """``length`` samples of one talker from absolute bank position ``start``, wrapping around its end."""
        audio, fade = self.talkers[talker], SAMPLE_RATE // 100
        start %= audio.size
        if fade <= start and start + length <= audio.size - fade:
            return audio[start : start + length]
        position = np.arange(start, start + length) % audio.size
        edge_gain = np.minimum(np.minimum(position, audio.size - 1 - position) / fade, 1.0)
        return audio[position] * edge_gain.astype(np.float32)

    def power_spectrum(self, talker: int) -> np.ndarray:
        """Welch PSD of a talker (first 30 s) on the 8192-point grid; sums to its mean power."""
        if talker not in self._psd:
            audio = self.talkers[talker][: 30 * SAMPLE_RATE].astype(np.float64)
            _, psd = welch(audio, fs=SAMPLE_RATE, nperseg=min(8192, audio.size), nfft=8192, detrend=False)
            self._psd[talker] = psd * (SAMPLE_RATE / 8192)
        return self._psd[talker]

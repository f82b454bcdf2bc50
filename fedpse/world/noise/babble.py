"""Babble places: several talkers from the caller's speech bank, mixed and coloured by a small room."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.common import (
    BLOCK_SAMPLES,
    HISTORY,
    MAX_TAPS,
    NOMINAL_RMS,
    S_ROOM,
    block_rng,
    colour_magnitude,
    design_fir,
    filter_blocks,
    fir_spectrum,
    loguniform,
)


def _pick_talkers(slots: Sequence[int], bank_size: int) -> list[int]:
    """Distinct bank indices for the slots while the bank has enough talkers (then talkers are reused)."""
    picked: list[int] = []
    for slot in slots:
        index = slot % bank_size
        if len(set(picked)) < bank_size:
            while index in picked:
                index = (index + 1) % bank_size
        picked.append(index)
    return picked


class Babble(NoiseFamily):
    """Several talkers from the caller's bank, mixed and coloured by a small room."""

    name = "babble"
    needs_bank = True

    @staticmethod
    def draw(rng: np.random.Generator) -> dict:
        n = int(rng.integers(3, 9))
        return {
            "talker_slots": [int(s) for s in rng.integers(0, 2**31, n)],
            "offset_fractions": rng.random(n),
            "gains_db": rng.uniform(-12, 0, n),
            "lowpass_hz": loguniform(rng, 1500, 6000),
            "lowpass_order": int(rng.integers(1, 4)),
            "rt60_s": rng.uniform(0.15, 0.7),
            "drr_db": rng.uniform(-6, 6),
            "predelay_s": rng.uniform(0.002, 0.01),
        }

    def __init__(self, seed: int, p: dict):
        self.p = p
        lowpass = design_fir(
            lambda f: colour_magnitude(f, 0.0, 80.0, p["lowpass_hz"], p["lowpass_order"]), taps=513
        )
        rir = self._room_response(block_rng(seed, S_ROOM, 0), MAX_TAPS - lowpass.size + 1)
        fir = np.convolve(lowpass, rir)
        fir /= np.sqrt(np.sum(fir**2))
        self.spectrum = fir_spectrum(fir)
        self.fir_power = np.abs(np.fft.rfft(fir, 8192)) ** 2
        self.gains = 10.0 ** (np.asarray(p["gains_db"]) / 20.0)

    def _room_response(self, rng: np.random.Generator, taps: int) -> np.ndarray:
        """Direct path + exponentially decaying noise tail (RT60, direct-to-reverberant ratio), tapered."""
        t = np.arange(taps) / SAMPLE_RATE
        tail = rng.standard_normal(taps) * np.exp(-6.908 * t / self.p["rt60_s"])
        tail[t < self.p["predelay_s"]] = 0.0
        fade = taps // 6
        tail[-fade:] *= np.cos(np.linspace(0, np.pi / 2, fade)) ** 2
        tail *= 10.0 ** (-self.p["drr_db"] / 20.0) / np.sqrt(np.sum(tail**2))
        tail[0] += 1.0
        return tail

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        assert bank is not None
        talkers = _pick_talkers(self.p["talker_slots"], len(bank))
        start, length = k0 * BLOCK_SAMPLES - HISTORY, (k1 - k0) * BLOCK_SAMPLES + HISTORY
        mix = np.zeros(length, dtype=np.float32)
        power = 0.0
        for talker, fraction, gain in zip(talkers, self.p["offset_fractions"], self.gains, strict=True):
            offset = int(fraction * bank.talkers[talker].size)
            mix += np.float32(gain) * bank.segment(talker, offset + start, length)
            power += gain**2 * float(np.sum(bank.power_spectrum(talker) * self.fir_power))
        (babble,) = filter_blocks(mix, [self.spectrum], k1 - k0)
        return babble * np.float32(NOMINAL_RMS / math.sqrt(power))

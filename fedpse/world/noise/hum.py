"""Hum places: drifting harmonic machinery with a broadband, optionally engine-modulated, component."""

from __future__ import annotations

import math

import numpy as np

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.common import (
    BLOCK_SAMPLES,
    NOMINAL_RMS,
    NYQUIST_SAFE_HZ,
    S_NOISE,
    TWO_PI,
    NoiseSource,
    colour_magnitude,
    control_curve,
    design_fir,
    harmonic_sum,
    loguniform,
    unit_phasor,
)


class Hum(NoiseFamily):
    """Drifting harmonic machinery with a broadband, optionally engine-modulated, component."""

    name = "hum"

    @staticmethod
    def draw(rng: np.random.Generator) -> dict:
        f0 = float(rng.choice([50.0, 60.0, 100.0, 120.0])) if rng.random() < 0.3 else loguniform(rng, 40, 400)
        depths = rng.uniform(0.0005, 0.01, 2)
        n_harmonics = int(min(rng.integers(4, 31), NYQUIST_SAFE_HZ // (f0 * (1 + depths.sum()))))
        rolloff = rng.uniform(0.5, 2.0)
        k = np.arange(1, n_harmonics + 1)
        harmonic_db = -20 * rolloff * np.log10(k) + rng.normal(0, 5, n_harmonics)
        harmonic_db[(rng.random(n_harmonics) < 0.2) & (k > 1)] = -120.0  # some harmonics absent
        return {
            "f0_hz": f0,
            "harmonic_db": harmonic_db,
            "harmonic_phases": rng.random(n_harmonics),
            "drift_depths": depths,
            "drift_rates_hz": [loguniform(rng, 0.005, 0.05), loguniform(rng, 0.05, 0.3)],
            "drift_phases": rng.random(2),
            "wobble_depth": rng.uniform(0, 0.3),
            "wobble_rate_hz": loguniform(rng, 0.05, 4.0),
            "wobble_phase": rng.random(),
            "noise_db": rng.uniform(-25, -3),
            "noise_slope": rng.uniform(0.5, 2.0),
            "noise_lowpass_hz": loguniform(rng, 300, 4000),
            "noise_am_depth": rng.uniform(0, 0.8),
            "noise_am_phase": rng.random(),
        }

    def __init__(self, seed: int, p: dict):
        self.p = p
        amps = 10.0 ** (np.asarray(p["harmonic_db"]) / 20.0)
        tone_power = np.sum(amps**2) / 2.0 * (1.0 + p["wobble_depth"] ** 2 / 2.0)
        self.coefs = (
            amps * np.exp(TWO_PI * 1j * np.asarray(p["harmonic_phases"])) / np.sqrt(tone_power)
        ).astype(np.complex64)
        self.am = np.complex64(p["noise_am_depth"] * np.exp(TWO_PI * 1j * p["noise_am_phase"]))
        noise_ratio = 10.0 ** (p["noise_db"] / 20.0)
        self.tone_gain = np.float32(NOMINAL_RMS / math.sqrt(1.0 + noise_ratio**2))
        self.noise_gain = np.float32(
            self.tone_gain * noise_ratio / math.sqrt(1.0 + p["noise_am_depth"] ** 2 / 2.0)
        )
        fir = design_fir(lambda f: colour_magnitude(f, p["noise_slope"], 30.0, p["noise_lowpass_hz"]))
        self.noise = NoiseSource(seed, S_NOISE, [fir])

    def _drift_cycles(self, t: np.ndarray) -> np.ndarray:
        """Phase (cycles) added by the slow frequency drift: integral of f0 * depth * sin(2 pi rate t + phase)."""
        p, out = self.p, np.zeros_like(t)
        for depth, rate, phase in zip(p["drift_depths"], p["drift_rates_hz"], p["drift_phases"], strict=True):
            out -= p["f0_hz"] * depth / (TWO_PI * rate) * np.cos(TWO_PI * (rate * t + phase))
        return out

    def _wobble(self, t: np.ndarray) -> np.ndarray:
        p = self.p
        return 1.0 + p["wobble_depth"] * np.sin(TWO_PI * (p["wobble_rate_hz"] * t + p["wobble_phase"]))

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        start, length = k0 * BLOCK_SAMPLES, (k1 - k0) * BLOCK_SAMPLES
        (noise,) = self.noise.blocks(k0, k1)
        drift = control_curve(self._drift_cycles, start, length)
        wobble = control_curve(self._wobble, start, length)
        out = np.empty(length, dtype=np.float32)
        f0_per_sample = self.p["f0_hz"] / SAMPLE_RATE
        for i in range(k1 - k0):
            block = slice(i * BLOCK_SAMPLES, (i + 1) * BLOCK_SAMPLES)
            samples = np.arange(BLOCK_SAMPLES, dtype=np.float64) + (start + i * BLOCK_SAMPLES)
            z = unit_phasor(samples * f0_per_sample + drift[block])
            tone = harmonic_sum(self.coefs, z) * wobble[block]
            engine = 1.0 + (z * self.am).real  # broadband noise pulsing with the fundamental (engines, fans)
            out[block] = self.tone_gain * tone + self.noise_gain * noise[block] * engine
        return out

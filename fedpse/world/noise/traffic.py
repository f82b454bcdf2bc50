"""Traffic places: modulated low rumble plus passing vehicles (tyre-noise swells, engine tones with Doppler)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import i0

from fedpse.audio.io import SAMPLE_RATE
from fedpse.world.noise.bank import BabbleBank
from fedpse.world.noise.base import NoiseFamily
from fedpse.world.noise.common import (
    BLOCK_SAMPLES,
    CONTROL_STEP,
    NOMINAL_RMS,
    S_CALIBRATE,
    S_EVENTS,
    S_NOISE,
    S_TIMBRE,
    SOUND_SPEED_MPS,
    TWO_PI,
    NoiseSource,
    block_rng,
    colour_magnitude,
    control_curve,
    design_fir,
    harmonic_sum,
    interpolate_control,
    loguniform,
    unit_phasor,
)

_PASSBY_WINDOW_S = 5.0  # a pass-by is heard from 5 s before its closest approach to 5 s after


def _swell(s: np.ndarray, distance: float, speed: float, window_s: float) -> np.ndarray:
    """Amplitude of a source passing at closest ``distance`` (1/r law), tapered to 0 at |s| = window_s."""
    edge = distance / math.hypot(distance, speed * window_s)
    near = distance / np.sqrt(distance**2 + (speed * s) ** 2)
    return np.maximum((near - edge) / (1.0 - edge), 0.0)


class Traffic(NoiseFamily):
    """Modulated low rumble plus passing vehicles (tyre-noise swells, engine tones with Doppler)."""

    name = "traffic"

    @staticmethod
    def draw(rng: np.random.Generator) -> dict:
        return {
            "rumble_slope": rng.uniform(1.0, 2.0),
            "rumble_lowpass_hz": loguniform(rng, 60, 300),
            "rumble_mod_db": rng.uniform(1, 6),
            "rumble_mod_rates_hz": [loguniform(rng, 0.01, 0.05), loguniform(rng, 0.05, 0.15)],
            "rumble_mod_phases": rng.random(2),
            "passby_rate_hz": loguniform(rng, 0.03, 0.25),
            "passby_db": rng.uniform(-6, 3),  # long-term power of pass-bys relative to the rumble
            "distance_m": [rng.uniform(2, 8), rng.uniform(15, 50)],
            "speed_mps": [rng.uniform(6, 12), rng.uniform(14, 28)],
            "spread_db": rng.uniform(2, 6),
            "tyre_highpass_hz": loguniform(rng, 60, 200),
            "tyre_lowpass_hz": loguniform(rng, 1000, 5000),
            "tone_prob": rng.uniform(0.2, 0.8),
            "tone_db": rng.uniform(-10, 0),  # engine tone relative to tyre noise at the swell's peak
            "engine_hz": [loguniform(rng, 25, 60), loguniform(rng, 60, 120)],
            "engine_harmonic_db": [0.0, *(-rng.uniform(0, 12, 3).cumsum())],
        }

    def __init__(self, seed: int, p: dict):
        self.seed, self.p = seed, p
        rumble = design_fir(lambda f: colour_magnitude(f, p["rumble_slope"], 20.0, p["rumble_lowpass_hz"], 2))
        tyre = design_fir(lambda f: colour_magnitude(f, 1.0, p["tyre_highpass_hz"], p["tyre_lowpass_hz"], 2))
        self.noise = NoiseSource(seed, S_NOISE, [rumble, tyre])
        depth = p["rumble_mod_db"] / (20.0 * math.log10(math.e)) / 2.0  # nepers per modulator
        self.rumble_gain = 1.0 / float(i0(2 * depth))  # E[exp(2 m sin a + 2 m sin b)] = I0(2m)^2
        self.mod_depth = depth
        amps = 10.0 ** (np.asarray(p["engine_harmonic_db"]) / 20.0)
        phases = block_rng(seed, S_TIMBRE, 0).random(amps.size)
        self.engine_coefs = (amps / np.sqrt(np.sum(amps**2) / 2.0) * np.exp(TWO_PI * 1j * phases)).astype(
            np.complex64
        )
        self.tone_amp = 10.0 ** (p["tone_db"] / 20.0)
        self.reach_blocks = int(_PASSBY_WINDOW_S * SAMPLE_RATE) // BLOCK_SAMPLES + 2
        passby_power = self._expected_passby_power(block_rng(seed, S_CALIBRATE, 0))
        self.passby_gain = math.sqrt(10.0 ** (p["passby_db"] / 10.0) / passby_power)
        self.gain = NOMINAL_RMS / math.sqrt(1.0 + 10.0 ** (p["passby_db"] / 10.0))

    def _draw_vehicles(self, rng: np.random.Generator, count: int) -> dict:
        p = self.p
        d_lo, d_hi = p["distance_m"]
        distance = np.exp(rng.uniform(math.log(d_lo), math.log(d_hi), count))
        return {
            "distance": distance,
            "speed": rng.uniform(*p["speed_mps"], count),
            "amp": 5.0 / distance * 10.0 ** (rng.uniform(-p["spread_db"], p["spread_db"], count) / 20.0),
            "has_tone": rng.random(count) < p["tone_prob"],
            "engine_hz": np.exp(rng.uniform(*np.log(p["engine_hz"]), count)),
            "phase": rng.random(count),
        }

    def _tone_window_s(self, distance: float, speed: float) -> float:
        return min(_PASSBY_WINDOW_S, 3.0 * distance / speed)

    def _expected_passby_power(self, rng: np.random.Generator, draws: int = 256) -> float:
        """Campbell's theorem for the shot-noise envelope (mean^2 + variance) plus incoherent engine tones."""
        cars = self._draw_vehicles(rng, draws)
        s = np.linspace(-_PASSBY_WINDOW_S, _PASSBY_WINDOW_S, 2001)
        ds = s[1] - s[0]
        env_sum = env_sq = tone_sq = 0.0
        for d, v, a, has_tone in zip(
            cars["distance"], cars["speed"], cars["amp"], cars["has_tone"], strict=True
        ):
            e = a * _swell(s, d, v, _PASSBY_WINDOW_S)
            env_sum += e.sum() * ds
            env_sq += (e**2).sum() * ds
            if has_tone:
                tone = a * _swell(s, d, v, self._tone_window_s(d, v)) ** 2
                tone_sq += (tone**2).sum() * ds * self.tone_amp**2
        rate = self.p["passby_rate_hz"]
        return rate * env_sq / draws + (rate * env_sum / draws) ** 2 + rate * tone_sq / draws

    def _rumble_modulation(self, t: np.ndarray) -> np.ndarray:
        p, total = self.p, np.zeros_like(t)
        for rate, phase in zip(p["rumble_mod_rates_hz"], p["rumble_mod_phases"], strict=True):
            total += self.mod_depth * np.sin(TWO_PI * (rate * t + phase))
        return np.exp(total)

    def _vehicles(self, k0: int, k1: int):
        """Vehicles whose closest approach falls in blocks near [k0, k1), in a fixed order."""
        for block in range(k0 - self.reach_blocks, k1 + self.reach_blocks):
            rng = block_rng(self.seed, S_EVENTS, block)
            count = rng.poisson(self.p["passby_rate_hz"] * BLOCK_SAMPLES / SAMPLE_RATE)
            closest = block * BLOCK_SAMPLES + rng.integers(0, BLOCK_SAMPLES, count)
            cars = self._draw_vehicles(rng, count)
            for i in range(count):
                yield int(closest[i]), {key: value[i] for key, value in cars.items()}

    def blocks(self, k0: int, k1: int, bank: BabbleBank | None) -> np.ndarray:
        start, length = k0 * BLOCK_SAMPLES, (k1 - k0) * BLOCK_SAMPLES
        rumble, tyre = self.noise.blocks(k0, k1)
        control_times = (start + CONTROL_STEP * np.arange(length // CONTROL_STEP + 1)) / SAMPLE_RATE
        swell = np.zeros(control_times.size)
        tones = np.zeros(length, dtype=np.float32)
        for closest, car in self._vehicles(k0, k1):
            d, v = car["distance"], car["speed"]
            swell += car["amp"] * _swell(control_times - closest / SAMPLE_RATE, d, v, _PASSBY_WINDOW_S)
            if car["has_tone"]:
                self._add_engine(tones, start, closest, car)
        rumble *= control_curve(self._rumble_modulation, start, length)
        rumble *= np.float32(self.rumble_gain)
        passing = tyre * interpolate_control(swell) + np.float32(self.tone_amp) * tones
        return (rumble + np.float32(self.passby_gain) * passing) * np.float32(self.gain)

    def _add_engine(self, out: np.ndarray, start: int, closest: int, car: dict) -> None:
        """Engine harmonics whose pitch falls as the vehicle passes (retarded time: t - r/c)."""
        d, v = car["distance"], car["speed"]
        window_s = self._tone_window_s(d, v)
        half = int(window_s * SAMPLE_RATE)
        lo, hi = max(closest - half, start), min(closest + half + 1, start + out.size)
        if lo >= hi:
            return
        s = (np.arange(lo, hi) - closest) / SAMPLE_RATE
        r = np.sqrt(d**2 + (v * s) ** 2)
        z = unit_phasor(car["engine_hz"] * (s - (r - d) / SOUND_SPEED_MPS) + car["phase"])
        envelope = car["amp"] * _swell(s, d, v, window_s) ** 2
        out[lo - start : hi - start] += harmonic_sum(self.engine_coefs, z) * envelope.astype(np.float32)
